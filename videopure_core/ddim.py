"""DDIM arithmetic (paper Eqs. 8 and 15), deterministic (eta = 0), no clipping.

`EpsFn` is how the denoiser enters every stage: a callable `eps_fn(z, t) -> eps` mapping latents
`(B, 4, F, h, w)` and an integer timestep to the predicted noise of the same shape and dtype;
`networks.unet_eps_fn` adapts a diffusers `UNet3DConditionModel` to it.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from torch import Tensor

EpsFn = Callable[[Tensor, int], Tensor]
Callback = Optional[Callable[[str, int, int], None]]  # callback(stage, step, total), for progress / interruption


def predict_x0(z: Tensor, eps: Tensor, alpha_bar: float) -> Tensor:
    """Eq. 15: x0_hat = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
    return (z - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def ddim_step(x0: Tensor, eps: Tensor, alpha_bar_next: float) -> Tensor:
    """Eq. 8 (second half): z = sqrt(a) x0 + sqrt(1 - a) eps, for either direction of the trajectory."""
    return math.sqrt(alpha_bar_next) * x0 + math.sqrt(1.0 - alpha_bar_next) * eps
