"""Side-by-side line charts with matplotlib: the scaling plot of the benchmark.

`panels_png([Panel(...), ...], path)` draws each panel with its own x values (optionally on a log2 axis), y from 0,
one line per series and a legend, and writes the PNG atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..io import atomic_path

COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:gray")


@dataclass
class Panel:
    """One chart: x values, {series name: y values (None for a missing point)}, labels, and a log2 x axis or not."""

    title: str
    x: Sequence[float]
    series: dict = field(default_factory=dict)
    xlabel: str = ""
    ylabel: str = ""
    log2_x: bool = False


def panels_png(panels: Sequence[Panel], path: str | os.PathLike, panel_size: tuple[int, int] = (460, 360)) -> Path:
    """Draw the panels left to right into one PNG of (panel_size[0] * len(panels), panel_size[1]) pixels at `path`,
    written atomically. Every x value gets a tick labelled with it."""
    import matplotlib.style
    from matplotlib.figure import Figure  # a bare Figure renders with Agg: no display, no pyplot state
    from matplotlib.ticker import FixedLocator, NullLocator

    pw, ph = panel_size
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(pw * len(panels) / 100, ph / 100), dpi=100, layout="constrained")
        for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
            for k, (name, ys) in enumerate(panel.series.items()):
                points = [(x, y) for x, y in zip(panel.x, ys) if y is not None]
                ax.plot(*zip(*points) if points else ([], []), color=COLOURS[k % len(COLOURS)], linewidth=2,
                        marker="o", markersize=5, label=name)
            if panel.log2_x:
                ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(list(panel.x)))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([f"{x:g}" for x in panel.x])
            ax.set_ylim(bottom=0)
            ax.grid(True, axis="y", color="0.9")
            ax.set_title(panel.title, fontsize="medium")
            ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel)
            if panel.series:
                ax.legend(loc="upper left", fontsize="small")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    return Path(path)
