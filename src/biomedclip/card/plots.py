"""The card's charts as PNG bytes: matplotlib's object API on the Agg renderer, no pyplot.

The same counts give the same bytes: every chart is drawn under matplotlib's default style plus
the fixed settings below (a user's matplotlibrc does not leak in), at a fixed size and dpi, with
the bundled DejaVu Sans, and saved without the PNG `Software` text chunk (the only metadata
matplotlib writes by default). Nothing global is changed: the style is a context.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

from biomedclip.card.render import every
from biomedclip.card.stats import ASPECT_EDGES, quantile

DPI = 120
WIDTH = 8.0  # inches: 960 px
BLUE, ORANGE, GREY = "#3b6ea5", "#c8553d", "#8a8f98"
GROUP_COLOURS = {"radiology": "#3b6ea5", "visible light photography": "#d08c2e", "printed signals": "#7a5195",
                 "microscopy": "#2f9e77", "3D reconstruction": "#c8553d", "generic illustration": "#8a8f98",
                 "other": "#444444"}
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e3e5e8",
    "grid.linewidth": 0.8,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}
BINS = 60


def _render(draw, height: float, columns: int = 1) -> bytes:
    """Call `draw(axes...)` on a fresh figure of `columns` axes side by side; the PNG's bytes."""
    import matplotlib
    import matplotlib.style
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"), matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
        axes = figure.subplots(1, columns, squeeze=False)[0]
        draw(*axes)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _thousands(axis) -> None:
    """Tick labels with thousands separators (1,500 rather than 1500)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))


def _beyond(ax, label: str, beyond: int, largest: int, unit: str) -> None:
    """The axis label, saying what the cut left out (in the label: a note inside the plot would
    collide with the bars or the context line)."""
    ax.set_xlabel(label if not beyond else f"{label}; {beyond:,} beyond the axis, up to {largest:,} {unit}")


def _hist(ax, counts: Mapping[int, int], *, ylabel: str, colour_beyond: int | None = None, at_least: int = 0) -> int:
    """Integer values given as value -> count as a histogram cut at the 99.5th percentile (or at
    `at_least`); bars whose values exceed `colour_beyond` in the accent colour. Returns how many
    values lie beyond the cut."""
    upper = max(quantile(counts, 0.995) or 1, at_least, 1)
    width = max(1, math.ceil(upper / BINS))
    edges = np.arange(0, upper + width + 1, width, dtype=float)
    values = np.array(sorted(counts), dtype=float)
    weights = np.array([counts[int(v)] for v in values], dtype=float)
    shown = values <= edges[-1]
    heights, _ = np.histogram(values[shown], bins=edges, weights=weights[shown])
    colours = [ORANGE if colour_beyond is not None and left >= colour_beyond else BLUE for left in edges[:-1]]
    ax.bar(edges[:-1], heights, width=width, align="edge", color=colours, edgecolor="white", linewidth=0.4)
    ax.set_xlim(0, edges[-1])
    ax.set_ylabel(ylabel)
    _thousands(ax.xaxis)
    _thousands(ax.yaxis)
    return int(weights[~shown].sum())


def caption_words(words: Mapping[int, int]) -> bytes:
    def draw(ax) -> None:
        beyond = _hist(ax, words, ylabel="captions")
        _beyond(ax, "words", beyond, max(words, default=0), "words")
        ax.set_title(f"Caption length in words (all {sum(words.values()):,} captions)")

    return _render(draw, 3.2)


def caption_tokens(tokens: Mapping[int, int], *, context_length: int, fit: float, sample: int, stride: int) -> bytes:
    def draw(ax) -> None:
        beyond = _hist(ax, tokens, ylabel="captions", colour_beyond=context_length + 1, at_least=context_length + 8)
        ax.axvline(context_length + 0.5, color=ORANGE, linewidth=1.5, linestyle="--")
        ax.text(context_length - 2, ax.get_ylim()[1] * 0.95, f"context {context_length}: {fit:.1%} fit",
                color=ORANGE, fontsize=9, va="top", ha="right",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5})
        _beyond(ax, "tokens of the text tower, [CLS] and [SEP] included", beyond, max(tokens, default=0), "tokens")
        ax.set_title(f"Caption length in tokens ({every(stride, 'caption')}: {sample:,} captions)")

    return _render(draw, 3.2)


def image_sizes(long_side: Mapping[int, int], aspect: np.ndarray) -> bytes:
    def draw(left, right) -> None:
        beyond = _hist(left, long_side, ylabel="pairs")
        left.set_xlabel("long side as published (px)" if not beyond else
                        f"long side as published (px); {beyond:,} larger,\nup to {max(long_side):,} px")
        left.set_title("Image size")
        right.bar(np.log2(ASPECT_EDGES[:-1]), aspect, width=np.diff(np.log2(ASPECT_EDGES)), align="edge",
                  color=BLUE, edgecolor="white", linewidth=0.4)
        ticks = [-3, -2, -1, 0, 1, 2, 3]
        right.set_xticks(ticks, [f"1:{2 ** -t}" if t < 0 else f"{2 ** t}:1" for t in ticks])
        right.set_xlim(-3, 3)
        right.set_xlabel("aspect, width : height (ends include beyond)")
        right.set_ylabel("pairs")
        _thousands(right.yaxis)
        right.set_title("Aspect ratio")

    return _render(draw, 3.2, columns=2)


def _barh(ax, counts: Mapping[str, int], *, colours: Sequence[str] | str = BLUE, label: str = "pairs") -> None:
    names = list(counts)[::-1]  # largest on top
    values = [counts[n] for n in names]
    colour_list = list(colours)[::-1] if not isinstance(colours, str) else colours
    bars = ax.barh(range(len(names)), values, color=colour_list, height=0.7)
    ax.set_yticks(range(len(names)), names)
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=3, fontsize=8.5)
    ax.set_xlabel(label)
    _thousands(ax.xaxis)
    ax.grid(axis="y", visible=False)
    ax.set_xlim(0, max([*values, 1]) * 1.15)
    ax.margins(y=0.02)


def _bar_height(n: int) -> float:
    return max(1.8, 0.75 + 0.26 * n)


def formats_and_modes(formats: Mapping[str, int], modes: Mapping[str, int]) -> bytes:
    def draw(left, right) -> None:
        _barh(left, formats)
        left.set_title("File format as published")
        _barh(right, modes)
        right.set_title("Colour mode as published")

    return _render(draw, _bar_height(max(len(formats), len(modes))), columns=2)


def bars(counts: Mapping[str, int], *, title: str, label: str, colour: str = BLUE) -> bytes:
    """A horizontal bar per key, in the order given (largest on top)."""
    def draw(ax) -> None:
        _barh(ax, counts, colours=colour, label=label)
        ax.set_title(title)

    return _render(draw, _bar_height(len(counts)))


def columns(counts: Mapping[str, int], *, title: str, xlabel: str, ylabel: str) -> bytes:
    """A vertical bar per key, in the order given (years, figures per article)."""
    def draw(ax) -> None:
        names = list(counts)
        values = [counts[n] for n in names]
        rects = ax.bar(range(len(names)), values, color=BLUE, width=0.75)
        ax.set_xticks(range(len(names)), names)
        if len(names) <= 30:
            ax.bar_label(rects, labels=[f"{v:,}" for v in values], padding=2, fontsize=8)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(axis="x", visible=False)
        ax.set_ylim(0, max([*values, 1]) * 1.12)
        _thousands(ax.yaxis)
        if len(names) > 14:
            ax.tick_params(axis="x", labelrotation=90)

    return _render(draw, 3.0)


def splits(pairs: Mapping[str, int], panels: Mapping[str, int] | None) -> bytes:
    """Pairs per split, with panel pairs beside them when there are any."""
    def draw(ax) -> None:
        names = list(pairs)
        x = np.arange(len(names), dtype=float)
        width = 0.38 if panels else 0.6
        shift = width / 2 if panels else 0.0
        rects = ax.bar(x - shift, [pairs[n] for n in names], width=width, color=BLUE, label="figure pairs")
        ax.bar_label(rects, labels=[f"{pairs[n]:,}" for n in names], padding=2, fontsize=8.5)
        if panels:
            rects = ax.bar(x + shift, [panels.get(n, 0) for n in names], width=width, color=ORANGE,
                           label="panel pairs")
            ax.bar_label(rects, labels=[f"{panels.get(n, 0):,}" for n in names], padding=2, fontsize=8.5)
            ax.legend(frameon=False)
        ax.set_xticks(x, names)
        ax.set_ylabel("pairs")
        ax.set_title("Pairs per split")
        ax.grid(axis="x", visible=False)
        ax.set_ylim(0, max([*pairs.values(), *(panels or {}).values(), 1]) * 1.15)
        _thousands(ax.yaxis)

    return _render(draw, 2.8)


def short(text: str, limit: int = 48) -> str:
    """`text`, its start cut to `limit` characters (a model path's end says the most)."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def figure_types(counts: Mapping[str, int], classes: Mapping[str, str], groups: Mapping[str, str], *,
                 model: str, sample: int) -> bytes:
    """The estimated composition: a bar per class seen in the sample (largest on top), coloured
    by branch; the classes never predicted are left to the table beside the chart."""
    order = [c for c in sorted(counts, key=lambda c: (-counts[c], c)) if counts[c]]
    labelled = {f"{c} · {classes[c]}": counts[c] for c in order}
    unseen = sum(1 for c in counts if not counts[c])

    def draw(ax) -> None:
        _barh(ax, labelled, colours=[GROUP_COLOURS.get(groups[c], GREY) for c in order],
              label="sampled images" + (f" ({unseen} classes not predicted for any)" if unseen else ""))
        present = list(dict.fromkeys(groups[c] for c in order))
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=GROUP_COLOURS.get(g, GREY), label=g) for g in present], frameon=False,
                  loc="lower right", fontsize=8.5)
        ax.set_title(f"Figure types, estimated: zero-shot on {sample:,} sampled images\nby {short(model)}")

    return _render(draw, _bar_height(len(order)) + 0.5)
