"""VideoPure as a defence (the core Purifier: all t*+1 candidates vote), and the DDIM-inversion baseline.

Forward (grad=False) is exactly `Purifier.purify`. With grad=True the same stages run differentiably for the
full-gradient attack: checkpointed UNet calls and VAE chunks (`attacks.full`), the guided steps with
create_graph=True, and the flow of the input either held fixed (default) or differentiated through RAFT
(`flow_grad=True`). The declaration is BPDA: the exact gradient is the expensive full-gradient attack.

DDIM inversion (SPEC "Baselines"; Table IV's first row) is the same purifier with
`temporal=False, guidance=False, single_candidate=0`: per-frame eps, t* steps up, t* DDIM steps down, one output.
"""

from __future__ import annotations

from ..config import PurifyConfig
from ..denoise import guided_denoise
from ..flow import latent_flow
from ..inversion import ddim_invert
from ..purifier import Purifier
from ..video import to_channels_last
from .base import Defence, DefenceOutput, Timer

DDIM_INVERSION = dict(temporal=False, guidance=False, single_candidate=0)


class VideoPureDefence(Defence):
    """The core Purifier as a Defence: video (B, 3, F, H, W) -> candidates (K, B, 3, F, H, W), K = t*+1 by default."""

    name = "videopure"
    gradient = "bpda"
    stochastic = False
    differentiable = True

    def __init__(self, purifier: Purifier, name: str | None = None, flow_grad: bool = False, checkpoint: bool = True):
        self.purifier, self.flow_grad, self.checkpoint = purifier, flow_grad, checkpoint
        if name:
            self.name = name

    @property
    def config(self) -> PurifyConfig:
        return self.purifier.config

    def _candidates(self, video, generator, grad, callback):
        if not grad:
            out = self.purifier.purify(to_channels_last(video), callback)
            return DefenceOutput(out.videos.movedim(-1, -4).to(video.device), out.labels, out.timings)
        return self._differentiable(video, callback)

    def _differentiable(self, video, callback):
        from ..attacks.full import checkpointed_decode, checkpointed_encode, differentiable_eps_fn, differentiable_flow_fn

        p, c, timer = self.purifier, self.purifier.config, Timer()
        eps_fn = differentiable_eps_fn(p.unet, p.embedding, self.checkpoint)
        x = video.to(p.device)
        z0 = timer("encode", checkpointed_encode, p.vae, x, c.encode_chunk, self.checkpoint)
        flow = None
        if c.needs_flow:
            if p.flow_fn is None:
                p.flow(x, tuple(z0.shape[-2:]))  # raises the purifier's error naming the fix
            flow_fn = differentiable_flow_fn(p.flow_fn) if self.flow_grad else p.flow_fn
            source = x if self.flow_grad else x.detach()
            flow = timer("flow", latent_flow, flow_fn, source, tuple(z0.shape[-2:]), c.bidirectional, c.occlusion_mask, c.flow_chunk)
        z_start = timer("invert", ddim_invert, eps_fn, z0, p.schedule, c.temporal, c.noise_frame, callback)
        latents = timer("denoise", guided_denoise, eps_fn, z_start, z0, flow, p.schedule, c, callback, True)
        if c.single_candidate is not None:
            latents = latents[c.t_star - c.single_candidate :][:1]
        k, b = latents.shape[:2]
        pixels = timer("decode", checkpointed_decode, p.vae, latents.flatten(0, 1), c.decode_chunk, self.checkpoint)
        return DefenceOutput(pixels.reshape(k, b, *pixels.shape[1:]), c.candidate_labels, timer.seconds)


def ddim_inversion_defence(purifier: Purifier, name: str = "ddim-inversion") -> VideoPureDefence:
    """The DDIM-inversion baseline: the same models with plain inversion, no guidance, one output."""
    return VideoPureDefence(purifier.with_config(**DDIM_INVERSION), name=name)
