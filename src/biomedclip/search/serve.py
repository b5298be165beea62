"""`biomedclip search serve`: the search page and its JSON API, an ASGI app served by uvicorn.

Routes:
- `GET /` the page; `GET /?q=...` and `POST /` (a multipart form, with an optional image) the page
  with results;
- `GET /api/search?q=&k=&filter=...` and `POST /api/search` (multipart: `image`, and optionally
  `q`, `k`, `filter`; or the image itself as the body, with `q`/`k`/`filter` in the query string):
  JSON `{"query", "model", "index", "results": [{rank, score, id, kind, pmcid, figure, label, panel,
  caption, license, year, split, type, type_class, image_key, url, thumbnail}]}`;
- `GET /thumb/<image key>` a result's image from the ingest's store.

Why Starlette and uvicorn: both are already in the lock (FastAPI, a direct dependency, is built on
Starlette; uvicorn serves Prefect's and MLflow's servers), uvicorn is a production HTTP server
(HTTP/1.1 keep-alive, h11 parsing, graceful shutdown), and Starlette's TestClient runs the app
in-process for the unit tests. Multipart bodies are parsed with the standard library's `email`
package, after the size check, because python-multipart (Starlette's form parser) is not in the
lock.

Bad input is a 4xx that names it, never a 500: a query longer than `serve.max_query_chars` or a k
outside [1, `serve.max_k`] (400), a filter the parser refuses (400, its message), an upload over
`serve.max_upload_mb` (413), an upload the ingest's image checks refuse (`decode_image`: the pixel
limit read from the header, 413; not an image or not an allowed format, 415; under the minimum
side, 400). An index that does not match its model, or no index, is a 503 saying so.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomedclip.ingest.images import ImageRejected, decode_image
from biomedclip.ingest.params import ImageParams
from biomedclip.ingest.rejects import Reason
from biomedclip.search.build import MANIFEST_FILE
from biomedclip.search.filters import Filter, FilterError, parse_filter
from biomedclip.search.page import render_page
from biomedclip.search.params import ServeParams
from biomedclip.search.searcher import IndexMissing, IndexModelMismatch, Result, Searcher

log = logging.getLogger(__name__)

MIB = 1 << 20
UPLOAD_FORMATS = ("JPEG", "PNG", "TIFF", "GIF", "BMP", "WEBP")
IMAGE_KEY = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.jpg$")
HEADERS = {
    # No script may run on the page, whatever a caption holds; images only from this server.
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class QueryError(ValueError):
    """A request the search cannot answer; `status` is its 4xx (or 503) code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SearchService:
    """The index folder and the model it is searched with; reopened when the index folder is
    replaced (a refresh), so the server answers from the new index without a restart."""

    folder: Path
    model: str | None = None
    tracking: Any = None
    _searcher: Searcher | None = field(default=None, repr=False)
    _stamp: tuple[int, int] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self) -> Searcher:
        try:
            stat = (self.folder / MANIFEST_FILE).stat()
        except OSError:
            raise QueryError(503, f"no index at {self.folder} (build it: `dvc repro index`)") from None
        stamp = (stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            if self._searcher is None or stamp != self._stamp:
                try:
                    self._searcher = Searcher.open(self.folder, self.model, tracking=self.tracking)
                except (IndexModelMismatch, IndexMissing) as exc:
                    self._searcher = None
                    raise QueryError(503, str(exc)) from None
                self._stamp = stamp
                log.info("serving %s (%s, %d vectors)", self.folder, self._searcher.manifest["factory"],
                         self._searcher.manifest["vectors"])
            return self._searcher


# -- reading a request ---------------------------------------------------------------------------
def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """A multipart/form-data body → (text fields, uploaded files by field name)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise QueryError(400, "the body is not a multipart/form-data form")
    fields: dict[str, list[str]] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            if payload:
                files.setdefault(name, payload)
            continue
        try:
            fields.setdefault(name, []).append(payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise QueryError(400, f"form field {name!r} is not UTF-8 text") from None
    return fields, files


def check_upload(data: bytes, checks: ImageParams, limit_mb: float) -> Any:
    """The uploaded image as RGB, checked as the ingest checks images; else a QueryError."""
    if len(data) > limit_mb * MIB:
        raise QueryError(413, f"image: {len(data) / MIB:.1f} MiB, larger than the {limit_mb:g} MiB allowed")
    try:
        decoded = decode_image(data, checks, long_side=1024)
    except ImageRejected as exc:
        status = {Reason.IMAGE_TOO_LARGE: 413, Reason.IMAGE_UNREADABLE: 415}.get(exc.reason, 400)
        raise QueryError(status, f"image: {exc.reason.value} ({exc.detail})") from None
    if decoded.format not in UPLOAD_FORMATS:
        raise QueryError(415, f"image: {decoded.format or 'unknown'} images are not accepted "
                              f"({', '.join(UPLOAD_FORMATS)})")
    return decoded.rgb


def _one(fields: dict[str, list[str]], name: str) -> str:
    values = [v.strip() for v in fields.get(name, []) if v.strip()]
    return values[0] if values else ""


def read_query(fields: dict[str, list[str]], serve: ServeParams) -> dict[str, Any]:
    """The query's text, k and filters from form or URL fields, bounded; else a QueryError."""
    text = _one(fields, "q")
    if len(text) > serve.max_query_chars:
        raise QueryError(400, f"q: {len(text):,} characters, at most {serve.max_query_chars:,}")
    raw_k = _one(fields, "k") or str(serve.default_k)
    if not re.fullmatch(r"\d{1,6}", raw_k):
        raise QueryError(400, f"k: {raw_k[:20]!r} is not a whole number")
    k = int(raw_k)
    if not 1 <= k <= serve.max_k:
        raise QueryError(400, f"k: {k} is outside 1..{serve.max_k}")
    texts = [t for v in fields.get("filter", []) for t in [v.strip()] if t]
    texts += [line.strip() for v in fields.get("filters", []) for line in v.splitlines() if line.strip()]
    licences = [v for v in fields.get("license", []) if v.strip()]
    if licences:
        texts.append("license in (" + ", ".join(f'"{v}"' for v in licences) + ")")
    if year := _one(fields, "year_from"):
        texts.append(f"year >= {year}")
    if kind := _one(fields, "type"):
        texts.append(f'type = "{kind}"')
    if len(texts) > serve.max_filters:
        raise QueryError(400, f"filter: {len(texts)} filters, at most {serve.max_filters}")
    try:
        filters: list[Filter] = [parse_filter(t) for t in texts]
    except FilterError as exc:
        raise QueryError(400, str(exc)) from None
    return {"q": text, "k": k, "filter": filters, "license": licences, "year_from": _one(fields, "year_from"),
            "type": _one(fields, "type")}


def answer(service: SearchService, query: dict[str, Any], image: Any) -> tuple[Searcher, list[Result]]:
    if not query["q"] and image is None:
        raise QueryError(400, "q: give a query text, an image, or both")
    searcher = service.get()
    try:
        return searcher, searcher.search(query["q"] or None, image, k=query["k"], filters=query["filter"])
    except FilterError as exc:
        raise QueryError(400, str(exc)) from None


# -- the app -------------------------------------------------------------------------------------
def create_app(service: SearchService, *, serve: ServeParams, checks: ImageParams, images: Path | None) -> Any:
    """The ASGI app. `images` is the ingest's image store (thumbnails), `checks` its image checks
    (`ingest.image`), applied to uploads."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    limit = int(serve.max_upload_mb * MIB) + 64 * 1024  # the image and the form around it

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise QueryError(413, f"request body: {int(declared) / MIB:.1f} MiB, larger than the "
                                  f"{serve.max_upload_mb:g} MiB allowed")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise QueryError(413, f"request body: larger than the {serve.max_upload_mb:g} MiB allowed")
            chunks.append(chunk)
        return b"".join(chunks)

    async def fields_and_image(request: Request) -> tuple[dict[str, list[str]], Any]:
        fields: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            fields.setdefault(name, []).append(value)
        if request.method != "POST":
            return fields, None
        content_type = request.headers.get("content-type", "")
        body = await body_of(request)
        upload = None
        if content_type.startswith("multipart/form-data"):
            form, files = parse_multipart(content_type, body)
            for name, values in form.items():
                fields.setdefault(name, []).extend(values)
            upload = files.get("image")
        elif content_type.startswith("application/x-www-form-urlencoded"):
            from urllib.parse import parse_qs

            for name, values in parse_qs(body.decode("utf-8", "replace")).items():
                fields.setdefault(name, []).extend(values)
        elif body:
            upload = body  # the image as the body itself
        image = check_upload(upload, checks, serve.max_upload_mb) if upload else None
        return fields, image

    def thumbnail(key: str | None) -> str | None:
        return f"/thumb/{key}" if images is not None and key else None

    async def api_search(request: Request) -> Response:
        try:
            fields, image = await fields_and_image(request)
            query = read_query(fields, serve)
            searcher, results = answer(service, query, image)
        except QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=HEADERS)
        manifest = searcher.manifest
        return JSONResponse({
            "query": {"q": query["q"], "k": query["k"], "filters": [str(f) for f in query["filter"]],
                      "image": image is not None},
            "model": manifest["model"], "index": {"family": manifest["family"], "vectors": manifest["vectors"]},
            "results": [{**r.as_dict(), "thumbnail": thumbnail(r.image_key)} for r in results]}, headers=HEADERS)

    async def page(request: Request) -> Response:
        status, error, results = 200, None, None
        shown: dict[str, Any] = {"q": "", "k": serve.default_k, "filter": [], "license": [], "year_from": "",
                                 "type": ""}
        try:
            fields, image = await fields_and_image(request)
            shown.update(q=_one(fields, "q")[:serve.max_query_chars], k=_one(fields, "k")[:8] or serve.default_k,
                         license=fields.get("license", []), year_from=_one(fields, "year_from")[:8],
                         type=_one(fields, "type")[:80],
                         filter=[line for v in fields.get("filter", []) + fields.get("filters", [])
                                 for line in v.splitlines() if line.strip()])
            if request.method == "POST" or any(_one(fields, n) for n in ("q", "filter", "filters")):
                _, results = answer(service, read_query(fields, serve), image)
        except QueryError as exc:
            status, error = exc.status, str(exc)
        try:
            searcher = service.get()
        except QueryError as exc:
            searcher = None
            status, error = (status, error) if error else (exc.status, str(exc))
        manifest = searcher.manifest if searcher else {"model": {"source": "no model"}, "vectors": 0}
        html = render_page(query=shown, vocabulary=searcher.vocabulary() if searcher else {}, results=results,
                           error=error, model=manifest["model"]["source"], vectors=manifest["vectors"],
                           max_k=serve.max_k, thumbnails=images is not None)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    async def thumb(request: Request) -> Response:
        from biomedclip.storage import LocalStore, MissingObject

        key = request.path_params["key"]
        if images is None or not IMAGE_KEY.match(key):
            return Response(f"no image {key[:80]!r}", status_code=404, media_type="text/plain", headers=HEADERS)
        try:
            data = LocalStore(images).get(key)
        except (MissingObject, FileNotFoundError):
            return Response(f"no image {key}", status_code=404, media_type="text/plain", headers=HEADERS)
        return Response(data, media_type="image/jpeg",
                        headers={**HEADERS, "Cache-Control": "public, max-age=31536000, immutable"})

    return Starlette(routes=[Route("/", page, methods=["GET", "POST"]),
                             Route("/api/search", api_search, methods=["GET", "POST"]),
                             Route("/thumb/{key:path}", thumb, methods=["GET"])])


def serve_forever(app: Any, *, host: str = "127.0.0.1", port: int = 8765) -> None:  # pragma: no cover - blocks
    """Serve `app` until interrupted (uvicorn, one process)."""
    import uvicorn

    if host not in LOOPBACK:
        log.warning("search serve is bound to %s: anyone who can reach this machine on port %d can query the "
                    "corpus (the default is 127.0.0.1)", host, port)
    log.info("search page on http://%s:%d/ (pid %d)", host if ":" not in host else f"[{host}]", port, os.getpid())
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
