"""The demo corpus: deterministic, in PMC's real layout, with every kind of mess at its rate."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from biomedclip.demo.corpus import generate_corpus
from biomedclip.demo.layout import FILE_LIST_HEADER
from biomedclip.demo.params import NoiseRates

from .conftest import NOISY, small_params
from .corpus_inspection import NON_COMMERCIAL, PARSER, inspect_corpus, local

pytestmark = pytest.mark.unit

METADATA_FIELDS = ["pmcid", "version", "pmid", "doi", "title", "citation", "is_pmc_openaccess",
                   "is_manuscript", "is_historical_ocr", "is_retracted", "license_code", "xml_url",
                   "text_url", "pdf_url", "media_urls"]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_params_give_byte_identical_trees_whatever_the_worker_count(tmp_path):
    one = generate_corpus(small_params(tmp_path / "a", articles=30), workers=1)
    generate_corpus(small_params(tmp_path / "b", articles=30), workers=2)
    first, second = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert first == second
    assert len(first) == one.files + 5  # + inventory manifest, checksum, CSV.gz, marker, panel truth


def test_a_different_seed_gives_a_different_corpus(tmp_path):
    generate_corpus(small_params(tmp_path / "a", articles=10), workers=1)
    generate_corpus(small_params(tmp_path / "b", articles=10, seed=1), workers=1)
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "b")


def test_corpus_grows_like_pmc_earlier_articles_unchanged(tmp_path):
    generate_corpus(small_params(tmp_path / "small", articles=15), workers=1)
    generate_corpus(small_params(tmp_path / "grown", articles=30), workers=1)
    small, grown = tree_digest(tmp_path / "small"), tree_digest(tmp_path / "grown")
    articles = {k: v for k, v in small.items() if not k.startswith(("inventory-reports", "demo-truth"))}
    assert articles.items() <= grown.items()
    assert len({k.split("/")[0] for k in grown} - {k.split("/")[0] for k in small}) > 10


def test_failed_generation_leaves_the_previous_corpus_untouched(tmp_path, monkeypatch):
    params = small_params(tmp_path / "raw", articles=5)
    generate_corpus(params, workers=1)
    before = tree_digest(tmp_path / "raw")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("biomedclip.demo.layout.OpenDataLayout.finish", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_corpus(small_params(tmp_path / "raw", articles=8), workers=1)
    assert tree_digest(tmp_path / "raw") == before
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no staging folder left behind


def test_every_article_version_is_laid_out_as_in_the_pmc_bucket(noisy_corpus):
    params, report = noisy_corpus
    root = params.out
    prefixes = sorted(p for p in root.iterdir() if re.fullmatch(r"PMC\d+\.\d+", p.name))
    assert len(prefixes) == report.versions
    for folder in prefixes:
        name = folder.name
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
        meta = json.loads(files[f"{name}.json"])
        assert list(meta) == METADATA_FIELDS
        assert f"{meta['pmcid']}.{meta['version']}" == name
        assert (root / "metadata" / f"{name}.json").read_bytes() == files[f"{name}.json"]
        assert meta["pdf_url"] is None
        urls = [meta["xml_url"], meta["text_url"], *meta["media_urls"]]
        for url in urls:
            match = re.fullmatch(rf"s3://pmc-oa-opendata/{re.escape(name)}/([^?]+)\?md5=([0-9a-f]{{32}})", url)
            assert match, url
            assert hashlib.md5(files[match.group(1)]).hexdigest() == match.group(2)
        listed = {re.search(r"/([^/?]+)\?", u).group(1) for u in urls} | {f"{name}.json"}
        assert listed == set(files)


def test_the_daily_inventory_lists_every_metadata_object(noisy_corpus):
    params, _ = noisy_corpus
    root = params.out
    manifests = list((root / "inventory-reports/pmc-oa-opendata/metadata").glob("*/manifest.json"))
    assert [m.parent.name for m in manifests] == ["2026-11-01T01-00Z"]
    manifest = json.loads(manifests[0].read_text())
    assert manifest["fileSchema"] == "Bucket, Key, LastModifiedDate, ETag"
    checksum = (manifests[0].parent / "manifest.checksum").read_text().strip()
    assert checksum == hashlib.md5(manifests[0].read_bytes()).hexdigest()
    rows = []
    for entry in manifest["files"]:
        data = (root / entry["key"]).read_bytes()
        assert (len(data), hashlib.md5(data).hexdigest()) == (entry["size"], entry["MD5checksum"])
        rows += list(csv.reader(io.StringIO(gzip.decompress(data).decode())))
    listed = {key: etag for bucket, key, modified, etag in rows}
    assert all(r[0] == "pmc-oa-opendata" and r[2].endswith(".000Z") for r in rows)
    on_disk = {f"metadata/{p.name}": hashlib.md5(p.read_bytes()).hexdigest()
               for p in (root / "metadata").iterdir()}
    assert listed == on_disk


def test_articles_are_jats_with_pmc_ids_licences_and_extensionless_hrefs(noisy_corpus):
    params, _ = noisy_corpus
    styles: Counter = Counter()
    for xml_path in sorted(params.out.glob("PMC*/PMC*.xml")):
        tree = etree.parse(str(xml_path), PARSER)
        assert "JATS" in tree.docinfo.doctype
        article = tree.getroot()
        assert local(article) == "article"
        ids = {el.get("pub-id-type"): el.text for el in article.iter("{*}article-id")}
        meta = json.loads(xml_path.with_suffix(".json").read_text())
        assert ids["pmcid"] == meta["pmcid"] and ids["pmid"] == str(meta["pmid"])
        assert ids["doi"] == meta["doi"]
        styles[_licence_statement(article, meta["license_code"])] += 1
        for fig in article.iter("{*}fig"):
            for graphic in fig.iter("{*}graphic", "{*}inline-graphic"):
                href = graphic.get("{http://www.w3.org/1999/xlink}href")
                assert not re.search(r"\.(jpe?g|png|tiff?|gif)$", href, re.I), href
    assert set(styles) == {"ali", "xlink", "text", "none"}


def _licence_statement(article, code: str) -> str:
    """How <permissions> states the licence; asserts it agrees with the metadata's code."""
    licence = next(article.iter("{*}license"), None)
    if licence is None:
        return "none"
    ref = next(licence.iter("{http://www.niso.org/schemas/ali/1.0/}license_ref"), None)
    url = ref.text if ref is not None else licence.get("{http://www.w3.org/1999/xlink}href")
    if code == "NO-CC CODE":
        assert url is None
        return "text"
    if url is None:
        assert "Creative Commons" in " ".join(licence.itertext())
        return "text"
    slug = code.removeprefix("CC ").lower()
    assert f"/{'zero' if slug == 'cc0' else slug}/" in url
    return "ali" if ref is not None else "xlink"


def test_truth_matches_what_the_files_show(noisy_corpus):
    params, report = noisy_corpus
    seen = {a.pmcid: a for a in inspect_corpus(params.out)}
    assert len(seen) == report.articles
    for truth in report.truth:
        article = seen[truth["pmcid"]]
        graphics = {g.href: g for f in article.figures for g in f.graphics}
        figures = {f.fig_id: f for f in article.figures}
        assert sorted(graphics) == sorted(t["href"] for t in truth["graphics"])
        for expected in truth["graphics"]:
            graphic = graphics[expected["href"]]
            assert graphic.missing == (expected["media_file"] is None)
            caption = figures[expected["fig_id"]].caption
            # the plain caption the generator recorded is what the XML says, token for token
            assert re.sub(r"\s", "", caption) == re.sub(r"\s", "", expected["caption"] or "")


def _rate_ok(observed: int, trials: int, rate: float) -> bool:
    expected = rate * trials
    return abs(observed - expected) <= 4 * math.sqrt(trials * rate * (1 - rate)) + 2


def observed_noise(params) -> tuple[Counter, Counter]:
    """Counts of each noise kind as seen in the files, and the trials each is a rate of."""
    articles = inspect_corpus(params.out)
    seen, trials = Counter(), Counter()
    first_sha: dict[str, str] = {}
    for a in articles:
        trials.update(["article"])
        meta = a.meta
        seen.update(name for name, on in (
            ("non_cc_license", meta["license_code"] == "NO-CC CODE"),
            ("non_commercial_license", meta["license_code"] in NON_COMMERCIAL),
            ("retracted", meta["is_retracted"]),
            ("multiple_versions", a.versions > 1),
            ("no_figures", not a.figures),
            ("supplementary_material", a.supplementary),
            ("graphical_abstract", a.graphical_abstract),
            ("table_graphic", a.table_graphic),
            ("formula_graphic", a.formula_graphic),
            ("jats_namespace", a.xml.tag.startswith("{")),
            ("floats_group", any(f.in_floats for f in a.figures))) if on)
        groups = {f.group_id for f in a.figures if f.in_group}
        trials["article with figures"] += bool(a.figures)
        trials["figure slot"] += sum(not f.in_group for f in a.figures) + len(groups)
        seen["fig_group"] += len(groups)
        for f in a.figures:
            trials["figure"] += 1
            seen["fig_group members"] += f.in_group
            if not f.in_group:
                trials["single figure"] += 1
                seen.update(n for n, on in (("alternatives", f.in_alternatives),
                                            ("multiple_graphics", len(f.graphics) > 1),
                                            ("no_caption", not f.caption)) if on)
            if not any(x.in_floats for x in a.figures):
                trials["figure outside floats"] += 1
                seen["back_matter"] += f.in_back
            if f.caption:
                trials["captioned figure"] += 1
                seen.update(n for n in ("mathml", "inline_graphic", "citation") if getattr(f, n))
            for g in f.graphics:
                trials["graphic"] += 1
                seen.update(n for n in ("missing", "huge", "corrupt", "tiny") if getattr(g, n))
                if g.sha256 and not (f.in_group or g.corrupt):
                    if g.sha256 in first_sha and first_sha[g.sha256] != a.pmcid:
                        seen["duplicate_image"] += 1
                    first_sha.setdefault(g.sha256, a.pmcid)
                if g.missing or g.huge or g.corrupt:
                    continue
                trials["decoded graphic"] += 1
                seen["thumbnail"] += len(g.files) > 1
                trials["decoded non-gif graphic"] += g.suffix != ".gif"
                seen.update(n for n, on in (
                    ("cmyk_jpeg", g.mode == "CMYK"), ("greyscale", g.mode == "L"),
                    ("palette_png", g.mode == "P" and g.suffix == ".png"), ("png16", g.mode == "I;16"),
                    ("rgba_png", g.mode == "RGBA"), ("tiff", g.suffix == ".tif"),
                    ("gif", g.suffix == ".gif")) if on)
    return seen, trials


# noise kind → (name of what the files call it, the trials it is a rate of)
DENOMINATORS = {
    "non_cc_license": "article", "non_commercial_license": "article", "retracted": "article",
    "multiple_versions": "article", "no_figures": "article", "supplementary_material": "article",
    "graphical_abstract": "article", "table_graphic": "article", "formula_graphic": "article",
    "jats_namespace": "article",
    "floats_group": "article with figures", "fig_group": "figure slot",
    "alternatives": "single figure", "no_caption": "single figure",
    "back_matter": "figure outside floats", "mathml": "captioned figure",
    "inline_graphic": "captioned figure", "citation": "captioned figure",
    "missing_media": "graphic", "corrupt_image": "graphic", "tiny_image": "graphic",
    "huge_image": "graphic", "thumbnail": "decoded non-gif graphic",
    **{name: "decoded graphic" for name in NoiseRates.ENCODINGS},
}
FILE_NAMES = {"missing_media": "missing", "corrupt_image": "corrupt", "tiny_image": "tiny",
              "huge_image": "huge"}


@pytest.mark.parametrize("kind", sorted(DENOMINATORS))
def test_noise_kind_is_present_in_the_files_at_its_configured_rate(noisy_corpus, kind):
    params, report = noisy_corpus
    seen, trials = observed_noise(params)
    observed = seen[FILE_NAMES.get(kind, kind)]
    rate = getattr(NOISY, kind)
    if kind == "thumbnail":
        rate *= 1 - sum(getattr(NOISY, c) for c in NoiseRates.CONDITIONS)  # only on clean images
    n = trials[DENOMINATORS[kind]]
    assert observed > 0, f"{kind}: not present"
    assert _rate_ok(observed, n, rate), f"{kind}: {observed}/{n} vs rate {rate}"
    if kind not in ("thumbnail", "huge_image", "corrupt_image", "tiny_image", "missing_media",
                    *NoiseRates.ENCODINGS):
        # figure- and article-level kinds: the generator's own count agrees with the files
        members = seen["fig_group members"] if kind == "fig_group" else observed
        assert report.noise_counts()[kind] == members, kind


def test_composite_and_duplicate_images_are_present_at_their_rates(noisy_corpus):
    params, report = noisy_corpus
    counts = report.noise_counts()
    singles = sum(1 for a in report.truth for g in a["graphics"] if not g["group"])
    assert _rate_ok(counts["composite"], singles, NOISY.composite * (1 - NOISY.duplicate_image))
    seen, _ = observed_noise(params)
    assert seen["duplicate_image"] == counts["duplicate_image"] > 0
    for article in report.truth:
        for g in article["graphics"]:
            if "composite" in g["noise"] and g["caption"] and g["duplicate_of"] is None:
                # the first panel's marker: "(A)", "(A and B)", "(A–C)"...; Nature's bare "a", "a, b", "a–c"
                assert re.search(r"\(A[ ,–\-)]|\ba(,| [A-Z0-9]|–)", g["caption"]), g["caption"]


def test_captions_are_varied_and_between_10_and_200_plus_words(noisy_corpus):
    _, report = noisy_corpus
    captions = [g["caption"] for a in report.truth for g in a["graphics"] if g["caption"]]
    words = sorted(len(c.split()) for c in captions)
    assert words[0] >= 10
    assert words[-1] >= 200
    assert len(set(captions)) > 0.8 * len(captions)


CLASS_WORDS = {
    "he_histology": r"H&E|hematoxylin|haematoxylin|Histopatholog", "ihc": r"IHC|Immunohisto",
    "fluorescence": r"fluorescen", "electron_microscopy": r"electron|TEM|SEM",
    "chest_xray": r"X-ray|radiograph", "ct": r"\bCT\b", "mri": r"MRI|MR image",
    "ultrasound": r"ltrasound|ltrasonograph", "bar_chart": r"[Bb]ar (chart|graph)",
    "line_chart": r"[Ll]ine (chart|graph)|Kaplan|Time course|measured over",
    "scatter_plot": r"[Ss]catter|Correlation|Relationship", "heatmap": r"[Hh]eat ?map",
    "western_blot": r"[Ww]estern|[Ii]mmunoblot", "flow_cytometry": r"[Ff]low cytometry|FACS",
    "diagram": r"[Dd]iagram|[Ss]chematic|workflow|timeline", "photograph": r"[Pp]hotograph|[Cc]linical image",
}


def test_every_caption_names_the_type_of_image_it_describes(noisy_corpus):
    _, report = noisy_corpus
    checked = Counter()
    for article in report.truth:
        for g in article["graphics"]:
            if g["caption"]:
                assert re.search(CLASS_WORDS[g["kinds"][0]], g["caption"]), (g["kinds"], g["caption"])
                checked[g["kinds"][0]] += 1
    assert set(checked) == set(CLASS_WORDS)


def test_legacy_layout_has_the_real_file_list_and_safe_tarballs(noisy_corpus):
    params, report = noisy_corpus
    root = params.legacy_out
    with open(root / "oa_file_list.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == FILE_LIST_HEADER
    assert len(rows) - 1 == report.articles
    for path, citation, pmcid, updated, pmid, license_code in rows[1:]:
        assert re.fullmatch(r"oa_package/[0-9a-f]{2}/[0-9a-f]{2}/PMC\d+\.tar\.gz", path)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", updated)
        newest = max(params.out.glob(f"{pmcid}.*"), key=lambda p: int(p.name.split(".")[1]))
        meta = json.loads((newest / f"{newest.name}.json").read_text())
        assert (license_code, int(pmid), citation) == (meta["license_code"], meta["pmid"], meta["citation"])
        import tarfile

        with tarfile.open(root / path) as tar:
            members = tar.getmembers()
            assert all(m.name.split("/")[0] == pmcid and ".." not in m.name for m in members)
            assert all(m.isfile() or m.isdir() for m in members)
            names = {m.name.split("/", 1)[1] for m in members if m.isfile()}
        media = {p.name for p in newest.iterdir() if not p.name.startswith(newest.name)}
        nxml = {n for n in names if n.endswith(".nxml")}
        assert len(nxml) == 1 and names - nxml == media


def local_names(path: Path) -> set[str]:
    root = etree.parse(str(path), PARSER).getroot()
    return {etree.QName(el).localname for el in root.iter() if isinstance(el.tag, str)}


def test_demo_jats_uses_only_the_vocabulary_of_real_pmc_articles(noisy_corpus, shared_fixtures):
    """Every element the generator writes occurs in the real PMC/PLOS/publisher fixtures,
    except two JATS elements those 15 articles happen not to use."""
    real = set().union(*(local_names(p) for p in (shared_fixtures / "pmc").iterdir()
                         if p.suffix in (".xml", ".nxml")))
    params, _ = noisy_corpus
    demo = set().union(*(local_names(p) for p in params.out.glob("PMC*/PMC*.xml")))
    assert demo - real == {"fig-group", "textual-form"}


MAGIC = {".jpg": b"\xff\xd8", ".png": b"\x89PNG", ".gif": b"GIF8", ".tif": b"II*\x00"}


def test_every_media_file_extension_matches_its_bytes(noisy_corpus):
    params, report = noisy_corpus
    damaged = {(a["pmcid"], g["media_file"]) for a in report.truth for g in a["graphics"]
               if g["condition"] == "corrupt_image"}
    checked = 0
    for path in params.out.glob("PMC*/*"):
        if path.suffix in MAGIC and (path.parent.name.split(".")[0], path.name) not in damaged:
            assert path.read_bytes().startswith(MAGIC[path.suffix]), path
            checked += 1
    assert checked > 500


def test_older_versions_are_consistent_and_dated_before_the_newest(noisy_corpus):
    params, report = noisy_corpus
    multi = [a for a in report.truth if a["version"] > 1]
    assert multi
    for article in multi:
        dates = []
        for version in range(1, article["version"] + 1):
            folder = params.out / f"{article['pmcid']}.{version}"
            meta = json.loads((folder / f"{folder.name}.json").read_text())
            xml = etree.parse(str(folder / f"{folder.name}.xml"), PARSER).getroot()
            ids = {el.get("id") for el in xml.iter() if el.get("id")}
            for xref in xml.iter("{*}xref"):
                if xref.get("ref-type") == "fig":
                    assert xref.get("rid") in ids, (folder.name, xref.get("rid"))
            hrefs = {g.get("{http://www.w3.org/1999/xlink}href") for g in xml.iter("{*}graphic", "{*}inline-graphic")}
            hrefs |= {m.get("{http://www.w3.org/1999/xlink}href") for m in xml.iter("{*}media")}
            for url in meta["media_urls"]:
                name = re.search(r"/([^/?]+)\?", url).group(1)
                stem = name.rsplit(".", 1)[0]
                assert name in hrefs or stem in hrefs, (folder.name, name)  # nothing orphaned
            inventory = {r[1]: r[2] for r in _inventory_rows(params.out)}
            dates.append(inventory[f"metadata/{folder.name}.json"])
        assert dates == sorted(dates) and len(set(dates)) == len(dates)


def _inventory_rows(root: Path) -> list[list[str]]:
    rows = []
    for path in root.glob("inventory-reports/pmc-oa-opendata/metadata/data/*.csv.gz"):
        rows += list(csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))
    return rows


def test_captions_come_in_the_structures_real_ones_have(noisy_corpus):
    params, _ = noisy_corpus
    shapes: Counter = Counter()
    for xml_path in params.out.glob("PMC*/PMC*.xml"):
        for caption in etree.parse(str(xml_path), PARSER).getroot().iter("{*}caption"):
            if local(caption.getparent()) != "fig":
                continue
            names = [local(c) for c in caption]
            paragraphs = names.count("p")
            shapes["title" if "title" in names else "no title"] += 1
            shapes["several <p>" if paragraphs > 1 else "one <p>"] += 1
            shapes["bold panel letters"] += any(local(b) == "bold" for b in caption.iter())
    assert all(shapes[s] > 5 for s in ("title", "no title", "several <p>", "one <p>", "bold panel letters")), shapes


def test_zero_rates_give_a_clean_corpus_and_full_rates_are_honoured(tmp_path):
    clean = NoiseRates(**{name: 0.0 for name in NoiseRates.model_fields})
    params = small_params(tmp_path / "clean", articles=25).model_copy(update={"noise": clean})
    assert sum(generate_corpus(params).noise_counts().values()) == 0
    everything_nc = clean.model_copy(update={"non_commercial_license": 1.0, "retracted": 1.0})
    params = small_params(tmp_path / "nc", articles=10).model_copy(update={"noise": everything_nc})
    counts = generate_corpus(params).noise_counts()
    assert counts["non_commercial_license"] == counts["retracted"] == 10


def test_legacy_layout_is_deterministic_too(tmp_path):
    for name in ("a", "b"):
        generate_corpus(small_params(tmp_path / name / "raw", articles=12,
                                     legacy_out=tmp_path / name / "legacy"), workers=1)
    assert tree_digest(tmp_path / "a" / "legacy") == tree_digest(tmp_path / "b" / "legacy")


def test_outputs_are_replaced_only_when_demo_data_wrote_them(tmp_path, monkeypatch):
    from biomedclip.atomic_io import UnsafeOutput, check_replaceable
    from biomedclip.demo.corpus import MARKER

    monkeypatch.chdir(tmp_path)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "precious.xml").write_text("a real PMC mirror")
    with pytest.raises(UnsafeOutput, match=r"no \.biomedclip-demo marker"):
        generate_corpus(small_params(mirror, articles=2))
    assert (mirror / "precious.xml").exists()
    for folder in (Path("."), tmp_path.parent, Path.home()):
        with pytest.raises(UnsafeOutput, match="current folder"):
            check_replaceable(folder, MARKER, force=True)
    generate_corpus(small_params(tmp_path / "raw", articles=2))
    generate_corpus(small_params(tmp_path / "raw", articles=3))  # its own output: replaced
    assert len(list((tmp_path / "raw" / "metadata").iterdir())) >= 3
    generate_corpus(small_params(mirror, articles=2), force=True)
    assert not (mirror / "precious.xml").exists()
