"""BPDA with the identity (Athalye et al., 2018): the defence's forward pass, the classifier's backward pass.

The attacker runs the defence, takes the gradient of the classifier's loss at every candidate, averages over the
candidates and uses it as the gradient at the input, as if the defence were the identity (its Jacobian replaced
by I). The loss reported is the cross-entropy averaged over candidates.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .base import GradFn, classifier_grad_fn


def bpda_grad_fn(classifier: nn.Module, defence, generator: Optional[torch.Generator] = None) -> GradFn:
    """GradFn (x (B, 3, F, H, W), y (B,)) -> (mean CE over candidates (B,), mean candidate gradient (B, 3, F, H, W))."""
    at_candidate = classifier_grad_fn(classifier)

    def grad_fn(x, y):
        out = defence.candidates(x, generator)
        losses, grads = zip(*(at_candidate(candidate.to(x.device), y) for candidate in out.videos))
        return torch.stack(losses).mean(0), torch.stack(grads).mean(0)

    return grad_fn
