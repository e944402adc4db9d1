"""Encoding videos to latents and decoding latents to videos with a per-frame VAE (paper Eq. 4).

ModelScope uses a Stable-Diffusion AutoencoderKL frame by frame: `2x-1`, posterior **mean** (no sampling),
times `scaling_factor` (0.18215); decoding divides by it and maps back with `x*0.5+0.5`, clamped to [0,1].
Frames are processed in chunks so long videos do not exhaust memory (the chunk is what bounds the VAE's working
set: memory does not grow with the number of frames or candidates beyond the inputs and outputs themselves);
frames never mix across videos since the VAE is per-frame.

Execution options (keyword-only, all off by default, so the default numerics are a plain float32 call):
`autocast` ("bfloat16" / "float16") runs the network under torch.autocast; `channels_last` feeds NHWC frames;
`tiled` turns on diffusers' spatial tiling for the call (only splits frames larger than the VAE's sample_size,
512 px for ModelScope, so it only matters for very large frames).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor

from .ddim import Callback
from .execution import autocast as autocast_context
from .execution import module_device_dtype
from .video import frames_of, video_of


def _scaling_factor(vae) -> float:
    return float(getattr(vae.config, "scaling_factor", 0.18215))


@contextlib.contextmanager
def _tiling(vae, on: bool):
    """Switch diffusers' AutoencoderKL tiling on for the duration of a call, restoring the module's setting."""
    target = getattr(vae, "vae", vae)  # execution.CompiledVAE wraps the module
    if not on or not hasattr(target, "use_tiling"):
        yield
        return
    old = target.use_tiling
    target.use_tiling = True
    try:
        yield
    finally:
        target.use_tiling = old


def _run_chunks(fn, frames: Tensor, chunk: int, dtype: torch.dtype, channels_last: bool, stage: str, callback) -> Tensor:
    """fn over `chunk` frames at a time (cast to the network dtype, NHWC if asked), float32 out, concatenated."""
    parts = frames.split(chunk)
    out = []
    for i, part in enumerate(parts):
        part = part.to(dtype)
        if channels_last:
            part = part.contiguous(memory_format=torch.channels_last)
        out.append(fn(part).float())
        if callback is not None:
            callback(stage, i + 1, len(parts))
    return torch.cat(out).contiguous()


def encode_video(
    vae,
    video: Tensor,
    chunk: int = 16,
    callback: Callback = None,
    *,
    autocast: Optional[str] = None,
    channels_last: bool = False,
    tiled: bool = False,
) -> Tensor:
    """z0 = E(x): video (B, 3, F, H, W) in [0,1] -> latents (B, 4, F, H/8, W/8) float32 (posterior mean).

    `callback("encode", chunks done, chunks)` follows every VAE call.
    """
    frames = frames_of(video) * 2.0 - 1.0
    device, dtype = module_device_dtype(vae)
    with autocast_context(device, autocast), _tiling(vae, tiled):
        z = _run_chunks(lambda x: vae.encode(x).latent_dist.mean, frames, chunk, dtype, channels_last, "encode", callback)
    return video_of(z, video.shape[0]) * _scaling_factor(vae)


def decode_latents(
    vae,
    latents: Tensor,
    chunk: int = 16,
    callback: Callback = None,
    *,
    autocast: Optional[str] = None,
    channels_last: bool = False,
    tiled: bool = False,
) -> Tensor:
    """x* = D(z): latents (N, 4, F, h, w) -> videos (N, 3, F, 8h, 8w) float32 in [0,1].

    N may be batch x candidates flattened; frames are decoded `chunk` at a time, and
    `callback("decode", chunks done, chunks)` follows every VAE call.
    """
    frames = frames_of(latents) / _scaling_factor(vae)
    device, dtype = module_device_dtype(vae)
    with autocast_context(device, autocast), _tiling(vae, tiled):
        x = _run_chunks(lambda z: vae.decode(z).sample, frames, chunk, dtype, channels_last, "decode", callback)
    return (video_of(x, latents.shape[0]) * 0.5 + 0.5).clamp(0.0, 1.0)
