"""Projected gradient descent (Madry et al., 2018; paper Eqs. 1-2), L_inf or L2, on any gradient function; with
`momentum` it is MI-FGSM (Dong et al., 2018), the "MI" of the paper's black-box TT+MI."""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
from torch import Tensor

from ..ddim import Callback
from .base import GradFn


def _per_video_norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Back into the eps-ball around x (per video) and into [0,1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _per_video_norm(delta)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def random_start_point(x: Tensor, eps: float, norm: str = "linf", generator: Optional[torch.Generator] = None) -> Tensor:
    """A random point of the eps-ball around x (uniform per element for L_inf, random direction and radius for L2),
    in [0,1]; noise drawn on the CPU from `generator`."""
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1
    if norm == "l2":
        radius = torch.rand(x.shape[0], generator=generator).view(-1, *[1] * (x.dim() - 1)).to(x)
        noise = noise * eps / _per_video_norm(noise) * radius
    else:
        noise = noise * eps
    return project(x + noise, x, eps, norm)


def pgd(
    grad_fn: GradFn,
    x: Tensor,
    y: Tensor,
    eps: float = 4 / 255,
    step: float = 2 / 255,
    steps: int = 10,
    norm: Literal["linf", "l2"] = "linf",
    random_start: bool = True,
    generator: Optional[torch.Generator] = None,
    callback: Callback = None,
    init: Optional[Tensor] = None,
    momentum: float = 0.0,
    probe=None,
    keep: Sequence[int] = (),
    iterates: Optional[dict] = None,
) -> tuple[Tensor, Tensor]:
    """Maximise grad_fn's loss within the eps-ball: x (B, 3, F, H, W) in [0,1], labels y (B,).

    Each iteration: x <- Proj(x + step * sign(grad)) for L_inf, or x + step * grad / ||grad||_2 for L2. Uniform
    (L_inf) or random-direction, random-radius (L2) start inside the ball when `random_start` (`random_start_point`).
    `init` (same shape as x) replaces the random start with a given starting point, projected into the ball (the
    evaluation draws per-clip starts so that results do not depend on how clips are batched).
    `momentum` mu > 0: MI-FGSM, g <- mu g + grad / ||grad||_1 (per video) and the step follows g.
    `probe` (an IteratePredictions) is armed before every gradient call and collects the defended vote at x_i;
    `keep` lists iterates i (0 = the start, steps = the result) whose x_i are stored in the dict `iterates`.
    Returns (x_adv, losses (steps, B)): the attacker's loss at the start of every iteration.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}.")
    x = x.detach()
    x_adv = x.clone()
    if init is not None:
        x_adv = project(init.detach().to(x), x, eps, norm)
    elif random_start:
        x_adv = random_start_point(x, eps, norm, generator)
    losses = []
    velocity = None
    keep = set(keep)
    for i in range(steps):
        if i in keep and iterates is not None:
            iterates[i] = x_adv.detach().clone()
        if probe is not None:
            probe.arm(x.shape[0])
        loss, grad = grad_fn(x_adv, y)
        if probe is not None:
            probe.collect()
        losses.append(loss)
        if momentum:
            unit = grad / grad.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
            velocity = unit if velocity is None else momentum * velocity + unit
            grad = velocity
        if norm == "linf":
            x_adv = x_adv + step * grad.sign()
        else:
            x_adv = x_adv + step * grad / _per_video_norm(grad)
        x_adv = project(x_adv, x, eps, norm)
        if callback is not None:
            callback("attack", i + 1, steps)
    if steps in keep and iterates is not None:
        iterates[steps] = x_adv.detach().clone()
    return x_adv.detach(), torch.stack(losses)
