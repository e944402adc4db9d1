"""Expectation over Transformation (Athalye et al., 2018): average the gradient over draws of a random defence.

Each draw sees fresh randomness from the defence's generator, so the average estimates the gradient of the
expected loss. The paper uses eot_reps = 20 with BPDA (EOT+BPDA).

Batched (default): the draws are extra batch entries, x repeated `reps` times along the batch, so the defence and
the classifier run once on reps x B videos (in calls of at most `max_batch` videos when given) instead of reps
times on B: the same estimator, with the per-call overhead paid once. Draw 0 comes first, so an iterate probe
sees x itself. `batched=False` calls the wrapped GradFn once per draw.
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import GradFn


def expanded_calls(grad_fn: GradFn, copies: list, y: torch.Tensor, max_batch: Optional[int]) -> tuple[list, list]:
    """grad_fn over a list of same-shape batches (B, ...), concatenated into calls of at most max_batch videos
    (never splitting one copy); returns the per-copy losses and gradients in order."""
    b = copies[0].shape[0]
    per_call = max(1, (max_batch or b * len(copies)) // b)
    losses, grads = [], []
    for start in range(0, len(copies), per_call):
        group = copies[start : start + per_call]
        loss, grad = grad_fn(torch.cat(group), y.repeat(len(group)))
        losses += list(loss.split(b))
        grads += list(grad.split(b))
    return losses, grads


def eot_grad_fn(grad_fn: GradFn, reps: int = 20, batched: bool = True, max_batch: Optional[int] = None) -> GradFn:
    """GradFn returning the mean loss (B,) and mean gradient of `reps` draws of `grad_fn`."""
    if reps < 1:
        raise ValueError(f"eot reps must be >= 1, got {reps}.")
    if reps == 1:
        return grad_fn

    def averaged(x, y):
        if batched:
            losses, grads = expanded_calls(grad_fn, [x] * reps, y, max_batch)
        else:
            losses, grads = zip(*(grad_fn(x, y) for _ in range(reps)))
        return torch.stack(list(losses)).mean(0), torch.stack(list(grads)).mean(0)

    return averaged
