"""`biomedclip search` in a terminal: results as lines a person reads, or as JSON for scripts."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence

from biomedclip.search.searcher import Result


def results_json(results: Sequence[Result]) -> str:
    """One JSON array: every field of every result (`--json`)."""
    return json.dumps([r.as_dict() for r in results], indent=2, ensure_ascii=False)


def results_text(results: Sequence[Result], *, width: int = 100, caption_lines: int = 3) -> str:
    """Ranked results: score, PMCID, figure (and panel), licence, year, type, the caption's first
    lines, the article's link."""
    if not results:
        return "no figure matches (try fewer filters)"
    blocks = []
    for r in results:
        figure = " ".join(p for p in (r.label or r.figure or r.id, f"panel {r.panel}" if r.panel else "") if p)
        facts = ", ".join(str(v) for v in (r.license, r.year, r.type) if v)
        caption = textwrap.wrap(" ".join((r.caption or "").split()), width=width - 6)
        shown = caption[:caption_lines] + (["…"] if len(caption) > caption_lines else [])
        lines = [f"{r.rank:>3}. {r.score:.3f}  {r.pmcid or r.id}  {figure}  ({facts})"]
        lines += [f"      {line}" for line in shown]
        if r.url:
            lines.append(f"      {r.url}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
