"""JPEG compression of every frame (Dziugaite et al., 2016; the "JPEG" baseline of Table I).

Frames are quantised to 8 bits, encoded and decoded by Pillow's libjpeg (Pillow is a dependency of torchvision)
with the standard settings (4:2:0 chroma subsampling) at `quality`. Not differentiable (quantisation), so the
declaration is BPDA with the identity.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .base import Defence, DefenceOutput


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


class Jpeg(Defence):
    """One candidate: every frame through JPEG at `quality`."""

    name = "jpeg"
    gradient = "bpda"
    differentiable = False

    def __init__(self, quality: int = 75):
        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be between 1 and 95 (Pillow's useful range), got {quality}.")
        self.quality = quality

    def _candidates(self, video, generator, grad, callback):
        b, c, f, h, w = video.shape
        frames = video.permute(0, 2, 3, 4, 1).reshape(b * f, h, w, c)
        out = jpeg_frames(frames, self.quality).reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)
        return DefenceOutput(out.unsqueeze(0), (0,), {})
