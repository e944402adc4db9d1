"""VideoPure as a defence (the core pipeline, all t*+1 candidates vote), and the DDIM-inversion baseline.

Forward (grad=False) is exactly `Purifier.purify`. With grad=True the same pipeline runs on the Purifier's
differentiable networks for the full-gradient attack: checkpointed UNet calls and VAE chunks, the guided steps
kept in the autograd graph, and the flow of the input either held fixed (default) or differentiated through RAFT
(`flow_grad=True`). The declaration is BPDA: the exact gradient is the expensive full-gradient attack.

DDIM inversion (SPEC "Baselines"; Table IV's first row) is the same purifier with `config.DDIM_INVERSION`:
per-frame eps, t* steps up, t* DDIM steps down, one output.

Flow of repeated frame pairs is computed once (`UniqueFlow`): the attacks batch TT's temporally shifted copies and
EOT's draws as extra videos, whose frame pairs repeat (a cyclic shift of a video has the same consecutive pairs
but one), so RAFT runs on the distinct pairs of the whole batch only. Same flow, up to float rounding of another
batch composition (tested).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .. import pipeline
from ..config import DDIM_INVERSION, PurifyConfig
from ..purifier import Purifier
from .base import Defence


class UniqueFlow:
    """A FlowFn that runs `flow_fn` once per distinct (image1, image2) pair of its batch, `chunk` pairs per call,
    and scatters the flows back: (N, 3, H, W) x 2 -> (N, 2, H, W)."""

    def __init__(self, flow_fn, chunk: int = 16):
        self.flow_fn, self.chunk = flow_fn, chunk

    def __call__(self, image1: Tensor, image2: Tensor) -> Tensor:
        n = image1.shape[0]
        pairs = torch.cat([image1.reshape(n, -1), image2.reshape(n, -1)], 1)
        unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
        if unique.shape[0] == n:
            order = range(n)
            first = torch.arange(n)
        else:
            first = torch.full((unique.shape[0],), n, dtype=torch.long)
            first.scatter_reduce_(0, inverse.cpu(), torch.arange(n), reduce="amin")
            order = first.tolist()
        index = torch.as_tensor(list(order), device=image1.device)
        a, b = image1[index], image2[index]
        flows = torch.cat([self.flow_fn(p, q) for p, q in zip(a.split(self.chunk), b.split(self.chunk))])
        if unique.shape[0] == n:
            return flows
        return flows[inverse.to(flows.device)]


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
        nets = p.networks(grad=True, checkpoint=self.checkpoint, flow_grad=self.flow_grad) if grad else p.networks()
        if nets.flow is not None and not nets.flow_grad:  # RAFT once per distinct frame pair of the whole batch
            chunk = nets.flow_chunk or nets.chunk
            nets = dataclasses.replace(nets, flow=UniqueFlow(nets.flow, chunk), flow_chunk=max(1, video.shape[0]) * video.shape[2])
        video = video.to(p.device) if grad else p.prepare(video)
        return pipeline.purify(nets, video, p.schedule, p.config, pipeline.as_hooks(hooks, p.device))


def ddim_inversion_defence(purifier: Purifier, name: str = "ddim-inversion", checkpoint: bool = True) -> VideoPureDefence:
    """The DDIM-inversion baseline: the same models with plain inversion, no guidance, one output."""
    return VideoPureDefence(purifier.with_config(**DDIM_INVERSION), name=name, checkpoint=checkpoint)
