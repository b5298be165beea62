"""Figure search on the session's trained tiny model: the index, the searcher, the API and the page.

The noisy demo corpus (conftest's `ingested_noisy`) is embedded by the session's trained model and
indexed with the dataset card's taxonomy; two of its captions are replaced by hostile HTML in the
metadata the index joins (the pairs table), as a PMC caption could hold.

1. The index records the model (weights sha256) and embeddings (sha256) it was built from and its
   recall@10; its metadata is the pairs table's; every vector carries a figure type.
2. An image query with a corpus figure returns that figure first (score ~1), through the library
   and through `POST /api/search`.
3. Filters restrict the results to what they accept.
4. A searcher refuses an index built from other weights; `refresh_index` for another model makes
   an index that answers for that model only.
5. The page shows hostile captions as text (escaped, and no script may run: CSP); bad input is a
   4xx naming it (bad k, long query, bad filter, not an image, a pixel bomb, an oversized upload,
   a tiny image, nothing asked), never a 500 (hypothesis); thumbnails only by content address.
6. The model report's retrieval pictures: offline, escaped, the true figure marked, reproducible.
7. (integration) The page in a real headless Chromium (Debian's package; installed where missing,
   else skipped with the reason), driven over the DevTools protocol against `search serve` in its
   own process: type a query, press Enter, the results appear; upload a hostile figure's image,
   its caption shows as characters and the page's title is untouched (nothing ran). The screenshot
   is written beside the test's files.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from biomedclip.card.imageclef import IMAGECLEF_2015
from biomedclip.digests import file_sha256
from biomedclip.embed.inputs import corpus_input
from biomedclip.embed.params import EmbedParams
from biomedclip.embed.run import embed
from biomedclip.evaluate.embedding import decode, shard_samples
from biomedclip.ingest.params import ImageParams
from biomedclip.models import load_model
from biomedclip.search.build import build_index
from biomedclip.search.examples import retrieval_examples
from biomedclip.search.filters import parse_filters
from biomedclip.search.params import IndexParams, ServeParams
from biomedclip.search.refresh import refresh_index
from biomedclip.search.searcher import IndexModelMismatch, Searcher
from biomedclip.search.serve import SearchService, create_app

from .conftest import REPO, free_port, wait_until_served

HOSTILE = ("<script>document.title='pwned'</script> Chest radiograph",
           "<img src=x onerror=\"document.title='pwned'\"> Axial CT of the abdomen")


@pytest.fixture(scope="module")
def corpus(ingested_noisy, tmp_path_factory):
    """The ingest's outputs, and a copy of its pairs table whose first two captions are hostile."""
    outputs = ingested_noisy[0].outputs
    table = pq.read_table(outputs.pairs)
    captions = table.column("caption").to_pylist()
    captions[:2] = HOSTILE
    hostile = tmp_path_factory.mktemp("hostile") / "pairs.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(captions)), hostile)
    return outputs, hostile


@pytest.fixture(scope="module")
def model(tiny_world) -> str:
    return str(tiny_world.trained["model_dir"])


@pytest.fixture(scope="module")
def built(corpus, model, tmp_path_factory):
    outputs, hostile = corpus
    root = tmp_path_factory.mktemp("search")
    embeddings = root / "embeddings.parquet"
    embed(corpus_input(outputs.pairs, None, outputs.images), embeddings, model=model, batch_size=32, chunk_rows=128)
    params = IndexParams(out=root / "index", metrics=root / "index.json", recall_queries=200)
    metrics = build_index(params, embeddings=embeddings, pairs=hostile, panels=outputs.panels,
                          figure_types=IMAGECLEF_2015)
    return params, metrics, embeddings


@pytest.fixture(scope="module")
def searcher(built) -> Searcher:
    return Searcher.open(built[0].out)


@pytest.fixture(scope="module")
def client(built, corpus):
    from starlette.testclient import TestClient

    app = create_app(SearchService(built[0].out), serve=ServeParams(max_upload_mb=1), checks=ImageParams(),
                     images=corpus[0].images)
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.unit
def test_the_index_records_what_it_was_built_from(built, model, corpus):
    params, _, embeddings = built
    manifest = json.loads((params.out / "index.json").read_text())
    assert manifest["model"]["sha256"] == load_model(model).digest
    assert manifest["embeddings"]["sha256"] == file_sha256(embeddings)
    assert manifest["family"] == "flat" and manifest["recall_at_10"] == 1.0  # 280 vectors: exact
    written = json.loads(params.metrics.read_text())
    assert written["recall_at_10"] == 1.0 and written["vectors"] == manifest["vectors"]
    assert written["flat_float32_bytes"] == manifest["vectors"] * manifest["dim"] * 4
    assert written["query_kind"] == "caption" and written["recall_queries"] > 50
    assert manifest["figure_types"]["classes"][0] == ["DRUS", IMAGECLEF_2015["DRUS"]]


@pytest.mark.unit
def test_an_image_query_with_a_corpus_figure_returns_that_figure_first(searcher, corpus, client):
    outputs, hostile = corpus
    pairs = pq.read_table(hostile, columns=["pair_id", "image_key", "caption", "pmcid", "license", "year",
                                            "split", "fig_id"]).to_pylist()
    for pair in pairs[:: len(pairs) // 8]:
        image = decode((outputs.images / pair["image_key"]).read_bytes())
        first = searcher.search(image=image, k=5)[0]
        assert first.image_key == pair["image_key"] and first.score > 0.999, (pair["pair_id"], first)
        if first.id == pair["pair_id"]:  # the metadata is the pair's own
            assert (first.pmcid, first.caption, first.license, first.year, first.split, first.figure) == (
                pair["pmcid"], pair["caption"], pair["license"], pair["year"], pair["split"], pair["fig_id"])
            assert first.url == f"https://pmc.ncbi.nlm.nih.gov/articles/{pair['pmcid']}/"
    pair = pairs[3]
    data = (outputs.images / pair["image_key"]).read_bytes()
    answer = client.post("/api/search", files={"image": ("figure.jpg", data, "image/jpeg")}, data={"k": "3"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["results"][0]["image_key"] == pair["image_key"] and body["query"]["image"]
    assert body["results"][0]["thumbnail"] == f"/thumb/{pair['image_key']}"
    assert body["model"]["sha256"] == searcher.model_sha256
    raw = client.post("/api/search?k=1", content=data, headers={"content-type": "image/jpeg"})
    assert raw.json()["results"][0]["image_key"] == pair["image_key"]


@pytest.mark.unit
def test_filters_restrict_the_results(searcher):
    filters = parse_filters(["year >= 2020", "license in (CC BY, CC0)", "type = radiology"])
    results = searcher.search("chest radiograph", k=50, filters=filters)
    assert results and all(r.year >= 2020 and r.license in ("CC BY", "CC0") and r.type == "radiology"
                           for r in results)
    allowed = int(((searcher.facets.year >= 2020) & np.isin(searcher.facets.license, [1, 0])
                   & np.isin(searcher.facets.type, [i for i, (c, _) in enumerate(searcher.classes)
                                                    if c.startswith("DR")])).sum())
    assert len(results) == min(50, allowed)
    assert [r.rank for r in results] == list(range(1, len(results) + 1))
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert searcher.search("anything", k=5, filters=parse_filters(["year < 1900"])) == []


@pytest.mark.unit
def test_terminal_output(searcher):
    from biomedclip.search.terminal import results_json, results_text

    results = searcher.search("chest radiograph", k=3)
    text = results_text(results)
    assert text.splitlines()[0].startswith(f"  1. {results[0].score:.3f}  {results[0].pmcid}")
    assert all(r.url in text for r in results)
    rows = json.loads(results_json(results))
    assert [r["id"] for r in rows] == [r.id for r in results] and {"score", "pmcid", "caption", "url"} <= set(rows[0])
    assert results_text([]) == "no figure matches (try fewer filters)"


@pytest.mark.unit
def test_a_search_never_answers_from_another_models_index(built, corpus, model, tiny_world, tmp_path):
    params, _, _ = built
    other = str(tiny_world.random_model)
    with pytest.raises(IndexModelMismatch) as caught:
        Searcher.open(params.out, other)
    assert other in str(caught.value) and "Re-embed and re-index" in str(caught.value)
    outputs, _ = corpus
    fresh = IndexParams(out=tmp_path / "index", metrics=tmp_path / "index.json", recall_queries=50)
    result = refresh_index(EmbedParams(out=tmp_path / "embeddings", batch_size=32, chunk_rows=128), fresh,
                           model=other, pairs=outputs.pairs, panels=None, images=outputs.images,
                           figure_types=None)
    assert result["embed"]["model_sha256"] == load_model(other).digest != load_model(model).digest
    assert json.loads((tmp_path / "embeddings" / "summary.json").read_text())["rows"] == result["embed"]["rows"]
    assert Searcher.open(fresh.out).search("x-ray", k=1)  # answers for the model it names
    with pytest.raises(IndexModelMismatch):
        Searcher.open(fresh.out, model)
    response = create_app_for(fresh.out, model).get("/api/search", params={"q": "x-ray"})
    assert response.status_code == 503 and "Re-embed and re-index" in response.json()["error"]


def create_app_for(folder, model):
    from starlette.testclient import TestClient

    return TestClient(create_app(SearchService(folder, model), serve=ServeParams(), checks=ImageParams(),
                                 images=None))


@pytest.mark.unit
def test_hostile_captions_show_as_text(client, corpus):
    outputs, hostile = corpus
    key = pq.read_table(hostile, columns=["image_key"]).column("image_key")[0].as_py()
    page = client.post("/", files={"image": ("f.jpg", (outputs.images / key).read_bytes(), "image/jpeg")},
                       data={"q": "", "k": "10"})
    assert page.status_code == 200
    text = page.text
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt; Chest radiograph" in text
    assert "<script" not in text.lower() and "<img src=x" not in text.lower()
    assert "script-src" not in page.headers["content-security-policy"] and \
        "default-src 'none'" in page.headers["content-security-policy"]  # so no script may run at all
    second = client.get("/", params={"q": HOSTILE[1]})
    assert second.status_code == 200 and "onerror=" not in second.text.replace("onerror=&quot;", "")
    assert 'value="&lt;img src=x onerror=&quot;' in second.text  # the query echoed back, escaped


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.unit
@pytest.mark.parametrize(("request_args", "status", "names"), [
    ({"params": {"q": "x", "k": "0"}}, 400, "k: 0 is outside 1..100"),
    ({"params": {"q": "x", "k": "ten"}}, 400, "k: 'ten' is not a whole number"),
    ({"params": {"q": "x" * 1001}}, 400, "q: 1,001 characters, at most 1,000"),
    ({"params": {"q": "x", "filter": "yaer >= 2020"}}, 400, "unknown field 'yaer'"),
    ({"params": {"q": "x", "filter": "type = bananas"}}, 400, "unknown figure type 'bananas'"),
    ({"params": {}}, 400, "give a query text, an image, or both"),
    ({"files": {"image": ("a.jpg", b"GIF89a not really", "image/jpeg")}}, 415, "image_unreadable"),
    ({"files": {"image": ("bomb.png", _png((10_000, 6_000)), "image/png")}}, 413, "60,000,000 pixels > 50,000,000"),
    ({"files": {"image": ("tiny.png", _png((8, 8)), "image/png")}}, 400, "image_too_small"),
    ({"files": {"image": ("big.bin", b"\xff" * (2 << 20), "image/jpeg")}}, 413, "larger than the 1 MiB allowed"),
    ({"content": b"<svg xmlns='http://www.w3.org/2000/svg'/>", "headers": {"content-type": "image/svg+xml"}}, 415,
     "image_unreadable"),
])
def test_bad_input_is_a_4xx_naming_it(client, request_args, status, names):
    method = "post" if ("files" in request_args or "content" in request_args) else "get"
    response = getattr(client, method)("/api/search", **request_args)
    assert response.status_code == status, response.text
    assert names in response.json()["error"]
    page = getattr(client, method)("/", **request_args)
    if method == "post" or request_args["params"]:
        assert page.status_code == status and html.escape(names) in page.text


@pytest.mark.unit
@given(q=st.text(max_size=80), k=st.text(max_size=6), filters=st.lists(st.text(max_size=30), max_size=3))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_query_is_a_server_error(client, q, k, filters):
    response = client.get("/api/search", params={"q": q, "k": k, "filter": filters})
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.unit
def test_thumbnails_only_by_content_address(client, corpus):
    outputs, _ = corpus
    key = next(outputs.images.rglob("*.jpg")).relative_to(outputs.images).as_posix()
    image = client.get(f"/thumb/{key}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    for bad in ("../pairs.parquet", "..%2Fpairs.parquet", "ab/" + "0" * 64 + ".jpg", "x.jpg"):
        assert client.get(f"/thumb/{bad}").status_code == 404


@pytest.mark.unit
def test_the_model_reports_retrieval_pictures(tiny_world, model, tmp_path):
    loaded = load_model(model)
    test_split = tiny_world.shards.outputs.shards / "test"
    shown = retrieval_examples(loaded, shard_samples(test_split), tmp_path / "examples", pool=64, queries=3,
                               model="data/train/final")
    page = (tmp_path / "examples" / "index.html").read_text()
    assert "<script" not in page and "http" not in page  # offline: nothing fetched
    assert page.count("✓ true figure") == sum(e["true_rank"] <= 5 for e in shown["text_to_image"])
    assert page.count("✓ true caption") == sum(e["true_rank"] <= 5 for e in shown["image_to_text"])
    pictures = {p.name for p in (tmp_path / "examples").glob("*.jpg")}
    assert all(f'src="{name}"' in page for name in pictures) and len(pictures) >= 5
    again = retrieval_examples(loaded, shard_samples(test_split), tmp_path / "again", pool=64, queries=3,
                               model="data/train/final")
    assert again == shown and (tmp_path / "again" / "index.html").read_bytes() == page.encode()


# -- the page in a real browser ---------------------------------------------------------------------
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run")
SERVER = """
import sys
from pathlib import Path
from biomedclip.ingest.params import ImageParams
from biomedclip.search.params import ServeParams
from biomedclip.search.serve import SearchService, create_app, serve_forever
folder, images, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
serve_forever(create_app(SearchService(folder), serve=ServeParams(), checks=ImageParams(), images=images),
              host="127.0.0.1", port=port)
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium, installed here when missing and this process may (root with apt-get)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        done = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                              timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed: {done.stderr[-300:]}")
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium) and cannot be installed here")
    return found


class DevTools:
    """A headless Chromium with a fresh profile, driven over the DevTools protocol (one page)."""

    def __init__(self, binary: str, profile: Path) -> None:
        from websockets.sync.client import connect

        self.process = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                         "--remote-debugging-port=0", "--window-size=1280,1000", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while not (profile / "DevToolsActivePort").is_file() or not (profile / "DevToolsActivePort").read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)
        port = int((profile / "DevToolsActivePort").read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.loads(response.read()) if t["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=64 << 20, open_timeout=30)
        self.sent, self.events = 0, []

    def call(self, method: str, **params) -> dict:
        self.sent += 1
        self.socket.send(json.dumps({"id": self.sent, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.sent:
                assert "error" not in message, (method, message["error"])
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(m.get("method") == event for m in self.events):
            assert time.monotonic() < deadline, f"no {event} in {timeout} s"
            self.events.append(json.loads(self.socket.recv(timeout=timeout)))
        self.events = [m for m in self.events if m.get("method") != event]

    def select(self, selector: str) -> list[int]:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        return self.call("DOM.querySelectorAll", nodeId=root, selector=selector)["nodeIds"]

    def close(self) -> None:
        self.socket.close()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(built, corpus):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(built[0].out), str(corpus[0].images), str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_served(url + "/", process, "search serve")
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    process.stderr.close()


@pytest.mark.integration
def test_the_page_in_a_real_browser(chromium, server, corpus, tmp_path):
    outputs, hostile = corpus
    browser = DevTools(chromium, tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=server + "/")
        browser.wait_for("Page.loadEventFired")
        assert not browser.select("li.result")
        browser.call("DOM.focus", nodeId=browser.select("input[name=q]")[0])
        browser.call("Input.insertText", text="chest radiograph")
        for kind in ("keyDown", "keyUp"):
            browser.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                         **({"text": "\r"} if kind == "keyDown" else {}))
        browser.wait_for("Page.loadEventFired")
        results = browser.select("li.result")
        assert len(results) == 10, "the search's results did not appear"
        first = browser.call("DOM.getOuterHTML", nodeId=results[0])["outerHTML"]
        assert 'src="/thumb/' in first and "pmc.ncbi.nlm.nih.gov/articles/PMC" in first
        (tmp_path / "search.png").write_bytes(base64.b64decode(browser.call("Page.captureScreenshot")["data"]))
        # An upload: the hostile figure's own image finds it, and its caption is characters on the page.
        key = pq.read_table(hostile, columns=["image_key"]).column("image_key")[0].as_py()
        browser.call("DOM.setFileInputFiles", files=[str(outputs.images / key)],
                     nodeId=browser.select("input[name=image]")[0])
        browser.call("DOM.focus", nodeId=browser.select("button[type=submit]")[0])
        for kind in ("keyDown", "keyUp"):
            browser.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                         **({"text": "\r"} if kind == "keyDown" else {}))
        browser.wait_for("Page.loadEventFired")
        caption = browser.call("DOM.getOuterHTML", nodeId=browser.select("li.result .caption")[0])["outerHTML"]
        assert "&lt;script&gt;document.title='pwned'&lt;/script&gt; Chest radiograph" in caption
        title = browser.call("Runtime.evaluate", expression="document.title", returnByValue=True)
        assert title["result"]["value"] == "BiomedCLIP figure search"  # the caption's script never ran
        (tmp_path / "upload.png").write_bytes(base64.b64decode(browser.call("Page.captureScreenshot")["data"]))
    finally:
        browser.close()


@pytest.mark.integration
def test_a_promotion_refreshes_the_index_for_the_new_champion(tiny_world, corpus, prefect_api, tmp_path):
    """`biomedclip schedule` serves `index/refresh`; `biomedclip promote` (PREFECT_API_URL set)
    emits `biomedclip.model.promoted`; the deployment's trigger runs the embed and index stages for
    the version the event names, and the index then answers for that version's weights."""
    import os
    import signal
    import subprocess
    import time

    import mlflow

    from biomedclip.register.params import RegisterParams
    from biomedclip.register.registry import register

    from .conftest import BIN, prefect_request

    outputs = corpus[0]
    name = "refreshed"
    info = tiny_world.trained
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        register(RegisterParams(model_name=name, decision_log=tmp_path / "decisions.jsonl"), tiny_world.tracking,
                 train_info=info, lineage={"biomedclip.lineage.key": "refresh-test"})
    params = {
        "ingest": {"outputs": {**{k: str(getattr(outputs, k)) for k in ("pairs", "rejects", "images", "panels",
                                                                         "report", "panel_examples", "state")}},
                   "panels": {"enabled": True}},
        "shard": {"outputs": {k: str(v) for k, v in tiny_world.shards.outputs.model_dump().items()}},
        "evaluate": {"benchmarks": [], "linear_probe": {"enabled": False}, "cache": str(tmp_path / "evaluations"),
                     "outputs": {"metrics": str(tmp_path / "eval.json"), "plots": str(tmp_path / "plots"),
                                 "report": str(tmp_path / "report.md")}},
        "register": {"model_name": name, "decision_log": str(tmp_path / "decisions.jsonl"),
                     "output": str(tmp_path / "register.json"),
                     "gate": {"guards": ["retrieval/text_to_image/recall_at_10"]}},
        "embed": {"model": "@champion", "chunk_rows": 128, "out": str(tmp_path / "embeddings")},
        "index": {"out": str(tmp_path / "index"), "metrics": str(tmp_path / "index.json"), "recall_queries": 100,
                  "figure_types": False},
        "tracking": {"uri": tiny_world.tracking.uri, "experiment": "session", "system_metrics": False},
        "pipeline": {"flow_runs": str(tmp_path / "flow-runs"), "locks": str(tmp_path / "locks")},
    }
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(params))
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (tmp_path / "schedule.log").open("w")  # a file: a full pipe would stall the server
    serving = subprocess.Popen([str(BIN / "biomedclip"), "--params", str(params_file), "schedule"], cwd=tmp_path,
                               env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    said = lambda: (tmp_path / "schedule.log").read_text()[-3000:]  # noqa: E731
    try:
        deadline = time.monotonic() + 180
        while not [d for d in prefect_request(prefect_api, "POST", "/deployments/filter", limit=50)
                   if d["name"] == "refresh"]:
            assert serving.poll() is None, said()
            assert time.monotonic() < deadline, "index/refresh was not served within 180 s"
            time.sleep(2)
        promoted = subprocess.run([str(BIN / "biomedclip"), "--params", str(params_file), "promote"], cwd=tmp_path,
                                  env=env, capture_output=True, text=True, timeout=600)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert "announced to" in promoted.stdout
        manifest = tmp_path / "index" / "index.json"
        deadline = time.monotonic() + 600
        while not manifest.is_file():
            assert serving.poll() is None, said()
            assert time.monotonic() < deadline, f"the refresh did not build the index within 600 s:\n{said()}"
            time.sleep(3)
    finally:
        os.killpg(serving.pid, signal.SIGINT)
        try:
            serving.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serving.pid, signal.SIGKILL)
        log.close()
    built = json.loads(manifest.read_text())
    champion = mlflow.MlflowClient(tiny_world.tracking.uri).get_model_version_by_alias(name, "champion")
    assert built["model"]["source"] == f"models:/{name}/{champion.version}"
    assert built["model"]["sha256"] == info["model_sha256"]
    record = json.loads((tmp_path / "flow-runs" / "index.json").read_text())
    assert record["flow_run"]["flow"] == "index"  # the refresh's flow run made the index
    assert Searcher.open(tmp_path / "index", tracking=tiny_world.tracking).search("chest radiograph", k=3)
