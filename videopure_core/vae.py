"""Encoding videos to latents and decoding latents to videos with a per-frame VAE (paper Eq. 4).

ModelScope uses a Stable-Diffusion AutoencoderKL frame by frame: `2x-1`, posterior **mean** (no sampling),
times `scaling_factor` (0.18215); decoding divides by it and maps back with `x*0.5+0.5`, clamped to [0,1].
Frames are processed in chunks so long videos do not exhaust memory; frames never mix across videos since the
VAE is per-frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .video import frames_of, video_of


def _scaling_factor(vae) -> float:
    return float(getattr(vae.config, "scaling_factor", 0.18215))


def _vae_dtype(vae) -> torch.dtype:
    return next(vae.parameters()).dtype


def encode_video(vae, video: Tensor, chunk: int = 16) -> Tensor:
    """z0 = E(x): video (B, 3, F, H, W) in [0,1] -> latents (B, 4, F, H/8, W/8) float32 (posterior mean)."""
    frames = frames_of(video) * 2.0 - 1.0
    dtype = _vae_dtype(vae)
    out = [vae.encode(part.to(dtype)).latent_dist.mean.float() for part in frames.split(chunk)]
    return video_of(torch.cat(out), video.shape[0]) * _scaling_factor(vae)


def decode_latents(vae, latents: Tensor, chunk: int = 16) -> Tensor:
    """x* = D(z): latents (N, 4, F, h, w) -> videos (N, 3, F, 8h, 8w) float32 in [0,1].

    N may be batch x candidates flattened; frames are decoded `chunk` at a time.
    """
    frames = frames_of(latents) / _scaling_factor(vae)
    dtype = _vae_dtype(vae)
    out = [vae.decode(part.to(dtype)).sample.float() for part in frames.split(chunk)]
    return (video_of(torch.cat(out), latents.shape[0]) * 0.5 + 0.5).clamp(0.0, 1.0)
