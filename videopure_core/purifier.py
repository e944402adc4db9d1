"""The Purifier: loaded models + config, calling the stages of Algorithm 1 in order.

    purifier = Purifier.from_pretrained("models/text-to-video-ms-1.7b", flow=load_raft("raft_large", "raft.pth"))
    result = purifier.predict(video, classifier)      # video (F, H, W, 3) or (B, F, H, W, 3) in [0,1]
    print(result.winner, result.table())
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from .classifiers import classify
from .config import PurifyConfig
from .ddim import Callback, unet_eps_fn
from .denoise import guided_denoise
from .execution import CompiledVAE, compile_module, synchronize
from .execution import autocast as autocast_context
from .execution import to_channels_last as modules_to_channels_last
from .flow import FlowFn, LatentFlow, RaftFlow, latent_flow
from .inversion import ddim_invert
from .loading import load_diffusion
from .schedule import make_schedule
from .vae import decode_latents, encode_video
from .video import check_video, to_channels_first, to_channels_last
from .vote import VoteResult, vote


@dataclass
class Candidates:
    """Purified candidates of a batch of videos.

    videos:  (K, B, F, H, W, 3) in [0,1], one per voting candidate z_0^t.
    latents: (K, B, 4, F, h, w) float32.
    labels:  paper labels t of the K candidates (t_star ... 0, or the single selected one).
    timings: seconds per stage.
    """

    videos: Tensor
    latents: Tensor
    labels: tuple[int, ...]
    timings: dict = field(default_factory=dict)


class _Timer:
    """Seconds per stage; on CUDA it waits for the queued kernels at both ends so the times are honest."""

    def __init__(self, device: Optional[torch.device] = None):
        self.seconds: dict[str, float] = {}
        self.device = device

    def __call__(self, stage: str, fn, *args, **kwargs):
        if self.device is not None:
            synchronize(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        if self.device is not None:
            synchronize(self.device)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        return out


class Purifier:
    """Holds the UNet, VAE, empty-prompt embedding, flow estimator and config; runs VideoPure.

    unet: diffusers UNet3DConditionModel (or any module with its call signature); vae: AutoencoderKL;
    scheduler_config: dict for DDIMScheduler; embedding: (1, L, D); flow: a torchvision RAFT module (wrapped with
    the config's raft_iters / raft_input_range) or any FlowFn; may be None when the temporal loss is off.
    The execution options of the config (autocast, channels_last, compile, unet_batch, vae_tiling) change how the
    networks run, never what the stages compute; `unet` and `vae` stay the modules that were passed in.
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        scheduler_config: dict,
        embedding: Tensor,
        flow: Optional[nn.Module | FlowFn] = None,
        config: PurifyConfig = PurifyConfig(),
    ):
        self.unet, self.vae, self.embedding = unet, vae, embedding
        self.scheduler_config = dict(scheduler_config)
        self.flow_model = flow
        self.config = config
        self.schedule = make_schedule(self.scheduler_config, config.ddim_steps, config.t_star)
        self.flow_fn = self._as_flow_fn(flow, config)
        self._unet_run, self._vae_run = self._executors(unet, vae, config)
        self.eps_fn = unet_eps_fn(
            self._unet_run, embedding, autocast=config.autocast_for("unet"), batch=config.unet_batch
        )

    @staticmethod
    def _executors(unet: nn.Module, vae: nn.Module, config: PurifyConfig):
        """What the stages call for the UNet and the VAE: the modules, NHWC and/or torch.compile'd if configured."""
        if config.channels_last:
            modules_to_channels_last(unet), modules_to_channels_last(vae)
        if config.compile:
            return compile_module(unet, config.compile_mode), CompiledVAE(vae, config.compile_mode)
        return unet, vae

    @staticmethod
    def _as_flow_fn(flow, config: PurifyConfig) -> Optional[FlowFn]:
        from torchvision.models.optical_flow import RAFT

        if isinstance(flow, RAFT):
            return RaftFlow(flow, config.raft_iters, config.raft_input_range)
        return flow

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        flow: Optional[nn.Module | FlowFn] = None,
        config: PurifyConfig = PurifyConfig(),
        local_files_only: bool = True,
    ) -> "Purifier":
        """Load a ModelScope-style diffusers folder (or hub id, if downloads are allowed) into a Purifier."""
        m = load_diffusion(model, config.torch_dtype, config.torch_device, local_files_only=local_files_only)
        return cls(m.unet, m.vae, m.scheduler_config, m.embedding, flow, config)

    def with_config(self, config: PurifyConfig | None = None, **changes) -> "Purifier":
        """The same models under another config (e.g. an ablation of Table IV)."""
        config = (config or self.config).replace(**changes) if changes else (config or self.config)
        return Purifier(self.unet, self.vae, self.scheduler_config, self.embedding, self.flow_model, config)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # --- the stages, in the order of the paper ------------------------------------------------------------------

    def prepare(self, video: Tensor) -> Tensor:
        """Validate an edge video (F, H, W, 3) / (B, F, H, W, 3) in [0,1] -> (B, 3, F, H, W) on the model device."""
        return to_channels_first(check_video(video)).to(self.device)

    def encode(self, x: Tensor, callback: Callback = None) -> Tensor:
        """(B, 3, F, H, W) in [0,1] -> z0 (B, 4, F, H/8, W/8) float32."""
        c = self.config
        return encode_video(
            self._vae_run, x, c.encode_chunk, callback,
            autocast=c.autocast_for("vae"), channels_last=c.channels_last, tiled=c.vae_tiling,
        )

    def flow(self, x: Tensor, latent_size: tuple[int, int], callback: Callback = None) -> Optional[LatentFlow]:
        """Optical flow of the input video on the latent grid, or None when the temporal loss is off."""
        if not self.config.needs_flow:
            return None
        if self.flow_fn is None:
            raise ValueError(
                "The temporal loss (lambda_temp != 0) needs an optical-flow model: pass flow=load_raft(...) to the "
                "Purifier, or set lambda_temp=0 in the config."
            )
        c = self.config
        flow_fn = self.flow_fn if c.autocast_for("flow") is None else _autocast_flow(self.flow_fn, x.device, c.autocast)
        return latent_flow(flow_fn, x, latent_size, c.bidirectional, c.occlusion_mask, c.flow_chunk, callback)

    def invert(self, z0: Tensor, callback: Callback = None) -> Tensor:
        """Temporal DDIM inversion: z0 -> z_{t*}, (B, 4, F, h, w)."""
        c = self.config
        return ddim_invert(self.eps_fn, z0, self.schedule, c.temporal, c.noise_frame, callback)

    def denoise(self, z_start: Tensor, z0: Tensor, flow: Optional[LatentFlow], callback: Callback = None) -> Tensor:
        """Guided denoising -> the voting candidates' latents (K, B, 4, F, h, w), K = len(config.candidate_labels)."""
        candidates = guided_denoise(self.eps_fn, z_start, z0, flow, self.schedule, self.config, callback)
        if self.config.single_candidate is not None:
            candidates = candidates[self.config.t_star - self.config.single_candidate :][:1]
        return candidates

    def decode(self, latents: Tensor, callback: Callback = None) -> Tensor:
        """(K, B, 4, F, h, w) -> (K, B, 3, F, H, W) in [0,1], all candidates decoded in chunks of frames."""
        k, b, c = *latents.shape[:2], self.config
        out = decode_latents(
            self._vae_run, latents.flatten(0, 1), c.decode_chunk, callback,
            autocast=c.autocast_for("vae"), channels_last=c.channels_last, tiled=c.vae_tiling,
        )
        return out.reshape(k, b, *out.shape[1:])

    # --- whole pipeline ----------------------------------------------------------------------------------------

    def purify(self, video: Tensor, callback: Callback = None) -> Candidates:
        """VideoPure's purification: video (F, H, W, 3) or (B, F, H, W, 3) in [0,1] -> Candidates.

        `callback(stage, step, total)` hears every stage ("encode", "flow", "invert", "denoise", "decode").
        """
        timer = _Timer(self.device)
        with torch.no_grad():
            x = self.prepare(video)
            z0 = timer("encode", self.encode, x, callback)
            flow = timer("flow", self.flow, x, tuple(z0.shape[-2:]), callback)
            z_start = timer("invert", self.invert, z0, callback)
            latents = timer("denoise", self.denoise, z_start, z0, flow, callback)
            pixels = timer("decode", self.decode, latents, callback)
        return Candidates(to_channels_last(pixels), latents, self.config.candidate_labels, timer.seconds)

    def vote(
        self, candidates: Candidates, classifier: nn.Module, batch_size: int = 8, callback: Callback = None
    ) -> VoteResult:
        """Classify every candidate video (all K x B in batches) and take the majority per video."""
        timer = _Timer(self.device)
        k, b = candidates.videos.shape[:2]
        pixels = to_channels_first(candidates.videos.flatten(0, 1))
        logits = timer("classify", classify, classifier, pixels, batch_size, callback).reshape(k, b, -1)
        return vote(logits, candidates.labels, {**candidates.timings, **timer.seconds})

    def predict(self, video: Tensor, classifier: nn.Module, callback: Callback = None, batch_size: int = 8) -> VoteResult:
        """Purify, classify every candidate and vote: video (F, H, W, 3) or (B, F, H, W, 3) -> VoteResult."""
        return self.vote(self.purify(video, callback), classifier, batch_size, callback)


def _autocast_flow(flow_fn: FlowFn, device: torch.device, dtype: str) -> FlowFn:
    """A FlowFn running `flow_fn` under torch.autocast(dtype), returning float32 flow."""

    def run(image1: Tensor, image2: Tensor) -> Tensor:
        with autocast_context(device, dtype):
            return flow_fn(image1, image2).float()

    return run
