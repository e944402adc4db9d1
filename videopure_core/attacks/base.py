"""What every attack shares: the gradient-function interface and the plain classifier loss."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GradFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (x (B,3,F,H,W), y (B,)) -> (loss (B,), d loss / d x)


def classifier_grad_fn(classifier: nn.Module) -> GradFn:
    """Cross-entropy of the bare classifier and its input gradient (the gray-box attacker's view)."""

    def grad_fn(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(classifier(x), y.clone(), reduction="none")
            grad = torch.autograd.grad(loss.sum(), x)[0]
        return loss.detach(), grad.detach()

    return grad_fn
