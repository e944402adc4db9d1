"""The Purifier: the loaded models, the algorithm's config and the runtime, calling the pipeline.

    purifier = Purifier.from_pretrained("models/text-to-video-ms-1.7b", flow=load_raft("raft_large", "raft.pth"))
    result = purifier.predict(from_frames(frames), classifier)     # video (B, 3, F, H, W) in [0,1]
    print(result.winner, result.table())
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor, nn

from . import pipeline
from .config import PurifyConfig, Runtime
from .ddim import Callback
from .flow import FlowFn, RaftFlow
from .loading import DiffusionModels, load_diffusion
from .networks import FrameVAE, module_device_dtype, to_channels_last, unet_eps_fn
from .pipeline import Candidates, Hooks, Networks
from .schedule import make_schedule
from .video import check_video
from .vote import VoteResult


class Purifier:
    """VideoPure on one diffusion model: `purify(video) -> Candidates`, `predict(video, classifier) -> VoteResult`.

    models:  DiffusionModels (UNet3D, AutoencoderKL, scheduler config, empty-prompt embedding (1, L, D)).
    flow:    RaftFlow, a torchvision RAFT module (wrapped in RaftFlow with its defaults) or any FlowFn; may be
             None when the temporal loss is off.
    config:  PurifyConfig, what is computed.  runtime: Runtime, how the networks run. A runtime device or dtype
             is honoured: the networks are moved / cast to it (in place) when the Purifier is made.
    """

    def __init__(
        self,
        models: DiffusionModels,
        flow: Optional[nn.Module | FlowFn] = None,
        config: PurifyConfig = PurifyConfig(),
        runtime: Runtime = Runtime(),
    ):
        self.models, self.config, self.runtime = models, config, runtime
        self.flow = RaftFlow(flow) if _is_raft(flow) else flow
        self._place()
        self.schedule = make_schedule(models.scheduler_config, config.ddim_steps, config.t_star)
        r = runtime
        compiled = torch.compile(models.unet) if r.compile else None  # compiled once, on first use
        self._inference_eps = unet_eps_fn(models.unet, models.embedding, autocast=r.autocast_for("unet"),
                                          batch=r.unet_batch, compiled=compiled)
        self._inference_vae = FrameVAE(models.vae, autocast=r.autocast_for("vae"), channels_last=r.channels_last,
                                       compile=r.compile)

    def _place(self) -> None:
        """Honour the runtime's device and dtype: move the networks there (flow network: device only)."""
        device, dtype = self.runtime.torch_device, self.runtime.torch_dtype
        m = self.models
        with torch.inference_mode(False):  # parameters must stay usable by autograd (attacks)
            for module in (m.unet, m.vae):
                now = module_device_dtype(module)
                target = (device or now[0], dtype or now[1])
                if target != now:
                    module.to(*target)
            if device is not None and isinstance(self.flow, RaftFlow):
                self.flow.model.to(device)
        if self.runtime.channels_last:
            to_channels_last(m.unet), to_channels_last(m.vae)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        flow: Optional[nn.Module | FlowFn] = None,
        config: PurifyConfig = PurifyConfig(),
        runtime: Runtime = Runtime(),
        local_files_only: bool = True,
    ) -> "Purifier":
        """Load a ModelScope-style diffusers folder (or hub id, if downloads are allowed) into a Purifier, in the
        runtime's dtype (default float32) on its device (default CPU)."""
        dtype = runtime.torch_dtype or torch.float32
        device = runtime.torch_device or torch.device("cpu")
        models = load_diffusion(model, dtype, device, local_files_only=local_files_only)
        return cls(models, flow, config, runtime)

    def with_config(self, config: PurifyConfig | None = None, **options) -> "Purifier":
        """The same models under another config, or the same config with options changed (`with_options` names)."""
        config = config or self.config
        return Purifier(self.models, self.flow, config.with_options(**options) if options else config, self.runtime)

    @property
    def device(self) -> torch.device:
        return module_device_dtype(self.models.unet)[0]

    def networks(self, grad: bool = False, checkpoint: bool = True, flow_grad: bool = False) -> Networks:
        """The adapters the pipeline calls: without gradient (inference), or differentiable (`grad`, for the
        full-gradient attack, each UNet call and VAE chunk one checkpoint segment unless checkpoint=False;
        `flow_grad` also differentiates RAFT on the input). Differentiable networks run eagerly in their dtype."""
        r, m = self.runtime, self.models
        flow = self.flow
        if isinstance(flow, RaftFlow):
            flow = flow.replace(grad=flow_grad, autocast=None if grad else r.autocast_for("flow"))
        if grad:
            eps = unet_eps_fn(m.unet, m.embedding, grad=True, checkpoint=checkpoint, batch=r.unet_batch)
            vae = FrameVAE(m.vae, grad=True, checkpoint=checkpoint)
        else:
            eps, vae = self._inference_eps, self._inference_vae
        return Networks(eps, vae, flow, r.chunk, grad, flow_grad and grad)

    def estimate_memory(self, video_shape: tuple[int, ...], classifier: Optional[nn.Module] = None, batch_size: int = 8):
        """Memory per stage of purifying (and, with a classifier, voting on) videos of `video_shape` (B, 3, F, H, W),
        traced on meta copies of the networks (no weights copied, nothing computed): a memory.MemoryEstimate, whose
        `table()` is what `videopure purify` prints before a run on a GPU."""
        from .memory import estimate_memory, meta_models_of

        return estimate_memory(meta_models_of(self, classifier), tuple(video_shape), self.config, self.runtime,
                               batch_size, module_device_dtype(self.models.unet)[1])

    def prepare(self, video: Tensor) -> Tensor:
        """Validate a video (B, 3, F, H, W) or (3, F, H, W) in [0,1] and put it on the model device."""
        return check_video(video).to(self.device)

    def purify(self, video: Tensor, hooks: Hooks | Callback = None) -> Candidates:
        """VideoPure's purification: video (B, 3, F, H, W) in [0,1] -> Candidates (videos (K, B, 3, F, H, W)).

        `hooks`: pipeline.Hooks, or a `callback(stage, step, total)` for progress and interruption."""
        hooks = pipeline.as_hooks(hooks, self.device)
        return pipeline.purify(self.networks(), self.prepare(video), self.schedule, self.config, hooks)

    def vote(self, candidates: Candidates, classifier: nn.Module, batch_size: int = 8,
             hooks: Hooks | Callback = None) -> VoteResult:
        """Classify every candidate and take the majority per video."""
        return pipeline.vote_candidates(classifier, candidates, batch_size, pipeline.as_hooks(hooks, self.device))

    def predict(self, video: Tensor, classifier: nn.Module, hooks: Hooks | Callback = None, batch_size: int = 8) -> VoteResult:
        """Purify, classify every candidate and vote: video (B, 3, F, H, W) -> VoteResult (winner (B,))."""
        hooks = pipeline.as_hooks(hooks, self.device)
        return self.vote(self.purify(video, hooks), classifier, batch_size, hooks)


def _is_raft(flow) -> bool:
    from torchvision.models.optical_flow import RAFT

    return isinstance(flow, RAFT)
