"""Attacking the optical-flow model too (paper Table VI): a loss that moves RAFT's flow of the input away from the
flow of the clean video, added to the classifier's loss.

VideoPure's temporal loss (Eq. 13) warps with the flow of the *input*, so an attacker who knows the flow network
can perturb the flow as well as the class. `flow_deviation_grad_fn` is the GradFn of

    L_flow = flow_weight * mean over frame pairs and pixels of |flow(x) - flow(x_clean)|_2   (end-point error, px)

differentiated through the flow network (RaftFlow with grad=True); `sum_grad_fns` adds it to a classifier or
BPDA GradFn. (Our reading of the paper's one-sentence description.)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..flow import FlowFn, video_flow
from .base import GradFn


def flow_deviation_grad_fn(flow_fn: FlowFn, reference: Tensor, flow_weight: float = 1.0,
                           chunk: int = 16) -> GradFn:
    """GradFn (x, y) -> (flow_weight * mean EPE to `reference` (B,), its gradient); flow_fn differentiable in its
    images; reference (B, F-1, 2, H, W) = video_flow(flow_fn, x_clean)[0] (rows may repeat for expanded batches)."""

    def grad_fn(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            flow, _ = video_flow(flow_fn, x, chunk=chunk)
            ref = reference.to(flow).repeat(x.shape[0] // reference.shape[0], *[1] * (reference.dim() - 1))
            epe = (flow - ref).pow(2).sum(2).add(1e-12).sqrt().flatten(1).mean(1)
            loss = flow_weight * epe
            grad = torch.autograd.grad(loss.sum(), x)[0]
        return loss.detach(), grad.detach()

    return grad_fn


def sum_grad_fns(*grad_fns: GradFn) -> GradFn:
    """The GradFn of the sum of the losses (the first one is called first, e.g. to feed an iterate probe)."""

    def summed(x, y):
        losses, grads = zip(*(fn(x, y) for fn in grad_fns))
        return sum(losses), sum(grads)

    return summed


def reference_flow(flow_fn: FlowFn, x: Tensor, chunk: int = 16) -> Tensor:
    """The flow of the clean videos (B, F-1, 2, H, W), without gradient."""
    with torch.no_grad():
        return video_flow(flow_fn, x.detach(), chunk=chunk)[0].detach()


def differentiable_flow(flow) -> Optional[FlowFn]:
    """A differentiable copy of a RaftFlow (or the FlowFn itself when it is some other callable)."""
    if flow is None:
        return None
    return flow.replace(grad=True) if hasattr(flow, "replace") else flow
