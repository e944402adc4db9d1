"""DiffPure with DDIM sampling (Nie et al., 2022, as SDEdit): noise the latent to t*, denoise with DDIM, one output.

On the same diffusion model and grid as VideoPure (SPEC "Baselines"): z0 = E(x); z_t = sqrt(a_t) z0 + sqrt(1-a_t) n
with fresh Gaussian noise n from the generator at the top timestep of the purifier's schedule (t=101 with
t*=6 on the 50-step grid); then t* unguided DDIM steps (the pipeline's denoising with guidance off, whose last
candidate is the final latent); decode. Stochastic through n; declaration BPDA, with the exact gradient available for the
full-gradient attack (checkpointed UNet calls).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import pipeline
from ..ddim import ddim_step
from ..purifier import Purifier
from .base import Defence


def noise_latent(z0: Tensor, alpha_bar: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Forward diffusion q(z_t | z_0): sqrt(a_t) z0 + sqrt(1 - a_t) n, n ~ N(0, I) drawn on the CPU from generator."""
    noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(z0.device, z0.dtype)
    return ddim_step(z0, noise, alpha_bar)


class DiffusionDefence(Defence):
    """Shared plumbing of the diffusion baselines: the pipeline's encode and decode around `sample`, on the
    Purifier's networks (differentiable and checkpointed with grad=True)."""

    gradient = "bpda"
    stochastic = True
    differentiable = True

    def __init__(self, purifier: Purifier, name: str | None = None, checkpoint: bool = True):
        self.purifier, self.checkpoint = purifier, checkpoint
        if name:
            self.name = name

    def _candidates(self, video, generator, grad, hooks):
        p = self.purifier
        nets = p.networks(grad=grad, checkpoint=self.checkpoint)
        z0 = pipeline.encode(nets, video.to(p.device), hooks)
        z = self.sample(nets, z0, generator, hooks)
        pixels = pipeline.decode(nets, z.unsqueeze(0), hooks)
        return pipeline.Candidates(pixels, z.unsqueeze(0), (0,), dict(hooks.seconds))

    def sample(self, nets: pipeline.Networks, z0: Tensor, generator: Optional[torch.Generator],
               hooks: pipeline.Hooks) -> Tensor:
        """z0 (B, 4, F, h, w) -> the purified latent of the same shape."""
        raise NotImplementedError


class DiffPureDDIM(DiffusionDefence):
    """SDEdit on the DDIM grid: noise to the top timestep of the schedule, t* DDIM steps down."""

    name = "diffpure-ddim"

    def sample(self, nets, z0, generator, hooks):
        p = self.purifier
        z_t = noise_latent(z0, p.schedule.alpha_bar(p.schedule.timesteps[-1]), generator)
        config = p.config.with_options(guidance=False, single_candidate=0)
        return pipeline.denoise(nets, z_t, z0, None, p.schedule, config, hooks)[0]
