"""The strided DDIM grid that purification walks, built from the diffusion model's scheduler config.

ModelScope's scheduler: 1000 training steps, scaled-linear betas 0.00085..0.012, "leading" spacing with
steps_offset=1 and set_alpha_to_one=False. With 50 DDIM steps the grid is 981, 961, ..., 21, 1; purification with
t_star=6 uses the smallest six: [1, 21, 41, 61, 81, 101]. Below timestep 1 the "previous" alpha_bar is
alpha_bar[0] = 0.99915, not 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

# ModelScope text-to-video 1.7B (diffusers layout, scheduler/scheduler_config.json).
MODELSCOPE_SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class Schedule:
    """alpha_bar on the training grid and the purification timesteps (ascending).

    alphas_cumprod: (T,) float64, alpha_bar_t of the noise schedule.
    timesteps:      ascending DDIM timesteps used by purification, e.g. (1, 21, 41, 61, 81, 101).
    step:           distance between neighbouring DDIM timesteps (1000 // 50 = 20).
    final_alpha_cumprod: alpha_bar used "below" the smallest timestep (alpha_bar[0] unless set_alpha_to_one).
    """

    alphas_cumprod: torch.Tensor
    timesteps: tuple[int, ...]
    step: int
    final_alpha_cumprod: float

    def alpha_bar(self, t: int) -> float:
        return float(self.alphas_cumprod[t])

    def alpha_bar_prev(self, t: int) -> float:
        """alpha_bar of the DDIM timestep below t (the one a denoising step from t lands on)."""
        s = t - self.step
        return float(self.alphas_cumprod[s]) if s >= 0 else self.final_alpha_cumprod

    def variance_weight(self, t: int, kind: str = "log") -> float:
        """w_t of Eq. 16: the DDPM posterior variance of the strided step t -> t-step, or its log (IV-A).

        sigma_t^2 = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev); "log" gives log(sigma_t^2) < 0, so that
        z' = z - alpha_s * w_t * grad with alpha_s = -4 is a descent step on L.
        """
        a_t, a_prev = self.alpha_bar(t), self.alpha_bar_prev(t)
        variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
        if kind == "log":
            return math.log(variance)
        if kind == "linear":
            return variance
        raise ValueError(f"variance weight kind must be 'log' or 'linear', got {kind!r}.")


def make_schedule(scheduler_config: dict, ddim_steps: int = 50, t_star: int = 6) -> Schedule:
    """The Schedule for a diffusers DDIM scheduler config, `ddim_steps` DDIM steps and `t_star` inversion steps."""
    scheduler = DDIMScheduler.from_config(scheduler_config)
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError(
            f"VideoPure needs an epsilon-prediction model; the scheduler says "
            f"prediction_type={scheduler.config.prediction_type!r}."
        )
    if not 1 <= t_star <= ddim_steps <= scheduler.config.num_train_timesteps:
        raise ValueError(
            f"Need 1 <= t_star ({t_star}) <= ddim_steps ({ddim_steps}) <= num_train_timesteps "
            f"({scheduler.config.num_train_timesteps})."
        )
    scheduler.set_timesteps(ddim_steps)
    grid = sorted(int(t) for t in scheduler.timesteps)
    return Schedule(
        alphas_cumprod=scheduler.alphas_cumprod.to(torch.float64),
        timesteps=tuple(grid[:t_star]),
        step=scheduler.config.num_train_timesteps // ddim_steps,
        final_alpha_cumprod=float(scheduler.final_alpha_cumprod),
    )
