"""Guided DDIM denoising that makes the t_star + 1 voting candidates (paper Algorithm 1, lines 4-14).

`denoise_steps` is the loop as a generator, one candidate at a time, so callers can show progress and previews
between steps, stop early, or (ComfyUI's stepwise nodes) run one step per node; `guided_denoise` runs it to the end.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Optional

import torch
from torch import Tensor

from .config import PurifyConfig
from .ddim import Callback, EpsFn, ddim_step, predict_x0
from .flow import LatentFlow
from .guidance import guidance_gradient, guided_latent
from .schedule import Schedule


class StepResult(NamedTuple):
    """One guided denoising step: the next latent on the trajectory, the candidate z_0^t, and the eps used."""

    z_next: Tensor
    candidate: Tensor
    eps: Tensor


class Step(NamedTuple):
    """What `denoise_steps` yields for each candidate.

    label:     the paper's t of the candidate z_0^t (t_star ... 1, then 0 for the final candidate).
    timestep:  the DDIM timestep the step started from (1 for the final candidate, whose coefficients it reuses).
    candidate: (B, 4, F, h, w) the candidate latent.
    z:         (B, 4, F, h, w) the trajectory after the step (for the final candidate: the final latent z_0^*).
    """

    label: int
    timestep: int
    candidate: Tensor
    z: Tensor


def denoise_step(
    eps_fn: EpsFn,
    z: Tensor,
    t: int,
    z0_input: Tensor,
    flow: Optional[LatentFlow],
    schedule: Schedule,
    config: PurifyConfig,
    create_graph: bool = False,
) -> StepResult:
    """One step of Algorithm 1 at timestep t, z (B, 4, F, h, w) -> StepResult of the same shapes.

      1. eps = eps_fn(z, t), without gradient;                                  (line 5)
      2. x0_hat = (z - sqrt(1 - a_t) eps) / sqrt(a_t);                          (line 5, Eq. 15)
      3. z' = z - alpha_s w_t grad_z L(x0_hat) and candidate = x0_hat(z');      (lines 7-9, Eq. 16)
      4. z_next = sqrt(a_prev) x0_hat + sqrt(1 - a_prev) eps, from the *unguided* x0_hat (line 6);
         with config.guide_trajectory the optimised x0_hat(z') is used instead (Table VIII's "Ours*").
    Without guidance the candidate is x0_hat itself.
    """
    eps = eps_fn(z, t)
    a_t = schedule.alpha_bar(t)
    x0 = predict_x0(z, eps, a_t)
    candidate = x0
    guidance = config.guidance
    if guidance.enabled:
        weight = schedule.variance_weight(t, guidance.variance_weight)
        z_opt = guided_latent(z, eps, a_t, weight, z0_input, flow, guidance, create_graph)
        candidate = predict_x0(z_opt, eps, a_t)
    base = candidate if config.guide_trajectory else x0
    return StepResult(ddim_step(base, eps, schedule.alpha_bar_prev(t)), candidate, eps)


def final_candidate(
    z: Tensor,
    eps: Tensor,
    t: int,
    z0_input: Tensor,
    flow: Optional[LatentFlow],
    schedule: Schedule,
    config: PurifyConfig,
    create_graph: bool = False,
) -> Tensor:
    """The last candidate z_0^0 from the final latent z_0^* (Algorithm 1, lines 12-14): (B, 4, F, h, w).

    "release" (default): the loss is taken on x0_hat(z_0^*) computed with the last step's timestep t (=1), its
    coefficients and its eps, and the updated latent z_0^* - alpha_s w_t grad is kept as the candidate.
    "clean": z_0^* is treated as x0 directly: z_0^* - alpha_s w_t grad_{z_0^*} L(z_0^*).
    Without guidance the candidate is z_0^* itself.
    """
    guidance = config.guidance
    if not guidance.enabled:
        return z
    weight = schedule.variance_weight(t, guidance.variance_weight)
    if config.final_candidate == "release":
        return guided_latent(z, eps, schedule.alpha_bar(t), weight, z0_input, flow, guidance, create_graph)
    return z - guidance.alpha_s * weight * guidance_gradient(z, z0_input, flow, guidance, create_graph)


def denoise_steps(
    eps_fn: EpsFn,
    z: Tensor,
    z0_input: Tensor,
    flow: Optional[LatentFlow],
    schedule: Schedule,
    config: PurifyConfig,
    start: Optional[int] = None,
    create_graph: bool = False,
) -> Iterator[Step]:
    """Algorithm 1, lines 4-14, lazily: from z (B, 4, F, h, w) at timestep `start` (default: the top of the
    schedule, z_{t*}) down to timestep 1, one Step per candidate z_0^t, then the final candidate z_0^0.

    Each step's work is done when the caller asks for it. The candidates are never fed back into the trajectory
    (unless config.guide_trajectory).
    """
    timesteps = list(reversed(schedule.timesteps))
    if start is not None:
        if start not in timesteps:
            raise ValueError(f"start={start} is not a timestep of the schedule {list(schedule.timesteps)}.")
        timesteps = timesteps[timesteps.index(start) :]
    eps = None
    for t in timesteps:
        z, candidate, eps = denoise_step(eps_fn, z, t, z0_input, flow, schedule, config, create_graph)
        yield Step(schedule.timesteps.index(t) + 1, t, candidate, z)
    t = schedule.timesteps[0]
    yield Step(0, t, final_candidate(z, eps, t, z0_input, flow, schedule, config, create_graph), z)


def guided_denoise(
    eps_fn: EpsFn,
    z_start: Tensor,
    z0_input: Tensor,
    flow: Optional[LatentFlow],
    schedule: Schedule,
    config: PurifyConfig,
    callback: Callback = None,
    create_graph: bool = False,
) -> Tensor:
    """From z_{t*} (B, 4, F, h, w) to the candidates (t_star + 1, B, 4, F, h, w), ordered z_0^{t*}, ..., z_0^0.

    `callback("denoise", candidates done, t_star + 1)` follows every candidate.
    """
    total = len(schedule.timesteps) + 1
    candidates = []
    for i, step in enumerate(denoise_steps(eps_fn, z_start, z0_input, flow, schedule, config, None, create_graph)):
        candidates.append(step.candidate)
        if callback is not None:
            callback("denoise", i + 1, total)
    return torch.stack(candidates)
