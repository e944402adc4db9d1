"""The networks as the stages call them: one small adapter per network, with the same switches on each.

    unet_eps_fn(unet, embedding)  -> EpsFn      eps(z (B, 4, F, h, w), t), float32 in and out
    FrameVAE(vae)                 -> VAE        per-frame AutoencoderKL encode (posterior mean) / decode
    RaftFlow(raft) (in flow.py)   -> FlowFn     optical flow of frame pairs

Switches (how a network runs, never what it computes):
    grad        differentiable calls, for the full-gradient adaptive attack; with `checkpoint` every call is one
                torch.utils.checkpoint segment, so backpropagating through many calls stores only their inputs
                and recomputes the activations during the backward pass (memory bounded per call).
    autocast    "bfloat16" / "float16": the call runs under torch.autocast; outputs come back in float32.
    channels_last, compile   NHWC inputs for 2-D convolutions; torch.compile'd forward.
Without grad every call runs under torch.no_grad(). Every helper here is a no-op with its default arguments, so
the default numerics are those of a plain float32 call.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as checkpoint_call

from .ddim import EpsFn

AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def autocast(device: torch.device | str, dtype: Optional[str]) -> contextlib.AbstractContextManager:
    """torch.autocast(device type, dtype) for dtype "float16" / "bfloat16"; a null context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    if dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None, 'float16' or 'bfloat16', got {dtype!r}.")
    return torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPES[dtype])


autocast_context = autocast  # the name used inside functions that have an `autocast` argument


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


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued kernels on CUDA devices (so wall-clock timings are honest); nothing on CPU."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def _call(fn: Callable[[Tensor], Tensor], x: Tensor, grad: bool, checkpoint: bool) -> Tensor:
    """fn(x) without autograd, or with it (checkpointed when x needs a gradient); safe under inference mode."""
    if not grad:
        with torch.no_grad():
            return fn(x)
    with torch.inference_mode(False), torch.enable_grad():
        if checkpoint and x.requires_grad:
            return checkpoint_call(fn, x, use_reentrant=False)
        return fn(x)


def unet_eps_fn(
    unet: nn.Module,
    embedding: Tensor,
    *,
    grad: bool = False,
    checkpoint: bool = True,
    autocast: Optional[str] = None,
    batch: Optional[int] = None,
    compiled: Optional[Callable] = None,
) -> EpsFn:
    """Adapt a diffusers UNet3DConditionModel conditioned on one prompt embedding (1, L, D) to an EpsFn.

    One UNet call per step at guidance scale 1: the release's classifier-free guidance with two identical empty
    prompts is a numerical no-op at twice the cost. The network runs in its own dtype (under torch.autocast when
    `autocast` is set); eps comes back in z's dtype, so latent arithmetic stays float32. `batch` bounds the videos
    per UNet call (videos never mix either way: the UNet attends only across the frames of one video). The
    timestep goes in as an int64 tensor, what diffusers makes of a Python int, so a compiled UNet (`compiled`, the
    torch.compile'd module) does not recompile for every step.
    """
    device, dtype = module_device_dtype(unet)
    run = compiled or unet

    def eps_fn(z: Tensor, t: int) -> Tensor:
        timestep = torch.tensor([t], dtype=torch.int64, device=device)

        def call(z: Tensor) -> Tensor:
            outs = []
            with autocast_context(device, autocast):
                for part in z.split(batch or z.shape[0]):
                    cond = embedding.to(device=device, dtype=dtype).expand(part.shape[0], -1, -1)
                    outs.append(run(part.to(device=device, dtype=dtype), timestep, encoder_hidden_states=cond).sample)
            return (outs[0] if len(outs) == 1 else torch.cat(outs)).to(z.dtype)

        return _call(call, z, grad, checkpoint)

    return eps_fn


class FrameVAE:
    """An AutoencoderKL as VideoPure uses it, frame by frame (ModelScope's VAE is per frame).

    encode: frames (N, 3, H, W) in [-1,1] -> the posterior **mean** (N, 4, H/8, W/8) float32 (no sampling);
    decode: latents (N, 4, h, w), already divided by `scaling_factor` -> frames (N, 3, 8h, 8w) in about [-1,1].
    Inputs are cast to the VAE's device and dtype; outputs come back float32 on that device.
    """

    def __init__(
        self,
        vae: nn.Module,
        *,
        grad: bool = False,
        checkpoint: bool = True,
        autocast: Optional[str] = None,
        channels_last: bool = False,
        compile: bool = False,
    ):
        self.vae, self.grad, self.checkpoint = vae, grad, checkpoint
        self.autocast, self.channels_last = autocast, channels_last
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.device, self.dtype = module_device_dtype(vae)
        self._encode = torch.compile(vae.encode) if compile else vae.encode
        self._decode = torch.compile(vae.decode) if compile else vae.decode

    def _prepare(self, x: Tensor) -> Tensor:
        x = x.to(device=self.device, dtype=self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def encode(self, frames: Tensor) -> Tensor:
        def call(x: Tensor) -> Tensor:
            with autocast_context(self.device, self.autocast):
                return self._encode(self._prepare(x)).latent_dist.mean.float()

        return _call(call, frames, self.grad, self.checkpoint)

    def decode(self, latents: Tensor) -> Tensor:
        def call(z: Tensor) -> Tensor:
            with autocast_context(self.device, self.autocast):
                return self._decode(self._prepare(z)).sample.float()

        return _call(call, latents, self.grad, self.checkpoint)


def as_frame_vae(vae) -> FrameVAE:
    """A FrameVAE as it is, or an AutoencoderKL adapted with the default switches."""
    return vae if isinstance(vae, FrameVAE) else FrameVAE(vae)
