"""DiffPure with DDIM sampling (Nie et al., 2022, as SDEdit): noise the latent to t*, denoise with DDIM, one output.

On the same diffusion model and grid as VideoPure (SPEC "Baselines"): z0 = E(x); z_t = sqrt(a_t) z0 + sqrt(1-a_t) n
with fresh Gaussian noise n from the generator at the top timestep of the purifier's schedule (t=101 with
t*=6 on the 50-step grid); then t* unguided DDIM steps (`guided_denoise` with guidance off, whose last candidate is
the final latent); decode. Stochastic through n; declaration BPDA, with the exact gradient available for the
full-gradient attack (checkpointed UNet calls).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..ddim import ddim_step
from ..denoise import guided_denoise
from ..purifier import Purifier
from .base import Defence, DefenceOutput, Timer


def noise_latent(z0: Tensor, alpha_bar: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Forward diffusion q(z_t | z_0): sqrt(a_t) z0 + sqrt(1 - a_t) n, n ~ N(0, I) drawn on the CPU from generator."""
    noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(z0.device, z0.dtype)
    return ddim_step(z0, noise, alpha_bar)


class DiffusionDefence(Defence):
    """Shared plumbing of the diffusion baselines: eps function (no-grad or checkpointed), encode and decode."""

    gradient = "bpda"
    stochastic = True
    differentiable = True

    def __init__(self, purifier: Purifier, name: str | None = None, checkpoint: bool = True):
        self.purifier, self.checkpoint = purifier, checkpoint
        if name:
            self.name = name

    def _eps_fn(self, grad: bool):
        if not grad:
            return self.purifier.eps_fn
        from ..attacks.full import differentiable_eps_fn

        return differentiable_eps_fn(self.purifier.unet, self.purifier.embedding, self.checkpoint)

    def _candidates(self, video, generator, grad, callback):
        from ..attacks.full import checkpointed_decode, checkpointed_encode

        p, timer = self.purifier, Timer()
        x = video.to(p.device)
        z0 = timer("encode", checkpointed_encode, p.vae, x, p.config.encode_chunk, self.checkpoint and grad)
        z = timer("denoise", self.sample, self._eps_fn(grad), z0, generator, callback)
        pixels = timer("decode", checkpointed_decode, p.vae, z, p.config.decode_chunk, self.checkpoint and grad)
        return DefenceOutput(pixels.unsqueeze(0), (0,), timer.seconds)

    def sample(self, eps_fn, z0: Tensor, generator: Optional[torch.Generator], callback) -> Tensor:
        raise NotImplementedError


class DiffPureDDIM(DiffusionDefence):
    """SDEdit on the DDIM grid: noise to the top timestep of the schedule, t* DDIM steps down."""

    name = "diffpure-ddim"

    def sample(self, eps_fn, z0, generator, callback):
        p = self.purifier
        z_t = noise_latent(z0, p.schedule.alpha_bar(p.schedule.timesteps[-1]), generator)
        config = p.config.replace(guidance=False)
        return guided_denoise(eps_fn, z_t, z0, None, p.schedule, config, callback)[-1]
