"""BPDA with the identity (Athalye et al., 2018): the defence's forward pass, the classifier's backward pass.

The attacker runs the defence, takes the gradient of the classifier's loss at every candidate, averages over the
candidates and uses it as the gradient at the input, as if the defence were the identity (its Jacobian replaced
by I). The loss reported is the cross-entropy averaged over candidates. All K x B candidates go through the
classifier in one batched forward and backward pass (at most `max_batch` videos per call when given).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import GradFn


def candidates_ce_grad(classifier: nn.Module, videos: torch.Tensor, y: torch.Tensor,
                       max_batch: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy of every candidate and its gradient: videos (K, B, 3, F, H, W), y (B,) ->
    (losses (K, B), gradients (K, B, 3, F, H, W), logits (K, B, C)), classifier calls of at most max_batch videos."""
    k, b = videos.shape[:2]
    flat, labels = videos.detach().flatten(0, 1), y.repeat(k)
    losses, grads, logits = [], [], []
    size = max_batch or flat.shape[0]
    with torch.inference_mode(False), torch.enable_grad():
        for part, part_y in zip(flat.split(size), labels.split(size)):
            part = part.clone().requires_grad_(True)
            out = classifier(part)
            loss = F.cross_entropy(out, part_y, reduction="none")
            grads.append(torch.autograd.grad(loss.sum(), part)[0])
            losses.append(loss.detach())
            logits.append(out.detach())
    return (torch.cat(losses).view(k, b), torch.cat(grads).view(k, b, *flat.shape[1:]),
            torch.cat(logits).view(k, b, -1))


def bpda_grad_fn(classifier: nn.Module, defence, generator: Optional[torch.Generator] = None, probe=None,
                 max_batch: Optional[int] = None) -> GradFn:
    """GradFn (x (B, 3, F, H, W), y (B,)) -> (mean CE over candidates (B,), mean candidate gradient (B, 3, F, H, W)).

    `probe` (an IteratePredictions) is offered the candidates' logits, i.e. the defended vote at x."""

    def grad_fn(x, y):
        out = defence.candidates(x, generator)
        losses, grads, logits = candidates_ce_grad(classifier, out.videos.to(x.device), y, max_batch)
        if probe is not None:
            probe.offer(logits)
        return losses.mean(0), grads.mean(0)

    return grad_fn
