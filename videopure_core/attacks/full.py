"""The full-gradient adaptive attack: exact gradients through the whole purifier (DiffAttack-style, Kang et al., 2023).

The defence runs the pipeline on the Purifier's differentiable networks (`Purifier.networks(grad=True)`): every
UNet call and every VAE chunk is one `torch.utils.checkpoint` segment, and the guided steps keep their guidance
gradient in the graph, so backpropagating through encode, (temporal) DDIM inversion, every guided denoising step,
decode and the classifier stores only the latents between calls and recomputes each call's activations during the
backward pass: memory grows with the number of steps times one latent, not times the UNet's activations.

Optical flow: by default (`flow_grad=False`) the flow of the input is held fixed during differentiation (computed
on the detached input), as if the attacker treated RAFT as a constant; `flow_grad=True` also differentiates RAFT
on the input, which makes the flow itself an attack surface (Table VI) and costs a backward pass through RAFT's
refinement iterations.

    grad_fn = full_gradient_grad_fn(classifier, VideoPureDefence(purifier))
    x_adv, losses = pgd(grad_fn, x, y)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .base import GradFn


def full_gradient_grad_fn(classifier: nn.Module, defence, generator: Optional[torch.Generator] = None,
                          probe=None) -> GradFn:
    """Exact gradient through a differentiable defence (`defence.candidates(..., grad=True)`) and the classifier.

    The attacker's loss is the cross-entropy averaged over the K candidates (the vote itself has no gradient).
    """
    if not defence.differentiable:
        raise ValueError(
            f"The {defence.name} defence is not differentiable, so there is no full gradient; attack it with "
            f"BPDA or its surrogate (defence_grad_fn)."
        )
    from .adaptive import exact_grad_fn

    return exact_grad_fn(classifier, defence, generator, probe)
