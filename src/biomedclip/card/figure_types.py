"""What the corpus's figures show, estimated by zero-shot classification with a trained model.

The paper's Figure 1 shows PMC-15M's composition over ImageCLEF 2015's medical modality classes
(the compound-figure / modality task's hierarchy: diagnostic images, i.e. radiology, visible-light
photography, printed signals, microscopy, 3D reconstructions, and generic biomedical
illustrations). There are no labels for the corpus: a model (the champion, or the published
baseline) labels a deterministic sample of the stored images (every k-th pair of the manifest)
with prompt-ensembled class embeddings, through the evaluation's own embedding and zero-shot code.
The result is an estimate by that model, and the card says so, naming the model and its weights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomedclip.card.imageclef import IMAGECLEF_2015
from biomedclip.card.stats import BATCH_ROWS, open_parquet, stride_for
from biomedclip.tables import read_batches
from biomedclip.tracking import TrackingParams

MAX_THREADS = 2

# The hierarchy's branches, by code prefix (the chart colours classes by them).
GROUPS: dict[str, str] = {
    "DR": "radiology", "DV": "visible light photography", "DS": "printed signals", "DM": "microscopy",
    "D3": "3D reconstruction", "G": "generic illustration",
}


def group_of(code: str) -> str:
    """The branch of an ImageCLEF code ("other" for a class outside the taxonomy)."""
    return next((name for prefix, name in GROUPS.items() if code.upper().startswith(prefix)), "other")


@dataclass(frozen=True)
class FigureTypes:
    """The zero-shot estimate's settings: the model source (a folder, hf-hub:..., models:/...),
    class key -> class name (the prompt's noun), images sampled, prompt templates (default: the
    paper's), and the MLflow store for a models:/ source."""

    model: str
    classes: Mapping[str, str] = field(default_factory=lambda: dict(IMAGECLEF_2015))
    sample: int = 500
    templates: tuple[str, ...] | None = None
    batch_size: int = 32
    tracking: TrackingParams | None = None

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise ValueError("figure_types.model: empty (a model folder, hf-hub:<org>/<repo> or models:/name@alias)")
        if len(self.classes) < 2:
            raise ValueError(f"figure_types.classes: {len(self.classes)} class(es); zero-shot needs at least 2")
        blank = [key for key, name in self.classes.items() if not str(name).strip()]
        if blank:
            raise ValueError(f"figure_types.classes: no class name for {', '.join(blank)}")
        if self.sample < 1:
            raise ValueError(f"figure_types.sample: {self.sample}; at least 1 image")
        if self.batch_size < 1:
            raise ValueError(f"figure_types.batch_size: {self.batch_size}; at least 1")
        bad = [t for t in self.templates or () if t.count("{}") != 1]
        if bad:
            raise ValueError(f"figure_types.templates need exactly one {{}} for the class name: {bad}")


def sampled_keys(pairs: Path, sample: int, *, batch_rows: int = BATCH_ROWS) -> tuple[list[str], int]:
    """The image keys of every k-th pair (from row 0), at most `sample`, and k."""
    parquet = open_parquet(pairs, ("image_key",), "pairs manifest")
    stride = stride_for(parquet.metadata.num_rows, sample)
    keys: list[str] = []
    seen = 0
    for batch in read_batches(parquet, batch_rows, ("image_key",)):
        keys.extend(batch.column("image_key").to_pylist()[(-seen) % stride::stride])
        seen += batch.num_rows
    return keys, stride


def estimate_figure_types(spec: FigureTypes, pairs: Path, images: Path, *,
                          batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """Zero-shot labels of the sampled images: counts per class key (all keys, summing to the
    sample), the model and its weights' sha256."""
    import torch

    from biomedclip.evaluate.classification import PAPER_TEMPLATES, class_embeddings
    from biomedclip.evaluate.embedding import decode, embed_images, embed_texts
    from biomedclip.models import load_model

    keys, stride = sampled_keys(pairs, spec.sample, batch_rows=batch_rows)
    missing = next((key for key in keys if not (images / key).is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"{images / missing}: an image of the manifest {pairs} is not in {images} "
                                "(the ingest stores every pair's image there; `dvc checkout` or rerun the ingest)")
    templates = tuple(spec.templates or PAPER_TEMPLATES)
    codes = list(spec.classes)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, MAX_THREADS))
    try:
        loaded = load_model(spec.model, tracking=spec.tracking)
        classes = class_embeddings(lambda texts: embed_texts(loaded, texts, spec.batch_size),
                                   [spec.classes[code] for code in codes], templates)
        features = embed_images(loaded, (decode((images / key).read_bytes()) for key in keys), spec.batch_size)
        predicted = (features @ classes.T).argmax(dim=1).tolist() if len(keys) else []
    finally:
        torch.set_num_threads(threads)
    counts = Counter(codes[i] for i in predicted)
    return {"model": str(spec.model), "weights_sha256": loaded.digest, "sample": len(keys), "stride": stride,
            "templates": list(templates), "classes": {code: spec.classes[code] for code in codes},
            "counts": {code: counts.get(code, 0) for code in codes}}
