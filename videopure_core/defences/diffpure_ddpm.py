"""DiffPure with DDPM ancestral sampling (Nie et al., 2022) on the 1000-step training grid.

Noise the latent to the same timestep as the DDIM defences (the top of the purifier's schedule, t=101), then take
one ancestral step per training timestep t = 101, 100, ..., 1 (101 steps), each drawing fresh noise from the
generator (Ho et al., 2020, Eqs. 6-7):

    x0_hat = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    z_{t-1} = sqrt(a_{t-1}) beta_t / (1 - a_t) x0_hat + sqrt(alpha_t) (1 - a_{t-1}) / (1 - a_t) z_t + sigma_t n,
    sigma_t^2 = (1 - a_{t-1}) / (1 - a_t) beta_t,  alpha_t = a_t / a_{t-1},  beta_t = 1 - alpha_t,

Last step: the authors' release samples with diffusers' DDPMScheduler, whose `step` adds the posterior noise
whenever t > 0, so the step t=1 -> 0 is noised too; that is the default here (`last_step_noise=True`, spec
`diffpure-ddpm:last_step_noise=false` for the noiseless last step of Ho et al.'s sampler, which ends at the
posterior mean). Like the DDIM defences (set_alpha_to_one=False) it ends at the level of alpha_bar[0] and decodes
that latent. 101 UNet calls per video: the slowest defence (Table X). Each step's x0_hat is shown to
`hooks.candidate` (the DiffAttack-style attack's reconstructions).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..ddim import predict_x0
from .diffpure_ddim import DiffusionDefence, noise_latent


def ddpm_step(z: Tensor, eps: Tensor, alpha_bar: float, alpha_bar_prev: float, noise: Optional[Tensor]) -> Tensor:
    """One ancestral step z_t -> z_{t-1} (module docstring); noise=None gives the posterior mean."""
    alpha = alpha_bar / alpha_bar_prev
    beta = 1.0 - alpha
    x0 = predict_x0(z, eps, alpha_bar)
    mean = (math.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)) * x0 + (math.sqrt(alpha) * (1 - alpha_bar_prev) / (1 - alpha_bar)) * z
    if noise is None:
        return mean
    return mean + math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * beta) * noise


class DiffPureDDPM(DiffusionDefence):
    """Noise to t*, 101 ancestral DDPM steps on the 1000-step grid, one output."""

    name = "diffpure-ddpm"

    def __init__(self, purifier, name: str | None = None, checkpoint: bool = True, last_step_noise: bool = True):
        super().__init__(purifier, name, checkpoint)
        self.last_step_noise = last_step_noise

    def sample(self, nets, z0, generator, hooks):
        alphas = self.purifier.schedule.alphas_cumprod
        top = self.purifier.schedule.timesteps[-1]
        z = noise_latent(z0, float(alphas[top]), generator)
        with hooks.stage("denoise"):
            for i, t in enumerate(range(top, 0, -1)):
                noise = None
                if t > 1 or self.last_step_noise:
                    noise = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z.device, z.dtype)
                eps = nets.eps(z, t)
                hooks.candidate(t, predict_x0(z, eps, float(alphas[t])))
                z = ddpm_step(z, eps, float(alphas[t]), float(alphas[t - 1]), noise)
                hooks.progress("denoise", i + 1, top)
        return z
