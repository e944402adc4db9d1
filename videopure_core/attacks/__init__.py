"""Adversarial attacks on video classifiers (and on defended classifiers), in [0,1] pixel space.

Videos are (B, 3, F, H, W) in [0,1]; an attack sees the model only through a gradient function
`grad_fn(x, y) -> (loss (B,), grad (B, 3, F, H, W))`, so the one PGD serves every attack:

    classifier_grad_fn(classifier)                      gray-box: the bare classifier (Robust Acc*)
    defence_grad_fn(classifier, defence, generator)     adaptive, as the defence declares: exact / BPDA / surrogate
    bpda_grad_fn(...)                                   BPDA with the identity, averaged over candidates
    eot_grad_fn(grad_fn, reps)                          EOT: averaged over draws of a random defence (batched)
    tt_grad_fn(grad_fn, shift)                          TT: averaged over temporally translated copies (batched)
    full_gradient_grad_fn(classifier, defence)          exact gradient through the whole purifier (checkpointed)
    diffattack_grad_fn(classifier, defence, reference)  + DiffAttack's deviated-reconstruction loss
    flow_deviation_grad_fn(flow_fn, reference_flow)     moves the optical flow of the input (Table VI)
    pgd(..., momentum=1.0)                              MI-FGSM (the black-box TT+MI)
    autoattack(classifier, defence, x, y, eps)          AutoAttack 'rand' with ART (optional dependency)

    x_adv, losses = pgd(eot_grad_fn(defence_grad_fn(classifier, defence, g), 20), x, y)   # EOT+BPDA

`IteratePredictions` collects the defended vote at every PGD iterate for "any iterate succeeds" counting.
"""

from .adaptive import candidates_loss_grad, defence_grad_fn, exact_grad_fn, surrogate_grad_fn
from .autoattack import DefendedModel, autoattack
from .base import GradFn, classifier_grad_fn
from .bpda import bpda_grad_fn, candidates_ce_grad
from .diffattack import Trajectory, deviation_loss, diffattack_grad_fn, reconstruction_trajectory
from .eot import eot_grad_fn
from .flowdev import differentiable_flow, flow_deviation_grad_fn, reference_flow, sum_grad_fns
from .full import full_gradient_grad_fn
from .iterates import IteratePredictions
from .pgd import pgd, project, random_start_point
from .sanity import SanityWarning, ZeroGradientCheck, check_eot
from .tt import tt_grad_fn, tt_weights

__all__ = [n for n in dir() if not n.startswith("_")]
