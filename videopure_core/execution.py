"""How the networks run, separate from what they compute: autocast, memory layout, compilation, device sync.

Every helper here is a no-op with its default argument, so the default numerics (float32, NCHW, eager) are those
of a plain call. Latent arithmetic (inversion, DDIM steps, guidance) never runs under autocast: only the network
calls are wrapped.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn

AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def autocast(device: torch.device | str, dtype: Optional[str]) -> contextlib.AbstractContextManager:
    """torch.autocast(device type, dtype) for dtype "float16" / "bfloat16"; a null context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    if dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None, 'float16' or 'bfloat16', got {dtype!r}.")
    return torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPES[dtype])


def module_device_dtype(module) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) of a module's first parameter (float32 on CPU for parameterless callables)."""
    try:
        param = next(module.parameters())
    except (StopIteration, AttributeError):
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def to_channels_last(module: nn.Module) -> nn.Module:
    """Make every Conv2d weight NHWC in place (values unchanged), so those convolutions run channels-last.

    Only 2-D convolutions: the VAE's and the UNet's spatial layers (the UNet's temporal Conv3d keep their layout).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return module


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on CUDA devices (so wall-clock timings are honest); nothing on CPU."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def compile_module(module: nn.Module, mode: Optional[str] = None) -> nn.Module:
    """torch.compile(module, mode=mode): compiled lazily on the first call, the module itself is not modified."""
    return torch.compile(module, mode=mode)


class CompiledVAE:
    """A VAE whose `decode` and `encode` are torch.compile'd, with the attributes the stage functions read.

    decode_latents / encode_video only use `.decode`, `.encode`, `.config` and `.parameters()`, so this proxy
    stands in for the AutoencoderKL without touching it.
    """

    def __init__(self, vae: nn.Module, mode: Optional[str] = None):
        self.vae, self.config = vae, vae.config
        self.decode = torch.compile(vae.decode, mode=mode)
        self.encode = torch.compile(vae.encode, mode=mode)

    def parameters(self):
        return self.vae.parameters()

    def __getattr__(self, name):  # use_tiling and friends
        return getattr(self.__dict__["vae"], name)
