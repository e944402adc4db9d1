"""Side-by-side line charts drawn with Pillow (matplotlib is not a dependency): the scaling plot of the benchmark.

`panels_png([Panel(...), ...], path)` draws each panel with its own x values (optionally on a log2 axis), y from 0,
one polyline per series and a legend, and writes the PNG atomically.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..io import save_image_png

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (127, 127, 127))


@dataclass
class Panel:
    """One chart: x values, {series name: y values (None for a missing point)}, labels, and a log2 x axis or not."""

    title: str
    x: Sequence[float]
    series: dict = field(default_factory=dict)
    xlabel: str = ""
    ylabel: str = ""
    log2_x: bool = False


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def round_ticks(hi: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `hi`, about `count` of them (1, 2, 2.5, 5 x 10^k steps)."""
    hi = hi if hi > 0 else 1.0
    raw = hi / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [round(i * step, 10) for i in range(int(math.ceil(hi / step - 1e-9)) + 1)]


def _draw_panel(draw: ImageDraw.ImageDraw, panel: Panel, box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    font, small = _font(15), _font(12)
    xs = [math.log2(x) if panel.log2_x else float(x) for x in panel.x]
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1.0
    values = [v for ys in panel.series.values() for v in ys if v is not None]
    yticks = round_ticks(max(values, default=1.0))
    x_of = lambda x: left + 10 + (x - x_lo) * (right - left - 20) / x_span  # noqa: E731
    y_of = lambda v: bottom - v * (bottom - top) / yticks[-1]  # noqa: E731
    draw.rectangle([left, top, right, bottom], outline="black")
    for v in yticks:
        draw.line([left, y_of(v), right, y_of(v)], fill=(228, 228, 228))
        draw.text((left - 6, y_of(v)), f"{v:g}", fill="black", font=small, anchor="rm")
    for x, label in zip(xs, panel.x):
        draw.line([x_of(x), bottom, x_of(x), bottom + 4], fill="black")
        draw.text((x_of(x), bottom + 7), f"{label:g}", fill="black", font=small, anchor="mt")
    draw.text(((left + right) / 2, top - 26), panel.title, fill="black", font=font, anchor="mt")
    draw.text(((left + right) / 2, bottom + 26), panel.xlabel, fill="black", font=small, anchor="mt")
    draw.text((left - 50, top - 12), panel.ylabel, fill="black", font=small, anchor="lb")
    for k, (name, ys) in enumerate(panel.series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = [(x_of(x), y_of(y)) for x, y in zip(xs, ys) if y is not None]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for px, py in points:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        ly = top + 12 + 18 * k
        draw.line([left + 12, ly, left + 36, ly], fill=colour, width=3)
        draw.text((left + 42, ly), name, fill="black", font=small, anchor="lm")


def panels_png(panels: Sequence[Panel], path: str | os.PathLike, panel_size: tuple[int, int] = (460, 360)) -> Path:
    """Draw the panels left to right into one PNG at `path` (written to a temporary name, then renamed)."""
    pw, ph = panel_size
    image = Image.new("RGB", (pw * len(panels), ph), "white")
    draw = ImageDraw.Draw(image)
    for i, panel in enumerate(panels):
        _draw_panel(draw, panel, (i * pw + 70, 50, (i + 1) * pw - 20, ph - 55))
    return save_image_png(image, path)
