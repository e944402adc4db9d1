"""Temporal translation (TT, Wei et al., AAAI 2022): gradients averaged over temporally shifted copies.

For shifts s = -L..L the video is cyclically translated along time (frame i goes to position i+s), the gradient
of each copy is computed and translated back to the original frame positions, and the results are averaged with
kernel weights w_s (Gaussian with sigma = L/3 by default, as in the TT release; "linear" or "uniform" too). This
is the gradient of the weighted loss sum_s w_s L(roll(x, s)). The TT release's defaults are L = 7 (kernel length
15). As a gray-box attack (Robust Acc*) it wraps the bare classifier's GradFn; TT+BPDA wraps the defence's.
"""

from __future__ import annotations

import math

import torch

from .base import GradFn


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


def tt_grad_fn(grad_fn: GradFn, shift: int = 7, kernel: str = "gaussian") -> GradFn:
    """GradFn of sum_s w_s L(roll(x, s, frames)): videos (B, 3, F, H, W), frames on dim 2."""
    weights = [(s, w) for s, w in tt_weights(shift, kernel) if w > 0]

    def translated(x, y):
        loss_sum, grad_sum = None, None
        for s, w in weights:
            loss, grad = grad_fn(torch.roll(x, s, dims=2), y)
            grad = torch.roll(grad, -s, dims=2)
            loss_sum = w * loss if loss_sum is None else loss_sum + w * loss
            grad_sum = w * grad if grad_sum is None else grad_sum + w * grad
        return loss_sum, grad_sum

    return translated
