"""Re-embed and re-index for a model: what the `index/refresh` deployment runs when the champion
changes (a promotion, or a rollback), so that the index always answers for the model it names."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from biomedclip.embed.params import EmbedParams
from biomedclip.embed.run import rejects_path
from biomedclip.embed.stage import embed_corpus, embeddings_file
from biomedclip.search.build import build_index
from biomedclip.search.params import IndexParams

log = logging.getLogger(__name__)


def refresh_index(embed: EmbedParams, index: IndexParams, *, model: str, pairs: Path, panels: Path | None,
                  images: Path, figure_types: Mapping[str, str] | None = None,
                  tracking: Any = None) -> dict[str, Any]:
    """Embed the corpus with `model` into `embed.out`, then rebuild `index.out` from it; both are
    replaced atomically, so a search in between answers from the old pair (model, index), never a
    mix. Name the model by version (`models:/biomedclip/7`, as the promotion event's payload
    does): the index records what it is given."""
    embedded = embed_corpus(embed, model=model, pairs=pairs, panels=panels, images=images, tracking=tracking)
    metrics = build_index(index, embeddings=embeddings_file(embed), pairs=pairs, panels=panels,
                          figure_types=figure_types, model=model, tracking=tracking)
    log.info("refreshed for %s: %d rows embedded (%d rejected), index %s recall@10 %.3f", model, embedded["rows"],
             embedded["rejected"], metrics["factory"], metrics["recall_at_10"])
    return {"model": model, "embed": embedded, "index": metrics, "rejects": str(rejects_path(embeddings_file(embed)))}
