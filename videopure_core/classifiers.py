"""Video classifiers: anything mapping (B, 3, F, H, W) in [0,1] to logits (B, C).

Normalisation lives inside the wrapper so that attacks and purification work in [0,1] pixel space. torchvision's
Kinetics-400 video models are the built-in architectures; their weights come from local files.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torchvision.models import video as tv_video

from .ddim import Callback


class ClassifierOutputError(ValueError):
    """A classifier returned something other than logits of shape (B, C)."""


class NormalizedClassifier(nn.Module):
    """(x - mean) / std, then the wrapped model: (B, 3, F, H, W) in [0,1] -> logits (B, C)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1))

    def forward(self, video: Tensor) -> Tensor:
        return self.model((video - self.mean) / self.std)


_KINETICS = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))

# name -> (builder, (mean, std), required frame count or None). Means/stds as in torchvision's weight transforms.
TORCHVISION_VIDEO_MODELS: dict[str, tuple[Callable[..., nn.Module], tuple, int | None]] = {
    "r3d_18": (tv_video.r3d_18, _KINETICS, None),
    "mc3_18": (tv_video.mc3_18, _KINETICS, None),
    "r2plus1d_18": (tv_video.r2plus1d_18, _KINETICS, None),
    "s3d": (tv_video.s3d, _KINETICS, None),
    "mvit_v2_s": (tv_video.mvit_v2_s, ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)), 16),
    "swin3d_t": (tv_video.swin3d_t, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), None),
}


def build_torchvision_classifier(arch: str, num_classes: int = 400) -> NormalizedClassifier:
    """An untrained torchvision video model of `arch`, wrapped with its normalisation."""
    if arch not in TORCHVISION_VIDEO_MODELS:
        raise ValueError(f"Unknown video architecture {arch!r}; choose one of {sorted(TORCHVISION_VIDEO_MODELS)}.")
    builder, (mean, std), _ = TORCHVISION_VIDEO_MODELS[arch]
    return NormalizedClassifier(builder(weights=None, num_classes=num_classes), mean, std)


def required_frames(arch: str) -> int | None:
    """The exact frame count an architecture needs (mvit_v2_s: 16), or None."""
    return TORCHVISION_VIDEO_MODELS[arch][2] if arch in TORCHVISION_VIDEO_MODELS else None


def min_frames(model: nn.Module) -> int:
    """The fewest frames a 3D CNN takes, from the geometry of its Conv3d and pooling layers (temporal kernel,
    stride, padding, dilation) applied in the order they are registered: each must leave at least one frame. Exact
    for plain CNNs (the small world's classifier: 4, r3d_18: 1, s3d: 13); conservative by a frame or so for models
    that pad their input first (swin3d_t says 2, takes 1). Attention-only models give 1."""
    def first(v):
        return v if isinstance(v, int) else v[0]

    need = 1
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv3d, nn.MaxPool3d, nn.AvgPool3d))]
    for layer in reversed(layers):
        kernel, stride = first(layer.kernel_size), first(layer.stride)
        padding = 0 if isinstance(layer.padding, str) else first(layer.padding)
        dilation = first(getattr(layer, "dilation", 1))
        need = max(1, (need - 1) * stride + dilation * (kernel - 1) + 1 - 2 * padding)
    return need


def check_logits(logits: Tensor, batch: int) -> Tensor:
    """Raise ClassifierOutputError unless `logits` is a finite float tensor of shape (batch, C)."""
    if not isinstance(logits, Tensor):
        raise ClassifierOutputError(
            f"The classifier returned {type(logits).__name__}; it must return a logits tensor of shape (B, C). "
            f"Wrap models that return tuples or dicts so that forward() returns the logits."
        )
    if logits.dim() != 2 or logits.shape[0] != batch:
        raise ClassifierOutputError(
            f"The classifier returned shape {tuple(logits.shape)} for a batch of {batch} videos; expected "
            f"({batch}, num_classes). It must map (B, 3, F, H, W) in [0,1] to logits (B, C)."
        )
    return logits


def classify(classifier: nn.Module, videos: Tensor, batch_size: int = 8, callback: Callback = None) -> Tensor:
    """videos (N, 3, F, H, W) in [0,1] -> logits (N, C) float32, `batch_size` videos per call, no gradient.

    `callback("classify", batches done, batches)` follows every call.
    """
    try:
        param = next(classifier.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = videos.device, torch.float32
    outs = []
    parts = videos.split(batch_size)
    with torch.no_grad():
        for i, part in enumerate(parts):
            out = classifier(part.to(device=device, dtype=dtype))
            outs.append(check_logits(out, part.shape[0]).float())
            if callback is not None:
                callback("classify", i + 1, len(parts))
    return torch.cat(outs).to(videos.device)
