"""Pictures for people: frame strips of several videos side by side, and optical flow as colour."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import flow_to_image

from .io import save_png


def flow_to_rgb(flow: Tensor) -> Tensor:
    """(P, 2, H, W) pixels -> (P, H, W, 3) in [0,1], the Middlebury colour wheel (torchvision's flow_to_image)."""
    return flow_to_image(flow.float().cpu()).permute(0, 2, 3, 1).float() / 255.0


def frame_strip(video: Tensor, frames: Sequence[int], size: int) -> Tensor:
    """Chosen frames of (F, H, W, 3) in a row, each resized to size x size: (size, len(frames) * size, 3)."""
    picked = video[list(frames)].permute(0, 3, 1, 2).float().cpu()
    picked = F.interpolate(picked, size=(size, size), mode="nearest")
    return torch.cat(list(picked), dim=2).permute(1, 2, 0)


def save_rows(rows: Sequence[Tensor], path: str | os.PathLike, frames: int = 8, size: int = 96, gap: int = 4) -> Path:
    """Save videos (each (F, H, W, 3) in [0,1]) as rows of `frames` evenly spaced frames in one PNG.

    Row i is video i; all rows use the same frame indices (videos shorter than the first are sampled on their own
    length, e.g. a flow video with F-1 frames).
    """
    strips = []
    for video in rows:
        n = video.shape[0]
        idx = torch.linspace(0, n - 1, min(frames, n)).round().long().tolist()
        strip = frame_strip(video, idx, size)
        strips.append(F.pad(strip.permute(2, 0, 1), (0, frames * size - strip.shape[1], 0, gap), value=1.0))
    return save_png(torch.cat(strips, dim=1).permute(1, 2, 0), path)
