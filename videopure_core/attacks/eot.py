"""Expectation over Transformation (Athalye et al., 2018): average the gradient over draws of a random defence.

Each of the `reps` calls of the wrapped GradFn draws fresh randomness (the defence's generator advances), so the
average estimates the gradient of the expected loss. The paper uses eot_reps = 20 with BPDA (EOT+BPDA).
"""

from __future__ import annotations

import torch

from .base import GradFn


def eot_grad_fn(grad_fn: GradFn, reps: int = 20) -> GradFn:
    """GradFn returning the mean loss (B,) and mean gradient of `reps` calls of `grad_fn`."""
    if reps < 1:
        raise ValueError(f"eot reps must be >= 1, got {reps}.")

    def averaged(x, y):
        loss_sum, grad_sum = None, None
        for _ in range(reps):
            loss, grad = grad_fn(x, y)
            loss_sum = loss if loss_sum is None else loss_sum + loss
            grad_sum = grad if grad_sum is None else grad_sum + grad
        return loss_sum / reps, grad_sum / reps

    return averaged
