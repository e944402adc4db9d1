"""Adversarial attacks on video classifiers (and on defended classifiers), in [0,1] pixel space.

Videos are (B, 3, F, H, W) in [0,1]; an attack sees the model only through a gradient function
`grad_fn(x, y) -> (loss (B,), grad (B, 3, F, H, W))`, so the one PGD serves every attack:

    classifier_grad_fn(classifier)                      gray-box: the bare classifier (Robust Acc*)
    defence_grad_fn(classifier, defence, generator)     adaptive, as the defence declares: exact / BPDA / surrogate
    bpda_grad_fn(...)                                   BPDA with the identity, averaged over candidates
    eot_grad_fn(grad_fn, reps)                          EOT: averaged over draws of a random defence
    tt_grad_fn(grad_fn, shift)                          TT: averaged over temporally translated copies
    full_gradient_grad_fn(classifier, defence)          exact gradient through the whole purifier (checkpointed)

    x_adv, losses = pgd(eot_grad_fn(defence_grad_fn(classifier, defence, g), 20), x, y)   # EOT+BPDA
"""

from .adaptive import defence_grad_fn, exact_grad_fn, surrogate_grad_fn
from .base import GradFn, classifier_grad_fn
from .bpda import bpda_grad_fn
from .eot import eot_grad_fn
from .full import full_gradient_grad_fn
from .pgd import pgd, project, random_start_point
from .sanity import SanityWarning, ZeroGradientCheck, check_eot
from .tt import tt_grad_fn, tt_weights

__all__ = [
    "GradFn",
    "SanityWarning",
    "ZeroGradientCheck",
    "bpda_grad_fn",
    "check_eot",
    "classifier_grad_fn",
    "defence_grad_fn",
    "eot_grad_fn",
    "exact_grad_fn",
    "full_gradient_grad_fn",
    "pgd",
    "project",
    "random_start_point",
    "surrogate_grad_fn",
    "tt_grad_fn",
    "tt_weights",
]
