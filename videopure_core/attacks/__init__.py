"""Adversarial attacks on video classifiers (and on defended classifiers), in [0,1] pixel space.

Videos are (B, 3, F, H, W) in [0,1]; an attack sees the model only through a gradient function
`grad_fn(x, y) -> (loss (B,), grad (B, 3, F, H, W))`, so the same PGD serves the bare classifier (gray-box),
BPDA, EOT and full-gradient attacks through a defence.
"""

from .base import GradFn, classifier_grad_fn
from .pgd import pgd

__all__ = ["GradFn", "classifier_grad_fn", "pgd"]
