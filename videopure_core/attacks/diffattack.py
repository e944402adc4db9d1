"""A DiffAttack-style adaptive attack (Kang, Song and Li, NeurIPS 2023) on the diffusion defences.

DiffAttack adds two things to PGD with the exact gradient through a diffusion purifier:

1. a *deviated-reconstruction loss*: at the intermediate steps of the reverse process, the reconstruction of the
   adversarial input should move away from the reconstruction of the clean input, which gives the attack a
   signal at every step of the deep chain instead of only at its end;
2. *segment-wise* forward-backward: memory stays bounded by recomputing each segment's activations during the
   backward pass.

Here (our reading, not the authors' code): the reconstructions are the x0-predictions the defence makes at every
denoising step (VideoPure's and DDIM inversion's candidates z_0^t, DiffPure-DDIM's per-step x0_hat, DiffPure-DDPM's
per-step x0_hat on the 1000-step grid), collected through `pipeline.Hooks.candidate`; the loss to maximise is

    L = mean_k CE(f(D(z_0^k)), y) + dev_weight * mean_t ||z_t(x_adv) - z_t(x)||^2 / ||z_t(x)||^2

(per video; squared norms over the latent, the clean reference computed once per clip without gradient, relative
so that the term is on the same scale at every step and for every latent size). Segments are the pipeline's
checkpoints: every UNet call and every VAE chunk is one `torch.utils.checkpoint` segment
(`Purifier.networks(grad=True)`), so the backward pass stores one latent per step. For a stochastic defence the
clean reference is one draw of its reconstructions.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..pipeline import Hooks
from .adaptive import candidates_loss_grad
from .base import GradFn


class Trajectory(Hooks):
    """Hooks that keep every intermediate reconstruction (B, 4, F, h, w) the defence offers, in order."""

    def __init__(self):
        super().__init__()
        self.latents: list[Tensor] = []

    def candidate(self, label: int, latent: Tensor) -> None:
        self.latents.append(latent)


def reconstruction_trajectory(defence, x: Tensor, generator: Optional[torch.Generator] = None) -> list[Tensor]:
    """The defence's intermediate reconstructions of x (no gradient): a list of (B, 4, F, h, w)."""
    hooks = Trajectory()
    defence.candidates(x, generator, hooks=hooks)
    return [z.detach() for z in hooks.latents]


def deviation_loss(trajectory: list[Tensor], reference: list[Tensor]) -> Optional[Tensor]:
    """mean_t ||z_t - r_t||^2 / ||r_t||^2 per video (B,); the reference's batch may be a divisor of the
    trajectory's (EOT draws and TT shifts as extra batch entries repeat the clean reference). None when empty."""
    if not trajectory or not reference:
        return None
    if len(trajectory) != len(reference):
        raise ValueError(f"The defence made {len(trajectory)} reconstructions but the reference has {len(reference)}.")
    terms = []
    for z, r in zip(trajectory, reference):
        r = r.to(z).repeat(z.shape[0] // r.shape[0], *[1] * (r.dim() - 1))
        terms.append((z - r).pow(2).flatten(1).sum(1) / r.pow(2).flatten(1).sum(1).clamp_min(1e-12))
    return torch.stack(terms).mean(0)


def diffattack_grad_fn(classifier: nn.Module, defence, reference: list[Tensor],
                       generator: Optional[torch.Generator] = None, dev_weight: float = 1.0, probe=None) -> GradFn:
    """GradFn of CE over the candidates + dev_weight x the deviated-reconstruction loss, through the whole
    differentiable defence (`defence.candidates(x, grad=True)`); `reference` = reconstruction_trajectory(defence,
    x_clean) for the same videos (rows may repeat them)."""
    if not defence.differentiable:
        raise ValueError(f"The {defence.name} defence is not differentiable, so DiffAttack does not apply to it.")

    def forward(x):
        hooks = Trajectory()
        videos = defence.candidates(x, generator, grad=True, hooks=hooks).videos
        deviation = deviation_loss(hooks.latents, reference)
        return videos, None if deviation is None else dev_weight * deviation

    return candidates_loss_grad(classifier, forward, probe)
