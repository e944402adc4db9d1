"""Sanity checks in the spirit of AutoAttack's (Croce & Hein, 2020): flag evaluations that cannot be trusted.

- zero gradients: a GradFn that returns an all-zero gradient for a video gives PGD nothing to follow (masked or
  shattered gradients; the robust accuracy is then an upper bound only);
- randomness without EOT: a stochastic defence attacked adaptively with a single draw per step.
"""

from __future__ import annotations

import warnings

import torch

from .base import GradFn


class SanityWarning(UserWarning):
    """An attack result that may overestimate robustness."""


class ZeroGradientCheck:
    """Wraps a GradFn and counts, per video, the calls whose gradient is exactly zero; warns on the first one.

    zero_calls: (B,) ints after the attack; `flagged` lists the videos with any zero-gradient call.
    """

    def __init__(self, grad_fn: GradFn, context: str = "attack"):
        self.grad_fn, self.context = grad_fn, context
        self.zero_calls: torch.Tensor | None = None
        self.warned = False

    def __call__(self, x, y):
        loss, grad = self.grad_fn(x, y)
        zero = (grad.flatten(1).abs().amax(1) == 0).long().cpu()
        self.zero_calls = zero if self.zero_calls is None else self.zero_calls + zero
        if bool(zero.any()) and not self.warned:
            self.warned = True
            warnings.warn(
                f"{self.context}: the gradient is exactly zero for {int(zero.sum())} of {zero.numel()} videos; PGD "
                f"cannot move them and the robust accuracy is only an upper bound. Check the defence's gradient "
                f"declaration (BPDA or a surrogate for non-differentiable steps).",
                SanityWarning,
                stacklevel=2,
            )
        return loss, grad

    @property
    def flagged(self) -> list[int]:
        return [] if self.zero_calls is None else [i for i, n in enumerate(self.zero_calls.tolist()) if n]


def check_eot(defence, eot_reps: int, context: str = "attack") -> str | None:
    """Warn (and return the message) when a stochastic defence is attacked adaptively without EOT."""
    if getattr(defence, "stochastic", False) and eot_reps <= 1:
        message = (
            f"{context}: the {defence.name} defence is stochastic but attacked with one draw per step (no EOT); "
            f"gradients of a random defence are noisy and the robust accuracy may be overestimated. Use EOT "
            f"(eot_reps > 1, e.g. the eot+bpda attack)."
        )
        warnings.warn(message, SanityWarning, stacklevel=2)
        return message
    return None
