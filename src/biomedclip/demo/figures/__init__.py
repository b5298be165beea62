"""Pixels for the demo corpus: one renderer per PMC figure type.

Each renderer draws an image of its type from a seeded `numpy.random.Generator` and returns the
attributes it drew (stain, magnification, finding, colours, counts...), which the caption writer
turns into words. Image and caption therefore agree: an "×400" micrograph has big nuclei, a
"right lower lobe consolidation" is an opacity on the image's left (radiological convention), a
"green" series is drawn green. That correspondence is what a small CLIP model learns in minutes.

Only seeded integer/uniform draws, arithmetic and Pillow's own drawing are used, so the same seed
gives the same pixels on any machine with the locked Pillow and NumPy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.random import Generator
from PIL import Image

from biomedclip.demo.figures.charts import bar_chart, heatmap, line_chart, scatter_plot
from biomedclip.demo.figures.drawing import Attrs, pick
from biomedclip.demo.figures.laboratory import diagram, flow_cytometry, photograph, western_blot
from biomedclip.demo.figures.microscopy import electron_microscopy, fluorescence, he_histology, ihc
from biomedclip.demo.figures.radiology import chest_xray, ct, mri, ultrasound

Renderer = Callable[[Generator, int, int], tuple[Image.Image, Attrs]]

__all__ = ["CLASS_NAMES", "RENDERERS", "Attrs", "pick", "render"]

RENDERERS: dict[str, Renderer] = {
    "he_histology": he_histology,
    "ihc": ihc,
    "fluorescence": fluorescence,
    "electron_microscopy": electron_microscopy,
    "chest_xray": chest_xray,
    "ct": ct,
    "mri": mri,
    "ultrasound": ultrasound,
    "bar_chart": bar_chart,
    "line_chart": line_chart,
    "scatter_plot": scatter_plot,
    "heatmap": heatmap,
    "western_blot": western_blot,
    "flow_cytometry": flow_cytometry,
    "diagram": diagram,
    "photograph": photograph,
}


def render(kind: str, seed: int, width: int, height: int) -> tuple[Image.Image, Attrs]:
    """Draw one image of `kind` from `seed`: same arguments, same pixels and attributes."""
    return RENDERERS[kind](np.random.default_rng(seed), width, height)


# Human-readable class names: the labels of the zero-shot benchmark and the words captions use.
CLASS_NAMES: dict[str, str] = {
    "he_histology": "H&E histology",
    "ihc": "immunohistochemistry",
    "fluorescence": "fluorescence microscopy",
    "electron_microscopy": "electron microscopy",
    "chest_xray": "chest X-ray",
    "ct": "CT scan",
    "mri": "MRI scan",
    "ultrasound": "ultrasound",
    "bar_chart": "bar chart",
    "line_chart": "line chart",
    "scatter_plot": "scatter plot",
    "heatmap": "heatmap",
    "western_blot": "western blot",
    "flow_cytometry": "flow cytometry",
    "diagram": "flowchart diagram",
    "photograph": "clinical photograph",
}
