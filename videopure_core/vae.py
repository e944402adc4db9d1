"""Encoding videos to latents and decoding latents to videos with a per-frame VAE (paper Eq. 4).

ModelScope uses a Stable-Diffusion AutoencoderKL frame by frame: `2x-1`, posterior **mean** (no sampling),
times `scaling_factor` (0.18215); decoding divides by it and maps back with `x*0.5+0.5`, clamped to [0,1].
Frames go through the VAE `chunk` at a time, so long videos do not exhaust memory (the chunk bounds the VAE's
working set: memory does not grow with the number of frames or candidates beyond the inputs and outputs
themselves); frames never mix across videos since the VAE is per frame.

`vae` is an AutoencoderKL or a `networks.FrameVAE` (the adapter that carries grad / autocast / NHWC / compile).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .ddim import Callback
from .networks import as_frame_vae
from .video import frames_of, video_of


def _chunked(fn: Callable[[Tensor], Tensor], frames: Tensor, chunk: int, stage: str, callback: Callback) -> Tensor:
    """fn over `chunk` frames at a time, concatenated; `callback(stage, chunks done, chunks)` after each call."""
    parts = frames.split(chunk)
    out = []
    for i, part in enumerate(parts):
        out.append(fn(part.contiguous()))  # the same memory layout whatever the input's, so the same numerics
        if callback is not None:
            callback(stage, i + 1, len(parts))
    return torch.cat(out)


def encode_video(vae, video: Tensor, chunk: int = 16, callback: Callback = None) -> Tensor:
    """z0 = E(x): video (B, 3, F, H, W) in [0,1] -> latents (B, 4, F, H/8, W/8) float32 (posterior mean)."""
    vae = as_frame_vae(vae)
    z = _chunked(vae.encode, frames_of(video) * 2.0 - 1.0, chunk, "encode", callback)
    return video_of(z, video.shape[0]) * vae.scaling_factor


def decode_latents(vae, latents: Tensor, chunk: int = 16, callback: Callback = None) -> Tensor:
    """x* = D(z): latents (N, 4, F, h, w) -> videos (N, 3, F, 8h, 8w) float32 in [0,1].

    N may be candidates x batch flattened; frames are decoded `chunk` at a time.
    """
    vae = as_frame_vae(vae)
    x = _chunked(vae.decode, frames_of(latents) / vae.scaling_factor, chunk, "decode", callback)
    return (video_of(x, latents.shape[0]) * 0.5 + 0.5).clamp(0.0, 1.0)
