"""How the evaluation runner wires EOT: a stochastic defence is drawn `eot_reps` times per gradient (issue 15, item 4).

The record's `eot_reps` field is what the runner says it did; these tests count what the defence saw.
"""

import pytest
import torch
from torch import nn

from videopure_core.attacks import SanityWarning, classifier_grad_fn
from videopure_core.defences import Defence, one_candidate
from videopure_core.evaluation import AttackSettings
from videopure_core.evaluation.runner import attack_grad_fn, craft


class CountingNoisyDefence(Defence):
    """Stochastic defence x + 0.05 N(0, 1) from the generator; records every draw's noise.

    The runner may batch EOT draws as extra videos (one call on reps x B videos), so a draw is counted per clip
    pair: each call's noise is split into chunks of `clip_batch` videos, one chunk per draw."""

    clip_batch = 2  # clips() has two videos

    name = "counting-noisy"
    gradient = "bpda"
    stochastic = True

    def __init__(self):
        self.draws = []

    def _candidates(self, video, generator, grad, hooks):
        noise = torch.randn(video.shape, generator=generator) * 0.05
        self.draws.extend(noise.split(self.clip_batch))
        return one_candidate(video + noise)


class CountingDeterministicDefence(CountingNoisyDefence):
    name = "counting-fixed"
    stochastic = False

    def _candidates(self, video, generator, grad, hooks):
        self.draws.extend([torch.zeros(())] * (video.shape[0] // self.clip_batch))
        return one_candidate(video.flip(-1))


def classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Linear(4, 5)).eval().requires_grad_(False)


def clips():
    return torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 3])


def distinct(draws) -> bool:
    return all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1:])


def test_eot_bpda_gradient_is_the_mean_over_eot_reps_fresh_draws():
    x, y = clips()
    model, defence = classifier(), CountingNoisyDefence()
    generator = torch.Generator().manual_seed(7)
    grad_fn, info = attack_grad_fn("eot+bpda", model, defence, AttackSettings(eot_reps=3), generator)
    loss, grad = grad_fn(x, y)
    assert info["eot_reps"] == 3 and info["gradient"] == "bpda"
    assert len(defence.draws) == 3 and distinct(defence.draws)  # three draws, each its own randomness
    # BPDA of each draw: the classifier's gradient at that draw's candidate; EOT: their mean
    parts = [classifier_grad_fn(model)(x + noise, y) for noise in defence.draws]
    assert torch.allclose(loss, torch.stack([p[0] for p in parts]).mean(0), atol=1e-6)
    assert torch.allclose(grad, torch.stack([p[1] for p in parts]).mean(0), atol=1e-7)
    # and the mean of three draws is not any one of them
    assert all(not torch.allclose(grad, p[1], atol=1e-7) for p in parts)


def test_eot_bpda_on_a_deterministic_defence_draws_once():
    x, y = clips()
    defence = CountingDeterministicDefence()
    grad_fn, info = attack_grad_fn("eot+bpda", classifier(), defence, AttackSettings(eot_reps=3), None)
    grad_fn(x, y)
    assert info["eot_reps"] == 1 and len(defence.draws) == 1


def test_crafting_eot_bpda_draws_eot_reps_times_per_pgd_step():
    x, y = clips()
    defence = CountingNoisyDefence()
    settings = AttackSettings(steps=2, eot_reps=3)
    x_adv, losses, info = craft("eot+bpda", x, y, ["a", "b"], classifier(), defence, settings,
                                torch.Generator().manual_seed(7))
    assert info["eot_reps"] == 3 and losses.shape == (2, 2)
    assert len(defence.draws) == 2 * 3 and distinct(defence.draws)  # steps x eot_reps, never the same draw twice
    # without EOT (pgd+bpda) the same attack draws once per step
    once = CountingNoisyDefence()
    with pytest.warns(SanityWarning, match="stochastic but attacked with one draw"):
        craft("pgd+bpda", x, y, ["a", "b"], classifier(), once, settings, torch.Generator().manual_seed(7))
    assert len(once.draws) == 2


def test_pgd_full_on_a_stochastic_defence_draws_full_eot_reps_times_per_step():
    class Differentiable(CountingNoisyDefence):  # declared BPDA, differentiable: pgd+full applies to it
        name = "counting-differentiable"

    x, y = clips()
    defence = Differentiable()
    settings = AttackSettings(steps=2, full_eot_reps=4)
    _, _, info = craft("pgd+full", x, y, ["a", "b"], classifier(), defence, settings, torch.Generator().manual_seed(7))
    assert info["eot_reps"] == 4 and len(defence.draws) == 2 * 4 and distinct(defence.draws)
