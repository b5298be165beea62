"""Pages that open without a network (issue 31, item 6): the validation gate's Data Docs and
`dvc plots show`'s page load every script, style, font and image from local copies, and render
their content in a real browser (headless Chromium, tests/browser.py) that can reach nothing off
this machine. Before, the Data Docs opened as an empty, unstyled page there (their tables are drawn
by bootstrap-table from a CDN) and the plots page drew nothing (vega from a CDN)."""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from biomedclip.ingest.assemble import PAIRS_SCHEMA
from biomedclip.ingest.params import IngestOutputs, IngestParams
from biomedclip.offline_pages import (
    ASSETS,
    SITE_FILES,
    VEGA,
    VEGA_EMBED,
    VEGA_LITE,
    VENDOR,
    dvc_plots_template,
    external_loads,
    localize_site,
)
from biomedclip.validate.gate import ValidationFailed, validate_manifest

from .browser import Browser, chromium_binary
from .conftest import REPO, clone_project, sh
from .test_validate import gate_params

GX_VIEW = Path(__import__("great_expectations").__file__).parent / "render" / "view"
ONLY_LOCAL = ("file:", "data:", "blob:", "about:")


@pytest.fixture(scope="module")
def data_docs(tmp_path_factory) -> Path:
    """The gate's Data Docs of a small manifest (20 articles, 40 pairs, one caption missing: the
    pairs suite fails and its page shows the unexpected row), moved to another folder after they
    were written (a copied report must still open)."""
    root = tmp_path_factory.mktemp("data-docs")
    splits = ["train"] * 17 + ["val"] + ["test"] * 2  # the default fractions, 0.85 / 0.05 / 0.10
    rows = []
    for a, split in enumerate(splits):
        pmcid = f"PMC{100 + a}"
        for f in range(2):
            caption = (f"Chest radiograph {a}.{f}: consolidation of the right lower lobe with a "
                       "small effusion.")
            rows.append({
                "pair_id": f"{pmcid}_F{f}", "pmcid": pmcid, "pmid": str(a), "version": 1,
                "fig_id": f"F{f}", "label": f"Figure {f + 1}",
                "caption": None if (a, f) == (3, 1) else caption, "panels": 1,
                "image_key": f"{pmcid}/F{f}.jpg", "image_sha256": f"{a * 2 + f:064x}",
                "width": 320, "height": 240, "phash": a * 2 + f, "license": "CC BY",
                "split": split, "source_uri": f"{pmcid}.1/F{f}.jpg", "year": 2020,
                "source_format": "JPEG", "source_mode": "RGB", "source_width": 640,
                "source_height": 480})
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), root / "pairs.parquet")
    (root / "ingest.json").write_text(json.dumps({"reject_rate": 0.05}))
    ingest = IngestParams(source=str(root), outputs=IngestOutputs(
        pairs=root / "pairs.parquet", report=root / "ingest.json"))
    params = gate_params(root / "gate", min_pairs=10)
    with pytest.raises(ValidationFailed, match="not_null"):
        validate_manifest(ingest, params)
    moved = shutil.copytree(params.outputs.data_docs, root / "elsewhere" / "validation")
    shutil.rmtree(params.outputs.data_docs)
    return moved


def validation_page(site: Path, suite: str) -> Path:
    (page,) = site.glob(f"validations/{suite}/*/*/*.html")
    return page


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    with Browser(chromium_binary(), profile, offline=True) as chromium:
        yield chromium


def assert_only_local(browser: Browser) -> None:
    assert [url for url in browser.requests if not url.startswith(ONLY_LOCAL)] == []
    assert browser.failed == []


# --- without a browser -------------------------------------------------------------------------


@pytest.mark.unit
def test_data_docs_pages_load_nothing_from_the_network_and_every_local_file_is_there(data_docs):
    pages = sorted(data_docs.rglob("*.html"))
    assert len(pages) == 7  # the index, 3 suites, 3 validation results
    for page in pages:
        text = page.read_text()
        assert external_loads(text) == [], page
        assert "integrity=" not in text  # a hash check blocks a file:// script (it needs CORS)
        local = {ref for ref in re.findall(r"""(?:src|href)=["']([^"'#]+)""", text)
                 if not ref.startswith(("http:", "https:"))}
        local |= set(re.findall(r"""url\(['"]?([^'")]+)""", text)) - {"#mask-2"}
        missing = [ref for ref in local if not (page.parent / ref).resolve().is_file()]
        assert missing == [], f"{page.relative_to(data_docs)}: {missing}"
    # GX's CDN libraries are in the site, and GX's own copy of its logo stands for its S3 one.
    index = (data_docs / "index.html").read_text()
    assert 'src="static/vendor/bootstrap-table@1.19.1/dist/bootstrap-table.min.js"' in index
    assert 'src="static/images/logo-long.png"' in index
    assert "?d=" not in index  # the logo's time stamp and context id no longer leave the machine


@pytest.mark.unit
def test_a_url_with_no_vendored_copy_is_reported_not_dropped(tmp_path, caplog):
    page = tmp_path / "site" / "index.html"
    page.parent.mkdir()
    page.write_text('<html><head><script src="https://cdn.example.org/lib.js"></script>'
                    '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
                    '</head></html>')
    assert localize_site(page.parent) == ["https://cdn.example.org/lib.js"]
    assert "https://cdn.example.org/lib.js" in caplog.text
    text = page.read_text()
    assert 'src="static/vendor/jquery@3.7.1/dist/jquery.min.js"' in text
    assert (page.parent / "static/vendor/jquery@3.7.1/dist/jquery.min.js").read_bytes() == \
        (VENDOR / "jquery@3.7.1/dist/jquery.min.js").read_bytes()


def _sri(path: Path) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()


@pytest.mark.unit
def test_every_cdn_file_gx_templates_load_is_vendored_and_the_pinned_hashes_match():
    """Catches a Great Expectations upgrade that changes a library or its version."""
    by_url = {url: asset for asset in ASSETS for url in asset.urls}
    sources = [*GX_VIEW.glob("templates/*.j2"), *GX_VIEW.glob("static/styles/*.css")]
    loaded = {url for source in sources for url in external_loads(source.read_text())}
    assert len(loaded) >= 16 and sorted(loaded - set(by_url) - set(SITE_FILES)) == []
    imports = (GX_VIEW / "templates" / "js_script_imports.j2").read_text()
    pinned = re.findall(r'src="([^"]+)" integrity="([^"]+)"', imports)
    assert len(pinned) == 2  # bootstrap.min.js, popper.min.js
    for url, integrity in pinned:
        assert _sri(VENDOR / by_url[url].local) == integrity, url


@pytest.mark.unit
def test_vendor_folder_holds_exactly_the_listed_files_each_package_with_its_licence():
    listed = {asset.local for asset in ASSETS}
    files = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()}
    licences = {f for f in files if Path(f).name.startswith("LICENSE")}
    assert files - licences - {"README.md"} == listed
    readme = (VENDOR / "README.md").read_text()
    for package, version in {(a.package, a.version) for a in ASSETS}:
        assert f"| {package} | {version} |" in readme, package
        has_licence = any(f.startswith(f"{package}@{version}/") for f in licences)
        assert has_licence or package == "popper.js", package  # popper states MIT in its header


@pytest.mark.unit
def test_dvc_plots_template_is_configured_and_current():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    template = REPO / ".dvc" / config["plots"]["html_template"]  # DVC resolves it from .dvc/
    assert template.read_text() == dvc_plots_template(), \
        "the template is stale: rewrite it with `python -m biomedclip.offline_pages`"
    text = template.read_text()
    assert "{plot_divs}" in text and "{scripts}" not in text  # no CDN <script> from DVC
    assert external_loads(text) == []
    for asset in (VEGA, VEGA_LITE, VEGA_EMBED):
        assert (VENDOR / asset.local).read_text() in text


# --- in a browser with no network ---------------------------------------------------------------


@pytest.mark.integration
def test_the_test_browser_reaches_no_network(browser, tmp_path):
    """What the tests below rest on: a CDN script fails to load, so a page that renders drew
    with local files only."""
    page = tmp_path / "cdn.html"
    page.write_text('<html><head><script src="https://cdn.jsdelivr.net/npm/vega@5"></script></head>'
                    '<body>offline</body></html>')
    browser.open(page.as_uri())
    assert browser.evaluate("typeof vega") == "undefined"
    assert [url for url, _ in browser.failed] == ["https://cdn.jsdelivr.net/npm/vega@5"]


def styled_and_drawn(browser: Browser) -> None:
    """Bootstrap's styles applied, Font Awesome's font loaded, GX's logo shown."""
    navbar = "getComputedStyle(document.querySelector('nav.navbar'))"
    assert browser.evaluate(f"{navbar}.position") == "sticky"  # bootstrap's .sticky-top
    assert browser.evaluate("[...document.fonts].some(f => f.family === 'Font Awesome 6 Free' "
                            "&& f.status === 'loaded')")
    assert browser.evaluate("document.querySelector('.navbar-brand img').naturalWidth") > 0


@pytest.mark.integration
def test_data_docs_index_shows_its_tables_offline(browser, data_docs, tmp_path):
    drawn = "document.querySelectorAll('.bootstrap-table tbody tr').length >= 6"
    browser.open((data_docs / "index.html").as_uri(), ready=drawn)
    assert_only_local(browser)
    styled_and_drawn(browser)
    assert browser.dom().count('<div class="bootstrap-table') == 2  # the runs', the suites' tables
    links = browser.evaluate("[...document.querySelectorAll('.bootstrap-table tbody a')]"
                             ".map(a => a.textContent.trim())")
    assert sorted(set(links)) == ["articles-suite", "ingest_report-suite", "pairs-suite"]
    browser.screenshot(tmp_path / "index.png")
    # Dark mode swaps GX's logo for a white-ink one from its S3 bucket: the local one, inverted.
    browser.open((data_docs / "index.html").as_uri(), ready=drawn, dark=True)
    assert_only_local(browser)
    logo = "getComputedStyle(document.querySelector('.navbar-brand a'))"
    assert browser.evaluate(f"{logo}.filter") == "invert(1)"
    browser.screenshot(tmp_path / "index-dark.png")


@pytest.mark.integration
def test_data_docs_validation_page_shows_the_failed_expectation_offline(browser, data_docs,
                                                                        tmp_path):
    page = validation_page(data_docs, "pairs-suite")
    browser.open(page.as_uri(), ready="document.querySelectorAll('.bootstrap-table').length >= 10")
    assert_only_local(browser)
    styled_and_drawn(browser)
    text = browser.evaluate("document.body.innerText")
    assert "values must never be null" in text and "1 unexpected values found" in text
    crosses = "document.querySelectorAll('.bootstrap-table tbody .fa-times').length"
    assert browser.evaluate(crosses) == 1  # the null caption, and nothing else
    browser.screenshot(tmp_path / "pairs.png")


@pytest.mark.integration
def test_dvc_plots_show_draws_every_plot_offline(browser, tmp_path):
    project = clone_project(tmp_path / "project")
    sh(project, "dvc", "plots", "show", "-o", "plots")
    html = (project / "plots" / "index.html").read_text()
    assert external_loads(html) == [] and "cdn.jsdelivr.net" not in html
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    loss = yaml.safe_load((REPO / "params.yaml").read_text())["train"]["outputs"]["loss_curve"]
    files = [next(iter(p)) for p in dvc_yaml["plots"]] + [loss]  # the top level's, train's
    ids = sorted(re.sub(r"[/.]", "_", f) for f in files)
    page = shutil.copytree(project / "plots", tmp_path / "moved") / "index.html"
    # vega-embed marks each plot's div once it drew it, as an SVG or a canvas with pixels on it
    drawn = """[...document.querySelectorAll('.vega-embed')].filter(div => {
        const svg = div.querySelector('svg.marks'), canvas = div.querySelector('canvas.marks');
        if (svg) return svg.querySelectorAll('path, rect').length > 0;
        if (!canvas || !canvas.width) return false;
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        return pixels.some((value, i) => i % 4 === 3 && value > 0);
    }).map(div => div.id).sort()"""
    browser.open(page.as_uri(), ready=f"({drawn}).length >= {len(ids)}")
    assert_only_local(browser)
    assert browser.evaluate(drawn) == ids
    browser.screenshot(tmp_path / "plots.png")
