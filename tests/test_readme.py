"""The README is a contract: its commands do what it says.

Every command of the README's `bash` blocks is either run here, in the workspace test_pipeline
left (a fresh clone after `dvc repro`: a trained, evaluated, registered model), or named in
`NOT_RUN` with why (and where else it is tested). A command added to the README without either
fails `test_every_readme_command_is_run_here_or_says_why_not`; a README change that breaks a
documented command fails the e2e tests below. Beside the blocks, the commands the prose promises:
`inspect`, the pyfunc snippet from another folder, `mlflow models serve` with the request the
README shows, `dvc metrics show`, `dvc plots show`, and a missing model, version or alias named in
one line. Microsoft's checkpoint stands in as a Hugging Face cache laid out as `hf download` writes
it (random weights, the real PubMedBERT vocabulary: tests/published.py), since no hub is reachable.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BIN, REPO, SHARED_FIXTURES, ask_model_server, free_port, wait_until_served
from .published import BIOMEDCLIP, PUBMEDBERT, hf_home, published_checkpoint

README = REPO / "README.md"
MS = f"hf-hub:{BIOMEDCLIP}"

# Commands of the README's bash blocks that are not run here, and why.
NOT_RUN = {
    "make run": "CI's and test_pipeline's: its stages run there, in a fresh clone",
    "make test": "what CI runs",
    "biomedclip demo-data --articles 1200": "writes a corpus twice the demo's (minutes); a growing corpus is "
                                            "test_demo_corpus's",
    'dvc add data/raw && git add data.dvc && git commit -m "data: 1,200 articles"': "records that larger corpus",
    "biomedclip ingest --source s3://pmc-oa-opendata --unsigned --listing inventory --limit 1000":
        "PMC's public bucket, out of reach here: test_ingest_s3 runs the same code on a real S3 endpoint",
    "biomedclip ingest --source /mnt/pmc-ftp --layout legacy": "an FTP mirror: test_ingest_demo reads the legacy "
                                                               "layout `demo-data --legacy-out` writes",
    "HF_HOME=~/hf hf download microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224":
        "the Hugging Face hub, out of reach here: the cache it writes is laid out by tests/published.py",
    "HF_HOME=~/hf hf download microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract config.json vocab.txt":
        "the Hugging Face hub, as above",
    "biomedclip schedule": "serves until interrupted: test_retrain serves the deployment and triggers it",
    'biomedclip schedule --cron "0 2 * * *" --timezone Europe/London': "as above",
    "prefect deployment ls": "needs a served deployment: test_retrain",
    "prefect deployment schedule ls retrain/weekly": "as above",
    "prefect deployment schedule pause retrain/weekly <id>": "as above",
    "prefect deployment run retrain/weekly": "as above",
    "prefect flow-run ls --flow-name retrain": "as above",
    "python infra/local/launch.py up": "the production topology: test_infra_topology runs this sequence",
    ". .infra-local/pipeline.env": "as above",
    'dvc remote add -d store s3://biomedclip-data/dvc && dvc remote modify store endpointurl "$AWS_ENDPOINT_URL"':
        "as above",
    "dvc repro && dvc push": "as above",
    "python infra/local/launch.py down": "as above",
    "biomedclip vqa": "the vqa stage for every benchmark: `dvc repro` ran the same entry in this workspace "
                      "(test_pipeline checks metrics/vqa.json); the command's own path runs below with --benchmark",
}
# The README's commands this module runs, in the order it runs them (not the README's: the
# evaluation of Microsoft's model rewrites the evaluate stage's outputs, so the retrain, which
# expects a workspace with nothing new, and the verification of our champion come first), and
# the exit codes each may end with.
RUN = {
    "dvc push": (0,),
    "biomedclip retrain": (0,),
    "biomedclip ingest --source /mnt/pmc-mirror": (0,),
    "biomedclip promote": (0, 3),  # 3: the gate said no, as documented
    'biomedclip promote --version 7 --force --reason "hotfix approved by J.D."': (1,),  # no version 7 here
    'biomedclip rollback --reason "regression in RSNA"': (0, 1),  # 1 when there is no earlier champion
    "biomedclip lineage models:/biomedclip@champion": (0,),
    "biomedclip lineage @champion --verify": (0,),
    "export HF_HOME=~/hf HF_HUB_OFFLINE=1": (0,),
    "MS=hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224": (0,),
    "biomedclip evaluate --model $MS": (0,),
    "biomedclip register --model $MS --alias baseline": (0,),
    "biomedclip lineage models:/biomedclip@baseline --verify": (0,),
    "biomedclip compare @champion @baseline": (0,),
    "biomedclip export data/train/final /tmp/my-biomedclip": (0,),
    "biomedclip export models:/biomedclip@champion out --hub-id org/my-biomedclip": (0,),
    "biomedclip embed --model @champion my-figures/ my-figures.parquet": (0,),
    'biomedclip search "pneumothorax on a chest radiograph" -k 10 --filter "year >= 2020" --filter "type = radiology"':
        (0,),
    "biomedclip search --image figure.png --json": (0,),
    "biomedclip search serve": (0,),  # started in the background; the two requests below go to it
    "curl 'http://127.0.0.1:8765/api/search?q=chest+x-ray&k=5'": (0,),
    "curl -F image=@figure.png -F k=5 http://127.0.0.1:8765/api/search": (0,),
    "biomedclip vqa --benchmark slake --model @champion": (0,),
    'biomedclip vqa ask scan.png "Is there a pleural effusion?" --benchmark slake': (0,),
}


def readme_commands() -> list[str]:
    """Every command line of the README's ```bash blocks, comments and blank lines left out."""
    commands, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside:
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def readme_python(marker: str) -> str:
    """The README's ```python block that contains `marker`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return next(block for block in blocks if marker in block)


@pytest.mark.unit
def test_every_readme_command_is_run_here_or_says_why_not():
    commands = readme_commands()
    unclassified = [c for c in commands if c not in RUN and c not in NOT_RUN]
    assert unclassified == [], "README commands neither run by tests/test_readme.py nor named in NOT_RUN with why"
    stale = [c for c in (*RUN, *NOT_RUN) if c not in commands]
    assert stale == [], "commands the README no longer has"


# --- the commands, in the workspace test_pipeline left -------------------------------------------


@pytest.fixture(scope="module")
def readme(pipeline_workspace, tmp_path_factory):
    """The workspace after `dvc repro` (run here when test_pipeline did not run first), the
    published checkpoint in a Hugging Face cache, and a runner of README commands."""
    if not PUBMEDBERT.is_dir():
        pytest.skip(f"{PUBMEDBERT} is absent: the published checkpoint's vocabulary comes from the shared fixtures")
    project = pipeline_workspace
    if not (project.project / "metrics" / "register.json").is_file():
        project("biomedclip", "demo-data", "--no-benchmark")
        project("dvc", "repro")
    root = tmp_path_factory.mktemp("readme")
    checkpoint, bert = published_checkpoint(root / "published", PUBMEDBERT, size="small")
    home = hf_home(root / "hf", checkpoint, bert, PUBMEDBERT)
    return Readme(project.project, project.env(), home, root)


class Readme:
    """Runs a README command as a user types it, with the README's placeholders bound here."""

    def __init__(self, project: Path, env: dict[str, str], hf: Path, scratch: Path) -> None:
        self.project, self.scratch = project, scratch
        self.env = {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
        self.env.pop("PREFECT_HOME", None)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "HF_HUB_CACHE"):
            self.env.pop(name, None)
        self.hf = hf
        self.places = {"$MS": MS, "/tmp/my-biomedclip": str(scratch / "my-biomedclip"),
                       "out": str(scratch / "out"), "~/hf": str(hf), "my-figures/": str(scratch / "my-figures"),
                       "my-figures.parquet": str(scratch / "my-figures.parquet"),
                       "figure.png": str(scratch / "figure.png"),
                       "image=@figure.png": f"image=@{scratch / 'figure.png'}",
                       "scan.png": str(scratch / "scan.png")}
        self.port = 8765

    def argv(self, command: str) -> list[str]:
        words = [self.places.get(word, word) for word in shlex.split(command)]
        return [w.replace("127.0.0.1:8765", f"127.0.0.1:{self.port}") for w in words]

    def __call__(self, command: str | list[str], *, codes: tuple[int, ...] = (0,), cwd: Path | None = None,
                 timeout: int = 600) -> subprocess.CompletedProcess:
        argv = self.argv(command) if isinstance(command, str) else command
        result = subprocess.run(argv, cwd=cwd or self.project, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        said = (result.stdout + result.stderr)[-4000:]
        assert result.returncode in codes, f"{command!r} exited {result.returncode}:\n{said}"
        assert "Traceback" not in result.stderr, f"{command!r} printed a traceback:\n{said}"
        return result


@pytest.mark.e2e
def test_the_readme_commands_do_what_the_readme_says(readme):
    out = readme("dvc push")
    assert readme("biomedclip retrain").stdout.startswith("retrain ")  # nothing new: it says so, ends there

    # `biomedclip ingest --source /mnt/pmc-mirror`: the demo corpus is such a mirror; a params copy
    # keeps the workspace's own outputs (and the stage's record) as they are.
    mirror = readme.scratch / "mirror.yaml"
    params = json.loads(json.dumps(_yaml(readme.project / "params.yaml")))
    params["ingest"]["outputs"] = {k: str(readme.scratch / "mirror" / Path(v).name)
                                   for k, v in params["ingest"]["outputs"].items()}
    mirror.write_text(json.dumps(params))
    out = readme(["biomedclip", "--params", str(mirror), "ingest", "--source", "data/raw", "--limit", "20"])
    assert "pairs" in out.stdout and (readme.scratch / "mirror" / "pairs.parquet").is_file()

    out = readme("biomedclip promote", codes=RUN["biomedclip promote"])
    assert re.search(r"biomedclip version \d+: (promoted|not promoted)", out.stdout)
    missing = readme('biomedclip promote --version 7 --force --reason "hotfix approved by J.D."', codes=(1,))
    assert re.search(r"error: models:/biomedclip/7: biomedclip has no version 7 \(versions: [\d, -]+; aliases: ",
                     missing.stderr) and missing.stderr.count("\n") == 1
    versions, champion = _registered(readme.project)
    other = next(v for v in versions if v != champion)
    forced = readme(["biomedclip", "promote", "--version", str(other), "--force", "--reason", "hotfix"])
    assert re.search(rf"version {other}: (promoted by force \(reason: hotfix\); the gate said no|promoted) — ",
                     forced.stdout), forced.stdout
    back = readme('biomedclip rollback --reason "regression in RSNA"', codes=(0, 1))
    assert "champion is version" in back.stdout or "no previous champion" in back.stderr
    chain = readme("biomedclip lineage models:/biomedclip@champion").stdout
    for line in ("git commit", "data version", "Prefect flow runs", "promotion history"):
        assert line in chain
    assert not any(len(line) > 0 and re.fullmatch(r"[0-9a-f]{1,63}", line.strip()) for line in chain.splitlines()), \
        "a hash wrapped mid-line"
    assert "verified" in readme("biomedclip lineage @champion --verify").stdout

    readme.env.update(HF_HOME=str(readme.hf), HF_HUB_OFFLINE="1")  # `export HF_HOME=~/hf HF_HUB_OFFLINE=1`
    evaluated = readme("biomedclip evaluate --model $MS")
    assert f"Evaluation of {MS}" in evaluated.stdout.replace("`", "")  # the report, rendered or not
    registered = readme("biomedclip register --model $MS --alias baseline")
    assert "(alias baseline) from hf-hub:" in registered.stdout
    assert "verified" in readme("biomedclip lineage models:/biomedclip@baseline --verify").stdout
    compared = readme("biomedclip compare @champion @baseline")
    assert "evaluated before on the same data: reused" in compared.stderr  # the baseline: just evaluated
    assert (readme.project / "reports" / "compare" / "compare.md").is_file()

    readme("biomedclip export data/train/final /tmp/my-biomedclip")
    exported = readme.scratch / "my-biomedclip"
    elsewhere = readme.scratch / "elsewhere"
    elsewhere.mkdir()
    loaded = readme([sys.executable, "-c", OPEN_CLIP.format(folder=exported)], cwd=elsewhere)
    assert json.loads(loaded.stdout.strip().splitlines()[-1])["dims"] == [1, 2]
    readme("biomedclip export models:/biomedclip@champion out --hub-id org/my-biomedclip")
    spec = json.loads((readme.scratch / "out" / "open_clip_config.json").read_text())
    assert spec["model_cfg"]["text_cfg"]["hf_model_name"] == "org/my-biomedclip"


@pytest.mark.e2e
def test_the_search_section_does_what_it_says(readme):
    """Embed a team's own images, search the corpus's index by text with filters and by image,
    serve the page, and ask the JSON API as the README's two requests do."""
    from PIL import Image

    figures = sorted((readme.project / "data" / "ingest" / "images").rglob("*.jpg"))[:6]
    (readme.scratch / "my-figures").mkdir()
    for figure in figures:
        (readme.scratch / "my-figures" / figure.name).write_bytes(figure.read_bytes())
    with Image.open(figures[0]) as picture:
        picture.save(readme.scratch / "figure.png")
    readme("biomedclip embed --model @champion my-figures/ my-figures.parquet")
    import pyarrow.parquet as pq

    embedded = pq.read_table(readme.scratch / "my-figures.parquet")
    assert embedded.num_rows == 6 and {"id", "kind", "image_embedding", "text_embedding"} <= set(embedded.column_names)

    found = readme('biomedclip search "pneumothorax on a chest radiograph" -k 10 --filter "year >= 2020" '
                   '--filter "type = radiology"').stdout
    assert "PMC" in found or "no figure" in found.lower()
    alike = json.loads(readme("biomedclip search --image figure.png --json").stdout)
    assert alike and alike[0]["score"] > 0.99  # the corpus's own figure comes back first
    assert {"id", "pmcid", "caption", "score"} <= alike[0].keys()

    readme.port = free_port()
    server = subprocess.Popen([*readme.argv("biomedclip search serve"), "--port", str(readme.port)],
                              cwd=readme.project, env=readme.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        wait_until_served(f"http://127.0.0.1:{readme.port}/", server, "the search page")
        by_text = json.loads(readme("curl 'http://127.0.0.1:8765/api/search?q=chest+x-ray&k=5'").stdout)
        by_image = json.loads(readme("curl -F image=@figure.png -F k=5 http://127.0.0.1:8765/api/search").stdout)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert len(by_text["results"]) == 5 and by_image["results"][0]["score"] > 0.99


@pytest.mark.e2e
def test_the_vqa_section_does_what_it_says(readme):
    """One benchmark's answer model trained on the champion's encoders, then asked about one of
    the benchmark's images: answers from the training vocabulary, most probable first."""
    from PIL import Image

    trained = readme("biomedclip vqa --benchmark slake --model @champion")
    assert "slake" in trained.stdout
    vocabulary = json.loads((readme.project / "data" / "vqa" / "slake" / "vocabulary.json").read_text())["answers"]
    image = sorted((readme.project / "data" / "benchmarks" / "vqa" / "slake" / "imgs").rglob("source.jpg"))[0]
    with Image.open(image) as picture:
        picture.save(readme.scratch / "scan.png")
    asked = readme('biomedclip vqa ask scan.png "Is there a pleural effusion?" --benchmark slake')
    assert "Is there a pleural effusion?" in asked.stdout
    answers = json.loads(readme([*readme.argv('biomedclip vqa ask scan.png "Is there a pleural effusion?" '
                                              "--benchmark slake"), "--json", "--top-k", "3"]).stdout)
    assert len(answers) == 3 and all(a["answer"] in vocabulary for a in answers)
    assert [a["probability"] for a in answers] == sorted((a["probability"] for a in answers), reverse=True)


OPEN_CLIP = """
import json, open_clip, torch
model, preprocess = open_clip.create_model_from_pretrained("local-dir:{folder}")
tokenizer = open_clip.get_tokenizer("local-dir:{folder}")
with torch.no_grad():
    text = model.encode_text(tokenizer(["chest X-ray", "bar chart"]), normalize=True)
print(json.dumps({{"dims": [1, len(text)]}}))
"""


@pytest.mark.e2e
def test_what_the_prose_promises(readme):
    """inspect, the pyfunc snippet from another folder, `mlflow models serve` with the README's
    request, `dvc metrics show` (one readable row: the headline numbers), `dvc plots show`."""
    articles = sorted((SHARED_FIXTURES / "pmc").glob("*.xml")) if SHARED_FIXTURES.is_dir() else []
    article = articles[0] if articles else next((readme.project / "data" / "raw").rglob("PMC*.xml"))
    shown = json.loads(readme(["biomedclip", "inspect", str(article), "--json"]).stdout)
    assert {"pmcid", "pmid", "license", "figures"} <= shown.keys()

    snippet = readme_python("mlflow.pyfunc.load_model")
    figure = next((readme.project / "data" / "ingest" / "images").rglob("*.jpg"))
    snippet = snippet.replace("/abs/path/to/project/mlflow.db", str(readme.project / "mlflow.db"))
    snippet = snippet.replace('"figure.jpg"', repr(str(figure)))
    snippet += "\nimport json; print(json.dumps({'columns': list(out.columns), 'label': out['label'][0]}))\n"
    elsewhere = readme.scratch / "pyfunc"
    elsewhere.mkdir()
    ran = json.loads(readme([sys.executable, "-c", snippet], cwd=elsewhere).stdout.strip().splitlines()[-1])
    assert ran["columns"] == ["image_embedding", "text_embedding", "probabilities", "label"]
    assert ran["label"] in ("chest X-ray", "H&E histology")

    answer = ask_model_server("models:/biomedclip@champion", f"sqlite:///{readme.project / 'mlflow.db'}",
                              readme.project, [{"text": "chest X-ray"}], env=readme.env)
    assert len(answer["predictions"][0]["text_embedding"]) > 0

    metrics = readme(["dvc", "metrics", "show"]).stdout
    header = metrics.splitlines()[0]
    assert "i2t R@10" in header and len(header) <= 220, header  # one row a person reads, not 200 columns
    readme(["dvc", "plots", "show"])
    assert (readme.project / "dvc_plots" / "index.html").is_file()


@pytest.mark.e2e
@pytest.mark.parametrize(("args", "names"), [
    (["promote", "--version", "999"], "models:/biomedclip/999: biomedclip has no version 999"),
    (["evaluate", "--model", "models:/biomedclip/999"], "biomedclip has no version 999"),
    (["export", "models:/biomedclip@nosuch", "DIR"], "biomedclip has no alias 'nosuch'"),
    (["compare", "@champion", "999"], "biomedclip has no version 999"),
    (["evaluate", "--model", "models:/nosuchmodel@champion"], "has no registered model 'nosuchmodel' (registered "
                                                              "models: biomedclip)"),
], ids=["promote", "evaluate-version", "export-alias", "compare", "evaluate-model"])
def test_a_missing_model_version_or_alias_is_one_line_naming_what_exists(readme, args, names):
    failed = readme(["biomedclip", *args], codes=(1,))
    assert names in failed.stderr, failed.stderr
    assert "versions:" in failed.stderr or "registered models:" in failed.stderr  # what does exist
    assert failed.stderr.strip().count("\n") == 0, failed.stderr


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _registered(project: Path) -> tuple[list[int], int | None]:
    """The workspace's versions of `biomedclip`, and its champion."""
    import mlflow

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    aliases = client.get_registered_model("biomedclip").aliases
    versions = sorted(int(v.version) for v in client.search_model_versions("name='biomedclip'"))
    return versions, int(aliases["champion"]) if "champion" in aliases else None
