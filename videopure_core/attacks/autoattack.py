"""AutoAttack (Croce & Hein, 2020) through the defence, with the Adversarial Robustness Toolbox's implementation.

The paper's Table II runs AutoAttack "with the default *rand* setting" (APGD-CE and APGD-DLR, one restart each,
100 iterations, EOT over 20 draws) through BPDA. The attacks here are ART's (`art.attacks.evasion.AutoAttack` over
two `AutoProjectedGradientDescent`s, losses "cross_entropy" and "difference_logits_ratio"); this module only
builds the model they attack (`pip install videopure[autoattack]`: adversarial-robustness-toolbox, and
multiprocess, which ART's AutoAttack imports).

`DefendedModel` is that model: video (B, 3, F, H, W) in [0,1] -> scores (B, C), where the defence runs forward
as it is and the backward pass follows the defence's declaration: the exact gradient ("exact"), the identity
("bpda": `x + (candidate - x).detach()`, i.e. a straight-through estimator) or its surrogate ("surrogate":
`surrogate + (candidate - surrogate).detach()`). The scores are the mean over candidates (and EOT draws) of the
classifier's log-softmax, a soft version of the vote whose cross-entropy is the mean cross-entropy over candidates
and draws up to a term that is zero when they agree; EOT draws are extra batch entries of one defence call, so the
gradient ART takes of this model is the EOT+BPDA gradient. ART's own success checks use these scores; the
evaluation judges the returned videos with the real vote.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn


def require_art():
    try:
        import art  # noqa: F401
        import multiprocess  # noqa: F401
    except ImportError:
        raise ImportError(
            "AutoAttack (Table II) uses the Adversarial Robustness Toolbox: `pip install videopure[autoattack]` (or "
            "`pip install adversarial-robustness-toolbox multiprocess`)."
        ) from None


class DefendedModel(nn.Module):
    """The defended classifier as one differentiable module for ART (module docstring)."""

    def __init__(self, classifier: nn.Module, defence, eot_reps: int = 1, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.classifier, self.defence, self.eot_reps, self.generator = classifier, defence, eot_reps, generator

    def train(self, mode: bool = True):  # ART toggles train/eval; the classifier stays in eval mode
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        reps = self.eot_reps if self.defence.stochastic else 1
        xr = x.repeat(reps, *[1] * (x.dim() - 1))
        how = self.defence.gradient
        if how == "exact":
            videos = self.defence.candidates(xr, self.generator, grad=True).videos
        else:
            with torch.no_grad():
                out = self.defence.candidates(xr.detach(), self.generator).videos.to(x)
            base = xr.unsqueeze(0) if how == "bpda" else self.defence.surrogate(xr, self.generator)
            videos = base + (out - base).detach()
        k = videos.shape[0]
        logp = self.classifier(videos.flatten(0, 1)).log_softmax(-1)
        return logp.view(k, reps, b, -1).mean((0, 1))


def autoattack(classifier: nn.Module, defence, x: Tensor, y: Tensor, eps: float, steps: int = 100,
               eot_reps: int = 20, norm: str = "linf", seed: int = 0, generator: Optional[torch.Generator] = None,
               num_classes: Optional[int] = None) -> Tensor:
    """AutoAttack 'rand' (APGD-CE + APGD-DLR, 1 restart, `steps` iterations, EOT over `eot_reps` draws of a
    stochastic defence) with ART on videos x (B, 3, F, H, W), labels y (B,) -> adversarial videos."""
    require_art()
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    model = DefendedModel(classifier, defence, eot_reps, generator)
    with torch.no_grad():
        classes = num_classes or model.classifier(x[:1].to(x.device)).shape[-1]
    art_norm = np.inf if norm == "linf" else 2
    device_type = "gpu" if x.device.type == "cuda" else "cpu"
    estimator = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                  nb_classes=classes, clip_values=(0.0, 1.0), device_type=device_type)
    np.random.seed(seed)  # ART draws its random starts from numpy's global generator
    attacks = [AutoProjectedGradientDescent(estimator=estimator, norm=art_norm, eps=eps, eps_step=2 * eps,
                                            max_iter=steps, targeted=False, nb_random_init=1, batch_size=x.shape[0],
                                            loss_type=loss, verbose=False)
               for loss in ("cross_entropy", "difference_logits_ratio")]
    attack = AutoAttack(estimator=estimator, norm=art_norm, eps=eps, eps_step=2 * eps, attacks=attacks,
                        batch_size=x.shape[0])
    adv = attack.generate(x.detach().cpu().numpy().astype(np.float32), y=y.detach().cpu().numpy())
    return torch.from_numpy(adv).to(x)
