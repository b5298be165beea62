"""Shared fixtures: small demo corpora generated once per session, the shared fixtures folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomedclip.config import DemoParams, NoiseRates, SideRange, override
from biomedclip.demo import generate_corpus
from biomedclip.demo.corpus import CorpusReport

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"

# Every noise kind at a rate high enough to measure on a ~150-article corpus.
NOISY = NoiseRates(**{name: 0.12 for name in NoiseRates.model_fields}).model_copy(
    update={name: 0.06 for name in (*NoiseRates.CONDITIONS, *NoiseRates.ENCODINGS)}
)


def small_params(out: Path, *, articles: int = 40, **changes) -> DemoParams:
    """A quick corpus: few articles, small images."""
    base = DemoParams(out=out, articles=articles, image_side=SideRange(min=96, max=200))
    return override(base, **changes) if changes else base


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"real third-party fixtures not found at {SHARED_FIXTURES} "
                    "(they live beside the project, in ../shared/fixtures)")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def noisy_corpus(tmp_path_factory) -> tuple[DemoParams, CorpusReport]:
    """160 articles with every noise kind at 6-12%, also written in the legacy layout."""
    root = tmp_path_factory.mktemp("noisy")
    params = small_params(root / "raw", articles=160, legacy_out=root / "legacy")
    params = params.model_copy(update={"noise": NOISY})
    return params, generate_corpus(params, workers=2)


def ingest_params(source: Path, out: Path, **changes):
    """Ingest params writing every output under `out`."""
    from biomedclip.config import IngestOutputs, IngestParams

    outputs = IngestOutputs(pairs=out / "pairs.parquet", rejects=out / "rejects.parquet",
                            images=out / "images", report=out / "ingest.json",
                            state=out / "state" / "state.sqlite")
    return IngestParams(source=str(source), outputs=outputs, **changes)


@pytest.fixture(scope="session")
def ingested_noisy(noisy_corpus, tmp_path_factory):
    """The noisy demo corpus ingested with the default params."""
    from biomedclip.ingest.run import run_ingest

    corpus_params, truth = noisy_corpus
    params = ingest_params(corpus_params.out, tmp_path_factory.mktemp("ingest"))
    return params, run_ingest(params), truth
