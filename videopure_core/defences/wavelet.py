"""Wavelet denoising (the "WD" baseline of Table I): per frame and channel, soft-thresholded Haar wavelets.

Written here in torch (no PyWavelets / scikit-image), matching scikit-image's `denoise_wavelet` defaults in kind:
the Haar wavelet ("db1"), BayesShrink thresholds per detail subband, soft thresholding, noise level estimated from
the finest diagonal subband. Per frame and channel:

  1. orthonormal 2-D Haar transform, `levels` times on the approximation (`haar2d`);
  2. sigma = median(|HH_1|) / 0.6745, the robust noise estimate of Donoho & Johnstone (1994);
  3. for every detail subband D: sigma_x = sqrt(max(mean(D^2) - sigma^2, 0)) and threshold T = sigma^2 / sigma_x
     (BayesShrink, Chang et al., 2000; T is infinite, i.e. the subband is removed, when sigma_x = 0);
  4. D <- sign(D) max(|D| - T, 0), then the inverse transform, clamped to [0,1].

Everything is differentiable almost everywhere (the threshold too), so the declaration is "exact".
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..video import frames_of, video_of
from .base import Defence, one_candidate


def haar2d(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One level of the orthonormal 2-D Haar transform: (..., H, W) with H, W even -> 4 x (..., H/2, W/2).

    Returns (LL, LH, HL, HH): approximation, horizontal-, vertical- and diagonal-difference details.
    """
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, (a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2


def ihaar2d(ll: Tensor, lh: Tensor, hl: Tensor, hh: Tensor) -> Tensor:
    """The inverse of `haar2d`: 4 x (..., h, w) -> (..., 2h, 2w)."""
    out = ll.new_empty(*ll.shape[:-2], 2 * ll.shape[-2], 2 * ll.shape[-1])
    out[..., 0::2, 0::2] = (ll + lh + hl + hh) / 2
    out[..., 0::2, 1::2] = (ll - lh + hl - hh) / 2
    out[..., 1::2, 0::2] = (ll + lh - hl - hh) / 2
    out[..., 1::2, 1::2] = (ll - lh - hl + hh) / 2
    return out


def max_levels(h: int, w: int) -> int:
    """How many Haar levels an h x w image allows (both sides stay even at every level)."""
    levels = 0
    while h % 2 == 0 and w % 2 == 0 and min(h, w) >= 2:
        h, w, levels = h // 2, w // 2, levels + 1
    return levels


def soft_threshold(x: Tensor, threshold: Tensor) -> Tensor:
    """sign(x) * max(|x| - threshold, 0), threshold broadcast against x."""
    return x.sign() * (x.abs() - threshold).clamp_min(0.0)


def bayes_threshold(detail: Tensor, sigma: Tensor) -> Tensor:
    """BayesShrink threshold of one subband (..., h, w) given the noise sigma (..., 1, 1): (..., 1, 1)."""
    signal_var = (detail.pow(2).mean((-2, -1), keepdim=True) - sigma.pow(2)).clamp_min(0.0)
    return sigma.pow(2) / signal_var.sqrt().clamp_min(1e-12)


def wavelet_denoise(images: Tensor, levels: int = 3, sigma: float | None = None) -> Tensor:
    """Soft BayesShrink Haar denoising: images (N, C, H, W) in [0,1] -> (N, C, H, W) in [0,1].

    levels is reduced to what H and W allow; sigma=None estimates the noise per image and channel.
    """
    levels = min(levels, max_levels(*images.shape[-2:]))
    if levels < 1:
        return images
    ll, details = images, []
    for _ in range(levels):
        ll, lh, hl, hh = haar2d(ll)
        details.append((lh, hl, hh))
    if sigma is None:
        finest = details[0][2].flatten(-2).abs()
        noise = (finest.median(-1).values / 0.6745)[..., None, None]
    else:
        noise = torch.full_like(images[..., :1, :1], sigma)
    for lh, hl, hh in reversed(details):
        lh, hl, hh = (soft_threshold(d, bayes_threshold(d, noise)) for d in (lh, hl, hh))
        ll = ihaar2d(ll, lh, hl, hh)
    return ll.clamp(0.0, 1.0)


class WaveletDenoise(Defence):
    """One candidate: every frame wavelet-denoised (`wavelet_denoise`)."""

    name = "wavelet"
    gradient = "exact"

    def __init__(self, levels: int = 3, sigma: float | None = None):
        self.levels, self.sigma = levels, sigma

    def _candidates(self, video, generator, grad, hooks):
        return one_candidate(video_of(wavelet_denoise(frames_of(video), self.levels, self.sigma), video.shape[0]))
