"""Tiny, randomly initialised models of the real classes, built in code (tests, timing, smoke runs).

They are the same diffusers classes as ModelScope's (UNet3DConditionModel, AutoencoderKL) at a small width, with
the real structure that matters: the VAE downsamples 8x to 4 latent channels, the UNet attends over frames.
Random weights prove nothing about purification; they exercise every code path quickly.
"""

from __future__ import annotations

import torch
from torch import nn

from .schedule import MODELSCOPE_SCHEDULER_CONFIG

TINY_UNET_CONFIG = dict(
    block_out_channels=(32, 64, 64, 64),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
)

TINY_VAE_CONFIG = dict(
    block_out_channels=(16, 32, 32, 32),  # four blocks = three 2x downsamples = 8x, like the real VAE
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    norm_num_groups=8,
    latent_channels=4,
    scaling_factor=0.18215,
)


def tiny_unet(seed: int = 0) -> nn.Module:
    from diffusers import UNet3DConditionModel

    torch.manual_seed(seed)
    return UNet3DConditionModel(**TINY_UNET_CONFIG).eval().requires_grad_(False)


def tiny_vae(seed: int = 0) -> nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_VAE_CONFIG).eval().requires_grad_(False)


def tiny_embedding(seed: int = 0, length: int = 8) -> torch.Tensor:
    """A fixed stand-in for the empty-prompt embedding, (1, length, 32)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, length, TINY_UNET_CONFIG["cross_attention_dim"], generator=g)


def tiny_models(seed: int = 0):
    """DiffusionModels of tiny random networks (seeds seed, seed+1, seed+2 for UNet, VAE, embedding)."""
    from .loading import DiffusionModels

    return DiffusionModels(tiny_unet(seed), tiny_vae(seed + 1), dict(MODELSCOPE_SCHEDULER_CONFIG), tiny_embedding(seed + 2))


def tiny_purifier(config=None, seed: int = 0, flow=None, runtime=None):
    """A Purifier on tiny random models; flow: a FlowFn or RAFT module (needed unless lambda_temp=0)."""
    from .config import PurifyConfig, Runtime
    from .purifier import Purifier

    return Purifier(tiny_models(seed), flow, config or PurifyConfig(), runtime or Runtime())
