"""Temporal DDIM inversion (paper Section III-B-1, Eqs. 10-11)."""

from __future__ import annotations

from torch import Tensor

from .ddim import Callback, EpsFn, ddim_step, predict_x0
from .schedule import Schedule


def replicate_frame_noise(eps: Tensor, frame: int = 0) -> Tensor:
    """eps*(z, t) of Eq. 11: the predicted noise of one frame copied to every frame.

    eps: (B, C, F, h, w) -> (B, C, F, h, w) with eps[:, :, f] == eps[:, :, frame] for every f.
    """
    if not 0 <= frame < eps.shape[2]:
        raise ValueError(f"noise_frame={frame} is outside the video's {eps.shape[2]} frames.")
    return eps[:, :, frame : frame + 1].expand_as(eps).contiguous()


def ddim_invert(
    eps_fn: EpsFn,
    z0: Tensor,
    schedule: Schedule,
    temporal: bool = True,
    noise_frame: int = 0,
    callback: Callback = None,
) -> Tensor:
    """z0 (B, 4, F, h, w) -> z_{t*} of the same shape, deterministic.

    For each destination tau in schedule.timesteps (ascending, e.g. 1, 21, ..., 101), from s = tau - step:
      1. eps = eps_fn(z_s, tau): the UNet sees all frames jointly, labelled with the destination timestep (Eq. 10);
      2. temporal: eps <- the `noise_frame`-th frame's eps replicated to every frame (Eq. 11);
      3. x0 = (z_s - sqrt(1 - a_s) eps) / sqrt(a_s);  z_tau = sqrt(a_tau) x0 + sqrt(1 - a_tau) eps.
    With temporal=False this is plain DDIM inversion (the "DDIM Inversion" baseline).
    """
    z = z0
    total = len(schedule.timesteps)
    for i, tau in enumerate(schedule.timesteps):
        eps = eps_fn(z, tau)
        if temporal:
            eps = replicate_frame_noise(eps, noise_frame)
        x0 = predict_x0(z, eps, schedule.alpha_bar_prev(tau))
        z = ddim_step(x0, eps, schedule.alpha_bar(tau))
        if callback is not None:
            callback("invert", i + 1, total)
    return z
