"""One article → its figure–caption pairs and its rejects.

Reads the newest version of an article (older versions are recorded as superseded), applies the
article-level checks (metadata, retraction, licence, XML), then per figure the caption checks,
then per graphic the media match (by stem: PMC's hrefs carry no extension) and the image checks.
Images that pass are written to the content-addressed image store (and, with
`ingest.panels.enabled`, cut into panel pairs: `ingest.panels`); everything else becomes a
`Reject`. Nothing here raises for bad input.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from biomedclip.ingest import licenses
from biomedclip.ingest.images import (
    IMAGE_SUFFIXES,
    ImageRejected,
    ImageStore,
    decode_image,
    encode_image,
)
from biomedclip.ingest.jats import Figure, parse_article
from biomedclip.ingest.panels import decode_side, split_panels
from biomedclip.ingest.params import IngestParams
from biomedclip.ingest.rejects import Reason, Reject, Rejected
from biomedclip.ingest.sources import ArticleFiles, VersionRef, read_version
from biomedclip.storage import MissingObject, ObjectStore, UnsafeKey

log = logging.getLogger(__name__)
# Which file to take when several share a stem (PMC ships thumbnails as .gif beside the figure).
_PREFERENCE = {".jpg": 0, ".jpeg": 0, ".png": 1, ".tif": 2, ".tiff": 2, ".webp": 3, ".bmp": 4,
               ".gif": 5}


@dataclass
class ArticleResult:
    pmcid: str
    version: int
    digest: str
    source_uri: str
    pairs: list[dict[str, Any]] = field(default_factory=list)
    panels: list[dict[str, Any]] = field(default_factory=list)  # with ingest.panels.enabled
    rejects: list[Reject] = field(default_factory=list)
    figures: int = 0
    graphics: int = 0
    unchanged: bool = False  # same digest as the last run: nothing was re-read


def pair_id(pmcid: str, fig_key: str, href: str) -> str:
    """Stable across runs and versions: the article, the figure's id and the graphic's href."""
    return hashlib.sha256(f"{pmcid}\x1f{fig_key}\x1f{href}".encode()).hexdigest()[:20]


def caption_sha256(caption: str) -> str:
    return hashlib.sha256(caption.encode()).hexdigest()


def href_stem(href: str) -> str:
    """`info:doi/10.1371/journal.pone.0052690.g001` → `journal.pone.0052690.g001`; `a.jpg` → `a`."""
    if "\\" in href or "\x00" in href or ".." in PurePosixPath(href).parts:
        raise UnsafeKey(f"graphic href {href!r} tries to leave its folder")
    name = href.rpartition("/")[2].rpartition(":")[2] if "/" in href else href.rpartition(":")[2]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES else name


class MediaIndex:
    """Media files of one article version, looked up by the stem a <graphic> names."""

    def __init__(self, names: list[str]) -> None:
        self.by_stem: dict[str, list[str]] = {}
        for name in names:
            stem, dot, suffix = name.rpartition(".")
            if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES:
                self.by_stem.setdefault(stem, []).append(name)

    def find(self, stem: str) -> str | None:
        candidates = self.by_stem.get(stem)
        if not candidates:  # PLOS: href "journal.pone.X.g001", file "pone.X.g001.jpg"
            close = [s for s in self.by_stem if stem.endswith("." + s) or s.endswith("." + stem)]
            candidates = self.by_stem[close[0]] if len(close) == 1 else None
        if not candidates:
            return None
        return min(candidates,
                   key=lambda n: (_PREFERENCE.get("." + n.rpartition(".")[2].lower(), 9), n))


def extract_article(store: ObjectStore, versions: list[VersionRef], params: IngestParams,
                    images: ImageStore, known_digest: str | None = None) -> ArticleResult:
    """Process the newest of `versions`; `known_digest` lets an unchanged article be skipped."""
    newest = versions[-1]
    result = ArticleResult(newest.pmcid, newest.version, "", store.uri_of(newest.key))
    for old in versions[:-1]:
        result.rejects.append(Reject(Reason.SUPERSEDED_VERSION,
                                     f"version {newest.version} supersedes it",
                                     store.uri_of(old.key), old.pmcid, old.version))

    def reject(reason: Reason, detail: str, **where: str) -> None:
        result.rejects.append(Reject(reason, detail, where.pop("uri", result.source_uri),
                                     newest.pmcid, newest.version, **where))

    try:
        files = read_version(store, newest, params.layout)
        result.digest = files.digest
        if known_digest is not None and known_digest == files.digest:
            result.unchanged = True
            return result
        if files.meta.get("is_retracted") is True:
            reject(Reason.RETRACTED, "is_retracted in the PMC metadata")
            return result
        code = licenses.from_code(files.meta.get("license_code"))
        allowed = licenses.allowed_codes(params.licenses.allowed,
                                         params.licenses.allow_non_commercial)
        if code is not None and code not in allowed:  # refused before any XML or image is fetched
            reject(Reason.LICENSE_NOT_ALLOWED, f"licence {code} is not in the allowed set")
            return result
        article = parse_article(files.xml())
    except Rejected as exc:  # ArticleRejected, JatsError
        reject(exc.reason, exc.detail)
        return result
    code = code or article.license.code
    if code is None:
        reject(Reason.LICENSE_UNKNOWN, "no licence in the metadata, file list or <permissions>")
        return result
    if code not in allowed:
        reject(Reason.LICENSE_NOT_ALLOWED, f"licence {code} is not in the allowed set")
        return result
    if not article.figures:
        reject(Reason.NO_FIGURES, "the article has no <fig>")
        return result
    media = MediaIndex(list(files.media))
    pmid = str(files.meta.get("pmid") or article.pmid or "")
    seen_keys: set[str] = set()
    for index, fig in enumerate(article.figures):
        result.figures += 1
        fig_key = fig.fig_id or f"fig-{index + 1}"
        if fig_key in seen_keys:  # malformed XML repeats ids: keep pair ids unique
            fig_key = f"{fig_key}#{index + 1}"
        seen_keys.add(fig_key)
        _extract_figure(files, media, fig, fig_key, index, pmid, code, article.year, params, images,
                        result, reject)
    return result


def _extract_figure(files: ArticleFiles, media: MediaIndex, fig: Figure, fig_key: str,
                    index: int, pmid: str, code: str, year: int | None, params: IngestParams,
                    images: ImageStore, result: ArticleResult, reject: Any) -> None:
    words = len(fig.caption.split())
    where = {"fig_id": fig_key}
    if not fig.caption:
        return reject(Reason.CAPTION_MISSING, "the figure has no caption text", **where)
    if words < params.caption.min_words:
        return reject(Reason.CAPTION_TOO_SHORT, f"{words} words < {params.caption.min_words}",
                      **where)
    if words > params.caption.max_words:
        return reject(Reason.CAPTION_TOO_LONG, f"{words} words > {params.caption.max_words}",
                      **where)
    if not fig.graphics:
        return reject(Reason.GRAPHIC_MISSING, "the figure has no <graphic>", **where)
    for number, href in enumerate(fig.graphics):
        result.graphics += 1
        where = {"fig_id": fig_key, "href": href}
        try:
            name = media.find(href_stem(href))
        except UnsafeKey as exc:
            reject(Reason.MEDIA_NAME_UNSAFE, str(exc), **where)
            continue
        if name is None:
            reject(Reason.MEDIA_MISSING, f"no media file with stem {href_stem(href)!r}", **where)
            continue
        separator = "/" if params.layout == "opendata" else "#"
        uri = f"{result.source_uri}{separator}{name}"
        try:
            decoded = decode_image(files.media[name](), params.image, long_side=decode_side(params))
        except MissingObject as exc:
            reject(Reason.MEDIA_MISSING, str(exc), uri=uri, **where)
            continue
        except UnsafeKey as exc:  # e.g. a media file that is a link out of the source tree
            reject(Reason.MEDIA_NAME_UNSAFE, f"{name}: {exc}", uri=uri, **where)
            continue
        except ImageRejected as exc:
            reject(exc.reason, f"{name}: {exc.detail}", uri=uri, **where)
            continue
        image = encode_image(decoded.rgb, params.image, found=(decoded.width, decoded.height))
        pair = pair_id(result.pmcid, fig_key, href)
        status = detail = None
        if params.panels.enabled:
            outcome = split_panels(decoded, fig.caption, pair, params, images)
            status, detail = outcome.status, outcome.detail
            result.panels += outcome.panels
        result.pairs.append({
            "pair_id": pair,
            "pmcid": result.pmcid,
            "pmid": pmid,
            "version": result.version,
            "fig_id": fig_key,
            "label": fig.label,
            "caption": fig.caption,
            "panels": fig.panels,
            "image_key": images.put(image),
            "image_sha256": image.sha256,
            "width": image.width,
            "height": image.height,
            "phash": image.phash,
            "license": code,
            "source_uri": uri,
            "ordinal": index * 1000 + number,
            "caption_sha256": caption_sha256(fig.caption),
            "panel_status": status,
            "panel_detail": detail,
            "year": year,
            "source_format": decoded.format,
            "source_mode": decoded.mode,
            "source_width": decoded.width,
            "source_height": decoded.height,
        })
        del decoded
