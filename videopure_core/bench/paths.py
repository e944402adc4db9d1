"""The two paths the benchmark compares, both made of the core stage functions, stage by stage under a StageMeter.

naive: what the authors' release does, in float32: the VAE encodes one frame per call; classifier-free guidance
       with two identical empty prompts, i.e. a UNet batch of 2 per step (`cfg_eps_fn`); every candidate decoded
       on its own, one frame per call; the classifier called once per candidate. RAFT runs once per video on all
       frame pairs (as in the release).
fast:  the Purifier as users run it (`Purifier.encode/flow/invert/denoise/decode`, the order of `purify`), with the
       fast execution options of its config (`fast_options`): one UNet call per step, candidates decoded together
       in chunks of frames, the classifier on all candidates in one batch, autocast / NHWC / compile as configured.
Both produce (K, B, C) logits that go through the same `vote`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from .. import pipeline
from ..config import PurifyConfig, Runtime
from ..ddim import EpsFn
from ..flow import RaftFlow
from ..loading import DiffusionModels
from ..networks import FrameVAE, unet_eps_fn
from ..purifier import Purifier
from ..schedule import make_schedule
from ..video import check_video
from ..vote import VoteResult, vote
from .measure import StageMeter, cpu_has_native_bf16
from .models import BenchModels

RELEASE_GUIDANCE_SCALE = 9.0  # the ModelScope pipeline's default; with identical prompts every scale gives eps_u


def cfg_eps_fn(unet, embedding: Tensor, guidance_scale: float = RELEASE_GUIDANCE_SCALE) -> EpsFn:
    """Classifier-free guidance as the release runs it, for the naive reference only.

    The latents go through the UNet twice in one batch, [z, z] with the embeddings [empty, empty], and
    eps = eps_u + s (eps_c - eps_u): since both prompts are the empty one this is eps_u at twice the UNet work.
    """
    twice = unet_eps_fn(unet, embedding)

    def eps_fn(z: Tensor, t: int) -> Tensor:
        eps_u, eps_c = twice(torch.cat([z, z]), t).chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    return eps_fn


def naive_networks(models: BenchModels, frames: int) -> pipeline.Networks:
    """The release's way of running the networks: CFG batch of 2, one VAE frame per call, RAFT on all pairs at once."""
    d = models.diffusion
    flow = RaftFlow(models.raft) if models.raft is not None else None
    return pipeline.Networks(cfg_eps_fn(d.unet, d.embedding), FrameVAE(d.vae), flow, chunk=1, flow_chunk=frames - 1)


def naive_logits(models: BenchModels, config: PurifyConfig, video: Tensor, meter: StageMeter) -> Tensor:
    """The release-style reference on one video (B=1, 3, F, H, W) -> logits (K, 1, C), stages timed by `meter`."""
    if config.single_candidate is not None:
        raise ValueError("The benchmark compares full voting runs; leave single_candidate at None.")
    d = models.diffusion
    x = check_video(video).to(next(d.unet.parameters()).device)
    schedule = make_schedule(d.scheduler_config, config.ddim_steps, config.t_star)
    candidates = pipeline.purify(naive_networks(models, x.shape[2]), x, schedule, config, meter)
    return pipeline.vote_candidates(models.classifier, candidates, 1, meter).logits


def fast_logits(purifier: Purifier, classifier, video: Tensor, meter: StageMeter) -> Tensor:
    """The Purifier on a video (B, 3, F, H, W) -> logits (K, B, C), the classifier on all candidates in one batch."""
    candidates = purifier.purify(video, meter)
    k, b = candidates.videos.shape[:2]
    return purifier.vote(candidates, classifier, k * b, meter).logits


UNET_AUTOCAST_MIN_FLOPS = 20e9  # per call; below this a UNet is overhead-bound on CPU and bf16 only adds casts


def fast_options(device: torch.device | str, compile: bool = False, unet_flops: float | None = None) -> dict:
    """The fast execution options for `device`, as Runtime field changes.

    CUDA: bfloat16 weights, bfloat16 autocast (norms and softmax in fp32), torch.compile if asked (channels_last is
    measured by the ablation, not assumed).
    CPU: bfloat16 autocast where the CPU runs bf16 natively (AVX512-BF16 / AMX: about 2x on convolutions) for the VAE
    and the flow network, and for the UNet only when one call does at least UNET_AUTOCAST_MIN_FLOPS (`unet_flops`,
    counted): a small UNet's time is per-op overhead, which autocast's casts only add to (measured ~1.3x slower for
    the small world's). channels_last on CPU: the round-robin ablation (benchmarks/results/bench-cpu-world.md)
    measured 5.37 -> 4.05 s/video in fp32 and 3.51 -> 3.06 s/video with bf16 autocast on the small world.
    compile stays off unless asked (minutes to compile).
    One UNet call per step, batched chunked decode and one classifier batch are what the fast path always does.
    """
    device = torch.device(device)
    if device.type == "cuda":  # NHWC is left to the ablation: GroupNorm between convolutions may undo its gain
        return {"dtype": "bfloat16", "autocast": "bfloat16", "compile": compile}
    if not cpu_has_native_bf16():
        return {"channels_last": True, "compile": compile}
    networks = ("unet", "vae", "flow") if (unet_flops or 0) >= UNET_AUTOCAST_MIN_FLOPS else ("vae", "flow")
    return {"autocast": "bfloat16", "autocast_networks": networks, "channels_last": True, "compile": compile}


def fast_purifier(models: BenchModels, config: PurifyConfig, runtime: Runtime, cache: Optional[dict] = None) -> Purifier:
    """A Purifier for the fast path, on its own copies of the UNet and VAE when the runtime changes them (dtype,
    NHWC, compile), so the naive path keeps the untouched float32 modules. `cache` (a dict) reuses such copies
    across calls (one bf16 copy of a 1.4B-parameter UNet is enough, and compiled code stays valid)."""
    d = models.diffusion
    changes = runtime.dtype not in (None, "float32") or runtime.channels_last or runtime.compile
    key = (id(models), runtime.dtype, runtime.channels_last, runtime.compile)
    if not changes:
        return Purifier(d, models.raft, config, runtime)
    if cache is not None and key in cache and cache[key][0] is models:  # the entry holds the original: ids stay valid
        copies = cache[key][1]
    else:
        copies = DiffusionModels(copy.deepcopy(d.unet), copy.deepcopy(d.vae), d.scheduler_config, d.embedding)
    if cache is not None:
        cache[key] = (models, copies)
    return Purifier(copies, models.raft, config, runtime)


@dataclass
class PathRun:
    """One path over the benchmark videos: per-stage stats, per-video seconds and the votes."""

    name: str
    meter: StageMeter
    video_seconds: list = field(default_factory=list)
    result: Optional[VoteResult] = None

    @property
    def seconds_per_video(self) -> float:
        return sum(self.video_seconds) / max(len(self.video_seconds), 1)


def compare_many(
    models: BenchModels,
    naive_config: PurifyConfig,
    purifiers: dict[str, Purifier],
    videos: Tensor,
    warmup_videos: Optional[Tensor] = None,
    run_naive: bool = True,
) -> dict[str, PathRun]:
    """The naive path and every fast purifier on each video of (N, 3, F, H, W), one video at a time.

    Round robin: each video goes through all paths before the next, the starting path rotating, so that other
    load on the machine drifting over time hits every path alike. `warmup_videos` go through all paths first,
    unrecorded (first calls pay one-time costs). Returns {"naive": ..., name: ...} (no "naive" with run_naive=False).
    """
    device = next(iter(purifiers.values())).device
    runs = {name: PathRun(name, StageMeter(device)) for name in (["naive"] if run_naive else []) + list(purifiers)}

    def one(name: str, video: Tensor, meter: StageMeter) -> Tensor:
        if name == "naive":
            return naive_logits(models, naive_config, video, meter)
        return fast_logits(purifiers[name], models.classifier, video, meter)

    scratch = StageMeter(device)
    for video in warmup_videos if warmup_videos is not None else ():
        for name in runs:
            one(name, video, scratch)
    logits: dict[str, list] = {name: [] for name in runs}
    names = list(runs)
    for i, video in enumerate(videos):
        for name in names[i % len(names):] + names[: i % len(names)]:
            run = runs[name]
            before = run.meter.total_seconds
            logits[name].append(one(name, video, run.meter))
            run.video_seconds.append(run.meter.total_seconds - before)
    labels = next(iter(purifiers.values())).config.candidate_labels
    for name, run in runs.items():
        timings = {k: s.seconds for k, s in run.meter.stages.items()}
        run.result = vote(torch.cat(logits[name], dim=1), labels, timings)
    return runs


def compare(
    models: BenchModels,
    naive_config: PurifyConfig,
    purifier: Purifier,
    videos: Tensor,
    warmup_videos: Optional[Tensor] = None,
    run_naive: bool = True,
) -> tuple[Optional[PathRun], PathRun]:
    """Naive vs one fast purifier (see compare_many): returns (naive, fast); naive is None with run_naive=False."""
    runs = compare_many(models, naive_config, {"fast": purifier}, videos, warmup_videos, run_naive)
    return runs.get("naive"), runs["fast"]
