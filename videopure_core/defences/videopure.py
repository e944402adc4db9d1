"""VideoPure as a defence (the core pipeline, all t*+1 candidates vote), and the DDIM-inversion baseline.

Forward (grad=False) is exactly `Purifier.purify`. With grad=True the same pipeline runs on the Purifier's
differentiable networks for the full-gradient attack: checkpointed UNet calls and VAE chunks, the guided steps
kept in the autograd graph, and the flow of the input either held fixed (default) or differentiated through RAFT
(`flow_grad=True`). The declaration is BPDA: the exact gradient is the expensive full-gradient attack.

DDIM inversion (SPEC "Baselines"; Table IV's first row) is the same purifier with `config.DDIM_INVERSION`:
per-frame eps, t* steps up, t* DDIM steps down, one output.
"""

from __future__ import annotations

from .. import pipeline
from ..config import DDIM_INVERSION, PurifyConfig
from ..purifier import Purifier
from .base import Defence


class VideoPureDefence(Defence):
    """The core Purifier as a Defence: video (B, 3, F, H, W) -> candidates (K, B, 3, F, H, W), K = t*+1 by default."""

    name = "videopure"
    gradient = "bpda"
    stochastic = False
    differentiable = True

    def __init__(self, purifier: Purifier, name: str | None = None, flow_grad: bool = False, checkpoint: bool = True):
        self.purifier, self.flow_grad, self.checkpoint = purifier, flow_grad, checkpoint
        self.uses_flow = purifier.config.needs_flow
        if name:
            self.name = name

    @property
    def config(self) -> PurifyConfig:
        return self.purifier.config

    def _candidates(self, video, generator, grad, hooks):
        p = self.purifier
        if not grad:
            return p.purify(video, hooks)
        nets = p.networks(grad=True, checkpoint=self.checkpoint, flow_grad=self.flow_grad)
        return pipeline.purify(nets, video.to(p.device), p.schedule, p.config, hooks)


def ddim_inversion_defence(purifier: Purifier, name: str = "ddim-inversion", checkpoint: bool = True) -> VideoPureDefence:
    """The DDIM-inversion baseline: the same models with plain inversion, no guidance, one output."""
    return VideoPureDefence(purifier.with_config(**DDIM_INVERSION), name=name, checkpoint=checkpoint)
