"""No defence: the classifier sees the input as it is (the "None" row of Table I)."""

from __future__ import annotations

from .base import Defence, DefenceOutput


class NoDefence(Defence):
    """Identity: video (B, 3, F, H, W) -> one candidate (1, B, 3, F, H, W), the input itself."""

    name = "none"
    gradient = "exact"

    def _candidates(self, video, generator, grad, callback):
        return DefenceOutput(video.unsqueeze(0), (0,), {})
