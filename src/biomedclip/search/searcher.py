"""Search an index folder with text and/or an image: ranked figures with their metadata.

A `Searcher` pairs an index with the model that embeds the queries, and refuses any other pair:
the model it loads (the one named, else the one the index records) must have the weights the
index was built from (sha256), or `IndexModelMismatch` says which is which and how to refresh.
A text query is the text embedding, an image query the image embedding, both together their
normalised sum; the score is the cosine similarity to a figure's image embedding.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from biomedclip.card.figure_types import group_of
from biomedclip.search import families
from biomedclip.search.build import FACETS_FILE, INDEX_FILE, MANIFEST_FILE, METADATA_FILE
from biomedclip.search.facets import Facets, mask
from biomedclip.search.filters import Filter

PMCID = re.compile(r"^PMC\d{1,12}$")
ARTICLE_URL = "https://pmc.ncbi.nlm.nih.gov/articles/{pmcid}/"


class IndexModelMismatch(RuntimeError):
    """The model does not have the weights the index was built from."""


class IndexMissing(FileNotFoundError):
    """No index folder (or an incomplete one) where one was expected."""


@dataclass(frozen=True)
class Result:
    rank: int
    score: float
    id: str
    kind: str
    pmcid: str | None
    figure: str | None  # the figure's id in the article (<fig id>)
    label: str | None  # "Figure 2"
    panel: str | None  # the panel letter, for a panel pair
    caption: str | None
    license: str | None
    year: int | None
    split: str | None
    type: str | None  # the estimated figure type's branch (radiology, microscopy, ...)
    type_class: str | None  # and its class name
    image_key: str | None

    @property
    def url(self) -> str | None:
        """The article on PMC (only for a well-formed PMCID)."""
        return ARTICLE_URL.format(pmcid=self.pmcid) if self.pmcid and PMCID.match(self.pmcid) else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "url": self.url}


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise IndexMissing(f"{folder}: no index here ({MANIFEST_FILE} missing): build it with the index stage "
                           "(`dvc repro index`)")
    return json.loads(path.read_text())


class Searcher:
    def __init__(self, folder: Path, loaded: Any, manifest: dict[str, Any]) -> None:
        import faiss

        self.folder, self.loaded, self.manifest = folder, loaded, manifest
        self.index = faiss.read_index(str(folder / INDEX_FILE))
        classes = (manifest.get("figure_types") or {}).get("classes") or []
        self.classes = [(code, name) for code, name in classes]
        self.facets = Facets.load(folder / FACETS_FILE, self.classes)
        self.effort = families.SearchEffort(**{k: v for k, v in manifest["search"].items()})
        self._lock = threading.Lock()  # the model and FAISS's parameters: one query at a time

    @classmethod
    def open(cls, folder: Path, model: str | None = None, *, tracking: Any = None) -> Searcher:
        """The index in `folder` with `model` (default: the one it was built from); refuses a
        model whose weights are not the index's."""
        from biomedclip.models import load_model

        manifest = read_manifest(folder)
        source = model or manifest["model"]["source"]
        loaded = load_model(source, tracking=tracking)
        expected = manifest["model"]["sha256"]
        if loaded.digest != expected:
            raise IndexModelMismatch(
                f"the index {folder} was built from {manifest['model']['source']} (weights sha256 {expected[:12]}), "
                f"not from {source} (weights sha256 {loaded.digest[:12]}): it cannot answer for that model. "
                "Re-embed and re-index for it (the index/refresh deployment, or `dvc repro index`)")
        return cls(folder, loaded, manifest)

    @property
    def model_sha256(self) -> str:
        return self.manifest["model"]["sha256"]

    def query_vector(self, text: str | None = None, image: Image.Image | None = None) -> np.ndarray:
        """(1, D) float32, unit length."""
        from biomedclip.evaluate.embedding import embed_images, embed_texts

        if text is None and image is None:
            raise ValueError("a query needs a text, an image, or both")
        parts = []
        if text is not None:
            parts.append(embed_texts(self.loaded, [text], 1)[0].numpy())
        if image is not None:
            parts.append(embed_images(self.loaded, [image], 1)[0].numpy())
        vector = np.sum(parts, axis=0).astype(np.float32)
        return (vector / max(float(np.linalg.norm(vector)), 1e-12))[None, :]

    def search(self, text: str | None = None, image: Image.Image | None = None, *, k: int = 10,
               filters: Sequence[Filter] = ()) -> list[Result]:
        """The `k` best figures for the query that pass every filter, best first."""
        import faiss

        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        allowed = mask(self.facets, filters)
        with self._lock:
            vector = self.query_vector(text, image)
            selector, bits = None, None
            if allowed is not None:
                if not allowed.any():
                    return []
                bits = np.packbits(allowed, bitorder="little")
                selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
            scores, positions = families.search(self.index, vector, min(k, len(self.facets)), self.effort, selector)
            del bits  # the selector reads it until the search returns
        hits = [(float(s), int(p)) for s, p in zip(scores[0], positions[0], strict=True) if p >= 0]
        return self._results(hits)

    def _results(self, hits: list[tuple[float, int]]) -> list[Result]:
        if not hits:
            return []
        db = sqlite3.connect(f"file:{self.folder / METADATA_FILE}?mode=ro", uri=True)
        try:
            marks = ", ".join("?" * len(hits))
            rows = {row[0]: row for row in db.execute(
                "SELECT pos, id, kind, pmcid, figure, label, panel, caption, license, year, split, image_key, type "
                f"FROM meta WHERE pos IN ({marks})", [p for _, p in hits])}
        finally:
            db.close()
        results = []
        for rank, (score, pos) in enumerate(hits, start=1):
            _, id_, kind, pmcid, figure, label, panel, caption, license_, year, split, key, typ = rows[pos]
            code, name = self.classes[typ] if typ is not None and typ < len(self.classes) else (None, None)
            results.append(Result(rank, round(score, 6), id_, kind, pmcid, figure, label, panel, caption, license_,
                                  year, split, group_of(code) if code else None, name, key))
        return results

    def vocabulary(self) -> dict[str, list[str]]:
        """The values the filters can take in this index (what the page offers)."""
        from biomedclip.ingest.licenses import CODES

        licences = sorted({CODES[c] for c in np.unique(self.facets.license).tolist() if c < len(CODES)})
        years = self.facets.year[self.facets.year > 0]
        types = sorted({group_of(self.classes[c][0]) for c in np.unique(self.facets.type).tolist()
                        if c < len(self.classes)})
        return {"license": licences, "type": types,
                "year": [int(years.min()), int(years.max())] if len(years) else []}
