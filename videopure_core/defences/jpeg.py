"""JPEG compression of every frame (Dziugaite et al., 2016; the "JPEG" baseline of Table I).

Frames are quantised to 8 bits, encoded and decoded by Pillow's libjpeg (Pillow is a dependency of torchvision)
with the standard settings (4:2:0 chroma subsampling) at `quality`. Not differentiable (quantisation), so the
declaration is BPDA with the identity, as in the paper. `Jpeg(gradient="surrogate")` (spec
`jpeg:gradient=surrogate`) attacks through `jpeg_surrogate` instead, a differentiable JPEG in torch (Shin & Song,
2017): YCbCr, 4:2:0 chroma by 2x2 averaging, 8x8 orthonormal DCT, the standard quantisation tables scaled by
quality as libjpeg does, rounding replaced by round(x) + (x - round(x))^3, and the inverse steps.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .base import Defence, one_candidate


def jpeg_frames(frames: Tensor, quality: int = 75) -> Tensor:
    """(N, H, W, 3) in [0,1] -> (N, H, W, 3) in [0,1] after a JPEG round trip at `quality` (1..95)."""
    pixels = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = []
    for frame in pixels:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as im:
            out.append(np.asarray(im.convert("RGB")))
    return torch.from_numpy(np.stack(out)).to(frames.device, torch.float32) / 255.0


# The JPEG standard's example quantisation tables (ITU-T T.81, Annex K), row-major 8x8.
_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32


def quant_table(quality: int, chroma: bool = False) -> Tensor:
    """The 8x8 quantisation table libjpeg uses at `quality` (1..100): the standard table scaled, in [1, 255]."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.float32).view(8, 8)
    return ((base * scale + 50) // 100).clamp(1, 255)


def _dct_matrix(n: int = 8) -> Tensor:
    """Orthonormal DCT-II matrix D (n, n): coefficients = D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float32)
    d = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def _soft_round(x: Tensor) -> Tensor:
    """round(x) + (x - round(x))^3: the value of rounding (almost), a gradient that is not zero (Shin & Song)."""
    r = torch.round(x)
    return r + (x - r) ** 3


def _blockwise(channel: Tensor, table: Tensor) -> Tensor:
    """Quantise one channel (N, H, W) (values 0..255) in 8x8 DCT blocks with `table`; H, W padded by replication."""
    n, h, w = channel.shape
    ph, pw = -h % 8, -w % 8
    x = F.pad(channel[:, None], (0, pw, 0, ph), mode="replicate")[:, 0] - 128.0
    hh, ww = x.shape[1:]
    blocks = x.view(n, hh // 8, 8, ww // 8, 8).permute(0, 1, 3, 2, 4)
    d = _dct_matrix().to(x)
    coef = d @ blocks @ d.T
    table = table.to(x)
    coef = _soft_round(coef / table) * table
    out = (d.T @ coef @ d).permute(0, 1, 3, 2, 4).reshape(n, hh, ww) + 128.0
    return out[:, :h, :w]


def jpeg_surrogate(frames: Tensor, quality: int = 75) -> Tensor:
    """Differentiable approximation of `jpeg_frames`: (N, 3, H, W) in [0,1] -> (N, 3, H, W) in [0,1]."""
    rgb = frames * 255.0
    r, g, b = rgb.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128.0
    size = y.shape[-2:]

    def chroma(c: Tensor) -> Tensor:  # 4:2:0: 2x2 averages, quantised, brought back to full size
        small = F.avg_pool2d(c[:, None], 2, ceil_mode=True)[:, 0]
        q = _blockwise(small, quant_table(quality, chroma=True))
        return F.interpolate(q[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    y = _blockwise(y, quant_table(quality))
    cb, cr = chroma(cb) - 128.0, chroma(cr) - 128.0
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (out / 255.0).clamp(0.0, 1.0)


class Jpeg(Defence):
    """One candidate: every frame through JPEG at `quality`; gradient "bpda" (default) or "surrogate"."""

    name = "jpeg"
    gradient = "bpda"
    differentiable = False

    def __init__(self, quality: int = 75, gradient: str = "bpda"):
        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be between 1 and 95 (Pillow's useful range), got {quality}.")
        if gradient not in ("bpda", "surrogate"):
            raise ValueError(f"The JPEG defence is attacked with 'bpda' or 'surrogate', got gradient={gradient!r}.")
        self.quality, self.gradient = quality, gradient

    def surrogate(self, video, generator=None):
        b, c, f, h, w = video.shape
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        out = jpeg_surrogate(frames, self.quality).reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        return out.unsqueeze(0)

    def _candidates(self, video, generator, grad, hooks):
        b, c, f, h, w = video.shape
        frames = video.permute(0, 2, 3, 4, 1).reshape(b * f, h, w, c)
        return one_candidate(jpeg_frames(frames, self.quality).reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3))
