"""The card as a page a person reads (`index.html`) and as markdown (the Prefect artifact).

The page is plain HTML with inline CSS and relative PNG files, no scripts, no web fonts, no
network: it looks the same opened from a laptop's disk, a DVC cache or a CI artifact. The only
link out of the folder is the relative one to the gate's Great Expectations Data Docs (which pull
their own styles from CDNs: they are linked, never embedded). Every number comes from the summary
dict `build_card` returns, so the page, the markdown and `summary.json` never disagree; there is
no timestamp, so the same inputs give the same bytes.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PAPER_FIT = "~90% of PMC-15M"
STYLE = """
:root { --ink: #1f2328; --muted: #5b616b; --line: #d9dce1; --soft: #f5f6f8; --blue: #3b6ea5; --bad: #b42318; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); line-height: 1.5; margin: 0; background: #fff; }
main { max-width: 1000px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
header { margin-bottom: 0.5rem; }
h1 { font-size: 1.7rem; margin: 0 0 0.25rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 0.5rem; padding-top: 0.5rem; border-top: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.4rem 0 0.4rem; }
.lead { color: var(--muted); margin: 0.25rem 0 1rem; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(125px, 1fr)); gap: 0.6rem; }
.tile { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 0.55rem 0.75rem; }
.tile .n { font-size: 1.35rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile .k { color: var(--muted); font-size: 0.82rem; }
.tile.bad .n { color: var(--bad); }
nav { font-size: 0.9rem; margin: 0.9rem 0 0; color: var(--muted); }
nav a { color: var(--blue); margin-right: 0.9rem; text-decoration: none; }
figure { margin: 0.8rem 0 0.4rem; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 4px; }
figcaption, .reading { margin: 0.45rem 0 0.2rem; }
.note { color: var(--muted); font-size: 0.9rem; }
.warn { background: #fff4e5; border: 1px solid #f1c27d; border-radius: 6px; padding: 0.5rem 0.75rem; }
.estimate { display: inline-block; background: #fff4e5; border: 1px solid #f1c27d; border-radius: 4px;
            padding: 0 0.4rem; font-size: 0.85rem; font-weight: 600; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.88rem; width: 100%; }
th, td { border: 1px solid var(--line); padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
table.fixed { table-layout: fixed; }
td.wrap { overflow-wrap: anywhere; }
th { background: var(--soft); }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-size: 0.88em; background: var(--soft); padding: 0 0.2rem; border-radius: 3px; }
.pass { color: #1a7f37; font-weight: 600; }
.fail { color: var(--bad); font-weight: 600; }
footer { margin-top: 2.5rem; color: var(--muted); font-size: 0.85rem; border-top: 1px solid var(--line);
  padding-top: 0.75rem; }
"""
DETAIL_CHARS = 240


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pct(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def every(stride: int, what: str) -> str:
    """"every caption", "every 2nd caption", "every 13th caption"."""
    if stride == 1:
        return f"every {what}"
    suffix = "th" if 10 <= stride % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(stride % 10, "th")
    return f"every {stride:,}{suffix} {what}"


def _figure(name: str, alt: str, reading: str) -> str:
    return (f'<figure><img src="{esc(name)}" alt="{esc(alt)}">'
            f'<figcaption>{reading}</figcaption></figure>')


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
           widths: list[int] | None = None, wrap: set[int] = frozenset()) -> str:
    """A table of already-escaped cells; `widths` (percent per column) fixes the layout, `wrap`
    lets those columns break long words (paths, URIs)."""
    cells = "".join(f"<th>{esc(h)}</th>" for h in head)
    classes = {i: ' class="n"' for i in numeric} | {i: ' class="wrap"' for i in wrap}
    body = "".join("<tr>" + "".join(f"<td{classes.get(i, '')}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    if widths is None:
        return f"<table><tr>{cells}</tr>{body}</table>"
    cols = "".join(f'<col style="width: {w}%">' for w in widths)
    return f'<table class="fixed"><colgroup>{cols}</colgroup><tr>{cells}</tr>{body}</table>'


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _tile(value: str, key: str, bad: bool = False) -> str:
    return f'<div class="tile{" bad" if bad else ""}"><div class="n">{value}</div><div class="k">{esc(key)}</div></div>'


# -- readings: one sentence per chart, from the summary ------------------------------------------
def fit_sentence(tokens: Mapping[str, Any]) -> str:
    if not tokens.get("available"):
        return f"No token counts: {tokens['absent']}."
    if not tokens["sample"]:
        return "No captions to count."
    return (f"{tokens['fit_context']:.1%} of captions fit the {tokens['context_length']}-token context "
            f"(the paper: {PAPER_FIT}).")


def _captions(s: Mapping[str, Any], charts: Mapping[str, str]) -> str:
    words, tokens = s["captions"]["words"], s["captions"]["tokens"]
    parts = ['<section id="captions"><h2>Captions</h2>']
    if words["count"]:
        parts.append(_figure(charts["caption_words"], "histogram of caption lengths in words",
                             f"Half the captions are at most {words['median']:,} words, 90% at most "
                             f"{words['p90']:,} (from {words['min']:,} to {words['max']:,}; "
                             f"mean {words['mean']:.1f})."))
    if tokens.get("available") and tokens["sample"]:
        each = every(tokens["stride"], "caption of the manifest")
        parts.append(_figure(charts["caption_tokens"],
                             "histogram of caption lengths in tokens, with the context length",
                             f"<b>{esc(fit_sentence(tokens))}</b> Median {tokens['median']:,} tokens, 90% at most "
                             f"{tokens['p90']:,}, longest {tokens['max']:,}."))
        parts.append(f'<p class="note">Tokens are counted on a sample: {each} ({tokens["sample"]:,} of '
                     f'{tokens["rows"]:,}), with the text tower\'s tokenizer <code>{esc(tokens["tokenizer"])}</code>, '
                     "[CLS] and [SEP] included, untruncated; words are counted on every caption.</p>")
    else:
        parts.append(f'<p class="warn">{esc(fit_sentence(tokens))}</p>')
    parts.append("</section>")
    return "".join(parts)


def _images(s: Mapping[str, Any], charts: Mapping[str, str]) -> str:
    images, total = s["images"], s["pairs"]["total"]
    if not total:
        return '<section id="images"><h2>Images</h2><p>No pairs.</p></section>'
    side, stored, o = images["long_side"], images["stored_long_side"], images["orientation"]
    formats, modes = images["formats"], images["modes"]
    top_format = next(iter(formats))
    not_rgb = total - modes.get("RGB", 0)
    return ('<section id="images"><h2>Images</h2>'
            + _figure(charts["image_sizes"], "histograms of image long side and aspect ratio as published",
                      f"Half the images are at most {side['median']:,} px on the long side as published, 90% at most "
                      f"{side['p90']:,} px; {pct(images['resized'], total)} were resized when stored (stored long side "
                      f"at most {stored['max']:,} px). {pct(o['landscape'], total)} landscape, "
                      f"{pct(o['portrait'], total)} portrait, {pct(o['square'], total)} square.")
            + _figure(charts["formats"], "bar charts of file formats and colour modes as published",
                      f"{esc(top_format)} is the most common format ({pct(formats[top_format], total)}); "
                      f"{pct(not_rgb, total)} of the images were not RGB as published (stored as RGB JPEG).")
            + "</section>")


def _articles(s: Mapping[str, Any], charts: Mapping[str, str]) -> str:
    licences, articles, fpa = s["licenses"], s["articles"], s["figures_per_article"]
    total = s["pairs"]["total"]
    parts = ['<section id="articles"><h2>Licences and articles</h2>']
    if licences:
        top = next(iter(licences))
        parts.append(_figure(charts["licenses"], "bar chart of pairs per licence",
                             f"{len(licences)} licence{'s' if len(licences) != 1 else ''}; {esc(top)} covers "
                             f"{pct(licences[top], total)} of the pairs."))
    years = [y for y in articles["by_year"] if y != "unknown"]
    if articles["total"]:
        unknown = articles["by_year"].get("unknown", 0)
        span = f"from {years[0]} to {years[-1]}" if years else "none with a year"
        parts.append(_figure(charts["years"], "bar chart of articles per publication year",
                             f"{articles['total']:,} articles, published {span}"
                             + (f"; {unknown:,} without a publication year." if unknown else ".")))
        parts.append(_figure(charts["figures_per_article"], "bar chart of articles by the number of pairs they give",
                             f"An article gives {fpa['median']:,} pairs at the median (mean {fpa['mean']:.1f}, "
                             f"at most {fpa['max']:,})."))
    parts.append("</section>")
    return "".join(parts)


def _splits(s: Mapping[str, Any], charts: Mapping[str, str]) -> str:
    pairs, articles, panels = s["pairs"], s["articles"], s["panels"]
    total = pairs["total"]
    shares = ", ".join(f"{esc(k)} {pct(v, total)} ({v:,})" for k, v in pairs["by_split"].items())
    per_article = ", ".join(f"{esc(k)} {v:,}" for k, v in articles["by_split"].items())
    parts = ['<section id="splits"><h2>Splits</h2>']
    if total:
        parts.append(_figure(charts["splits"], "bar chart of pairs per split",
                             f"Pairs per split: {shares}. Articles per split: {per_article} (the split is by "
                             "article: an article's figures stay together)."))
    if panels is None:
        parts.append('<p class="note">No panel table was given.</p>')
    elif panels["total"]:
        per = panels["per_figure"]
        parts.append(f"<p>Panels: {panels['figures']:,} compound figures were split into {panels['total']:,} panel "
                     f"pairs ({per['mean']:.1f} per figure, {per['min']:,} to {per['max']:,}); they stay in their "
                     "figure's split.</p>")
    else:
        parts.append("<p>Panels: no panel pairs (the ingest's panel split is off, or it split no figure).</p>")
    parts.append("</section>")
    return "".join(parts)


def _rejects(s: Mapping[str, Any], charts: Mapping[str, str]) -> str:
    rejects, ingest = s["rejects"], s["ingest"]
    parts = ['<section id="rejects"><h2>Rejects</h2>']
    if not rejects["total"]:
        parts.append("<p>Nothing was rejected.</p>")
    else:
        top = next(iter(rejects["by_reason"]))
        rate = ingest.get("reject_rate")
        rate_text = f" (reject rate {rate:.1%} of the figures and images tried, from the ingest report)" \
            if isinstance(rate, int | float) else ""
        parts.append(_figure(charts["rejects"], "bar chart of rejects by reason",
                             f"{rejects['total']:,} inputs were left out{rate_text}; the most common reason is "
                             f"<code>{esc(top)}</code> ({rejects['by_reason'][top]:,})."))
        levels = ", ".join(f"{esc(k)} {v:,}" for k, v in rejects["by_level"].items())
        parts.append(f'<p class="note">By level: {levels}.</p><h3>Examples</h3>')
        rows = []
        for reason, n in rejects["by_reason"].items():
            for i, ex in enumerate(rejects["examples"].get(reason, [])):
                detail = ex["detail"] if len(ex["detail"]) <= DETAIL_CHARS else ex["detail"][:DETAIL_CHARS - 1] + "…"
                rows.append([f"<code>{esc(reason)}</code>" if i == 0 else "", f"{n:,}" if i == 0 else "",
                             esc(detail), esc(ex["pmcid"]), esc(ex["fig_id"]),
                             esc(ex["source_uri"])])
        parts.append(_table(["reason", "rejects", "detail", "PMCID", "figure", "source"], rows, numeric={1},
                            widths=[17, 7, 30, 12, 11, 23], wrap={0, 2, 4, 5}))
    decon = ingest.get("decontamination") or {}
    if decon.get("enabled"):
        overlaps = decon.get("overlaps") or {}
        named = ", ".join(f"{esc(k)} {v:,}" for k, v in overlaps.items()) or "none"
        parts.append(f"<p>Decontamination: pairs within {esc(decon.get('max_distance', '?'))} pHash bits of a "
                     f"benchmark image are rejected (<code>benchmark_overlap</code>); "
                     f"overlaps by benchmark: {named}.</p>")
    elif decon:
        parts.append("<p>Decontamination: off; the corpus was not checked against the evaluation benchmarks.</p>")
    parts.append("</section>")
    return "".join(parts)


def _figure_types(s: Mapping[str, Any], charts: Mapping[str, str]) -> str:
    types = s["figure_types"]
    parts = ['<section id="figure-types"><h2>Figure types</h2>']
    if types is None:
        why = s.get("figure_types_note") or "no model was given"
        parts.append(f"<p>Not estimated: {esc(why)} (card.figure_types.model: the champion, or the "
                     "published baseline).</p></section>")
        return "".join(parts)
    n, counts = types["sample"], types["counts"]
    top = sorted(counts, key=lambda c: (-counts[c], c))
    leading = ", ".join(f"{esc(c)} ({esc(types['classes'][c])}) {pct(counts[c], n)}" for c in top[:3] if counts[c])
    each = every(types["stride"], "pair")
    parts.append(f'<p><span class="estimate">Estimated by {esc(types["model"])}</span> — zero-shot over ImageCLEF '
                 "2015's medical modality classes, not labels: it shows what that model sees, and a weak model's "
                 "estimate says more about the model than about the corpus.</p>")
    if n:
        parts.append(_figure(charts["figure_types"], f"bar chart of estimated figure types by {types['model']}",
                             f"Most common, as estimated on {n:,} sampled images ({each}): {leading}."))
    rows = [[f"<code>{esc(c)}</code>", esc(types["classes"][c]), esc(types["groups"][c]), f"{counts[c]:,}",
             pct(counts[c], n)] for c in top]
    parts.append(_table(["code", "class (prompt)", "branch", "images", "share"], rows, numeric={3, 4}))
    templates = "; ".join(f"<code>{esc(t)}</code>" for t in types["templates"])
    parts.append(f'<p class="note">Model weights sha256 <code>{esc(types["weights_sha256"])}</code>; prompts '
                 f"{templates}; images: {each} of the manifest ({n:,}).</p></section>")
    return "".join(parts)


def _validation(s: Mapping[str, Any], docs_link: str | None) -> str:
    v = s["validation"]
    parts = ['<section id="validation"><h2>The gate</h2>']
    if v is None:
        parts.append("<p>No gate result was given.</p>")
    else:
        verdict = '<span class="pass">passed</span>' if v["success"] else '<span class="fail">FAILED</span>'
        parts.append(f"<p>The Great Expectations gate {verdict}: {plural(v['checks'], 'check')} on "
                     f"{plural(v['rows'], 'row')}, {plural(v['critical_failures'], 'critical failure')}, "
                     f"{plural(v['warnings'], 'warning')}.</p>")
        if v["failed"]:
            rows = [[esc(f["check"]), esc(f.get("column") or ""), esc(f["severity"]), esc(f["observed"])]
                    for f in v["failed"]]
            parts.append(_table(["check", "column", "severity", "observed"], rows))
    if docs_link is not None:
        parts.append(f'<p>Every check, with its observed values: <a href="{esc(docs_link)}">the Data Docs</a> '
                     '<span class="note">(Great Expectations\' own pages load their styles from CDNs: offline '
                     "they show unstyled)</span>.</p>")
    elif s["data_docs"]:
        parts.append(f'<p class="note">No Data Docs at {esc(s["data_docs"])}.</p>')
    parts.append("</section>")
    return "".join(parts)


def page(s: Mapping[str, Any], charts: Mapping[str, str], docs_link: str | None) -> str:
    """The HTML page of summary `s`; `charts` maps a chart's name to its PNG file name."""
    pairs, articles, rejects, tokens = s["pairs"], s["articles"], s["rejects"], s["captions"]["tokens"]
    v = s["validation"]
    tiles = [_tile(f"{pairs['total']:,}", "figure–caption pairs"), _tile(f"{articles['total']:,}", "articles")]
    if s["panels"] and s["panels"]["total"]:
        tiles.append(_tile(f"{s['panels']['total']:,}", "panel pairs"))
    tiles.append(_tile(" / ".join(f"{n:,}" for n in pairs["by_split"].values()) or "0",
                       " / ".join(pairs["by_split"]) or "splits"))
    tiles.append(_tile(f"{rejects['total']:,}", "rejected inputs"))
    tiles.append(_tile(f"{tokens['fit_context']:.1%}" if tokens.get("available") and tokens["sample"] else "–",
                       f"captions fit {tokens['context_length']} tokens"))
    if v is not None:
        tiles.append(_tile("passed" if v["success"] else "FAILED", "validation gate", bad=not v["success"]))
    warnings = "".join(f'<p class="warn">{esc(w)}</p>' for w in s["warnings"])
    sections = [("captions", "Captions"), ("images", "Images"), ("articles", "Licences and articles"),
                ("splits", "Splits"), ("rejects", "Rejects"), ("figure-types", "Figure types"),
                ("validation", "The gate")]
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t in sections)
    inputs = "".join(f"<li>{esc(k)}: <code>{esc(p)}</code></li>" for k, p in s["inputs"].items() if p is not None)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Dataset card: {pairs['total']:,} figure–caption pairs</title><style>{STYLE}</style></head>\n"
            "<body><main>\n<header><h1>Dataset card</h1>"
            f"<p class=\"lead\">Figure–caption pairs mined from PubMed Central Open Access articles for "
            f"BiomedCLIP: {pairs['total']:,} pairs from {articles['total']:,} articles, "
            f"{rejects['total']:,} inputs left out with a reason. {esc(fit_sentence(tokens))}</p>"
            f"<div class=\"tiles\">{''.join(tiles)}</div><nav>{nav}</nav></header>\n{warnings}"
            + _captions(s, charts) + "\n" + _images(s, charts) + "\n" + _articles(s, charts) + "\n"
            + _splits(s, charts) + "\n" + _rejects(s, charts) + "\n" + _figure_types(s, charts) + "\n"
            + _validation(s, docs_link)
            + f"\n<footer>Made by <code>biomedclip.card</code> from:<ul>{inputs}</ul>The same inputs give the same "
            "card, byte for byte (no timestamps); <code>summary.json</code> beside this page holds every number."
            "</footer>"
            "\n</main></body></html>\n")


def card_markdown(summary: Mapping[str, Any], out: Path) -> str:
    """The card's headline numbers as markdown (the Prefect artifact), pointing at the page."""
    pairs, articles, rejects = summary["pairs"], summary["articles"], summary["rejects"]
    tokens, v, types = summary["captions"]["tokens"], summary["validation"], summary["figure_types"]
    total = pairs["total"]
    lines = [f"## Dataset card `{out / 'index.html'}`", "",
             f"{total:,} figure–caption pairs from {articles['total']:,} articles; {rejects['total']:,} inputs "
             f"rejected. {fit_sentence(tokens)}", ""]
    lines += [f"- {w}" for w in summary["warnings"]]
    if summary["warnings"]:
        lines.append("")
    lines += ["| split | pairs | share | articles |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {n:,} | {pct(n, total)} | {articles['by_split'].get(k, 0):,} |"
              for k, n in pairs["by_split"].items()]
    words = summary["captions"]["words"]
    if words["count"]:
        lines += ["", f"Caption words: median {words['median']:,}, 90% at most {words['p90']:,}, max {words['max']:,}."]
    if tokens.get("available") and tokens["sample"]:
        lines.append(f"Caption tokens (sample of {tokens['sample']:,}, {every(tokens['stride'], 'caption')}): median "
                     f"{tokens['median']:,}, 90% at most {tokens['p90']:,}.")
    if summary["panels"] and summary["panels"]["total"]:
        lines.append(f"Panels: {summary['panels']['figures']:,} figures split into {summary['panels']['total']:,} "
                     "panel pairs.")
    if rejects["total"]:
        lines += ["", "| reject reason | count |", "|---|---:|"]
        lines += [f"| {k} | {n:,} |" for k, n in rejects["by_reason"].items()]
    if types is not None:
        counts, n = types["counts"], types["sample"]
        top = [c for c in sorted(counts, key=lambda c: (-counts[c], c)) if counts[c]][:5]
        lines += ["", f"Figure types, **estimated** by `{types['model']}` on {n:,} sampled images: "
                  + ", ".join(f"{c} ({types['classes'][c]}) {pct(counts[c], n)}" for c in top) + "."]
    if v is not None:
        lines += ["", f"Validation gate: {'passed' if v['success'] else '**FAILED**'} ({plural(v['checks'], 'check')}, "
                  f"{plural(v['critical_failures'], 'critical failure')}, {plural(v['warnings'], 'warning')})."]
    return "\n".join(lines) + "\n"
