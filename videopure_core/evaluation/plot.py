"""A line plot drawn with Pillow (no matplotlib): the attacker's loss per iteration for each defence (paper Fig. 4)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..io import save_image_png

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def line_plot(series: dict[str, Sequence[float]], path: str | os.PathLike, title: str = "", xlabel: str = "",
              ylabel: str = "", size: tuple[int, int] = (900, 560)) -> Path:
    """Save a PNG with one polyline per series (x = 1, 2, ...), axes with ticks, and a legend; returns the path.

    The file is written to a temporary name and renamed into place.
    """
    width, height = size
    left, right, top, bottom = 80, 250, 70, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(16), _font(13)
    values = [v for ys in series.values() for v in ys if v is not None and math.isfinite(v)]
    n = max((len(ys) for ys in series.values()), default=1)
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    yticks = nice_ticks(lo, hi)
    y0, y1 = yticks[0], yticks[-1]
    x_of = lambda i: left + (i - 1) * (width - left - right) / max(n - 1, 1)  # noqa: E731
    y_of = lambda v: height - bottom - (v - y0) * (height - top - bottom) / (y1 - y0)  # noqa: E731
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for v in yticks:
        y = y_of(v)
        draw.line([left, y, width - right, y], fill=(225, 225, 225))
        draw.text((left - 8, y), f"{v:g}", fill="black", font=small, anchor="rm")
    for i in range(1, n + 1):
        if n <= 20 or i % math.ceil(n / 20) == 0 or i == 1:
            draw.text((x_of(i), height - bottom + 8), str(i), fill="black", font=small, anchor="mt")
    draw.text(((left + width - right) / 2, 10), title, fill="black", font=font, anchor="mt")
    draw.text(((left + width - right) / 2, height - 20), xlabel, fill="black", font=small, anchor="mt")
    draw.text((left, top - 10), ylabel, fill="black", font=small, anchor="lb")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for k, (name, ys) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        points = [(x_of(i + 1), y_of(v)) for i, v in enumerate(ys) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = top + 10 + 22 * k
        draw.line([width - right + 15, ly, width - right + 45, ly], fill=colour, width=3)
        label, room = name, right - 60
        while len(label) > 4 and draw.textlength(label, font=small) > room:
            label = label[:-2] + "…"
        draw.text((width - right + 52, ly), label, fill="black", font=small, anchor="lm")
    return save_image_png(image, path)
