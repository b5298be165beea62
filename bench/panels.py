"""Benchmark compound-figure splitting: panel boxes found against the truth, at the demo's sizes
and at the sizes journals publish.

1. Generated figures (`compound_figure(seed)`, seeds 0..N-1, 520-800 px): panel precision /
   recall / F1 at IoU >= 0.5 (greedy one-to-one matching, best IoU first), the share of figures
   whose panel count is exactly right, and figures/s per core (process time of the detector
   alone), for `find_panels` and, in the same run, for what it was chosen over: gutters alone, no
   letter evidence, connected regions on the sheet, and the baselines (a) keep every figure whole,
   (b) an equal grid with the truth's panel count. Then the breakdown per layout, how well the
   confidence is calibrated, what a caption count (`expected`) does; the same on compound figures
   tiled from the real chest X-rays of the shared fixtures (skipped when absent).
2. Published figures (`--published`, at each size): compound figures tiled from the real X-rays,
   from micrographs and from charts (or a mix), gutters from none to 24 px at 1,800 px, letters in
   every corner, saved as JPEG; the same seeds and layouts at the demo's sizes (520-800 px) and at
   PMC's (1,200-4,000 px). Each goes through the ingest's own path from its JPEG (`decode_image` at
   `decode_side`, `encode_image`, `ingest.panels.split_panels`), captioned in PMC's style, and, in
   the same run, is decided on the stored figure (long side `image.max_side`) as before issue 30.
3. End to end on demo corpora (`--corpus`, default data/raw; `--pmc-corpus`, or one of
   `--pmc-articles` generated with `demo.image_side: pmc`): every figure whose truth the corpus
   records (`demo-truth/panels.jsonl`) through the same path.

For 2 and 3: panel F1 (a figure kept whole is one whole box), the caption split's exact-match and
token-F1 per panel, the "pair correct" rate: of the panel pairs the ingest emits, the share whose
crop is a true panel (IoU >= 0.5) with that panel's letter, whose text holds that panel's
sub-caption (>= 80% of its words) and whose own part is closer to it than to any other panel's;
the share of true panels that get their pair right (their sub-caption); against an equal grid cut
from the caption's letter count. Then everything side by side, demo sizes against PMC's. Saves up
to 6 failures of section 1, truth in green and found boxes in red.

    python bench/panels.py [--figures 400] [--xrays 60] [--published 120] [--corpus data/raw]
                           [--pmc-corpus DIR | --pmc-articles 150] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from biomedclip.demo.compound import CompoundFigure, compound_figure, tiled_figure
from biomedclip.demo.corpus import PANEL_TRUTH, generate_corpus
from biomedclip.demo.figures import CLASS_NAMES, render
from biomedclip.demo.figures.drawing import font, pick
from biomedclip.demo.params import DemoParams
from biomedclip.ingest.images import ImageStore, decode_image, encode_image
from biomedclip.ingest.panels import (
    SPLIT,
    PanelDecision,
    decide,
    decode_side,
    panel_text,
    split_panels,
)
from biomedclip.ingest.params import IngestParams, PanelParams
from biomedclip.panels.captions import split_caption
from biomedclip.panels.gutters import MIN_PANEL_PX, MIN_PANEL_SHARE
from biomedclip.panels.layout import Layout, find_panels
from biomedclip.panels.sheet import Sheet, as_planes, runs

XRAYS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "images" / "nih_cxr14"
GOAL_F1, GOAL_RATE, GOAL_PAIRS = 0.95, 50.0, 0.85  # panel F1 as at the demo's sizes (issue 30)
SAME_TEXT = 0.8  # share of a sub-caption's words a panel's text must hold
Box = tuple[float, float, float, float]
WHOLE: list[Box] = [(0.0, 0.0, 1.0, 1.0)]


@dataclass
class Result:
    seed: int
    layout: str
    truth: list[Box]
    found: list[Box]
    matched: int
    confidence: float = 1.0
    reason: str = ""

    @property
    def right(self) -> bool:
        return self.matched == len(self.truth) == len(self.found)


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def matches(truth: Sequence[Box], found: Sequence[Box], threshold: float = 0.5) -> int:
    """Greedy one-to-one matching, best IoU first: the number of pairs at IoU >= threshold."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)),
                   reverse=True)
    used_t, used_f = set(), set()
    for score, i, j in pairs:
        if score < threshold:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    return len(used_t)


def scores(results: list[Result]) -> tuple[float, float, float, float]:
    tp = sum(r.matched for r in results)
    precision = tp / max(1, sum(len(r.found) for r in results))
    recall = tp / max(1, sum(len(r.truth) for r in results))
    f1 = 2 * precision * recall / max(1e-9, precision + recall)
    exact = sum(len(r.found) == len(r.truth) for r in results) / max(1, len(results))
    return precision, recall, f1, exact


def equal_grid(n: int, width: int, height: int) -> list[Box]:
    """n cells of the equal grid (fewest spare cells, then the most square cells)."""
    def cost(rc: tuple[int, int]) -> tuple[int, float]:
        return rc[0] * rc[1] - n, abs(math.log((width / rc[1]) / (height / rc[0])))

    rows, cols = min(((r, math.ceil(n / r)) for r in range(1, n + 1)), key=cost)
    return [((i % cols) / cols, (i // cols) / rows, (i % cols + 1) / cols, (i // cols + 1) / rows)
            for i in range(n)]


def regions(image: Image.Image) -> list[Box]:
    """The alternative to X-Y cuts: 8-connected regions of content on the sheet (4 px blocks),
    overlapping boxes merged, slivers dropped as `find_panels` drops them."""
    sheet = Sheet(as_planes(image))
    w, h = sheet.w, sheet.h
    if sheet.bg is None:
        return WHOLE
    fg = np.diff(sheet.fg_rows, axis=1) > 0
    hb, wb = h // 4, w // 4
    blocks = fg[:hb * 4, :wb * 4].reshape(hb, 4, wb, 4).any(axis=(1, 3))
    parent: list[int] = []

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    previous: list[tuple[int, int, int]] = []
    spans: list[tuple[int, int, int, int]] = []
    for y in range(hb):
        current = []
        for a, b in runs(blocks[y]):
            label = len(parent)
            parent.append(label)
            for pa, pb, other in previous:
                if pa <= b and pb >= a:  # touching, diagonals included
                    ra, rb = find(label), find(other)
                    parent[max(ra, rb)] = min(ra, rb)
            current.append((a, b, label))
            spans.append((y, a, b, label))
        previous = current
    boxes: dict[int, list[int]] = {}
    for y, a, b, label in spans:
        box = boxes.setdefault(find(label), [a, y, b, y + 1])
        box[:] = [min(box[0], a), min(box[1], y), max(box[2], b), max(box[3], y + 1)]
    merged = [[v * 4 for v in box] for box in boxes.values()]
    changed = True
    while changed:
        changed = False
        for i, a in enumerate(merged):
            for j in range(i + 1, len(merged)):
                b = merged[j]
                if min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]):
                    merged[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    merged.pop(j)
                    changed = True
                    break
            if changed:
                break
    kept = [b for b in merged if b[2] - b[0] >= max(MIN_PANEL_PX, MIN_PANEL_SHARE * w)
            and b[3] - b[1] >= max(MIN_PANEL_PX, MIN_PANEL_SHARE * h)]
    if len(kept) < 2:
        return WHOLE
    return [(b[0] / w, b[1] / h, b[2] / w, b[3] / h) for b in kept]


def run(figures: list[tuple[int, CompoundFigure]], detect: Callable) -> tuple[list[Result], float]:
    results, cpu = [], 0.0
    for seed, figure in figures:
        truth = [p.box for p in figure.panels]
        start = time.process_time()
        found = detect(figure)
        cpu += time.process_time() - start
        if isinstance(found, Layout):
            boxes = [p.box for p in found.panels]
            confidence, reason = found.confidence, found.reason
        else:
            boxes, confidence, reason = found, 1.0, ""
        results.append(Result(seed, figure.layout, truth, boxes, matches(truth, boxes), confidence,
                              reason))
    return results, cpu


def compare(figures: list[tuple[int, CompoundFigure]],
            variants: dict[str, Callable]) -> list[Result]:
    print(f"{'method':<48} {'precision':>9} {'recall':>7} {'F1':>6} {'exact n':>7} "
          f"{'fig/s/core':>10}")
    chosen: list[Result] = []
    for name, detect in variants.items():
        results, cpu = run(figures, detect)
        p, r, f1, exact = scores(results)
        rate = f"{len(results) / cpu:10.0f}" if not name.startswith("baseline") else f"{'-':>10}"
        print(f"{name:<48} {p:9.3f} {r:7.3f} {f1:6.3f} {exact:7.3f} {rate}")
        chosen = chosen or results
    return chosen


def breakdown(results: list[Result]) -> None:
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        groups[re.sub(r"-\d+x\d+", "", r.layout)].append(r)
    print(f"\n{'layout (worst first)':<24} {'figures':>7} {'panels':>6} {'precision':>9} "
          f"{'recall':>7} {'F1':>6} {'exact n':>7}")
    for name, group in sorted(groups.items(), key=lambda kv: (scores(kv[1])[2], kv[0])):
        p, r, f1, exact = scores(group)
        panels = sum(len(g.truth) for g in group)
        print(f"{name:<24} {len(group):7d} {panels:6d} {p:9.3f} {r:7.3f} {f1:6.3f} {exact:7.3f}")


def calibration(results: list[Result]) -> None:
    print(f"\n{'confidence':<12} {'figures':>7} {'split right':>11}")
    for lo, hi in ((0.0, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.01)):
        group = [r for r in results if lo <= r.confidence < hi]
        if group:
            share = sum(r.right for r in group) / len(group)
            bracket = ")" if hi <= 1 else "]"
            print(f"[{lo:.1f}, {min(hi, 1.0):.1f}{bracket}   {len(group):7d} {share:11.3f}")


def failures(results: list[Result], figures: dict[int, CompoundFigure], out: Path,
             label: str) -> None:
    bad = [r for r in results if not r.right]
    print(f"\n{len(bad)} of {len(results)} figures with a panel missed or wrong; the first few:")
    for r in bad[:8]:
        print(f"  seed {r.seed:4d}  {r.layout:<22} truth {len(r.truth)}  found {len(r.found)}  "
              f"matched {r.matched}  confidence {r.confidence:.2f}  ({r.reason})")
    out.mkdir(parents=True, exist_ok=True)
    for r in bad[:6]:
        image = figures[r.seed].image.copy()
        draw = ImageDraw.Draw(image)
        w, h = image.size
        for boxes, colour, inset in ((r.truth, (0, 200, 0), 0), (r.found, (230, 0, 0), 3)):
            for x0, y0, x1, y1 in boxes:
                corners = [x0 * w + inset, y0 * h + inset, x1 * w - 1 - inset, y1 * h - 1 - inset]
                draw.rectangle(corners, outline=colour, width=3)
        image.save(out / f"{label}-{r.seed}-{r.layout}.png")


def captions(figures: list[tuple[int, CompoundFigure]]) -> None:
    """What a caption's panel count does: agreeing counts raise the confidence, wrong ones lower it
    and keep weakly supported splits whole; neither creates a split."""
    print(f"\n{'expected (caption count)':<34} {'F1':>6} {'exact n':>7} {'mean confidence':>15} "
          f"{'kept whole':>10}")
    counts = (("none", lambda n: None), ("the true count", lambda n: n),
              ("true count + 1", lambda n: n + 1))
    for name, count in counts:
        results, _ = run(figures, lambda f, count=count: find_panels(
            f.image, expected=count(len(f.panels))))
        _, _, f1, exact = scores(results)
        confidence = sum(r.confidence for r in results) / len(results)
        whole = sum(len(r.found) == 1 for r in results) / len(results)
        print(f"{name:<34} {f1:6.3f} {exact:7.3f} {confidence:15.3f} {whole:10.3f}")


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def token_f1(a: str, b: str) -> float:
    ta, tb = tokens(a), tokens(b)
    if not ta and not tb:
        return 1.0
    common = sum(min(ta.count(t), tb.count(t)) for t in set(ta))
    if common == 0:
        return 0.0
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall)


def token_recall(wanted: str, text: str) -> float:
    """The share of `wanted`'s words (with multiplicity) that `text` holds."""
    want, have = tokens(wanted), tokens(text)
    return sum(min(want.count(t), have.count(t)) for t in set(want)) / len(want) if want else 1.0


@dataclass
class Pairing:
    """Panel pairs one method emits for one figure: (box, letter, own sub-caption, text) each."""

    truth: list[dict]
    emitted: list[tuple[Box, str, str, str]]

    def text_fits(self, i: int, own: str, text: str) -> bool:
        """The text holds true panel i's sub-caption, and its own part is closest to panel i's."""
        closeness = [token_f1(own, t["subcaption"]) for t in self.truth]
        holds = token_recall(self.truth[i]["subcaption"], text) >= SAME_TEXT
        return holds and closeness[i] == max(closeness)

    def correct(self) -> int:
        """Emitted pairs whose crop is a true panel (IoU >= 0.5, one-to-one) with that panel's
        letter and text."""
        boxes = [tuple(t["box"]) for t in self.truth]
        pairs = sorted(((iou(t, e[0]), i, j) for i, t in enumerate(boxes)
                        for j, e in enumerate(self.emitted)), reverse=True)
        used_t, used_e, right = set(), set(), 0
        for score, i, j in pairs:
            if score < 0.5:
                break
            if i in used_t or j in used_e:
                continue
            used_t.add(i)
            used_e.add(j)
            _, letter, own, text = self.emitted[j]
            same_letter = letter.upper() == self.truth[i]["letter"].upper()
            right += same_letter and self.text_fits(i, own, text)
        return right

    def found(self) -> int:
        """True panels found (IoU >= 0.5): a figure kept whole is one found box, the whole image."""
        return matches([tuple(t["box"]) for t in self.truth], [e[0] for e in self.emitted] or WHOLE)


@dataclass(frozen=True)
class Scores:
    pairs: int  # emitted
    pair_correct: float  # of the emitted pairs
    with_subcaption: float  # true panels that get their crop, letter and sub-caption
    f1: float  # panel F1 at IoU >= 0.5, a figure kept whole counting as one whole box

    def row(self) -> str:
        rate = f"{self.pair_correct:.3f}" if self.pairs else "-"
        return f"{self.pairs:6d} {rate:>12} {self.with_subcaption:14.3f} {self.f1:8.3f}"


def score(pairings: list[Pairing]) -> Scores:
    emitted = sum(len(p.emitted) for p in pairings)
    correct = sum(p.correct() for p in pairings)
    truth = sum(len(p.truth) for p in pairings)
    tp = sum(p.found() for p in pairings)
    precision, recall = tp / max(1, sum(len(p.emitted) or 1 for p in pairings)), tp / max(1, truth)
    f1 = 2 * precision * recall / max(1e-9, precision + recall)
    return Scores(emitted, correct / max(1, emitted), correct / max(1, truth), f1)


FINDINGS = ("no acute cardiopulmonary abnormality", "a right lower lobe consolidation",
            "a small left pleural effusion", "cardiomegaly with pulmonary vascular congestion",
            "a left upper lobe nodule", "bibasilar atelectasis")
MEASURES = ("serum lactate", "tumour volume", "body weight", "IL-6 expression", "survival",
            "heart rate")


def subcaption(kind: str, n: int, seed: int) -> str:
    """One panel's own text in PMC's style, naming what it shows and whose it is."""
    if kind == "chest_xray":
        return (f"Frontal chest radiograph of patient {seed % 97 + n + 1} showing "
                f"{FINDINGS[(seed + n) % 6]}.")
    if kind in CHARTS:
        return (f"{CLASS_NAMES[kind].capitalize()} of {MEASURES[(seed + n) % 6]} in cohort "
                f"{seed % 89 + n + 1}.")
    return (f"{CLASS_NAMES[kind]} of the biopsy from patient {seed % 83 + n + 1}, "
            f"{3 + (seed + n) % 5} weeks.")


def caption_of(kinds: Sequence[str], seed: int, title: str) -> tuple[str, list[str]]:
    """A caption in PMC's style: title, "(A) ..." per panel, a shared sentence; the sub-captions."""
    own = [subcaption(kind, n, seed) for n, kind in enumerate(kinds)]
    marks = " ".join(f"({chr(ord('A') + i)}) {text}" for i, text in enumerate(own))
    return f"{title} {marks} All images are representative of three experiments.", own


def xray_pairs(figures: list[tuple[int, CompoundFigure]]) -> None:
    """Pair correct on the real X-ray tilings, captioned in PMC's style, against the equal grid."""
    from biomedclip.panels.match import split_figure

    ours, grid = [], []
    for seed, figure in figures:
        title = "Chest radiographs of the cohort at admission."
        caption, own = caption_of(figure.kinds, seed, title)
        truth = [{"letter": chr(ord("A") + i), "box": p.box, "subcaption": own[i]}
                 for i, p in enumerate(figure.panels)]
        split = split_figure(figure.image, caption)
        ours.append(Pairing(truth, [(p.box, p.letter, p.subcaption, p.text) for p in split.panels]))
        parts = split_caption(caption)
        letters = [k for k in parts.panels if len(k) == 1]
        cells = equal_grid(len(letters), *figure.image.size)
        grid.append(Pairing(truth, [(c, k, parts.panels[k], parts.text_for(k))
                                    for c, k in zip(cells, letters, strict=True)]))
    for name, pairings in (("split_figure", ours), ("equal grid of the caption's letters", grid)):
        emitted = sum(len(p.emitted) for p in pairings)
        correct = sum(p.correct() for p in pairings)
        print(f"  {name:<40} pairs {emitted:4d}  pair correct {correct / max(1, emitted):.3f}  "
              f"of true panels {correct / max(1, sum(len(p.truth) for p in pairings)):.3f}")


# --- compound figures at the sizes journals publish -----------------------------------------

SIZES = {"demo": (520, 800), "pmc": (1200, 4000)}  # long side, px: compound_figure's and PMC's
TILINGS = ((1, 2), (2, 1), (2, 2), (1, 3), (2, 3), (3, 2), (3, 3), (1, 4), (2, 4))
GUTTERS = (0, 0, 4, 6, 8, 12, 16, 24)  # px at 1,800 px, scaled with larger figures; abutting twice
MICROGRAPHS = ("he_histology", "ihc", "fluorescence", "electron_microscopy")
CHARTS = ("bar_chart", "line_chart", "scatter_plot")
DRAWN = 700  # px: micrographs are drawn at most this large, then scaled to the panel (as a scan is)


@dataclass(frozen=True)
class Published:
    """A figure as a journal publishes it: its JPEG, caption, and the truth of its panels."""

    seed: int
    layout: str  # family-rows x cols-gutterN, or family-abutting-rows x cols
    jpeg: bytes
    caption: str
    truth: list[dict]  # {"letter", "box", "subcaption"} per panel, reading order

    @property
    def family(self) -> str:
        return self.layout.split("-")[0]


def tile(rng: np.random.Generator, kind: str, xrays: list[Image.Image],
         size: tuple[int, int]) -> Image.Image:
    if kind == "chest_xray":
        xray = xrays[int(rng.integers(len(xrays)))]
        return xray.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    if kind in CHARTS:  # drawn at the panel's size: lines and text stay sharp
        return render(kind, int(rng.integers(2**62)), *size)[0].convert("RGB").resize(size)
    scale = min(1.0, DRAWN / max(size))
    width, height = max(8, int(size[0] * scale)), max(8, int(size[1] * scale))
    drawn = render(kind, int(rng.integers(2**62)), width, height)[0]
    return drawn.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def published_figure(seed: int, xrays: list[Image.Image], sides: tuple[int, int]) -> Published:
    """A compound figure tiled from real X-rays, micrographs or charts (or a mix), its long side
    log-uniform in `sides`: a grid with white (or, for images, black) gutters of 0-24 px at
    1,800 px (wider on larger figures), letters 1.5-3% of its width in one corner of every panel
    (any of the four; on the panel, in a white box, or in the margin above), saved as JPEG 75-95."""
    rng = np.random.default_rng([seed, 30])  # one stream per seed: the same figure at both sizes
    side = round(math.exp(rng.uniform(math.log(sides[0]), math.log(sides[1]))))
    rows, cols = pick(rng, TILINGS)
    family = pick(rng, ("xray", "micrograph", "chart", "mixed"))
    gutter = round(pick(rng, GUTTERS) * max(1.0, side / 1800))
    if family == "chart" and not gutter:  # charts on white have no seam to abut along
        gutter = round(8 * max(1.0, side / 1800))
    margin = round(int(rng.integers(0, 12)) * max(1.0, side / 1800)) if gutter else 0
    dark = family in ("xray", "micrograph") and rng.random() < 0.2
    aspect = 1.0 if family == "xray" else rng.uniform(0.7, 1.0)
    cell_w = (side - 2 * margin - (cols - 1) * gutter) // cols
    cell_h = int(cell_w * aspect)
    if rows * cell_h + (rows - 1) * gutter + 2 * margin > side:  # tall: the height is the long side
        cell_h = (side - 2 * margin - (rows - 1) * gutter) // rows
        cell_w = int(cell_h / aspect)
    width = cols * cell_w + (cols - 1) * gutter + 2 * margin
    corner = pick(rng, ("tl", "tl", "tl", "tr", "bl", "br"))
    placement = pick(rng, ("box", "direct", "margin") if corner[0] == "t" else ("box", "direct"))
    size, upper = max(12, int(width * rng.uniform(0.015, 0.03))), rng.random() < 0.75
    strip = size + size // 3 if placement == "margin" else 0
    height = rows * (cell_h + strip) + (rows - 1) * gutter + 2 * margin
    sheet = Image.new("RGB", (width, height), (0, 0, 0) if dark else (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    kinds, boxes = [], []
    for r in range(rows):
        for c in range(cols):
            x0, y0 = margin + c * (cell_w + gutter), margin + r * (cell_h + gutter + strip) + strip
            group = family if family != "mixed" else pick(rng, ("xray", "micrograph", "chart"))
            kind = {"xray": "chest_xray", "micrograph": pick(rng, MICROGRAPHS),
                    "chart": pick(rng, CHARTS)}[group]
            sheet.paste(tile(rng, kind, xrays, (cell_w, cell_h)), (x0, y0))
            kinds.append(kind)
            boxes.append((x0, y0, x0 + cell_w, y0 + cell_h))
    letters = [chr((ord("A") if upper else ord("a")) + i) for i in range(len(boxes))]
    for letter, box in zip(letters, boxes, strict=True):
        draw_letter(draw, sheet, box, letter, size, corner, placement, dark)
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=int(rng.integers(75, 96)))
    caption, own = caption_of(kinds, seed, "Findings in the cohort.")
    truth = [{"letter": letter.upper(), "box": (x0 / width, y0 / height, x1 / width, y1 / height),
              "subcaption": text}
             for letter, (x0, y0, x1, y1), text in zip(letters, boxes, own, strict=True)]
    layout = f"{family}-{rows}x{cols}-" + (f"gutter{gutter}" if gutter else "abutting")
    return Published(seed, layout, buffer.getvalue(), caption, truth)


def draw_letter(draw: ImageDraw.ImageDraw, sheet: Image.Image, box: tuple[int, int, int, int],
                letter: str, size: int, corner: str, placement: str, dark: bool) -> None:
    x0, y0, x1, y1 = box
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font(size), stroke_width=1)
    tw, th = right - left, bottom - top
    pad = max(3, size // 3)
    tx = x0 + pad if corner[1] == "l" else x1 - pad - tw
    ty = y0 + pad if corner[0] == "t" else y1 - pad - th
    if placement == "margin":  # in the strip above the panel
        ty, colour = y0 - th - size // 6, (255, 255, 255) if dark else (0, 0, 0)
    elif placement == "box":
        half = pad // 2
        draw.rectangle([tx - half - 2, ty - half - 2, tx + tw + half + 1, ty + th + half + 1],
                       fill=(255, 255, 255))
        colour = (0, 0, 0)
    else:  # white on dark pictures, black on light ones
        patch = np.asarray(sheet.crop((tx, ty, tx + tw, ty + th)).convert("L"))
        colour = (255, 255, 255) if patch.mean() < 128 else (0, 0, 0)
    draw.text((tx - left, ty - top), letter, fill=colour, font=font(size), stroke_width=1,
              stroke_fill=colour)


def load_xrays() -> list[Image.Image] | None:
    paths = sorted(XRAYS.glob("*.png")) if XRAYS.is_dir() else []
    if not paths:
        return None
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("L"))
    return images


# --- through the ingest's own path ---------------------------------------------------------

@dataclass
class Measured:
    """One set of figures through the ingest's path: the pairs it emits and, in the same run, the
    pairs a decision on the stored figure (long side `image.max_side`: before issue 30) emits."""

    after: list[Pairing] = field(default_factory=list)
    before: list[Pairing] = field(default_factory=list)
    grid: list[Pairing] = field(default_factory=list)  # an equal grid of the caption's letters
    labels: list[str] = field(default_factory=list)  # a layout label per figure, for breakdowns
    outcomes: Counter = field(default_factory=Counter)
    outcomes_before: Counter = field(default_factory=Counter)
    decision_cpu: float = 0.0  # `decide` alone, on the decode
    decided: int = 0  # figures whose caption names panel letters: the layout ran on them
    end_to_end_cpu: float = 0.0  # decode, normalise, decide, crop, encode, store
    caption_exact: int = 0
    caption_f1: float = 0.0
    sides: list[int] = field(default_factory=list)  # long side as published

    @property
    def figures(self) -> int:
        return len(self.after)


def emitted_pairs(decision: PanelDecision, params: IngestParams) -> list[tuple[Box, str, str, str]]:
    if decision.status != SPLIT:
        return []
    shared = decision.split.caption.shared
    words = params.panels.max_words
    return [(p.box, p.letter, p.subcaption, panel_text(shared, p.subcaption, words))
            for p in decision.split.panels]


def through_ingest(figures: Iterable[tuple[str, bytes, str, list[dict]]],
                   params: IngestParams) -> Measured:
    """(label, published bytes, caption, truth) per figure: decoded, normalised and split as the
    ingest does (`decode_image` at `decode_side`, `encode_image`, `split_panels`), and decided on
    the stored figure instead, for the comparison."""
    store = ImageStore(Path(tempfile.mkdtemp(prefix="bench-panels-store-")))
    m = Measured()
    for label, data, caption, truth in figures:
        start = time.process_time()
        original = decode_image(data, params.image, long_side=decode_side(params))
        stored = encode_image(original.rgb, params.image, found=(original.width, original.height))
        outcome = split_panels(original, caption, "bench", params, store)
        m.end_to_end_cpu += time.process_time() - start
        start = time.process_time()
        m.decided += decide(original, caption, params).split.layout is not None
        m.decision_cpu += time.process_time() - start
        before = decide(original._replace(rgb=stored.pixels), caption, params)
        m.labels.append(label)
        m.sides.append(max(original.width, original.height))
        m.outcomes[outcome.status] += 1
        m.outcomes_before[before.status] += 1
        m.after.append(Pairing(truth, [((p["x0"], p["y0"], p["x1"], p["y1"]), p["letter"],
                                        p["subcaption"], p["text"]) for p in outcome.panels]))
        m.before.append(Pairing(truth, emitted_pairs(before, params)))
        parts = split_caption(caption)
        letters = [key for key in parts.panels if len(key) == 1]
        for t in truth:
            own = parts.panels.get(t["letter"].upper(), "")
            m.caption_exact += " ".join(own.split()) == " ".join(t["subcaption"].split())
            m.caption_f1 += token_f1(own, t["subcaption"])
        cells = equal_grid(len(letters), *original.rgb.size) if len(letters) > 1 else []
        m.grid.append(Pairing(truth, [(cell, letter, parts.panels[letter], parts.text_for(letter))
                                      for cell, letter in zip(cells, letters, strict=True)]))
    return m


def report(m: Measured, what: str) -> None:
    panels = sum(len(p.truth) for p in m.after)
    print(f"{what}: {m.figures} figures, {panels} panels, long side {min(m.sides)}-{max(m.sides)} "
          f"px (median {sorted(m.sides)[len(m.sides) // 2]})")
    print(f"\n{'method':<52} {'pairs':>6} {'pair correct':>12} {'of true panels':>14} "
          f"{'panel F1':>8}")
    for name, pairings in (("ingest.panels: decided on the decode (now)", m.after),
                           ("  decided on the stored figure (before)", m.before),
                           ("baseline (a): keep whole", [Pairing(p.truth, []) for p in m.after]),
                           ("baseline (b): equal grid of the caption's letters", m.grid)):
        print(f"{name:<52} {score(pairings).row()}")
    for when, outcomes in (("now", m.outcomes), ("before", m.outcomes_before)):
        listed = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        print(f"figures by outcome, {when}: {listed}")
    end_to_end = m.figures / m.end_to_end_cpu
    print(f"{decide_rate(m):.0f} figures/s per core to decide ({m.decided} whose caption names "
          f"panel letters: caption split, layout on the decode); {end_to_end:.0f} end to end, "
          f"every figure (decode, normalise, decide, crop, encode, store)")


def decide_rate(m: Measured) -> float:
    """Figures the layout looked at per CPU second of `decide` on every figure (the others cost
    a caption split)."""
    return m.decided / max(m.decision_cpu, 1e-9)


def breakdown_by(m: Measured, key: Callable[[str], str]) -> None:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(m.labels):
        groups[key(label)].append(i)
    print(f"\n{'group':<16} {'figures':>7} {'F1 now':>7} {'before':>7} {'pair correct now':>16}")
    for name, idx in sorted(groups.items()):
        now, then = score([m.after[i] for i in idx]), score([m.before[i] for i in idx])
        rate = f"{now.pair_correct:.3f}" if now.pairs else "-"
        print(f"{name:<16} {len(idx):7d} {now.f1:7.3f} {then.f1:7.3f} {rate:>16}")


def published_set(count: int, xrays: list[Image.Image], sizes: str,
                  params: IngestParams) -> Measured:
    figures = (published_figure(seed, xrays, SIZES[sizes]) for seed in range(count))
    return through_ingest(((f.layout, f.jpeg, f.caption, f.truth) for f in figures), params)


def corpus_set(corpus: Path, params: IngestParams) -> Measured | None:
    """Every figure whose truth a demo corpus records, from its published media file."""
    truth_file = corpus / PANEL_TRUTH
    if not truth_file.is_file():
        return None
    rows = [json.loads(line) for line in truth_file.read_text().splitlines()]
    media = [(row, corpus / f"{row['pmcid']}.{row['version']}" / (row["media_file"] or ""))
             for row in rows]
    kept = [(row, path) for row, path in media
            if row["condition"] == "ok" and row["caption"] and path.is_file()]
    return through_ingest(((row["layout"], path.read_bytes(), row["caption"], row["panels"])
                           for row, path in kept), params)


def caption_line(m: Measured) -> str:
    panels = sum(len(p.truth) for p in m.after)
    exact, f1 = m.caption_exact / max(1, panels), m.caption_f1 / max(1, panels)
    return f"exact {exact:.3f}, token-F1 {f1:.3f}"


def side_by_side(rows: dict[str, dict[str, Measured | None]]) -> None:
    """The headline: each set at the demo's sizes and at PMC's, now (and before)."""
    print("\n## side by side: the demo's sizes and PMC's (now; before: decided on the stored "
          "figure)")
    print(f"{'':<44} {'demo sizes':>18} {'PMC sizes':>18}")
    for what, sets in rows.items():
        print(what)
        cells: dict[str, list[str]] = defaultdict(list)
        for sizes in ("demo", "pmc"):
            m = sets.get(sizes)
            if m is None:
                for name in ("panel F1", "pair correct", "panels with their sub-caption",
                             "decide, fig/s/core", "end to end, fig/s/core"):
                    cells[name].append("-")
                continue
            now, then = score(m.after), score(m.before)
            cells["panel F1"].append(f"{now.f1:.3f} ({then.f1:.3f})")
            cells["pair correct"].append(f"{now.pair_correct:.3f} ({then.pair_correct:.3f})")
            cells["panels with their sub-caption"].append(
                f"{now.with_subcaption:.3f} ({then.with_subcaption:.3f})")
            cells["decide, fig/s/core"].append(f"{decide_rate(m):.0f}")
            cells["end to end, fig/s/core"].append(f"{m.figures / m.end_to_end_cpu:.0f}")
        for name, values in cells.items():
            print(f"  {name:<42} {values[0]:>18} {values[1]:>18}")
def load() -> str:
    one, five, fifteen = os.getloadavg()
    return (f"load average {one:.1f} {five:.1f} {fifteen:.1f} (figures/s are CPU time: a busy "
            "machine lowers them)")


def goal(what: str, measured: float, target: float, rate: float) -> None:
    ok = measured >= target and rate >= GOAL_RATE
    print(f"goal, {what}: >= {target} at >= {GOAL_RATE:.0f} figures/s per core; measured "
          f"{measured:.3f} at {rate:.0f}: {'met' if ok else 'NOT met'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=int, default=400, help="generated figures (seeds 0..N-1)")
    parser.add_argument("--xrays", type=int, default=60,
                        help="figures tiled from the real chest X-rays")
    parser.add_argument("--published", type=int, default=120,
                        help="figures tiled from real X-rays, micrographs and charts, at each "
                             "size (0 skips)")
    parser.add_argument("--corpus", type=Path, default=Path("data/raw"),
                        help="a demo corpus with its truth sidecar, for the end-to-end measurement")
    parser.add_argument("--pmc-corpus", type=Path, default=None,
                        help="a corpus of `biomedclip demo-data --image-side pmc` (default: one of "
                             "--pmc-articles is generated in a temp dir)")
    parser.add_argument("--pmc-articles", type=int, default=150,
                        help="articles of the generated PMC-size corpus (0 skips it)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for failure images (default: a temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-panels-"))
    variants: dict[str, Callable] = {
        "find_panels: gutters + grid + letters (chosen)": lambda f: find_panels(f.image),
        "  without letter evidence": lambda f: find_panels(f.image, methods={"gutters", "grid"}),
        "  gutters alone (X-Y cuts)": lambda f: find_panels(f.image, methods={"gutters"}),
        "connected regions on the sheet": lambda f: regions(f.image),
        "baseline (a): keep whole": lambda f: WHOLE,
        "baseline (b): equal grid of the true count":
            lambda f: equal_grid(len(f.panels), *f.image.size),
    }

    figures = [(seed, compound_figure(seed)) for seed in range(args.figures)]
    panels = sum(len(f.panels) for _, f in figures)
    print(f"## generated compound figures: {len(figures)} figures, {panels} panels")
    results = compare(figures, variants)
    breakdown(results)
    calibration(results)
    captions(figures)
    failures(results, dict(figures), out, "generated")
    _, _, f1, _ = scores(results)
    _, cpu = run(figures, variants["find_panels: gutters + grid + letters (chosen)"])
    print()
    goal("generated figures, panel F1", f1, GOAL_F1, len(figures) / cpu)

    xrays = load_xrays()
    if xrays is None:
        print(f"\n## real chest X-rays: skipped, no PNGs in {XRAYS}")
    else:
        halves = [x.reduce(2) for x in xrays]
        tiled = [(seed, tiled_figure(halves, seed)) for seed in range(args.xrays)]
        print(f"\n## compound figures tiled from the real chest X-rays (NIH CXR14, {XRAYS}): "
              f"{len(tiled)} figures, {sum(len(f.panels) for _, f in tiled)} panels")
        results = compare(tiled, variants)
        breakdown(results)
        failures(results, dict(tiled), out, "xray")
        print("\ncaptioned in PMC's style, the pairs (crop, letter, own text):")
        xray_pairs(tiled)

    params = IngestParams(panels=PanelParams(enabled=True))
    rows: dict[str, dict[str, Measured | None]] = {}
    if xrays is not None and args.published > 0:
        what = "tilings of real X-rays, micrographs and charts"
        rows[what] = {}
        for sizes in ("demo", "pmc"):
            lo, hi = SIZES[sizes]
            print(f"\n## {what}, at {sizes} sizes ({lo:,}-{hi:,} px), through the ingest's path "
                  f"(JPEG as published; the same seeds and layouts at both sizes)")
            m = rows[what][sizes] = published_set(args.published, xrays, sizes, params)
            report(m, "published tilings")
            breakdown_by(m, lambda label: "abutting" if label.endswith("abutting") else "gutters")
            breakdown_by(m, lambda label: label.split("-")[0])

    what = "demo corpus (`demo-data`), end to end"
    rows[what] = {}
    pmc_corpus = args.pmc_corpus
    if pmc_corpus is None and args.pmc_articles > 0:
        pmc_corpus = Path(tempfile.mkdtemp(prefix="bench-panels-pmc-")) / "raw"
        print(f"\n(generating {args.pmc_articles} articles at PMC's sizes: demo-data "
              f"--image-side pmc)")
        demo = DemoParams(out=pmc_corpus, articles=args.pmc_articles, image_side="pmc")
        generate_corpus(demo, workers=2)
    for sizes, corpus in (("demo", args.corpus), ("pmc", pmc_corpus)):
        m = rows[what][sizes] = corpus_set(corpus, params) if corpus is not None else None
        if m is None:
            print(f"\n## end to end at {sizes} sizes: skipped, no truth sidecar in {corpus} "
                  f"(biomedclip demo-data writes it)")
            continue
        print(f"\n## end to end on the demo corpus at {sizes} sizes ({corpus / PANEL_TRUTH})")
        report(m, "recorded figures")
        print(f"caption split per true panel: {caption_line(m)}")
    side_by_side(rows)
    print()
    for what, sets in rows.items():
        for sizes, m in sets.items():
            if m is not None:
                now = score(m.after)
                goal(f"{what} at {sizes} sizes, panel F1", now.f1, GOAL_F1, decide_rate(m))
                goal(f"{what} at {sizes} sizes, pair correct", now.pair_correct, GOAL_PAIRS,
                     decide_rate(m))
    print(f"\nfailure images (truth green, found red): {out}; {load()}")


if __name__ == "__main__":
    main()
