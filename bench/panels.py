"""Benchmark compound-figure splitting: panel boxes found against the generator's truth.

On N figures from `compound_figure(seed)` (seeds 0..N-1) prints panel precision / recall / F1 at
IoU >= 0.5 (greedy one-to-one matching, best IoU first), the share of figures whose panel count is
exactly right, and figures/s per core (process time of the detector alone), for `find_panels` and,
in the same run, for what it was chosen over: gutters alone, no letter evidence, connected
regions on the sheet, and the baselines (a) keep every figure whole, (b) an equal grid with the
truth's panel count (the best a grid from the caption's letter count could do). Then the
breakdown per layout, how well the confidence is calibrated, what a caption count (`expected`)
does, and the same measurement on compound figures tiled from the real chest X-rays in the shared
fixtures (skipped when absent). Saves up to 6 failures, truth in green and found boxes in red.

End to end (`--corpus`, default the demo corpus in data/raw): every figure the demo corpus records
the truth of (`demo-truth/panels.jsonl`: boxes, letters, sub-captions) goes through the ingest's own
path, from the published media file (`decode_image`, `encode_image`, `ingest.panels.split_panels`):
panel F1, the caption split's exact-match and token-F1 per panel, and the "pair correct" rate: of
the panel pairs the ingest emits, the share whose crop is a true panel (IoU >= 0.5) with that
panel's letter, whose text holds that panel's sub-caption (>= 80% of its words) and whose own part
is closer to it than to any other panel's — against, in the same run, an equal grid cut from the
caption's letter count.

    python bench/panels.py [--figures 400] [--xrays 60] [--corpus data/raw] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from biomedclip.demo.compound import CompoundFigure, compound_figure, tiled_figure
from biomedclip.demo.corpus import PANEL_TRUTH
from biomedclip.ingest.images import ImageStore, decode_image, encode_image
from biomedclip.ingest.panels import decode_side, split_panels
from biomedclip.ingest.params import IngestParams, PanelParams
from biomedclip.panels.captions import split_caption
from biomedclip.panels.layout import MIN_PX, SLIVER, Layout, Sheet, as_planes, find_panels, runs

XRAYS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "images" / "nih_cxr14"
GOAL_F1, GOAL_RATE, GOAL_PAIRS = 0.9, 50.0, 0.85
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
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
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
    rows, cols = min(((r, math.ceil(n / r)) for r in range(1, n + 1)),
                     key=lambda rc: (rc[0] * rc[1] - n, abs(math.log((width / rc[1]) / (height / rc[0])))))
    return [((i % cols) / cols, (i // cols) / rows, (i % cols + 1) / cols, (i // cols + 1) / rows) for i in range(n)]


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
    kept = [b for b in merged if b[2] - b[0] >= max(MIN_PX, SLIVER * w) and b[3] - b[1] >= max(MIN_PX, SLIVER * h)]
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
            boxes, confidence, reason = [p.box for p in found.panels], found.confidence, found.reason
        else:
            boxes, confidence, reason = found, 1.0, ""
        results.append(Result(seed, figure.layout, truth, boxes, matches(truth, boxes), confidence, reason))
    return results, cpu


def compare(figures: list[tuple[int, CompoundFigure]], variants: dict[str, Callable]) -> list[Result]:
    print(f"{'method':<48} {'precision':>9} {'recall':>7} {'F1':>6} {'exact n':>7} {'fig/s/core':>10}")
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
    print(f"\n{'layout (worst first)':<24} {'figures':>7} {'panels':>6} {'precision':>9} {'recall':>7} {'F1':>6} {'exact n':>7}")
    for name, group in sorted(groups.items(), key=lambda kv: (scores(kv[1])[2], kv[0])):
        p, r, f1, exact = scores(group)
        print(f"{name:<24} {len(group):7d} {sum(len(g.truth) for g in group):6d} {p:9.3f} {r:7.3f} {f1:6.3f} {exact:7.3f}")


def calibration(results: list[Result]) -> None:
    print(f"\n{'confidence':<12} {'figures':>7} {'split right':>11}")
    for lo, hi in ((0.0, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.01)):
        group = [r for r in results if lo <= r.confidence < hi]
        if group:
            share = sum(r.right for r in group) / len(group)
            print(f"[{lo:.1f}, {min(hi, 1.0):.1f}{')' if hi <= 1 else ']'}   {len(group):7d} {share:11.3f}")


def failures(results: list[Result], figures: dict[int, CompoundFigure], out: Path, label: str) -> None:
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
                draw.rectangle([x0 * w + inset, y0 * h + inset, x1 * w - 1 - inset, y1 * h - 1 - inset],
                               outline=colour, width=3)
        image.save(out / f"{label}-{r.seed}-{r.layout}.png")


def captions(figures: list[tuple[int, CompoundFigure]]) -> None:
    """What a caption's panel count does: agreeing counts raise the confidence, wrong ones lower it
    and keep weakly supported splits whole; neither creates a split."""
    print(f"\n{'expected (caption count)':<34} {'F1':>6} {'exact n':>7} {'mean confidence':>15} {'kept whole':>10}")
    for name, count in (("none", lambda n: None), ("the true count", lambda n: n), ("true count + 1", lambda n: n + 1)):
        results, _ = run(figures, lambda f, count=count: find_panels(f.image, expected=count(len(f.panels))))
        _, _, f1, exact = scores(results)
        confidence = sum(r.confidence for r in results) / len(results)
        whole = sum(len(r.found) == 1 for r in results) / len(results)
        print(f"{name:<34} {f1:6.3f} {exact:7.3f} {confidence:15.3f} {whole:10.3f}")


def xray_figures(count: int) -> list[tuple[int, CompoundFigure]] | None:
    paths = sorted(XRAYS.glob("*.png")) if XRAYS.is_dir() else []
    if not paths:
        return None
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("L").reduce(2))
    return [(seed, tiled_figure(images, seed)) for seed in range(count)]


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
        return token_recall(self.truth[i]["subcaption"], text) >= SAME_TEXT and closeness[i] == max(closeness)

    def correct(self) -> int:
        """Emitted pairs whose crop is a true panel (IoU >= 0.5, one-to-one) with that panel's letter
        and text."""
        boxes = [tuple(t["box"]) for t in self.truth]
        pairs = sorted(((iou(t, e[0]), i, j) for i, t in enumerate(boxes) for j, e in enumerate(self.emitted)),
                       reverse=True)
        used_t, used_e, right = set(), set(), 0
        for score, i, j in pairs:
            if score < 0.5:
                break
            if i in used_t or j in used_e:
                continue
            used_t.add(i)
            used_e.add(j)
            _, letter, own, text = self.emitted[j]
            right += letter.upper() == self.truth[i]["letter"].upper() and self.text_fits(i, own, text)
        return right


FINDINGS = ("no acute cardiopulmonary abnormality", "a right lower lobe consolidation", "a small left pleural effusion",
            "cardiomegaly with pulmonary vascular congestion", "a left upper lobe nodule", "bibasilar atelectasis")


def xray_caption(n: int, seed: int) -> tuple[str, list[str]]:
    """A caption in PMC's style for n tiled radiographs: title, "(A) ...", a shared sentence."""
    own = [f"Frontal chest radiograph of patient {seed % 97 + i + 1} showing {FINDINGS[(seed + i) % len(FINDINGS)]}."
           for i in range(n)]
    marks = " ".join(f"({chr(ord('A') + i)}) {text}" for i, text in enumerate(own))
    return f"Chest radiographs of the cohort at admission. {marks} All images are posteroanterior views.", own


def xray_pairs(figures: list[tuple[int, CompoundFigure]]) -> None:
    """Pair correct on the real X-ray tilings, captioned in PMC's style, against the equal grid."""
    from biomedclip.panels.match import split_figure

    ours, grid = [], []
    for seed, figure in figures:
        caption, own = xray_caption(len(figure.panels), seed)
        truth = [{"letter": chr(ord("A") + i), "box": p.box, "subcaption": own[i]} for i, p in enumerate(figure.panels)]
        split = split_figure(figure.image, caption)
        ours.append(Pairing(truth, [(p.box, p.letter, p.subcaption, p.text) for p in split.panels]))
        parts = split_caption(caption)
        letters = [k for k in parts.panels if len(k) == 1]
        grid.append(Pairing(truth, [(c, k, parts.panels[k], parts.text_for(k)) for c, k in
                                    zip(equal_grid(len(letters), *figure.image.size), letters, strict=True)]))
    for name, pairings in (("split_figure", ours), ("equal grid of the caption's letters", grid)):
        emitted = sum(len(p.emitted) for p in pairings)
        correct = sum(p.correct() for p in pairings)
        print(f"  {name:<40} pairs {emitted:4d}  pair correct {correct / max(1, emitted):.3f}  "
              f"of true panels {correct / max(1, sum(len(p.truth) for p in pairings)):.3f}")


def end_to_end(corpus: Path) -> None:
    """The ingest's path on every figure whose truth the demo corpus records."""
    truth_file = corpus / PANEL_TRUTH
    if not truth_file.is_file():
        print(f"\n## end to end: skipped, no truth sidecar at {truth_file} (biomedclip demo-data writes it)")
        return
    rows = [json.loads(line) for line in truth_file.read_text().splitlines()]
    params = IngestParams(panels=PanelParams(enabled=True))
    store = ImageStore(Path(tempfile.mkdtemp(prefix="bench-panels-store-")))
    ours, grid, kept_whole = [], [], defaultdict(int)
    exact = f1_sum = caption_panels = 0
    cpu = 0.0
    for row in rows:
        media = corpus / f"{row['pmcid']}.{row['version']}" / (row["media_file"] or "")
        if row["condition"] != "ok" or not row["caption"] or not media.is_file():
            continue
        start = time.process_time()
        original = decode_image(media.read_bytes(), params.image, long_side=decode_side(params))
        outcome = split_panels(original, encode_image(original.rgb, params.image), row["caption"], "bench", params,
                               store)
        cpu += time.process_time() - start
        kept_whole[outcome.status] += 1
        ours.append(Pairing(row["panels"], [((p["x0"], p["y0"], p["x1"], p["y1"]), p["letter"], p["subcaption"],
                                             p["text"]) for p in outcome.panels]))
        parts = split_caption(row["caption"])
        letters = [key for key in parts.panels if len(key) == 1]
        for truth in row["panels"]:
            caption_panels += 1
            own = parts.panels.get(truth["letter"].upper(), "")
            exact += " ".join(own.split()) == " ".join(truth["subcaption"].split())
            f1_sum += token_f1(own, truth["subcaption"])
        cells = equal_grid(len(letters), *original.size) if len(letters) > 1 else []
        grid.append(Pairing(row["panels"], [(cell, letter, parts.panels[letter], parts.text_for(letter))
                                            for cell, letter in zip(cells, letters, strict=True)]))
    figures = len(ours)
    truth_panels = sum(len(p.truth) for p in ours)
    print(f"\n## end to end on the demo corpus ({truth_file}): {figures} recorded figures, {truth_panels} panels")
    print(f"caption split per true panel: exact match {exact / max(1, caption_panels):.3f}, "
          f"token-F1 {f1_sum / max(1, caption_panels):.3f}")
    print(f"\n{'method':<50} {'pairs':>6} {'pair correct':>12} {'of true panels':>14} {'panel F1':>8}")
    for name, pairings in (("ingest.panels (split_figure, confidence rule)", ours),
                           ("baseline (a): keep whole", [Pairing(p.truth, []) for p in ours]),
                           ("baseline (b): equal grid of the caption's letters", grid)):
        emitted = sum(len(p.emitted) for p in pairings)
        correct = sum(p.correct() for p in pairings)
        # A figure kept whole is one found box: the whole image.
        tp = sum(matches([tuple(t["box"]) for t in p.truth], [e[0] for e in p.emitted] or WHOLE) for p in pairings)
        precision = tp / max(1, sum(len(p.emitted) or 1 for p in pairings))
        recall = tp / max(1, truth_panels)
        f1 = 2 * precision * recall / max(1e-9, precision + recall)
        rate = f"{correct / emitted:.3f}" if emitted else "-"
        print(f"{name:<50} {emitted:6d} {rate:>12} {correct / max(1, truth_panels):14.3f} {f1:8.3f}")
    print("\nfigures by outcome: " + ", ".join(f"{k} {v}" for k, v in sorted(kept_whole.items())))
    rate = figures / max(cpu, 1e-9)
    emitted = sum(len(p.emitted) for p in ours)
    share = sum(p.correct() for p in ours) / max(1, emitted)
    print(f"{rate:.0f} figures/s per core end to end (decode, normalise, split, crop, encode, store)")
    print(f"goal: pair correct >= {GOAL_PAIRS} at >= {GOAL_RATE:.0f} figures/s per core; measured {share:.3f} at "
          f"{rate:.0f}: {'met' if share >= GOAL_PAIRS and rate >= GOAL_RATE else 'NOT met'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=int, default=400, help="generated figures (seeds 0..N-1)")
    parser.add_argument("--xrays", type=int, default=60, help="figures tiled from the real chest X-rays")
    parser.add_argument("--corpus", type=Path, default=Path("data/raw"),
                        help="a demo corpus with its truth sidecar, for the end-to-end measurement")
    parser.add_argument("--out", type=Path, default=None, help="folder for failure images (default: a temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-panels-"))
    variants: dict[str, Callable] = {
        "find_panels: gutters + grid + letters (chosen)": lambda f: find_panels(f.image),
        "  without letter evidence": lambda f: find_panels(f.image, methods={"gutters", "grid"}),
        "  gutters alone (X-Y cuts)": lambda f: find_panels(f.image, methods={"gutters"}),
        "connected regions on the sheet": lambda f: regions(f.image),
        "baseline (a): keep whole": lambda f: WHOLE,
        "baseline (b): equal grid of the true count": lambda f: equal_grid(len(f.panels), *f.image.size),
    }

    figures = [(seed, compound_figure(seed)) for seed in range(args.figures)]
    print(f"## generated compound figures: {len(figures)} figures, {sum(len(f.panels) for _, f in figures)} panels")
    results = compare(figures, variants)
    breakdown(results)
    calibration(results)
    captions(figures)
    failures(results, dict(figures), out, "generated")
    _, _, f1, _ = scores(results)
    _, cpu = run(figures, variants["find_panels: gutters + grid + letters (chosen)"])
    rate = len(figures) / cpu
    print(f"\ngoal: panel F1 >= {GOAL_F1} at >= {GOAL_RATE:.0f} figures/s per core; measured F1 {f1:.3f} at "
          f"{rate:.0f} figures/s per core: {'met' if f1 >= GOAL_F1 and rate >= GOAL_RATE else 'NOT met'}")

    xrays = xray_figures(args.xrays)
    if xrays is None:
        print(f"\n## real chest X-rays: skipped, no PNGs in {XRAYS}")
    else:
        print(f"\n## compound figures tiled from the real chest X-rays (NIH CXR14, {XRAYS}): "
              f"{len(xrays)} figures, {sum(len(f.panels) for _, f in xrays)} panels")
        results = compare(xrays, variants)
        breakdown(results)
        failures(results, dict(xrays), out, "xray")
        print("\ncaptioned in PMC's style, the pairs (crop, letter, own text):")
        xray_pairs(xrays)
    end_to_end(args.corpus)
    print(f"\nfailure images (truth green, found red): {out}")


if __name__ == "__main__":
    main()
