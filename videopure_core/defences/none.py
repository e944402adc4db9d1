"""No defence: the classifier sees the input as it is (the "None" row of Table I)."""

from __future__ import annotations

from .base import Defence, one_candidate


class NoDefence(Defence):
    """Identity: video (B, 3, F, H, W) -> one candidate (1, B, 3, F, H, W), the input itself."""

    name = "none"
    gradient = "exact"
    defends = False

    def _candidates(self, video, generator, grad, hooks):
        return one_candidate(video)
