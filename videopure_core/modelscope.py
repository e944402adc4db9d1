"""The full-size ModelScope text-to-video 1.7B architecture, as configs, for benchmarks and FLOP counts.

The values are those of the published diffusers configs of `ali-vilab/text-to-video-ms-1.7b` (formerly
`damo-vilab/...`): `unet/config.json` (UNet3DConditionModel, 1.4B parameters), `vae/config.json` (the Stable
Diffusion AutoencoderKL, run per frame), the CLIP text encoder's output `(1, 77, 1024)`, and torchvision's RAFT-large
for the optical flow. No weights are involved: `build_*` give randomly initialised modules (timing and FLOPs do
not depend on weight values), on any device including "meta" (shapes only, for FLOP counting).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

MODELSCOPE_UNET_CONFIG = dict(
    in_channels=4,
    out_channels=4,
    sample_size=32,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    cross_attention_dim=1024,
    attention_head_dim=64,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
)

MODELSCOPE_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    act_fn="silu",
    scaling_factor=0.18215,
)

MODELSCOPE_EMBEDDING_SHAPE = (1, 77, 1024)  # CLIP ViT-H text encoder: 77 tokens x 1024 (the empty prompt)
MODELSCOPE_RAFT = "raft_large"  # torchvision raft_large (C_T_V1 weights in real use)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    """Build parameters directly in `dtype` (no float32 copy first; converting afterwards also fails on fake tensors)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_unet(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, config: dict | None = None) -> nn.Module:
    """A randomly initialised UNet3DConditionModel of the ModelScope configuration (or `config`), eval, no grad."""
    from diffusers import UNet3DConditionModel

    with torch.device(device), _default_dtype(dtype):
        unet = UNet3DConditionModel(**(config or MODELSCOPE_UNET_CONFIG))
    return unet.eval().requires_grad_(False)


def build_vae(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, config: dict | None = None) -> nn.Module:
    """A randomly initialised AutoencoderKL of the ModelScope configuration (or `config`), eval, no grad."""
    from diffusers import AutoencoderKL

    with torch.device(device), _default_dtype(dtype):
        vae = AutoencoderKL(**(config or MODELSCOPE_VAE_CONFIG))
    return vae.eval().requires_grad_(False)


def build_raft(device: str | torch.device = "cpu", arch: str = MODELSCOPE_RAFT) -> nn.Module:
    """A randomly initialised torchvision RAFT (`raft_large` by default), eval, no grad."""
    from torchvision.models.optical_flow import raft_large, raft_small

    builder = {"raft_large": raft_large, "raft_small": raft_small}[arch]
    with torch.device(device):
        model = builder(weights=None, progress=False)
    return model.eval().requires_grad_(False)


def random_embedding(shape: tuple[int, ...] = MODELSCOPE_EMBEDDING_SHAPE, device: str | torch.device = "cpu", seed: int = 0):
    """A fixed N(0,1) stand-in for the empty-prompt embedding (timing does not depend on its values)."""
    if str(device) == "meta":
        return torch.empty(shape, device="meta")
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
