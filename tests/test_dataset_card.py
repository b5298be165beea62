"""The dataset card: its numbers are the tables' numbers, it opens offline, the same inputs give the
same bytes, and what it cannot show (no tokenizer, no model) it explains."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biomedclip.card.build import build_card
from biomedclip.card.figure_types import FigureTypes, group_of
from biomedclip.card.imageclef import IMAGECLEF_2015
from biomedclip.card.render import card_markdown
from biomedclip.card.stats import CardInputError

pytestmark = pytest.mark.unit

CONTEXT = 256
TOKEN_SAMPLE = 100  # fewer than the corpus's pairs: the token sample is strided
TYPES_SAMPLE = 24


class Page(HTMLParser):
    """Every tag with its attributes, and the page's text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)


def gate_result(rows: int) -> dict:
    """A result as the validate stage writes it: one critical check passed, one warning failed."""
    return {"success": True, "rows": rows, "critical_failures": 0, "warnings": 1, "manifest": "pairs.parquet",
            "checks": [{"check": "min_pairs", "expectation": "expect_table_row_count_to_be_between", "column": None,
                        "severity": "critical", "success": True, "observed": rows},
                       {"check": "caption_words_median", "expectation": "expect_column_median_to_be_between",
                        "column": "caption_words", "severity": "warning", "success": False, "observed": 3.0,
                        "expected": {"min": 8, "max": 250}}]}


@pytest.fixture(scope="module")
def inputs(ingested_noisy, tmp_path_factory) -> dict:
    params, _, _ = ingested_noisy
    root = tmp_path_factory.mktemp("card-inputs")
    validate = root / "validate.json"
    validate.write_text(json.dumps(gate_result(pq.ParquetFile(params.outputs.pairs).metadata.num_rows)))
    docs = root / "validation"
    docs.mkdir()
    (docs / "index.html").write_text("<html><body>Data Docs</body></html>")
    out = params.outputs
    return {"pairs": out.pairs, "rejects": out.rejects, "panels": out.panels, "ingest_report": out.report,
            "validate_result": validate, "images": out.images, "data_docs": docs}


@pytest.fixture(scope="module")
def card(inputs, tiny_world, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("cards") / "a"
    types = FigureTypes(model=str(tiny_world.trained["model_dir"]), sample=TYPES_SAMPLE)
    summary = build_card(**inputs, out=out, tokenizer=tiny_world.tokenizer, context_length=CONTEXT,
                         figure_types=types, token_sample=TOKEN_SAMPLE)
    return summary, out


def test_numbers_are_the_tables_numbers(card, inputs):
    summary, out = card
    pairs = pq.read_table(inputs["pairs"]).to_pandas()
    rejects = pq.read_table(inputs["rejects"]).to_pandas()
    assert summary["pairs"]["total"] == len(pairs)
    assert summary["pairs"]["by_split"] == pairs["split"].value_counts().to_dict()
    assert list(summary["pairs"]["by_split"]) == [s for s in ("train", "val", "test") if s in set(pairs["split"])]
    assert summary["licenses"] == pairs["license"].value_counts().to_dict()
    assert summary["images"]["formats"] == pairs["source_format"].value_counts().to_dict()
    assert summary["images"]["modes"] == pairs["source_mode"].value_counts().to_dict()
    assert set(summary["images"]["modes"]) > {"RGB"}  # the noisy corpus has CMYK, palette, 16-bit...
    long_side = np.maximum(pairs["source_width"], pairs["source_height"])
    assert summary["images"]["long_side"]["median"] == np.quantile(long_side, 0.5, method="inverted_cdf")
    assert summary["images"]["long_side"]["max"] == long_side.max()
    assert summary["images"]["resized"] == int(((pairs["width"] != pairs["source_width"])
                                                | (pairs["height"] != pairs["source_height"])).sum())
    words = pairs["caption"].map(lambda c: len(c.split()))
    for name, q in (("median", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert summary["captions"]["words"][name] == np.quantile(words, q, method="inverted_cdf"), name
    articles = pairs.groupby("pmcid", sort=False).agg(year=("year", "first"), n=("pair_id", "size"))
    years = articles["year"].map(lambda y: "unknown" if y is None or y != y else str(int(y))).value_counts()
    assert summary["articles"]["total"] == len(articles)
    assert summary["articles"]["by_year"] == years.to_dict()
    assert summary["figures_per_article"]["articles_by_figures"] == {
        str(k): int(v) for k, v in articles["n"].value_counts().sort_index().items()}
    assert summary["rejects"]["total"] == len(rejects)
    assert summary["rejects"]["by_reason"] == rejects["reason"].value_counts().to_dict()
    assert summary["rejects"]["by_level"] == rejects["level"].value_counts().to_dict()
    for reason, examples in summary["rejects"]["examples"].items():
        of_reason = rejects[rejects["reason"] == reason]
        assert len(examples) == min(3, len(of_reason)), reason
        assert examples == of_reason[["detail", "pmcid", "fig_id", "source_uri"]].head(3).to_dict("records")
    assert summary["warnings"] == []  # the ingest report and the tables are of one run
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_fit_context_share_is_computed_on_the_stated_sample(card, inputs, tiny_world):
    import open_clip

    summary, out = card
    tokens = summary["captions"]["tokens"]
    captions = pq.read_table(inputs["pairs"], columns=["caption"]).column("caption").to_pylist()
    stride = math.ceil(len(captions) / TOKEN_SAMPLE)
    sample = captions[::stride]
    assert (tokens["stride"], tokens["sample"], tokens["rows"]) == (stride, len(sample), len(captions))
    assert stride > 1 and len(sample) <= TOKEN_SAMPLE
    # As training tokenises, with a context long enough that nothing is cut: the non-padding tokens.
    tokenizer = open_clip.tokenizer.HFTokenizer(str(tiny_world.tokenizer), context_length=4096)
    lengths = (tokenizer(sample) != tokenizer.tokenizer.pad_token_id).sum(dim=1)
    assert tokens["fit_context"] == pytest.approx(float((lengths <= CONTEXT).double().mean()), abs=0)
    assert tokens["max"] == int(lengths.max())
    assert 0 < tokens["fit_context"] <= 1
    page = (out / "index.html").read_text()
    assert f"{tokens['fit_context']:.1%} of captions fit the {CONTEXT}-token context" in page
    assert f"every {stride}" in page and (out / "caption-tokens.png").is_file()


def test_page_is_offline_and_every_picture_is_there(card, inputs):
    summary, out = card
    text = (out / "index.html").read_text()
    page = Page(text)
    tags = [tag for tag, _ in page.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    sources = {attrs["src"] for attrs in images}
    assert all(attrs["alt"].strip() for attrs in images)
    assert all("/" not in src and (out / src).is_file() for src in sources), sources
    assert sources == {p.name for p in out.glob("*.png")}  # no chart left unshown, none missing
    assert {"caption-words.png", "caption-tokens.png", "image-sizes.png", "formats.png", "licenses.png",
            "years.png", "figures-per-article.png", "splits.png", "rejects.png", "figure-types.png"} == sources
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a"]
    outside = [href for href in links if not href.startswith("#")]
    assert len(outside) == 1 and outside[0].startswith("../")  # relative: the folder moves with its inputs
    assert (out / outside[0]).resolve() == (inputs["data_docs"] / "index.html").resolve()
    words = " ".join(page.text)
    assert f"{summary['pairs']['total']:,} pairs" in words
    assert "caption_words_median" in words  # the gate's failed warning is named
    for reason, n in summary["rejects"]["by_reason"].items():
        assert reason in words and f"{n:,}" in words


def test_same_inputs_give_the_same_bytes(card, inputs, tiny_world):
    """Built again, with batches that cut articles, reasons and panels at other rows: identical."""
    _, first = card
    second = first.with_name("b")
    build_card(**inputs, out=second, tokenizer=tiny_world.tokenizer, context_length=CONTEXT,
               figure_types=FigureTypes(model=str(tiny_world.trained["model_dir"]), sample=TYPES_SAMPLE),
               token_sample=TOKEN_SAMPLE, batch_rows=7)
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    different = [name for name in files if (first / name).read_bytes() != (second / name).read_bytes()]
    assert different == []


def test_figure_types_are_an_estimate_by_a_named_model(card, tiny_world):
    from biomedclip.digests import file_sha256
    from biomedclip.models import locate_folder

    summary, out = card
    types = summary["figure_types"]
    model = str(tiny_world.trained["model_dir"])
    assert types["model"] == model
    assert types["weights_sha256"] == file_sha256(locate_folder(Path(model)).weights)
    rows = summary["pairs"]["total"]
    assert types["sample"] == len(range(0, rows, math.ceil(rows / TYPES_SAMPLE))) <= TYPES_SAMPLE
    assert sum(types["counts"].values()) == types["sample"]
    assert list(types["counts"]) == list(IMAGECLEF_2015)
    page = (out / "index.html").read_text()
    assert f"Estimated by {model}" in page and "not labels" in page
    assert "estimated" in card_markdown(summary, out) and model in card_markdown(summary, out)


def test_what_is_missing_is_explained(inputs, tmp_path):
    """No tokenizer (none given, or a folder that is not there) and no model: said, not crashed;
    a panel table's figures and panels counted per split."""
    panels = tmp_path / "panels.parquet"
    ids = pq.read_table(inputs["pairs"], columns=["pair_id", "split"]).slice(0, 3).to_pylist()
    rows = [row for row, n in zip(ids, (2, 4, 3), strict=True) for _ in range(n)]
    pq.write_table(pa.table({"pair_id": [r["pair_id"] for r in rows], "split": [r["split"] for r in rows]}), panels)
    for tokenizer, said in ((None, "no tokenizer was given"),
                            (tmp_path / "no-such", f"{tmp_path / 'no-such'} does not exist")):
        out = tmp_path / "card"
        summary = build_card(**{**inputs, "panels": panels}, out=out, tokenizer=tokenizer, token_sample=50)
        tokens = summary["captions"]["tokens"]
        assert tokens["available"] is False and said in tokens["absent"]
        page = (out / "index.html").read_text()
        assert "No token counts" in page and said in page
        assert not (out / "caption-tokens.png").exists() and "caption-tokens.png" not in page
        assert summary["figure_types"] is None and "no model was given" in page
        assert "No token counts" in card_markdown(summary, out)
    assert summary["panels"]["total"] == 9 and summary["panels"]["figures"] == 3
    assert summary["panels"]["per_figure"]["max"] == 4
    assert "3 compound figures were split into 9 panel pairs" in page


def test_bad_inputs_are_named(inputs, tmp_path):
    missing = tmp_path / "absent.parquet"
    with pytest.raises(FileNotFoundError, match=r"absent\.parquet"):
        build_card(**{**inputs, "pairs": missing}, out=tmp_path / "card", tokenizer=None)
    narrow = tmp_path / "narrow.parquet"
    pq.write_table(pq.read_table(inputs["pairs"]).drop_columns(["source_mode"]), narrow)
    with pytest.raises(CardInputError, match=r"narrow\.parquet.*source_mode"):
        build_card(**{**inputs, "pairs": narrow}, out=tmp_path / "card", tokenizer=None)
    shuffled = tmp_path / "shuffled.parquet"
    table = pq.read_table(inputs["pairs"])
    pq.write_table(table.take(list(range(table.num_rows - 1, -1, -1))), shuffled)
    with pytest.raises(CardInputError, match="not in PMCID order"):
        build_card(**{**inputs, "pairs": shuffled}, out=tmp_path / "card", tokenizer=None)
    assert not (tmp_path / "card").exists()  # nothing half-written
    with pytest.raises(ValueError, match=r"figure_types\.classes"):
        FigureTypes(model="m", classes={"DRCT": "computed tomography"})


def test_the_taxonomy_is_imageclef_2015():
    assert len(IMAGECLEF_2015) == 30 and len(set(IMAGECLEF_2015.values())) == 30
    assert {"DRUS", "DRMR", "DRCT", "DRXR", "DRAN", "DRPE", "DRCO", "DVDM", "DVEN", "DVOR", "DSEE", "DSEC",
            "DSEM", "DMLI", "DMEL", "DMTR", "DMFL", "D3DR", "GTAB", "GPLI", "GFIG", "GSCR", "GFLO", "GSYS",
            "GGEN", "GGEL", "GCHE", "GMAT", "GNCP", "GHDR"} == set(IMAGECLEF_2015)
    assert all(group_of(code) != "other" for code in IMAGECLEF_2015)


def test_which_model_labels_the_figure_types(tmp_path):
    """The train stage's model by default (as evaluate.model), a configured one instead, and
    none with the reason when there is no model yet or the estimate is off."""
    from biomedclip.card.stage import figure_type_model
    from biomedclip.params import Params

    params = Params().model_copy(deep=True)
    train = params.train.model_copy(update={"outputs": params.train.outputs.model_copy(update={"dir": tmp_path})})
    params = params.model_copy(update={"train": train})
    model, why = figure_type_model(params)
    assert model is None and "has not written" in why and str(tmp_path / "final") in why
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "open_clip_config.json").write_text("{}")
    assert figure_type_model(params) == (str(tmp_path / "final"), f"the train stage's model ({tmp_path / 'final'})")
    card = params.card.model_copy(update={"figure_types": params.card.figure_types.model_copy(
        update={"model": "models:/biomedclip@champion"})})
    assert figure_type_model(params.model_copy(update={"card": card}))[0] == "models:/biomedclip@champion"
    off = params.card.model_copy(update={"figure_types": params.card.figure_types.model_copy(
        update={"enabled": False})})
    assert figure_type_model(params.model_copy(update={"card": off})) == (None, "card.figure_types.enabled is false")
