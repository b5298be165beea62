"""A page a person opens to see how the ingest split figures: `reports/panels/index.html`.

The counts (figures split, panel pairs, kept whole by reason), then a few split figures spread
over the corpus: each figure with its panel boxes drawn and lettered, and each crop beside the
text its panel pair trains on. Plain HTML with inline styles and relative image files: it looks
right offline, and the same inputs give the same bytes (no timestamps), so DVC sees no change
when nothing changed.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw, ImageFont

from biomedclip.atomic_io import atomic_directory
from biomedclip.ingest.panels import OUTCOMES
from biomedclip.tables import open_table, read_batches

EXAMPLES = 8
BATCH_ROWS = 5_000
PANEL_COLUMNS = ("pair_id", "letter", "x0", "y0", "x1", "y1", "text", "image_key", "method", "confidence")
FIGURE_COLUMNS = ("pair_id", "pmcid", "fig_id", "caption", "image_key")
COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (128, 128, 0))
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
td, th { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.figure { border-top: 1px solid #ddd; padding: 1rem 0; }
.figure > img { max-width: 520px; display: block; margin-bottom: 0.5rem; }
.caption { color: #555; font-size: 0.9rem; }
.panels { display: flex; flex-wrap: wrap; gap: 1rem; margin-top: 0.75rem; }
.panel { width: 240px; font-size: 0.85rem; }
.panel img { max-width: 240px; max-height: 200px; display: block; border: 1px solid #ccc; }
.letter { font-weight: bold; }
"""


def write_examples(panels: Path, pairs: Path, images: Path, out: Path, report: dict[str, Any]) -> None:
    """Write `out/index.html` and its images for the panel table at `panels` (atomically).

    The tables are streamed twice, never held: once to count the split figures, once to keep the
    rows of the few shown (a figure's panels are consecutive rows, as the ingest writes them)."""
    chosen = set(_spread(_runs(panels), EXAMPLES))
    by_pair: dict[str, list[dict[str, Any]]] = {}
    figure, last = -1, None
    for batch in read_batches(open_table(panels, "panel table", PANEL_COLUMNS), BATCH_ROWS, PANEL_COLUMNS):
        for i, pair in enumerate(batch.column("pair_id").to_pylist()):
            if pair != last:
                figure, last = figure + 1, pair
            if figure in chosen:
                by_pair.setdefault(pair, []).append(batch.slice(i, 1).to_pylist()[0])
    figures: dict[str, dict[str, Any]] = {}
    for batch in read_batches(open_table(pairs, "pairs manifest", FIGURE_COLUMNS), BATCH_ROWS, FIGURE_COLUMNS):
        shown = pc.is_in(batch.column("pair_id"), value_set=pa.array(list(by_pair), pa.string()))
        figures.update((row["pair_id"], row) for row in batch.filter(shown).to_pylist())
    with atomic_directory(out) as folder:
        sections = [_figure_section(folder, n, figures[pair], rows, images)
                    for n, (pair, rows) in enumerate(by_pair.items(), start=1) if pair in figures]
        (folder / "index.html").write_text(_page(report, sections), encoding="utf-8")


def _runs(panels: Path) -> int:
    """The figures of the panel table: its runs of consecutive rows of one `pair_id`."""
    runs, last = 0, None
    for batch in read_batches(open_table(panels, "panel table", ("pair_id",)), BATCH_ROWS, ("pair_id",)):
        for pair in batch.column(0).to_pylist():
            if pair != last:
                runs, last = runs + 1, pair
    return runs


def _spread(items: int, count: int) -> list[int]:
    """`count` indices of `items` items, evenly spaced (all of them if there are fewer)."""
    if items <= count:
        return list(range(items))
    return [i * items // count for i in range(count)]


def _figure_section(folder: Path, n: int, pair: dict[str, Any], panels: list[dict[str, Any]],
                    images: Path) -> str:
    figure = Image.open(images / pair["image_key"]).convert("RGB")
    draw = ImageDraw.Draw(figure)
    label_font = ImageFont.load_default(size=max(12, min(figure.size) // 16))
    for i, p in enumerate(panels):
        colour = COLOURS[i % len(COLOURS)]
        box = (p["x0"] * figure.width, p["y0"] * figure.height,
               p["x1"] * figure.width - 1, p["y1"] * figure.height - 1)
        draw.rectangle(box, outline=colour, width=3)
        draw.text((box[0] + 5, box[1] + 3), p["letter"], fill=colour, font=label_font,
                  stroke_width=2, stroke_fill=(255, 255, 255))
    buffer = io.BytesIO()
    figure.save(buffer, format="JPEG", quality=88)
    name = f"figure-{n:02d}.jpg"
    (folder / name).write_bytes(buffer.getvalue())
    cards = []
    for p in panels:
        crop = f"figure-{n:02d}-{p['letter']}.jpg"
        (folder / crop).write_bytes((images / p["image_key"]).read_bytes())
        cards.append(f'<div class="panel"><img src="{crop}" alt="panel {html.escape(p["letter"])}">'
                     f'<span class="letter">{html.escape(p["letter"])}</span> {html.escape(p["text"])}</div>')
    first = panels[0]
    return (f'<div class="figure"><h3>{html.escape(pair["pmcid"])} · {html.escape(pair["fig_id"])} '
            f'<small>({html.escape(first["method"])}, confidence {first["confidence"]:.2f})</small></h3>'
            f'<img src="{name}" alt="figure with its panel boxes">'
            f'<div class="caption">{html.escape(pair["caption"])}</div>'
            f'<div class="panels">{"".join(cards)}</div></div>')


def _page(report: dict[str, Any], sections: list[str]) -> str:
    counts = [("figures kept", report["figures"]), ("captions naming panels", report["captions_naming_panels"]),
              ("figures split", report["split"]), ("panel pairs", report["panels"]),
              ("panels per split figure", report["panels_per_split_figure"]),
              ("panel duplicates dropped", report["duplicates_dropped"])]
    rows = "".join(f'<tr><td>{html.escape(name)}</td><td class="n">{value:,}</td></tr>' for name, value in counts)
    whole = "".join(f'<tr><td><code>{code}</code></td><td>{html.escape(OUTCOMES[code])}</td>'
                    f'<td class="n">{n:,}</td></tr>' for code, n in report["kept_whole"].items())
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>Panel pairs</title><style>{STYLE}</style></head><body>\n'
            f'<h1>Compound figures into panel pairs</h1>\n'
            f'<p>Each figure whose caption names its panels by letter, and whose image shows as many '
            f'panels with confidence ≥ {report["min_confidence"]}, is cut into panel pairs: the crop '
            f'and the shared caption with its own sub-caption. Anything less sure stays whole.</p>\n'
            f'<table>{rows}</table>\n<h2>Kept whole, by reason</h2>\n'
            f'<table><tr><th>code</th><th>reason</th><th>figures</th></tr>{whole}</table>\n'
            f'<h2>Examples</h2>\n{"".join(sections)}\n</body></html>\n')
