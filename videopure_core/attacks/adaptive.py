"""Gradients through (defence, classifier) as each defence declares (`Defence.gradient`): exact, BPDA or surrogate.

    grad_fn = defence_grad_fn(classifier, defence, generator)       # uses defence.gradient
    x_adv, losses = pgd(grad_fn, x, y)                              # PGD+BPDA in Table I's terms

The attacker's loss is the classifier's cross-entropy averaged over the defence's K candidates (the majority vote
has no gradient); y (B,) are the true labels, the attack maximises the loss (untargeted). The K x B candidates go
through the classifier in one call.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GradFn
from .bpda import bpda_grad_fn

Forward = Callable[[Tensor], tuple[Tensor, Optional[Tensor]]]  # x -> (candidate videos (K, B, ...), extra loss (B,))


def candidates_loss_grad(classifier: nn.Module, forward: Forward, probe=None) -> GradFn:
    """GradFn of (mean-over-candidates CE + the forward's extra loss), differentiating `forward` with autograd.

    `forward(x)` returns the candidate videos (K, B, 3, F, H, W) in the autograd graph of x and an optional extra
    loss (B,) to maximise with them (e.g. DiffAttack's deviated-reconstruction loss); `probe` is offered the
    candidates' logits."""

    def grad_fn(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            videos, extra = forward(x)
            k = videos.shape[0]
            logits = classifier(videos.flatten(0, 1).to(x.device))
            if probe is not None:
                probe.offer(logits.detach().view(k, -1, logits.shape[-1]))
            loss = F.cross_entropy(logits, y.repeat(k), reduction="none").view(k, -1).mean(0)
            if extra is not None:
                loss = loss + extra
            grad = torch.autograd.grad(loss.sum(), x)[0]
        return loss.detach(), grad.detach()

    return grad_fn


def exact_grad_fn(classifier: nn.Module, defence, generator: Optional[torch.Generator] = None, probe=None) -> GradFn:
    """Backpropagate through `defence.candidates(x, generator, grad=True)` and the classifier."""
    return candidates_loss_grad(classifier, lambda x: (defence.candidates(x, generator, grad=True).videos, None), probe)


def surrogate_grad_fn(classifier: nn.Module, defence, generator: Optional[torch.Generator] = None, probe=None) -> GradFn:
    """Backpropagate through the defence's differentiable approximation `defence.surrogate(x, generator)`.

    (The surrogate's candidates are not the defence's, so nothing is offered to a probe.)"""
    return candidates_loss_grad(classifier, lambda x: (defence.surrogate(x, generator), None))


def defence_grad_fn(
    classifier: nn.Module, defence, generator: Optional[torch.Generator] = None, gradient: Optional[str] = None,
    probe=None, max_batch: Optional[int] = None,
) -> GradFn:
    """The adaptive attacker's GradFn for `defence`, by its declaration or by `gradient` when given."""
    how = gradient or defence.gradient
    if how == "exact":
        return exact_grad_fn(classifier, defence, generator, probe)
    if how == "bpda":
        return bpda_grad_fn(classifier, defence, generator, probe, max_batch)
    if how == "surrogate":
        return surrogate_grad_fn(classifier, defence, generator)
    raise ValueError(f"gradient must be 'exact', 'bpda' or 'surrogate', got {how!r}.")
