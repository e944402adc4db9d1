"""Counted FLOP floors of each stage, on the meta device (shapes only, no memory, no time).

`torch.utils.flop_counter.FlopCounterMode` counts matmuls, convolutions and attention (2 FLOPs per multiply-add).
On the meta device scaled-dot-product attention is counted through its math form; on real CPU tensors the fused
kernel is not counted at all, hence meta. Elementwise work (norms, activations, the guidance) is not counted: the
totals are floors, the least work any implementation of the same networks must do.

Per video of F frames, H x W pixels, t* inversion steps (fast path):
    encode   VAE encoder on F frames            decode   VAE decoder on (t*+1) F frames
    flow     flow network on F-1 frame pairs    classify classifier on t*+1 videos
    invert / denoise   t* UNet calls each on (1, 4, F, H/8, W/8)
The naive path does the same work except that its UNet runs on a batch of 2 (CFG with two identical prompts).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import pipeline
from ..config import Guidance
from ..networks import FrameVAE

STAGES = ("encode", "flow", "invert", "denoise", "decode", "classify")


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs counted while running `fn()` (without gradient)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def unet_call_flops(unet: nn.Module, embedding: torch.Tensor, latent_shape: tuple[int, ...]) -> int:
    """One UNet forward on latents of `latent_shape` (B, 4, F, h, w) with the prompt embedding (1, L, D)."""
    device = next(unet.parameters()).device
    z = torch.empty(latent_shape, device=device)
    cond = torch.empty(latent_shape[0], *embedding.shape[1:], device=device)
    return count_flops(lambda: unet(z, torch.tensor([1], device=device), encoder_hidden_states=cond))


def stage_flops(
    unet: nn.Module,
    vae: nn.Module,
    flow_fn: Optional[Callable],
    classifier: Optional[nn.Module],
    embedding: torch.Tensor,
    frames: int,
    size: int,
    t_star: int,
    unet_batch: int = 1,
) -> dict[str, int]:
    """FLOPs per stage for one video, models on the meta device; `unet_batch=2` gives the naive path's UNet work."""
    device = next(unet.parameters()).device
    latent = (1, 4, frames, size // 8, size // 8)
    x = torch.empty(1, 3, frames, size, size, device=device)
    unet_flops = unet_call_flops(unet, embedding, (unet_batch, *latent[1:]))
    candidates = t_star + 1
    nets, hooks = pipeline.Networks(lambda z, t: z, FrameVAE(vae), flow_fn), pipeline.Hooks()
    out = {
        "encode": count_flops(lambda: pipeline.encode(nets, x, hooks)),
        "flow": count_flops(lambda: pipeline.flow(nets, x, latent[-2:], Guidance(), hooks)) if flow_fn is not None else 0,
        "invert": t_star * unet_flops,
        "denoise": t_star * unet_flops,
        "decode": count_flops(lambda: pipeline.decode(nets, torch.empty(candidates, *latent[1:], device=device)[None], hooks)),
        "classify": 0,
    }
    if classifier is not None:
        out["classify"] = count_flops(lambda: classifier(torch.empty(candidates, 3, frames, size, size, device=device)))
    return out
