"""The defended prediction at every PGD iterate, for "any iterate succeeds" counting (Lee & Kim, 2023; Carlini).

A video counts as broken when the defended model was wrong at *any* iterate of the attack, not only at the last
one: PGD on a defended model does not climb monotonically, and an attacker keeps the first input that fools it.
Knowing the defended prediction at iterate i normally costs one defence run per iterate, but the adaptive
attacks already run the defence on x_i in their forward pass (BPDA, EOT, the full gradient, and TT at shift 0),
so the vote of those candidates is free. `IteratePredictions` collects it:

    probe = IteratePredictions()
    x_adv, losses = pgd(bpda_grad_fn(classifier, defence, probe=probe), x, y, probe=probe)
    probe.predictions          # (steps, B) defended votes at x_0 .. x_{steps-1}; the runner adds x_steps

PGD arms the probe with the batch size before each gradient call; the first gradient function that sees the
candidates of the un-transformed input offers their logits (K, N, C) and the probe keeps the vote of the first B
videos (EOT and TT put draw 0 / shift 0 first in their expanded batches, so those rows are x_i itself). Later
offers in the same call (other draws or shifts) are ignored. For a stochastic defence the vote is one draw of the
defence at x_i, as an attacker submitting x_i would see.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..vote import majority


class IteratePredictions:
    """Votes of the defended model at each PGD iterate, offered by the gradient functions (module docstring)."""

    def __init__(self):
        self._armed: Optional[int] = None
        self._current: Optional[Tensor] = None
        self.rows: list[Optional[Tensor]] = []

    def arm(self, batch: int) -> None:
        """Expect the candidates of the next `batch` un-transformed videos."""
        self._armed, self._current = batch, None

    def offer(self, logits: Tensor) -> None:
        """Candidate logits (K, N, C) of a defence run; the first offer after `arm` keeps the vote of rows :B."""
        if self._armed is None:
            return
        b = self._armed
        self._armed = None
        if logits.shape[1] < b:
            return
        _, winner = majority(logits[:, :b].detach().argmax(-1), logits.shape[-1])
        self._current = winner.cpu()

    def collect(self) -> None:
        """Close the current iterate (None when no gradient function offered candidates)."""
        self.rows.append(self._current)
        self._armed, self._current = None, None

    @property
    def predictions(self) -> Optional[Tensor]:
        """(iterates, B) votes, or None unless every iterate has one."""
        if not self.rows or any(r is None for r in self.rows):
            return None
        return torch.stack(self.rows)
