"""Spatial-temporal optimisation (paper Section III-B-2, Eqs. 12-14 and 16).

L = lambda_temp * L_temp(x0_hat) + lambda_spa * L_spa(x0_hat, z0_input), per video, summed over the batch so that
videos never influence each other's gradients. The gradient flows through the affine map x0_hat(z) only: the
guidance never differentiates the UNet.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .config import Guidance
from .ddim import predict_x0
from .flow import LatentFlow, backward_warp


def spatial_loss(x0: Tensor, z0_input: Tensor) -> Tensor:
    """Eq. 12, L_spa = -MSE(x0_hat, z0_input), the mean over each video's N latent elements: (B, ...) x 2 -> (B,).

    Minimising it pushes the candidate away from the latent of the (possibly adversarial) input.
    """
    return -(x0 - z0_input).pow(2).flatten(1).mean(1)


def _warp_term(target: Tensor, source: Tensor, flow: Tensor, mask: Optional[Tensor], warp_grad: bool) -> Tensor:
    """sum_i mean |warp(source_i, flow_i) - target_i|: (B, C, P, h, w) x 2, flow (B, P, 2, h, w) -> (B,)."""
    b, c, p, h, w = target.shape
    src = source if warp_grad else source.detach()
    flat = lambda x: x.transpose(1, 2).reshape(b * p, x.shape[1], h, w)  # noqa: E731
    warped = backward_warp(flat(src), flow.reshape(b * p, 2, h, w))
    diff = (warped - flat(target)).abs()
    if mask is not None:
        diff = diff * mask.reshape(b * p, 1, h, w)
    return diff.reshape(b, p, -1).mean(2).sum(1)


def temporal_loss(x0: Tensor, flow: LatentFlow, warp_grad: bool = False, bidirectional: bool = False) -> Tensor:
    """Eq. 13, L_temp = sum_{i=1}^{F-1} mean |Warp(x0[i+1], O(i)) - x0[i]|: x0 (B, C, F, h, w) -> (B,).

    The mean runs over the n = C*h*w elements of one frame. Release behaviour: forward flow only, no occlusion
    mask, no gradient through the warped frame (only x0[i] receives gradient; the last frame does not move).
    `warp_grad` lets the gradient through the warp; `bidirectional` adds the backward-flow term
    sum_i mean |Warp(x0[i], O'(i)) - x0[i+1]|; masks in `flow` weight each term when present.
    """
    current, following = x0[:, :, :-1], x0[:, :, 1:]
    loss = _warp_term(current, following, flow.forward, flow.forward_mask, warp_grad)
    if bidirectional:
        if flow.backward is None:
            raise ValueError("bidirectional temporal loss needs backward flow: build it with latent_flow(backward=True).")
        loss = loss + _warp_term(following, current, flow.backward, flow.backward_mask, warp_grad)
    return loss


def guidance_loss(x0: Tensor, z0_input: Tensor, flow: Optional[LatentFlow], guidance: Guidance) -> Tensor:
    """L = lambda_temp L_temp + lambda_spa L_spa per video: (B, 4, F, h, w) -> (B,)."""
    lambda_temp, lambda_spa = guidance.weights(tuple(x0.shape))
    loss = lambda_spa * spatial_loss(x0, z0_input)
    if lambda_temp != 0:
        if flow is None:
            raise ValueError("The temporal loss needs optical flow; pass a LatentFlow or set lambda_temp=0.")
        loss = loss + lambda_temp * temporal_loss(x0, flow, guidance.warp_grad, guidance.bidirectional)
    return loss


def guidance_gradient(
    x0: Tensor, z0_input: Tensor, flow: Optional[LatentFlow], guidance: Guidance, create_graph: bool = False
) -> Tensor:
    """grad_{x0} of the summed loss L, same shape as x0.

    Safe under torch.inference_mode() (ComfyUI runs nodes in it): inputs are cloned into a grad-enabled,
    non-inference region. With create_graph=True (for attacks that differentiate the purifier) x0 is used as it
    is and the returned gradient stays part of the autograd graph.
    """
    with torch.inference_mode(False), torch.enable_grad():
        if create_graph:
            x = x0 if x0.requires_grad else x0.clone().requires_grad_(True)
            loss = guidance_loss(x, z0_input, flow, guidance).sum()
            return torch.autograd.grad(loss, x, create_graph=True)[0]
        x = x0.detach().clone().requires_grad_(True)
        z0 = z0_input.detach().clone()
        if flow is not None:
            flow = LatentFlow(*(None if t is None else t.detach().clone() for t in flow))
        loss = guidance_loss(x, z0, flow, guidance).sum()
        return torch.autograd.grad(loss, x)[0].detach()


def guided_latent(
    z: Tensor,
    eps: Tensor,
    alpha_bar: float,
    weight: float,
    z0_input: Tensor,
    flow: Optional[LatentFlow],
    guidance: Guidance,
    create_graph: bool = False,
) -> Tensor:
    """Eq. 16: z' = z - alpha_s * w_t * grad_z L(x0_hat(z)), with grad_z = grad_x0 / sqrt(a_t) (eps held fixed)."""
    x0 = predict_x0(z, eps, alpha_bar)
    grad_x0 = guidance_gradient(x0, z0_input, flow, guidance, create_graph)
    return z - (guidance.alpha_s * weight / math.sqrt(alpha_bar)) * grad_x0
