"""Temporal translation (TT, Wei et al., AAAI 2022): gradients averaged over temporally shifted copies.

For shifts s = -L..L the video is cyclically translated along time (frame i goes to position i+s), the gradient
of each copy is computed and translated back to the original frame positions, and the results are averaged with
kernel weights w_s (Gaussian with sigma = L/3 by default, as in the TT release; "linear" or "uniform" too). This
is the gradient of the weighted loss sum_s w_s L(roll(x, s)). The TT release's defaults are L = 7 (kernel length
15). As a gray-box attack (Robust Acc*) it wraps the bare classifier's GradFn; TT+BPDA wraps the defence's.

Batched (default): the 2L+1 shifted copies are extra batch entries of one call (at most `max_batch` videos per
call when given), shift 0 first so that an iterate probe sees x itself; `batched=False` calls once per shift.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .base import GradFn
from .eot import expanded_calls


def tt_weights(shift: int = 7, kernel: str = "gaussian") -> list[tuple[int, float]]:
    """[(s, w_s)] for s = -shift..shift, weights summing to 1."""
    if shift < 0:
        raise ValueError(f"TT shift length must be >= 0, got {shift}.")
    shifts = list(range(-shift, shift + 1))
    if kernel == "gaussian":
        sigma = max(shift / 3.0, 1e-6)
        raw = [math.exp(-(s * s) / (2 * sigma * sigma)) for s in shifts]
    elif kernel == "linear":
        raw = [1.0 - abs(s) / (shift + 1) for s in shifts]
    elif kernel == "uniform":
        raw = [1.0 for _ in shifts]
    else:
        raise ValueError(f"TT kernel must be 'gaussian', 'linear' or 'uniform', got {kernel!r}.")
    total = sum(raw)
    return [(s, w / total) for s, w in zip(shifts, raw)]


def tt_grad_fn(grad_fn: GradFn, shift: int = 7, kernel: str = "gaussian", batched: bool = True,
               max_batch: Optional[int] = None) -> GradFn:
    """GradFn of sum_s w_s L(roll(x, s, frames)): videos (B, 3, F, H, W), frames on dim 2."""
    weights = sorted(((s, w) for s, w in tt_weights(shift, kernel) if w > 0), key=lambda sw: abs(sw[0]) > 0)

    def translated(x, y):
        copies = [torch.roll(x, s, dims=2) for s, _ in weights]
        if batched:
            losses, grads = expanded_calls(grad_fn, copies, y, max_batch)
        else:
            losses, grads = zip(*(grad_fn(c, y) for c in copies))
        loss = sum(w * l for (_, w), l in zip(weights, losses))
        grad = sum(w * torch.roll(g, -s, dims=2) for (s, w), g in zip(weights, grads))
        return loss, grad

    return translated
