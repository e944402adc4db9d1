"""Optical flow on the input video and backward warping on the latent grid (paper Eq. 13).

A flow estimator is any callable `flow_fn(image1, image2) -> flow` with images `(N, 3, H, W)` in [0,1] and flow
`(N, 2, H, W)` in pixels, (dx, dy) = where a pixel of image1 moves to in image2. `RaftFlow` adapts torchvision's
RAFT (raft_large / raft_small) to it. Flow is computed once per input video (the possibly adversarial one), on
consecutive frame pairs at full resolution, then resized to the latent grid with its vectors scaled alike.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .ddim import Callback

FlowFn = Callable[[Tensor, Tensor], Tensor]


class RaftFlow:
    """torchvision RAFT as a FlowFn; it owns RAFT's settings (refinement iterations, input range).

    RAFT wants inputs in [-1,1] with H and W divisible by 8 and at least `min_size` (128; its correlation pyramid
    refuses smaller). Smaller frames are upsampled by an integer factor for the estimate and the flow is brought
    back to the input grid (resized, vectors divided by the factor). `input_range="0,1"` feeds [0,1] as the
    authors' release does. The adapter switches (networks.py): `grad` makes the flow differentiable in the images
    (the attack of Table VI), `autocast` runs RAFT under torch.autocast; the flow comes back float32.
    """

    def __init__(self, model: torch.nn.Module, iters: int = 10, input_range: str = "-1,1", min_size: int = 128,
                 *, grad: bool = False, autocast: Optional[str] = None):
        if input_range not in ("-1,1", "0,1"):
            raise ValueError(f"input_range must be '-1,1' or '0,1', got {input_range!r}.")
        if iters < 1:
            raise ValueError(f"RAFT iterations must be >= 1, got {iters}.")
        self.model, self.iters, self.input_range, self.min_size = model, iters, input_range, min_size
        self.grad, self.autocast = grad, autocast

    def replace(self, **changes) -> "RaftFlow":
        """A copy with some settings changed (the same network)."""
        kw = dict(iters=self.iters, input_range=self.input_range, min_size=self.min_size, grad=self.grad,
                  autocast=self.autocast)
        return RaftFlow(self.model, **{**kw, **changes})

    def __call__(self, image1: Tensor, image2: Tensor) -> Tensor:
        if not self.grad:
            with torch.no_grad():
                return self._estimate(image1, image2)
        with torch.inference_mode(False), torch.enable_grad():
            return self._estimate(image1, image2)

    def _estimate(self, image1: Tensor, image2: Tensor) -> Tensor:
        from .networks import autocast as autocast_context

        h, w = image1.shape[-2:]
        scale = max(1, math.ceil(self.min_size / min(h, w)))
        pair = torch.cat([image1, image2])
        if scale > 1:
            pair = F.interpolate(pair, size=(h * scale, w * scale), mode="bilinear", align_corners=False)
        if self.input_range == "-1,1":
            pair = pair * 2.0 - 1.0
        param = next(self.model.parameters())
        a, b = pair.to(device=param.device, dtype=param.dtype).chunk(2)
        with autocast_context(param.device, self.autocast):
            flow = self.model(a, b, num_flow_updates=self.iters)[-1].float()
        if scale > 1:
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False) / scale
        return flow


class LatentFlow(NamedTuple):
    """Flow between consecutive frames on the latent grid, shared by every guided step.

    forward:  (B, F-1, 2, h, w), frame i -> i+1.
    backward: (B, F-1, 2, h, w), frame i+1 -> i, or None.
    forward_mask / backward_mask: (B, F-1, 1, h, w) in [0,1], 1 where the flow is consistent, or None.
    """

    forward: Tensor
    backward: Optional[Tensor] = None
    forward_mask: Optional[Tensor] = None
    backward_mask: Optional[Tensor] = None


def video_flow(
    flow_fn: FlowFn, video: Tensor, chunk: int = 16, backward: bool = False, callback: Callback = None
) -> tuple[Tensor, Optional[Tensor]]:
    """Flow of consecutive frame pairs: video (B, 3, F, H, W) in [0,1] -> (B, F-1, 2, H, W) pixels, twice.

    Returns (forward, backward) where backward is None unless asked for. Pairs never cross videos.
    `callback("flow", calls done, calls)` follows every flow_fn call of `chunk` pairs.
    """
    b, _, f, h, w = video.shape
    first = video[:, :, :-1].transpose(1, 2).reshape(b * (f - 1), 3, h, w)
    second = video[:, :, 1:].transpose(1, 2).reshape(b * (f - 1), 3, h, w)
    calls = -(-first.shape[0] // chunk) * (2 if backward else 1)
    done = 0

    def run(src: Tensor, dst: Tensor) -> Tensor:
        nonlocal done
        parts = []
        for s, d in zip(src.split(chunk), dst.split(chunk)):
            parts.append(flow_fn(s, d).float())
            done += 1
            if callback is not None:
                callback("flow", done, calls)
        return torch.cat(parts).to(video.device).reshape(b, f - 1, 2, h, w)

    return run(first, second), (run(second, first) if backward else None)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, P, 2, H, W) pixels -> (B, P, 2, h, w) in pixels of the new grid (bilinear, align_corners False)."""
    b, p, _, h0, w0 = flow.shape
    h, w = size
    out = F.interpolate(flow.reshape(b * p, 2, h0, w0), size=(h, w), mode="bilinear", align_corners=False)
    out = out * torch.tensor([w / w0, h / h0], dtype=out.dtype, device=out.device).view(1, 2, 1, 1)
    return out.reshape(b, p, 2, h, w)


def backward_warp(image: Tensor, flow: Tensor) -> Tensor:
    """Sample `image` at p + flow(p): (N, C, h, w), (N, 2, h, w) -> (N, C, h, w).

    Bilinear, zero padding, align_corners=True, grid normalised by 2v/(size-1) - 1 (the release's warp). With the
    forward flow i -> i+1, warping frame i+1 gives a prediction of frame i.
    """
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flow.dtype, device=flow.device),
        torch.arange(w, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def consistency_mask(flow_ab: Tensor, flow_ba: Tensor) -> Tensor:
    """Forward-backward check (Sundaram et al., 2010): (N, 2, H, W) x 2 -> (N, 1, H, W) in {0, 1}.

    A pixel is kept (1) when following a->b then b->a returns close to where it started:
    |f_ab + f_ba(p + f_ab)|^2 <= 0.01 (|f_ab|^2 + |f_ba(p + f_ab)|^2) + 0.5.
    """
    back = backward_warp(flow_ba, flow_ab)
    err = (flow_ab + back).pow(2).sum(1, keepdim=True)
    bound = 0.01 * (flow_ab.pow(2).sum(1, keepdim=True) + back.pow(2).sum(1, keepdim=True)) + 0.5
    return (err <= bound).to(flow_ab.dtype)


def latent_flow(
    flow_fn: FlowFn,
    video: Tensor,
    latent_size: tuple[int, int],
    backward: bool = False,
    masks: bool = False,
    chunk: int = 16,
    callback: Callback = None,
) -> LatentFlow:
    """Everything the temporal loss needs, from the input video (B, 3, F, H, W) in [0,1], on the latent grid.

    backward: also estimate flow i+1 -> i (for the bidirectional loss). masks: forward-backward consistency masks
    (computed at pixel resolution, area-averaged to the latent grid, so they are soft weights in [0,1]).
    """
    fwd, bwd = video_flow(flow_fn, video, chunk=chunk, backward=backward or masks, callback=callback)
    fmask = bmask = None
    if masks:
        b, p, _, hh, ww = fwd.shape
        flat = lambda x: x.reshape(b * p, *x.shape[2:])  # noqa: E731
        fmask = F.adaptive_avg_pool2d(consistency_mask(flat(fwd), flat(bwd)), latent_size).reshape(b, p, 1, *latent_size)
        bmask = F.adaptive_avg_pool2d(consistency_mask(flat(bwd), flat(fwd)), latent_size).reshape(b, p, 1, *latent_size)
    return LatentFlow(
        forward=resize_flow(fwd, latent_size),
        backward=resize_flow(bwd, latent_size) if backward else None,
        forward_mask=fmask,
        backward_mask=bmask if backward else None,
    )
