"""Videos: checking them, and the one conversion between the two layouts.

Inside the library (and every public function of it): `(B, 3, F, H, W)` in [0,1]; latents `(B, 4, F, H/8, W/8)`.
At the edges (ComfyUI IMAGE batches, frame folders, video files): frames `(F, H, W, 3)` or `(B, F, H, W, 3)`.
`from_frames` / `to_frames` convert between them; nothing else in the package permutes layouts.
"""

from __future__ import annotations

import torch
from torch import Tensor


class VideoInputError(ValueError):
    """A video the purifier cannot take; the message names the problem and the fix."""


def check_video(video: Tensor, *, min_frames: int = 2, multiple: int = 8, name: str = "video") -> Tensor:
    """Validate a channels-first video and return it as `(B, 3, F, H, W)` float32.

    Accepts `(3, F, H, W)` (one video) or `(B, 3, F, H, W)`, values in [0,1], at least `min_frames` frames (optical
    flow pairs consecutive frames), height and width divisible by `multiple` (the VAE downsamples 8x).
    """
    if not isinstance(video, Tensor):
        raise VideoInputError(f"{name} must be a torch.Tensor, got {type(video).__name__}.")
    if video.dim() == 4:
        video = video.unsqueeze(0)
    if video.dim() != 5:
        raise VideoInputError(
            f"{name} has shape {tuple(video.shape)}; expected (B, 3, F, H, W) for a batch or (3, F, H, W) for one "
            f"video, values in [0,1] (frames (F, H, W, 3) convert with videopure_core.from_frames)."
        )
    b, c, f, h, w = video.shape
    if c != 3:
        hint = " It looks channels-last: convert frames with videopure_core.from_frames." if w == 3 else ""
        raise VideoInputError(f"{name} has {c} channels in dimension 1 (shape {tuple(video.shape)}); expected 3 "
                              f"(RGB), as (B, 3, F, H, W).{hint}")
    if b < 1:
        raise VideoInputError(f"{name} is an empty batch (shape {tuple(video.shape)}).")
    if f < min_frames:
        raise VideoInputError(
            f"{name} has {f} frame(s); VideoPure needs at least {min_frames} (optical flow pairs consecutive "
            f"frames). Pass more frames."
        )
    if h % multiple or w % multiple:
        fix_h, fix_w = h // multiple * multiple, w // multiple * multiple
        raise VideoInputError(
            f"{name} frames are {h}x{w} (HxW); height and width must be divisible by {multiple} (the VAE "
            f"downsamples 8x). Resize or crop to e.g. {max(fix_h, multiple)}x{max(fix_w, multiple)}."
        )
    if not video.is_floating_point():
        raise VideoInputError(f"{name} has dtype {video.dtype}; expected floats in [0,1] (divide uint8 by 255).")
    video = video.float()
    if not torch.isfinite(video).all():
        raise VideoInputError(f"{name} contains NaN or Inf values; clean the input first.")
    lo, hi = float(video.min()), float(video.max())
    if lo < 0.0 or hi > 1.0:
        raise VideoInputError(
            f"{name} values span [{lo:.4g}, {hi:.4g}]; expected [0,1]. Divide 0-255 data by 255, or map [-1,1] "
            f"data with x*0.5+0.5."
        )
    return video


def from_frames(frames: Tensor, *, min_frames: int = 2, multiple: int = 8, name: str = "frames") -> Tensor:
    """Frames `(F, H, W, 3)` (one video, a ComfyUI IMAGE batch) or `(B, F, H, W, 3)` -> checked `(B, 3, F, H, W)`."""
    shape = tuple(frames.shape) if isinstance(frames, Tensor) else None
    if shape is None or len(shape) not in (4, 5) or shape[-1] != 3:
        if shape is None:
            problem = f"must be a torch.Tensor, got {type(frames).__name__}"
        elif len(shape) not in (4, 5):
            problem = f"has shape {shape}; expected (F, H, W, 3) for one video or (B, F, H, W, 3) for a batch"
        else:
            hint = " It looks channels-first: pass it as it is to the library." if 3 in shape[:2] else ""
            problem = f"has {shape[-1]} channels in its last dimension (shape {shape}); expected 3 (RGB).{hint}"
        raise VideoInputError(f"{name} {problem}")
    video = (frames if frames.dim() == 5 else frames.unsqueeze(0)).permute(0, 4, 1, 2, 3)
    return check_video(video, min_frames=min_frames, multiple=multiple, name=name).contiguous()


def to_frames(video: Tensor) -> Tensor:
    """(..., 3, F, H, W) -> (..., F, H, W, 3): a batch, or candidates x batch, back to frames."""
    return video.movedim(-4, -1).contiguous()


def frames_of(video: Tensor) -> Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W), frames of each video kept together."""
    b, c, f, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def video_of(frames: Tensor, batch: int) -> Tensor:
    """(B*F, C, H, W) -> (B, C, F, H, W), the inverse of `frames_of`."""
    n, c, h, w = frames.shape
    return frames.reshape(batch, n // batch, c, h, w).permute(0, 2, 1, 3, 4)
