"""The search page, rendered on the server: a form, and results as thumbnails with their captions.

No scripts at all (the server sends `script-src 'none'`): the form submits as any form does, and
every text from the corpus or the query is HTML-escaped here, so a caption holding `<script>` or
`<img onerror=...>` shows as those characters and runs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from biomedclip.search.searcher import Result

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
header{background:#12324f;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:13px;opacity:.85}
form{background:#fff;margin:16px 24px;padding:14px 16px;border:1px solid #d8dde3;border-radius:6px}
form .row{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin:6px 0}
input[type=search]{flex:1;min-width:280px;font-size:16px;padding:7px 9px}
button{font-size:15px;padding:7px 16px;background:#12324f;color:#fff;border:0;border-radius:4px}
fieldset{border:1px solid #d8dde3;border-radius:4px;padding:4px 10px}legend{font-size:12px;color:#555}
.error{margin:0 24px;padding:10px 14px;background:#fdecea;border:1px solid #f5c2bd;border-radius:6px}
.summary{margin:0 24px 6px;color:#444;font-size:13px}
ol.results{list-style:none;margin:0;padding:0 24px 24px;display:grid;
grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px}
ol.results li{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:10px;display:flex;gap:10px}
ol.results img{width:120px;height:120px;object-fit:contain;background:#eef0f3;flex:none}
.meta{font-size:12px;color:#555}.caption{font-size:13px;max-height:7.5em;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere}
.score{font-weight:600}
"""


def _options(values: Sequence[str], chosen: Sequence[str]) -> str:
    return "".join(f'<label><input type="checkbox" name="license" value="{escape(v)}"'
                   f'{" checked" if v in chosen else ""}> {escape(v)}</label> ' for v in values)


def _type_select(types: Sequence[str], chosen: str) -> str:
    options = ['<option value="">any</option>'] + [
        f'<option value="{escape(t)}"{" selected" if t == chosen else ""}>{escape(t)}</option>' for t in types]
    return f'<select name="type" aria-label="figure type">{"".join(options)}</select>'


def _result(result: Result, thumbnails: bool) -> str:
    title = " ".join(escape(part) for part in (result.label or result.figure or result.id,
                                               f"panel {result.panel}" if result.panel else "") if part)
    link = f'<a href="{escape(result.url)}" rel="noopener noreferrer">{escape(result.pmcid or "")}</a>' \
        if result.url else escape(result.pmcid or "")
    facts = " · ".join(escape(str(v)) for v in (result.license, result.year, result.type, result.split) if v)
    image = (f'<img src="/thumb/{escape(result.image_key)}" alt="{title}" loading="lazy">'
             if thumbnails and result.image_key else "")
    return (f'<li class="result">{image}<div><div><span class="score">{result.rank}. {result.score:.3f}</span> '
            f'{title} — {link}</div><div class="meta">{facts}</div>'
            f'<div class="caption">{escape(result.caption or "")}</div></div></li>')


def render_page(*, query: dict[str, Any], vocabulary: dict[str, list], results: list[Result] | None,
                error: str | None, model: str, vectors: int, max_k: int, thumbnails: bool) -> str:
    """The whole page; `query` echoes what was asked (q, k, license, year_from, type, filter)."""
    q, k = str(query.get("q") or ""), query.get("k") or 10
    years = vocabulary.get("year") or []
    year_hint = f' placeholder="{years[0]}–{years[1]}"' if years else ""
    filters = "\n".join(str(f) for f in query.get("filter") or [])
    body = [f"""<header><h1>BiomedCLIP figure search</h1>
<p>{vectors:,} figures and panels, embedded by {escape(model)}</p></header>
<form method="post" action="/" enctype="multipart/form-data">
<div class="row"><input type="search" name="q" value="{escape(q)}" placeholder="e.g. pneumothorax on a chest radiograph"
 aria-label="query" autofocus>
<label>k <input type="number" name="k" min="1" max="{max_k}" value="{escape(str(k))}" style="width:5em"></label>
<button type="submit">Search</button></div>
<div class="row"><label>or an image <input type="file" name="image" accept="image/*"></label></div>
<div class="row"><fieldset><legend>licence</legend>
{_options(vocabulary.get("license") or [], query.get("license") or [])}</fieldset>
<label>from year
<input type="number" name="year_from" value="{escape(str(query.get("year_from") or ""))}"{year_hint} style="width:6em">
</label>
<label>type {_type_select(vocabulary.get("type") or [], str(query.get("type") or ""))}</label>
<label>filters
<textarea name="filters" rows="1" cols="28" placeholder="year >= 2020">{escape(filters)}</textarea></label>
</div></form>"""]
    if error:
        body.append(f'<p class="error" role="alert">{escape(error)}</p>')
    if results is not None:
        body.append(f'<p class="summary">{len(results)} result{"s" if len(results) != 1 else ""}</p>')
        body.append('<ol class="results">' + "".join(_result(r, thumbnails) for r in results) + "</ol>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>BiomedCLIP figure search</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
