"""A line plot with matplotlib: the attacker's loss per iteration for each defence (paper Fig. 4)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence

from ..io import atomic_path

TAB10 = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
         "tab:olive", "tab:cyan")


def line_plot(series: dict[str, Sequence[Optional[float]]], path: str | os.PathLike, title: str = "",
              xlabel: str = "", ylabel: str = "", size: tuple[int, int] = (900, 560)) -> Path:
    """Save a `size`-pixel PNG with one line per series (x = 1, 2, ...; None and non-finite points left out) and a
    legend to the right; written atomically. Returns the path."""
    import matplotlib.style
    from matplotlib.figure import Figure  # a bare Figure renders with Agg: no display, no pyplot state

    with matplotlib.style.context("default"):
        fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100, layout="constrained")
        ax = fig.subplots()
        for k, (name, ys) in enumerate(series.items()):
            points = [(i + 1, v) for i, v in enumerate(ys) if v is not None and math.isfinite(v)]
            ax.plot(*zip(*points) if points else ([], []), color=TAB10[k % len(TAB10)], linewidth=2, marker="o",
                    markersize=4, label=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, color="0.9")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if series:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    return Path(path)
