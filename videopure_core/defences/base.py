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

Candidates are the pipeline's (`videopure_core.pipeline.Candidates`); the vote is the pipeline's
`vote_candidates`. `differentiable` says whether `candidates(..., grad=True)` builds an autograd graph at all; the full-gradient
adaptive attack (DiffAttack-style) uses it for the diffusion defences, whose declaration is "bpda" because the
exact gradient costs a backward pass through every UNet call.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor, nn

from ..ddim import Callback
from ..pipeline import Candidates, Hooks, as_hooks, vote_candidates
from ..vote import VoteResult

Gradient = Literal["exact", "bpda", "surrogate"]
GRADIENTS: tuple[str, ...] = ("exact", "bpda", "surrogate")


class Defence:
    """Base class: subclasses set the class attributes and implement `_candidates`.

    name:           how reports call it.
    gradient:       "exact" | "bpda" | "surrogate", how adaptive attacks differentiate it (module docstring).
    stochastic:     whether two calls with different generator states can disagree (EOT matters).
    differentiable: whether `candidates(..., grad=True)` is supported (the full-gradient attack needs it).
    defends:        False for the undefended model, whose adaptive attacks are the gray-box ones.
    uses_flow:      whether it computes optical flow of the input; then `flow_grad` says whether exact-gradient
                    attacks differentiate through the flow network too (Table VI) or hold the flow fixed.
    """

    name: str = "defence"
    gradient: Gradient = "exact"
    stochastic: bool = False
    differentiable: bool = True
    defends: bool = True
    uses_flow: bool = False
    flow_grad: bool = False

    def candidates(
        self, video: Tensor, generator: Optional[torch.Generator] = None, grad: bool = False,
        hooks: Hooks | Callback = None,
    ) -> Candidates:
        """video (B, 3, F, H, W) in [0,1] -> Candidates with videos (K, B, 3, F, H, W).

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
        hooks = as_hooks(hooks)
        if grad:
            with torch.inference_mode(False), torch.enable_grad():
                return self._candidates(video, generator, True, hooks)
        with torch.no_grad():
            return self._candidates(video, generator, False, hooks)

    def _candidates(self, video: Tensor, generator: Optional[torch.Generator], grad: bool, hooks: Hooks) -> Candidates:
        raise NotImplementedError

    def surrogate(self, video: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """A differentiable approximation (K, B, 3, F, H, W) of the candidates, for gradient='surrogate'."""
        raise NotImplementedError(f"The {self.name} defence has no surrogate; use gradient='bpda' or 'exact'.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, gradient={self.gradient!r}, stochastic={self.stochastic})"


def one_candidate(videos: Tensor, hooks: Optional[Hooks] = None) -> Candidates:
    """The Candidates of a single-output defence: videos (B, 3, F, H, W) -> K = 1, label 0."""
    return Candidates(videos.unsqueeze(0), None, (0,), dict(hooks.seconds) if hooks is not None else {})


def defend_and_vote(
    defence: Defence,
    classifier: nn.Module,
    video: Tensor,
    generator: Optional[torch.Generator] = None,
    hooks: Hooks | Callback = None,
    batch_size: int = 8,
) -> VoteResult:
    """The defended model's prediction: video (B, 3, F, H, W) in [0,1] -> VoteResult (winner (B,))."""
    hooks = as_hooks(hooks)
    return vote_candidates(classifier, defence.candidates(video, generator, hooks=hooks), batch_size, hooks)
