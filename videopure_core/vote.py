"""Multi-step voting (paper Section III-B-3, Algorithm 1 lines 15-19)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class VoteResult:
    """What the classifier said about each candidate, and the majority.

    logits:      (K, B, C) classifier logits per candidate and video.
    predictions: (K, B) argmax per candidate.
    counts:      (B, C) votes per class.
    winner:      (B,) the majority class; ties go to the smallest class index (release behaviour).
    candidate_labels: paper labels t of the K candidates z_0^t (t_star ... 0).
    timings:     seconds per stage of the run that produced it.
    """

    logits: Tensor
    predictions: Tensor
    counts: Tensor
    winner: Tensor
    candidate_labels: tuple[int, ...]
    timings: dict = field(default_factory=dict)

    def table(self, class_names: Optional[Sequence[str]] = None, video: int = 0) -> str:
        """A plain-text table of one video's per-candidate predictions and the vote."""
        name = (lambda c: class_names[c]) if class_names else str  # noqa: E731
        probs = self.logits[:, video].float().softmax(-1)
        lines = [f"{'candidate':>10}  {'prediction':<24} {'p':>6}"]
        for k, t in enumerate(self.candidate_labels):
            c = int(self.predictions[k, video])
            lines.append(f"{'z_0^' + str(t):>10}  {name(c):<24} {float(probs[k, c]):6.3f}")
        counts = self.counts[video]
        tally = ", ".join(f"{name(c)}: {int(n)}" for c, n in enumerate(counts.tolist()) if n)
        lines.append(f"{'votes':>10}  {tally}")
        lines.append(f"{'winner':>10}  {name(int(self.winner[video]))}")
        return "\n".join(lines)


def majority(predictions: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """predictions (K, B) int -> (counts (B, C), winner (B,)), ties to the smallest class index."""
    k, b = predictions.shape
    counts = torch.zeros(b, num_classes, dtype=torch.long, device=predictions.device)
    counts.scatter_add_(1, predictions.t().long(), torch.ones(b, k, dtype=torch.long, device=predictions.device))
    top = counts.max(1, keepdim=True).values
    classes = torch.arange(num_classes, device=predictions.device).expand(b, -1)
    winner = torch.where(counts == top, classes, num_classes).min(1).values
    return counts, winner


def vote(logits: Tensor, candidate_labels: Sequence[int], timings: Optional[dict] = None) -> VoteResult:
    """Majority vote over candidates: logits (K, B, C) -> VoteResult."""
    if logits.dim() != 3:
        raise ValueError(f"vote expects logits (K candidates, B videos, C classes), got shape {tuple(logits.shape)}.")
    if logits.shape[0] != len(candidate_labels):
        raise ValueError(f"{logits.shape[0]} candidates but {len(candidate_labels)} candidate labels.")
    predictions = logits.argmax(-1)
    counts, winner = majority(predictions, logits.shape[-1])
    return VoteResult(logits, predictions, counts, winner, tuple(candidate_labels), dict(timings or {}))
