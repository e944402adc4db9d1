"""Algorithm 1 wired in one place: video (B, 3, F, H, W) in [0,1] -> Candidates -> VoteResult.

    nets = purifier.networks()                              # adapters: no-grad, or grad=True for attacks
    candidates = purify(nets, video, schedule, config, hooks)
    result = vote_candidates(classifier, candidates)

The stages, in the paper's order, each one core function run under the hooks:

    encode  (encode_video)   ->  flow  (latent_flow, on the input pixels)  ->  invert  (ddim_invert)
        ->  denoise  (denoise_steps, one candidate at a time)  ->  decode  (decode_latents)
    vote_candidates: classify every candidate, majority vote (Algorithm 1, lines 15-19)

The networks enter as adapters (`Networks`, built by `Purifier.networks` from networks.py): the same pipeline
runs them without gradient (inference), differentiably with checkpointing (the full-gradient attack), compiled or
under autocast. `Hooks` see every stage (timing), every progress tick (progress bars; raise from `progress` to
interrupt) and every candidate as it is made (previews). Everything else in the package that purifies (the
Purifier, the defences, the benchmark, the ComfyUI nodes) calls these functions.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .classifiers import classify
from .config import Guidance, PurifyConfig
from .ddim import Callback, EpsFn
from .denoise import denoise_steps
from .flow import FlowFn, LatentFlow, latent_flow
from .inversion import ddim_invert
from .networks import FrameVAE, synchronize
from .schedule import Schedule
from .vae import decode_latents, encode_video
from .vote import VoteResult, vote

STAGES = ("encode", "flow", "invert", "denoise", "decode", "classify")


@dataclass
class Networks:
    """The networks as the stages call them (a stage needs only its own: e.g. flow alone for `flow`).

    eps:   EpsFn, eps(z (B, 4, F, h, w), t) float32 -> float32.
    vae:   FrameVAE (per-frame encode to the posterior mean / decode).
    flow:  FlowFn (img1, img2) (N, 3, H, W) in [0,1] -> (N, 2, H, W) pixels, or None when the temporal loss is off.
    chunk: frames per VAE call and frame pairs per flow call (flow_chunk, when given, for the flow).
    grad:  whether the adapters are differentiable (then the guidance gradient stays in the autograd graph).
    flow_grad: whether the flow is differentiated too (else it is computed on the detached input).
    """

    eps: Optional[EpsFn] = None
    vae: Optional[FrameVAE] = None
    flow: Optional[FlowFn] = None
    chunk: int = 16
    grad: bool = False
    flow_grad: bool = False
    flow_chunk: Optional[int] = None


@dataclass
class Candidates:
    """The candidates of a defended batch, in voting order.

    videos:  (K, B, 3, F, H, W) in [0,1]; part of an autograd graph when made with differentiable networks.
             None for candidates not decoded yet (ComfyUI's stepwise nodes until Candidate Decode).
    latents: (K, B, 4, F, h, w) float32, or None for defences that work in pixel space.
    labels:  K ints naming the candidates (VideoPure: the paper's t of z_0^t; single-output defences: (0,)).
    timings: seconds per stage.
    """

    videos: Optional[Tensor]
    latents: Optional[Tensor]
    labels: tuple[int, ...]
    timings: dict = field(default_factory=dict)

    def pick(self, label: int) -> Tensor:
        """The videos (B, 3, F, H, W) of candidate z_0^label (-1: the last one made)."""
        if label == -1:
            return self.videos[-1]
        if label not in self.labels:
            raise ValueError(f"candidate={label} is not among the candidates z_0^t with t in {list(self.labels)}: "
                             f"pick one of those, or -1 for the last one made.")
        return self.videos[self.labels.index(label)]


class Hooks:
    """What the pipeline tells its caller. The base class times every stage (waiting for CUDA kernels at both
    ends, so the seconds are honest) and passes progress to `callback(stage, step, total)`; subclasses add
    memory measurement (the benchmark), progress bars, interruption (raise from `progress`) and previews
    (`candidate`)."""

    def __init__(self, callback: Callback = None, device: torch.device | str | None = None):
        self.callback, self.device = callback, device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def progress(self, stage: str, step: int, total: int) -> None:
        if self.callback is not None:
            self.callback(stage, step, total)

    def candidate(self, label: int, latent: Tensor) -> None:
        """Called with each candidate latent (B, 4, F, h, w) as soon as it is made."""


def as_hooks(hooks: Hooks | Callback = None, device=None) -> Hooks:
    """Hooks as given, or plain Hooks around a progress callback (or none)."""
    return hooks if isinstance(hooks, Hooks) else Hooks(hooks, device)


# --- the stages ---------------------------------------------------------------------------------------------------


def encode(nets: Networks, video: Tensor, hooks: Hooks) -> Tensor:
    """(B, 3, F, H, W) in [0,1] -> z0 (B, 4, F, H/8, W/8) float32 (Eq. 4)."""
    with hooks.stage("encode"):
        return encode_video(nets.vae, video, nets.chunk, hooks.progress)


def flow(nets: Networks, video: Tensor, latent_size: tuple[int, int], guidance: Guidance, hooks: Hooks) -> Optional[LatentFlow]:
    """Optical flow of the input video (B, 3, F, H, W) on the latent grid, or None when the temporal loss is off."""
    if not guidance.needs_flow:
        return None
    if nets.flow is None:
        raise ValueError(
            "The temporal loss (lambda_temp != 0) needs an optical-flow model: pass flow=load_raft(...) to the "
            "Purifier (or connect a RAFT model), or set lambda_temp=0."
        )
    source = video if nets.flow_grad else video.detach()
    with hooks.stage("flow"):
        return latent_flow(nets.flow, source, latent_size, guidance.bidirectional, guidance.occlusion_mask,
                           nets.flow_chunk or nets.chunk, hooks.progress)


def invert(nets: Networks, z0: Tensor, schedule: Schedule, config: PurifyConfig, hooks: Hooks) -> Tensor:
    """Temporal DDIM inversion (Eqs. 10-11): z0 -> z_{t*}, (B, 4, F, h, w)."""
    with hooks.stage("invert"):
        return ddim_invert(nets.eps, z0, schedule, config.temporal, config.noise_frame, hooks.progress)


def denoise(nets: Networks, z_start: Tensor, z0: Tensor, flow: Optional[LatentFlow], schedule: Schedule,
            config: PurifyConfig, hooks: Hooks) -> Tensor:
    """Guided denoising (Algorithm 1, lines 4-14) -> the voting candidates' latents (K, B, 4, F, h, w),
    K = len(config.candidate_labels); every candidate made is shown to `hooks.candidate`."""
    keep, total, made = config.candidate_labels, config.t_star + 1, []
    with hooks.stage("denoise"):
        for i, step in enumerate(denoise_steps(nets.eps, z_start, z0, flow, schedule, config, None, nets.grad)):
            hooks.candidate(step.label, step.candidate)
            if step.label in keep:
                made.append(step.candidate)
            hooks.progress("denoise", i + 1, total)
            if len(made) == len(keep):  # (single_candidate: the steps after it are not needed)
                break
    return torch.stack(made)


def decode(nets: Networks, latents: Tensor, hooks: Hooks) -> Tensor:
    """(K, B, 4, F, h, w) -> (K, B, 3, F, H, W) in [0,1], all candidates decoded together in chunks of frames."""
    k, b = latents.shape[:2]
    with hooks.stage("decode"):
        pixels = decode_latents(nets.vae, latents.flatten(0, 1), nets.chunk, hooks.progress)
    return pixels.reshape(k, b, *pixels.shape[1:])


def purify(nets: Networks, video: Tensor, schedule: Schedule, config: PurifyConfig, hooks: Hooks | Callback = None) -> Candidates:
    """VideoPure's purification (Algorithm 1, lines 2-14): video (B, 3, F, H, W) in [0,1] -> Candidates.

    With differentiable networks (`nets.grad`) the candidates stay in the autograd graph of `video`."""
    hooks = as_hooks(hooks)
    with contextlib.nullcontext() if nets.grad else torch.no_grad():
        z0 = encode(nets, video, hooks)
        lf = flow(nets, video, tuple(z0.shape[-2:]), config.guidance, hooks)
        z_start = invert(nets, z0, schedule, config, hooks)
        latents = denoise(nets, z_start, z0, lf, schedule, config, hooks)
        pixels = decode(nets, latents, hooks)
    return Candidates(pixels, latents, config.candidate_labels, dict(hooks.seconds))


def progress_steps(video_shape: tuple[int, ...], config: PurifyConfig, chunk: int = 16,
                   flow_chunk: Optional[int] = None, classify_batch: Optional[int] = None) -> dict[str, int]:
    """The `total` each stage of `purify` reports to `hooks.progress` for a video of shape (B, 3, F, H, W): one tick
    per VAE call of `chunk` frames (encode; decode, all K candidates), per flow call of `flow_chunk` pairs (twice with
    backward flow), per inversion step, per denoising step; with `classify_batch`, per classifier call of
    `vote_candidates`. Stages that do not run are left out. A progress bar made from it ticks once per network call."""
    b, f = int(video_shape[0]), int(video_shape[2])
    k = len(config.candidate_labels)
    steps = {"encode": -(-b * f // chunk)}
    if config.needs_flow:
        directions = 2 if config.guidance.needs_backward_flow else 1
        steps["flow"] = -(-b * (f - 1) // (flow_chunk or chunk)) * directions
    steps["invert"] = config.t_star
    steps["denoise"] = config.t_star + 1
    steps["decode"] = -(-k * b * f // chunk)
    if classify_batch:
        steps["classify"] = -(-k * b // classify_batch)
    return steps


def vote_candidates(classifier: nn.Module | Callable, candidates: Candidates, batch_size: int = 8,
                    hooks: Hooks | Callback = None) -> VoteResult:
    """Multi-step voting (Algorithm 1, lines 15-19): classify every candidate video (K x B, `batch_size` per call)
    and take the majority per video (ties to the smallest class) -> VoteResult with logits (K, B, C)."""
    hooks = as_hooks(hooks)
    k, b = candidates.videos.shape[:2]
    with hooks.stage("classify"):
        logits = classify(classifier, candidates.videos.detach().flatten(0, 1), batch_size, hooks.progress)
    return vote(logits.reshape(k, b, -1), candidates.labels, {**candidates.timings, **hooks.seconds})
