"""What every defence shares: one interface, and the declaration of how an attacker differentiates it.

A defence maps a video `(B, 3, F, H, W)` in [0,1] to K candidate videos `(K, B, 3, F, H, W)` in [0,1]; the
defended prediction is the majority vote of the classifier over the K candidates (K = 1 for single-output
defences; VideoPure has t*+1). Stochastic defences draw their randomness from an explicit torch.Generator.

How an adaptive attacker gets a gradient through the defence (`Defence.gradient`, used by
`videopure_core.attacks.defence_grad_fn`):

    "exact"      the defence is differentiable and cheap: backpropagate through `candidates(..., grad=True)`;
    "bpda"       Backward Pass Differentiable Approximation with the identity (Athalye et al., 2018): run the
                 defence forward, take the classifier's gradient at each candidate, average over candidates and
                 pass it straight through to the input;
    "surrogate"  backpropagate through a differentiable approximation, `surrogate(video, generator)`.

`differentiable` says whether `candidates(..., grad=True)` builds an autograd graph at all; the full-gradient
adaptive attack (DiffAttack-style) uses it for the diffusion defences, whose declaration is "bpda" because the
exact gradient costs a backward pass through every UNet call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from ..classifiers import classify
from ..ddim import Callback
from ..vote import VoteResult, vote

Gradient = Literal["exact", "bpda", "surrogate"]
GRADIENTS: tuple[str, ...] = ("exact", "bpda", "surrogate")


@dataclass
class DefenceOutput:
    """The candidates of a defended batch.

    videos:  (K, B, 3, F, H, W) in [0,1]; part of an autograd graph when made with grad=True.
    labels:  K ints naming the candidates (VideoPure: the paper's t of z_0^t; single-output defences: (0,)).
    timings: seconds per stage.
    """

    videos: Tensor
    labels: tuple[int, ...]
    timings: dict = field(default_factory=dict)


class Timer:
    """Accumulates seconds per stage: `timer("encode", fn, *args)` runs fn and books its time."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        return out


class Defence:
    """Base class: subclasses set the class attributes and implement `_candidates`.

    name:           how reports call it.
    gradient:       "exact" | "bpda" | "surrogate", how adaptive attacks differentiate it (module docstring).
    stochastic:     whether two calls with different generator states can disagree (EOT matters).
    differentiable: whether `candidates(..., grad=True)` is supported (the full-gradient attack needs it).
    """

    name: str = "defence"
    gradient: Gradient = "exact"
    stochastic: bool = False
    differentiable: bool = True

    def candidates(
        self, video: Tensor, generator: Optional[torch.Generator] = None, grad: bool = False, callback: Callback = None
    ) -> DefenceOutput:
        """video (B, 3, F, H, W) in [0,1] -> DefenceOutput with videos (K, B, 3, F, H, W).

        grad=False runs without autograd; grad=True keeps the graph from `video` to the candidates (raises for
        defences that are not differentiable).
        """
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"{self.name}: expected a video batch (B, 3, F, H, W), got shape {tuple(video.shape)}.")
        if grad and not self.differentiable:
            raise NotImplementedError(
                f"The {self.name} defence is not differentiable; attack it with BPDA (gradient='bpda') or its "
                f"surrogate instead of the exact gradient."
            )
        if grad:
            with torch.inference_mode(False), torch.enable_grad():
                return self._candidates(video, generator, True, callback)
        with torch.no_grad():
            return self._candidates(video, generator, False, callback)

    def _candidates(self, video: Tensor, generator: Optional[torch.Generator], grad: bool, callback: Callback) -> DefenceOutput:
        raise NotImplementedError

    def surrogate(self, video: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """A differentiable approximation (K, B, 3, F, H, W) of the candidates, for gradient='surrogate'."""
        raise NotImplementedError(f"The {self.name} defence has no surrogate; use gradient='bpda' or 'exact'.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, gradient={self.gradient!r}, stochastic={self.stochastic})"


def defended_vote(output: DefenceOutput, classifier: nn.Module, batch_size: int = 8) -> VoteResult:
    """Classify every candidate and take the majority: DefenceOutput (K, B, ...) -> VoteResult (logits (K, B, C))."""
    start = time.perf_counter()
    k, b = output.videos.shape[:2]
    logits = classify(classifier, output.videos.detach().flatten(0, 1), batch_size).reshape(k, b, -1)
    timings = {**output.timings, "classify": time.perf_counter() - start}
    return vote(logits, output.labels, timings)


def defend_and_vote(
    defence: Defence,
    classifier: nn.Module,
    video: Tensor,
    generator: Optional[torch.Generator] = None,
    callback: Callback = None,
    batch_size: int = 8,
) -> VoteResult:
    """The defended model's prediction: video (B, 3, F, H, W) in [0,1] -> VoteResult (winner (B,))."""
    return defended_vote(defence.candidates(video, generator, callback=callback), classifier, batch_size)
