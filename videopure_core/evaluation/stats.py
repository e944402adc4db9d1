"""Honest numbers for small samples: Wilson intervals for an accuracy, a clip bootstrap for an average of accuracies.

Every accuracy in the reports is k correct of n clips; its 95% interval is Wilson's score interval (Wilson, 1927;
recommended over the normal approximation by Brown, Cai and DasGupta, 2001), which stays inside [0, 1] and is
sensible at k = 0 or k = n. An Average over attack columns is a mean of accuracies measured on the same clips;
its interval is a percentile bootstrap over clips (the columns of one clip are resampled together, so their
correlation is kept).
"""

from __future__ import annotations

import math
import random
from typing import Sequence

Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval (lo, hi) of the proportion correct / n, as fractions in [0, 1]."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean(rows: Sequence[Sequence[float]], resamples: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """rows: one row per clip of per-column scores (0/1). Returns (mean over columns and clips, lo, hi): the
    percentile bootstrap interval of that mean over clips."""
    if not rows:
        raise ValueError("bootstrap_mean needs at least one clip.")
    per_clip = [sum(r) / len(r) for r in rows]
    n = len(per_clip)
    mean = sum(per_clip) / n
    rng = random.Random(seed)
    stats = sorted(sum(per_clip[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    lo = stats[int(math.floor(tail * (resamples - 1)))]
    hi = stats[int(math.ceil((1 - tail) * (resamples - 1)))]
    return mean, lo, hi


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals overlap."""
    return a[0] <= b[1] and b[0] <= a[1]
