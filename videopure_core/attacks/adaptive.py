"""Gradients through (defence, classifier) as each defence declares (`Defence.gradient`): exact, BPDA or surrogate.

    grad_fn = defence_grad_fn(classifier, defence, generator)       # uses defence.gradient
    x_adv, losses = pgd(grad_fn, x, y)                              # PGD+BPDA in Table I's terms

The attacker's loss is the classifier's cross-entropy averaged over the defence's K candidates (the majority vote
has no gradient); y (B,) are the true labels, the attack maximises the loss (untargeted).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GradFn
from .bpda import bpda_grad_fn


def _candidates_loss_grad(classifier: nn.Module, forward: Callable[[Tensor], Tensor]) -> GradFn:
    """GradFn of mean-over-candidates CE, differentiating `forward(x) -> (K, B, 3, F, H, W)` with autograd."""

    def grad_fn(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            videos = forward(x)
            k = videos.shape[0]
            logits = classifier(videos.flatten(0, 1).to(x.device))
            loss = F.cross_entropy(logits, y.repeat(k), reduction="none").view(k, -1).mean(0)
            grad = torch.autograd.grad(loss.sum(), x)[0]
        return loss.detach(), grad.detach()

    return grad_fn


def exact_grad_fn(classifier: nn.Module, defence, generator: Optional[torch.Generator] = None) -> GradFn:
    """Backpropagate through `defence.candidates(x, generator, grad=True)` and the classifier."""
    return _candidates_loss_grad(classifier, lambda x: defence.candidates(x, generator, grad=True).videos)


def surrogate_grad_fn(classifier: nn.Module, defence, generator: Optional[torch.Generator] = None) -> GradFn:
    """Backpropagate through the defence's differentiable approximation `defence.surrogate(x, generator)`."""
    return _candidates_loss_grad(classifier, lambda x: defence.surrogate(x, generator))


def defence_grad_fn(
    classifier: nn.Module, defence, generator: Optional[torch.Generator] = None, gradient: Optional[str] = None
) -> GradFn:
    """The adaptive attacker's GradFn for `defence`, by its declaration or by `gradient` when given."""
    how = gradient or defence.gradient
    if how == "exact":
        return exact_grad_fn(classifier, defence, generator)
    if how == "bpda":
        return bpda_grad_fn(classifier, defence, generator)
    if how == "surrogate":
        return surrogate_grad_fn(classifier, defence, generator)
    raise ValueError(f"gradient must be 'exact', 'bpda' or 'surrogate', got {how!r}.")
