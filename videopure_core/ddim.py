"""DDIM arithmetic (paper Eqs. 8 and 15), deterministic (eta = 0), no clipping.

`EpsFn` is how the denoiser enters every stage: a callable `eps_fn(z, t) -> eps` mapping latents
`(B, 4, F, h, w)` and an integer timestep to the predicted noise of the same shape and dtype. It is called without
gradient; `unet_eps_fn` adapts a diffusers `UNet3DConditionModel` to it.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

EpsFn = Callable[[Tensor, int], Tensor]
Callback = Optional[Callable[[str, int, int], None]]  # callback(stage, step, total), for progress / interruption


def predict_x0(z: Tensor, eps: Tensor, alpha_bar: float) -> Tensor:
    """Eq. 15: x0_hat = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
    return (z - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def ddim_step(x0: Tensor, eps: Tensor, alpha_bar_next: float) -> Tensor:
    """Eq. 8 (second half): z = sqrt(a) x0 + sqrt(1 - a) eps, for either direction of the trajectory."""
    return math.sqrt(alpha_bar_next) * x0 + math.sqrt(1.0 - alpha_bar_next) * eps


def unet_eps_fn(unet, embedding: Tensor, *, autocast: Optional[str] = None, batch: Optional[int] = None) -> EpsFn:
    """Adapt a diffusers UNet3DConditionModel conditioned on one prompt embedding `(1, L, D)` to an EpsFn.

    One UNet call per step at guidance scale 1: the release's classifier-free guidance with two identical empty
    prompts is a numerical no-op at twice the cost. The network runs in its own dtype (under torch.autocast when
    `autocast` is "bfloat16" / "float16"); eps comes back in z's dtype, so latent arithmetic stays float32.
    `batch` bounds the videos per UNet call (None: the whole batch at once; videos never mix either way, the UNet
    only attends across the frames of one video). The timestep goes in as an int64 tensor, exactly what diffusers
    makes of a Python int, so a compiled UNet does not recompile for every step.
    """
    from .execution import autocast as autocast_context
    from .execution import module_device_dtype

    device, dtype = module_device_dtype(unet)

    def eps_fn(z: Tensor, t: int) -> Tensor:
        timestep = torch.tensor([t], dtype=torch.int64, device=device)
        outs = []
        with torch.no_grad(), autocast_context(device, autocast):
            for part in z.split(batch or z.shape[0]):
                cond = embedding.to(device=device, dtype=dtype).expand(part.shape[0], -1, -1)
                outs.append(unet(part.to(device=device, dtype=dtype), timestep, encoder_hidden_states=cond).sample)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.to(z.dtype)

    return eps_fn
