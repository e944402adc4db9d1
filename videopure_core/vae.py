"""Encoding videos to latents and decoding latents to videos with a per-frame VAE (paper Eq. 4).

ModelScope uses a Stable-Diffusion AutoencoderKL frame by frame: `2x-1`, posterior **mean** (no sampling),
times `scaling_factor` (0.18215); decoding divides by it and maps back with `x*0.5+0.5`, clamped to [0,1].
Frames are processed in chunks so long videos do not exhaust memory; frames never mix across videos since the
VAE is per-frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .ddim import Callback
from .video import frames_of, video_of


def _scaling_factor(vae) -> float:
    return float(getattr(vae.config, "scaling_factor", 0.18215))


def _vae_dtype(vae) -> torch.dtype:
    return next(vae.parameters()).dtype


def _chunked(fn, frames: Tensor, chunk: int, stage: str, callback: Callback) -> Tensor:
    """fn over `chunk` frames at a time, reporting callback(stage, chunks done, chunks) after each."""
    parts = frames.split(chunk)
    out = []
    for i, part in enumerate(parts):
        out.append(fn(part))
        if callback is not None:
            callback(stage, i + 1, len(parts))
    return torch.cat(out)


def encode_video(vae, video: Tensor, chunk: int = 16, callback: Callback = None) -> Tensor:
    """z0 = E(x): video (B, 3, F, H, W) in [0,1] -> latents (B, 4, F, H/8, W/8) float32 (posterior mean)."""
    frames = frames_of(video) * 2.0 - 1.0
    dtype = _vae_dtype(vae)
    out = _chunked(lambda part: vae.encode(part.to(dtype)).latent_dist.mean.float(), frames, chunk, "encode", callback)
    return video_of(out, video.shape[0]) * _scaling_factor(vae)


def decode_latents(vae, latents: Tensor, chunk: int = 16, callback: Callback = None) -> Tensor:
    """x* = D(z): latents (N, 4, F, h, w) -> videos (N, 3, F, 8h, 8w) float32 in [0,1].

    N may be batch x candidates flattened; frames are decoded `chunk` at a time.
    """
    frames = frames_of(latents) / _scaling_factor(vae)
    dtype = _vae_dtype(vae)
    out = _chunked(lambda part: vae.decode(part.to(dtype)).sample.float(), frames, chunk, "decode", callback)
    return (video_of(out, latents.shape[0]) * 0.5 + 0.5).clamp(0.0, 1.0)
