"""Temporal shuffle (Hwang et al., 2021): the frames of each video in a random order.

Stochastic (one permutation per video per call, drawn from the generator). A permutation is linear, so the
attacker's gradient through it is exact for the drawn permutation; EOT averages over permutations.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import Defence, one_candidate


def shuffle_frames(video: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """video (B, C, F, H, W) -> the same frames, each video permuted by its own torch.randperm(F, generator)."""
    b, _, f = video.shape[:3]
    perms = torch.stack([torch.randperm(f, generator=generator) for _ in range(b)]).to(video.device)
    index = perms.view(b, 1, f, 1, 1).expand(-1, video.shape[1], -1, *video.shape[3:])
    return video.gather(2, index)


class TemporalShuffle(Defence):
    """One candidate: the video with its frames randomly permuted."""

    name = "shuffle"
    gradient = "exact"
    stochastic = True

    def _candidates(self, video, generator, grad, hooks):
        return one_candidate(shuffle_frames(video, generator))
