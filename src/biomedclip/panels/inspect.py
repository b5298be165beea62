"""What the ingest does with one figure file: `biomedclip inspect ARTICLE --panels FIGURE`.

`inspect_panels` finds the article's figure whose `<graphic>` names the file, the way the ingest
matches media (`ingest.extract.MediaIndex`, by stem: PLOS's `pone.0100012.g002` is the graphic of
`pone.0100012.g002.jpg`), decodes it as the ingest does (`images.decode_image` at
`ingest.panels.decode_side`, with panels on) and calls the ingest's own decision
(`ingest.panels.decide`). So what it shows is what the ingest does with that figure: the same
outcome code, panels, boxes and texts (`tests/test_panels_pipeline.py` checks it on every figure of
a corpus). The result renders as markdown and draws its boxes on the figure.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.ingest.extract import MediaIndex, href_stem
from biomedclip.ingest.images import Decoded, ImageRejected, decode_image
from biomedclip.ingest.jats import Article, Figure
from biomedclip.ingest.panels import SPLIT, PanelDecision, decide, decode_side, panel_text
from biomedclip.ingest.params import IngestParams
from biomedclip.storage import UnsafeKey

SPLIT_COLOUR, WHOLE_COLOUR = (220, 30, 30), (230, 150, 0)  # boxes: split, kept whole


class FigureNotFound(ValueError):
    """No figure of the article has a graphic that names the file."""


@dataclass(frozen=True)
class PanelInspection:
    figure: Figure  # the article's figure the file is a graphic of
    file: str  # the figure file's name
    graphic: str  # the <graphic> href it matched
    found: tuple[int, int]  # width, height as published
    decision: PanelDecision  # what the ingest decides: outcome, layout, caption parts, pairs
    max_words: int  # `ingest.panels.max_words`: a panel's text as the ingest writes it
    decoded: Decoded = field(repr=False, compare=False)  # the pixels the decision was made on

    @property
    def split(self) -> bool:
        return self.decision.status == SPLIT

    def markdown(self) -> str:
        """The figure, its outcome, layout, the caption's parts, and the pairs (when split)."""
        split, layout = self.decision.split, self.decision.split.layout
        width, height = self.decoded.rgb.size
        outcome = (f"split into {len(split.panels)} panel pairs" if self.split else
                   f"kept whole (`{self.decision.status}`): {_text(self.decision.detail)}")
        found = f"{self.found[0]}x{self.found[1]} px, decided on {width}x{height}"
        lines = [f"**{_text(self.figure.fig_id)}** ({_text(self.file)}, graphic `{self.graphic}`; "
                 f"{found}): {outcome}", ""]
        if layout is None:
            lines.append("- layout: not looked at (the caption names no panel letters)")
        else:
            lines.append(f"- layout: {layout.method}, {len(layout.panels)} panel(s), confidence "
                         f"{layout.confidence:.2f} ({_text(layout.reason)})")
        lines.append(f"- caption style: {split.caption.style}")
        lines.append(f"- shared: {_text(split.caption.shared) or '(nothing)'}")
        if self.split:
            lines += ["", "| panel | letter | box (x0, y0, x1, y1) | sub-caption | text |",
                      "|---|---|---|---|---|"]
            for pair in split.panels:
                box = ", ".join(f"{v:.2f}" for v in pair.box)
                text = panel_text(split.caption.shared, pair.subcaption, self.max_words)
                lines.append(f"| {pair.index + 1} | {pair.letter} | {box} | "
                             f"{_text(pair.subcaption)} | {_text(text)} |")
        return "\n".join(lines) + "\n"

    def drawing(self) -> Image.Image:
        """The decoded figure with the layout's boxes: red and lettered when split, orange and
        numbered when kept whole."""
        picture = self.decoded.rgb.copy()
        layout = self.decision.split.layout
        if layout is None:
            return picture
        draw = ImageDraw.Draw(picture)
        colour = SPLIT_COLOUR if self.split else WHOLE_COLOUR
        line = max(3, max(picture.size) // 300)
        for i, panel in enumerate(layout.panels):
            sizes = (*picture.size, *picture.size)
            x0, y0, x1, y1 = (round(v * size) for v, size in zip(panel.box, sizes, strict=True))
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=line)
            label = self.decision.split.panels[i].letter if self.split else str(i + 1)
            draw.text((x0 + 2 * line, y0 + line), label, fill=colour)
        return picture


    def save_drawing(self, folder: Path) -> Path:
        """The drawing as `folder/<file stem>.panels.png`, written atomically; its path."""
        buffer = io.BytesIO()
        self.drawing().save(buffer, format="PNG")
        target = folder / f"{Path(self.file).stem}.panels.png"
        atomic_write_bytes(target, buffer.getvalue())
        return target


def _text(value: str) -> str:
    """Free text inside markdown: its markup characters escaped, on one line."""
    return re.sub(r"([\\`*_|\[\]<>#])", r"\\\1", " ".join(value.split()))


def figure_of(article: Article, file: str) -> tuple[Figure, str]:
    """The figure whose graphic the ingest would match to `file`, and that graphic's href."""
    media = MediaIndex([file])
    for fig in article.figures:
        for href in fig.graphics:
            try:
                if media.find(href_stem(href)) == file:
                    return fig, href
            except UnsafeKey:  # a graphic the ingest refuses to look up
                continue
    known = ", ".join(g for f in article.figures for g in f.graphics) or "none"
    raise FigureNotFound(f"{file}: no figure of the article has a graphic named "
                         f"{Path(file).stem!r} (graphics: {known})")


def inspect_panels(article: Article, image: Path, params: IngestParams) -> PanelInspection:
    """What the ingest, with panels on and `params` otherwise, does with one figure file of the
    article. Raises `FigureNotFound`, or `ValueError` naming the file when it is no image the
    ingest keeps."""
    panels = params.panels.model_copy(update={"enabled": True})
    params = params.model_copy(update={"panels": panels})
    fig, href = figure_of(article, image.name)
    try:
        decoded = decode_image(image.read_bytes(), params.image, long_side=decode_side(params))
    except ImageRejected as exc:
        detail = f"{exc.reason.value}: {exc.detail}"
        raise ValueError(f"{image}: the ingest rejects it ({detail})") from None
    decision = decide(decoded, fig.caption, params)
    return PanelInspection(fig, image.name, href, (decoded.width, decoded.height), decision,
                           params.panels.max_words, decoded)
