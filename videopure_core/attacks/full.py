"""The full-gradient adaptive attack: exact gradients through the whole purifier (DiffAttack-style, Kang et al., 2023).

The core stages run the UNet without gradient (`unet_eps_fn`); here the same UNet becomes a differentiable EpsFn
with one `torch.utils.checkpoint` segment per UNet call, so backpropagating through encode, (temporal) DDIM
inversion, every guided denoising step (`guided_denoise(..., create_graph=True)` keeps the guidance gradient in
the graph), decode and the classifier stores only the latents between calls and recomputes each UNet's
activations during the backward pass: memory grows with the number of steps times one latent, not times the
UNet's activations. The VAE is checkpointed per chunk of frames likewise, and runs through the core's
`encode_video` / `decode_latents` via a proxy (`GradVAE`) that keeps autograd on inside them.

Optical flow: by default (`flow_grad=False`) the flow of the input is held fixed during differentiation (computed
on the input, detached), as if the attacker treated RAFT as a constant; `flow_grad=True` also differentiates RAFT
on the input (`differentiable_flow_fn`), which makes the flow itself an attack surface and costs a backward pass
through RAFT's refinement iterations.

    grad_fn = full_gradient_grad_fn(classifier, VideoPureDefence(purifier))
    x_adv, losses = pgd(grad_fn, x, y)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..ddim import EpsFn
from ..flow import FlowFn, RaftFlow
from ..vae import decode_latents, encode_video
from .base import GradFn


def differentiable_eps_fn(unet: nn.Module, embedding: Tensor, use_checkpoint: bool = True) -> EpsFn:
    """Like `unet_eps_fn`, but differentiable in z, one checkpoint segment per call (memory bounded per step)."""
    param = next(unet.parameters())
    dtype, device = param.dtype, param.device

    def run(z: Tensor, t: int) -> Tensor:
        cond = embedding.to(device=device, dtype=dtype).expand(z.shape[0], -1, -1)
        return unet(z.to(device=device, dtype=dtype), t, encoder_hidden_states=cond).sample.to(z.dtype)

    def eps_fn(z: Tensor, t: int) -> Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            if use_checkpoint and z.requires_grad:
                return checkpoint(run, z, t, use_reentrant=False)
            return run(z, t)

    return eps_fn


class _WithGrad(nn.Module):
    """Runs the wrapped module with autograd on, even inside the `torch.no_grad()` of RaftFlow.__call__."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        with torch.enable_grad():
            return self.model(*args, **kwargs)


def differentiable_flow_fn(flow_fn: FlowFn) -> FlowFn:
    """A FlowFn whose output is differentiable in the images: RaftFlow with autograd on (same iterations, range
    and resizing); any other FlowFn is returned as it is (it is differentiable if it is written in torch)."""
    if isinstance(flow_fn, RaftFlow):
        return RaftFlow(_WithGrad(flow_fn.model), flow_fn.iters, flow_fn.input_range, flow_fn.min_size)
    return flow_fn


class GradVAE:
    """A proxy of an AutoencoderKL whose `encode`/`decode` keep autograd on, for the core's stage functions.

    `encode_video` / `decode_latents` read only `.encode`, `.decode`, `.config` and `.parameters()` (the same
    contract as execution.CompiledVAE). The proxy runs the real VAE with autograd enabled (even inside a no_grad
    block of a stage function), casts inputs to the VAE's dtype and outputs back to float32 inside that region,
    and reports float32 parameters so that the stage function's own casts are no-ops that keep the graph.
    """

    def __init__(self, vae: nn.Module):
        self.vae, self.config = vae, vae.config
        param = next(vae.parameters())
        self._device, self._dtype = param.device, param.dtype

    def parameters(self):
        return iter([torch.empty(0, device=self._device, dtype=torch.float32)])

    def encode(self, x: Tensor, *args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            mean = self.vae.encode(x.to(self._dtype), *args, **kwargs).latent_dist.mean.float()
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean))

    def decode(self, z: Tensor, *args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            sample = self.vae.decode(z.to(self._dtype), *args, **kwargs).sample.float()
        return SimpleNamespace(sample=sample)

    def __getattr__(self, name):  # use_tiling and friends
        return getattr(self.__dict__["vae"], name)


def _grad_encode(vae: nn.Module, video: Tensor, chunk: int) -> Tensor:
    return encode_video(GradVAE(vae), video, chunk)


def _grad_decode(vae: nn.Module, latents: Tensor, chunk: int) -> Tensor:
    return decode_latents(GradVAE(vae), latents, chunk)


def _segments(x: Tensor, chunk: int):
    """(N, C, F, ...) -> views of one video and at most `chunk` frames each, in order (video-major)."""
    for video in x.split(1):
        yield from video.split(chunk, dim=2)


def _checkpointed(fn, vae: nn.Module, x: Tensor, chunk: int, use_checkpoint: bool) -> Tensor:
    """fn(GradVAE(vae), segment, chunk) on segments of one video and `chunk` frames, each one checkpoint segment,
    so that the backward pass holds the VAE's activations of `chunk` frames at a time."""
    outs = []
    for segment in _segments(x, chunk):
        if use_checkpoint:
            outs.append(checkpoint(fn, vae, segment, chunk, use_reentrant=False))
        else:
            outs.append(fn(vae, segment, chunk))
    per_video = -(-x.shape[2] // chunk)
    return torch.cat([torch.cat(outs[i : i + per_video], dim=2) for i in range(0, len(outs), per_video)])


def checkpointed_encode(vae: nn.Module, video: Tensor, chunk: int = 16, use_checkpoint: bool = True) -> Tensor:
    """`encode_video`, differentiable, in checkpointed chunks of frames: (B, 3, F, H, W) -> (B, 4, F, H/8, W/8)."""
    if not video.requires_grad:
        return encode_video(vae, video, chunk)
    return _checkpointed(_grad_encode, vae, video, chunk, use_checkpoint)


def checkpointed_decode(vae: nn.Module, latents: Tensor, chunk: int = 16, use_checkpoint: bool = True) -> Tensor:
    """`decode_latents`, differentiable, in checkpointed chunks of frames: (N, 4, F, h, w) -> (N, 3, F, 8h, 8w)."""
    if not latents.requires_grad:
        return decode_latents(vae, latents, chunk)
    return _checkpointed(_grad_decode, vae, latents, chunk, use_checkpoint)


def full_gradient_grad_fn(classifier: nn.Module, defence, generator: Optional[torch.Generator] = None) -> GradFn:
    """Exact gradient through a differentiable defence (`defence.candidates(..., grad=True)`) and the classifier.

    The attacker's loss is the cross-entropy averaged over the K candidates (the vote itself has no gradient).
    """
    if not defence.differentiable:
        raise ValueError(
            f"The {defence.name} defence is not differentiable, so there is no full gradient; attack it with "
            f"BPDA or its surrogate (defence_grad_fn)."
        )
    from .adaptive import exact_grad_fn

    return exact_grad_fn(classifier, defence, generator)
