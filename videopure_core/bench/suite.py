"""The benchmark's parts, each returning plain numbers (dicts) for the report: FLOP floors, device rates, the
naive-vs-fast comparison with per-stage time and memory, scaling with frames and t_star, option ablations, and
the memory bound of chunking.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..config import PurifyConfig, Runtime
from ..flow import RaftFlow
from .flops import stage_flops, unet_call_flops
from .measure import matmul_rate
from .models import NATIVE_SHAPE, BenchModels, bench_videos, load_models
from .paths import PathRun, compare, compare_many, fast_purifier

Log = Callable[[str], None]
_FAST_MODELS: dict = {}  # the fast path's converted model copies, reused across comparisons (see fast_purifier)


@dataclass
class Case:
    """What one comparison runs on."""

    arch: str
    frames: int
    size: int
    t_star: int = 6
    videos: int = 3
    warmup: int = 1


def base_config(models: BenchModels, t_star: int = 6) -> PurifyConfig:
    """The config both paths share (the model set's options, e.g. the world's lambda_reference)."""
    return PurifyConfig(t_star=t_star).with_options(**models.purify_options)


# --- floors and rates -------------------------------------------------------------------------------------------


def flop_floors(arch: str, frames: int, size: int, t_star: int, weights: Optional[str] = None) -> dict:
    """{"fast": {stage: FLOPs}, "naive": {...}, "params": {...}} for one video, counted on the meta device.

    Counting runs every op's meta kernel in Python (about 10 s for the full-size pipeline), so results are cached
    per process.
    """
    return copy.deepcopy(_flop_floors(arch, frames, size, t_star, weights))


@functools.lru_cache(maxsize=16)
def _flop_floors(arch: str, frames: int, size: int, t_star: int, weights: Optional[str]) -> dict:
    meta = load_models(arch, "meta", weights)
    d, flow_fn = meta.diffusion, RaftFlow(meta.raft)
    args = (d.unet, d.vae, flow_fn, meta.classifier, d.embedding, frames, size, t_star)
    fast = stage_flops(*args)
    naive_unet = t_star * unet_call_flops(d.unet, d.embedding, (2, 4, frames, size // 8, size // 8))
    naive = {**fast, "invert": naive_unet, "denoise": naive_unet}  # the rest is the same work
    nets = {"unet": d.unet, "vae": d.vae, "raft": meta.raft, "classifier": meta.classifier}
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    return {"arch": arch, "frames": frames, "size": size, "t_star": t_star, "raft_iters": flow_fn.iters,
            "fast": fast, "naive": naive, "params": params}


def device_rates(device: torch.device) -> dict:
    """Measured dense matmul FLOP/s per dtype on the device (bf16 and fp16 on CUDA; fp32 and bf16 on CPU)."""
    dtypes = ("float32", "bfloat16", "float16") if device.type == "cuda" else ("float32", "bfloat16")
    return {name: matmul_rate(device, getattr(torch, name)) for name in dtypes}


# --- the comparison ---------------------------------------------------------------------------------------------


def _stage_rows(run: PathRun, videos: int) -> dict:
    return {
        stage: {"seconds": s.seconds / videos, "peak_bytes": s.peak_bytes, "extra_bytes": s.extra_bytes}
        for stage, s in run.meter.stages.items()
    }


def run_summary(run: PathRun) -> dict:
    videos = max(len(run.video_seconds), 1)
    return {
        "seconds_per_video": run.seconds_per_video,
        "video_seconds": run.video_seconds,
        "peak_bytes": run.meter.peak_bytes,
        "peak_resettable": run.meter.resettable,
        "stages": _stage_rows(run, videos),
        "winners": run.result.winner.tolist(),
        "predictions": run.result.predictions.tolist(),
    }


def comparison(
    models: BenchModels,
    case: Case,
    device: torch.device,
    fast_changes: dict,
    log: Log = print,
    run_naive: bool = True,
    videos_tensor: Optional[torch.Tensor] = None,
) -> dict:
    """Naive vs fast on `case.videos` videos: per-stage seconds per video and peak memory, votes, speedup."""
    base = base_config(models, case.t_star)
    runtime = Runtime(device=str(device)).replace(**fast_changes)
    purifier = fast_purifier(models, base, runtime, _FAST_MODELS)
    if videos_tensor is None:
        videos_tensor, labels = bench_videos(case.arch, case.videos + case.warmup, case.frames, case.size)
    else:
        labels = torch.full((len(videos_tensor),), -1)
    warm, timed, labels = videos_tensor[: case.warmup], videos_tensor[case.warmup :], labels[case.warmup :]
    start = time.perf_counter()
    naive, fast = compare(models, base, purifier, timed, warm if case.warmup else None, run_naive)
    out = {
        "arch": case.arch, "frames": case.frames, "size": case.size, "t_star": case.t_star,
        "videos": len(fast.video_seconds), "fast_config": _runtime_changes(runtime),
        "fast": run_summary(fast), "labels": labels.tolist(),
        "wall_seconds": time.perf_counter() - start,
    }
    # memory the fast path itself needs: its peak minus the naive path's float32 copies, when both sit on the device
    d = models.diffusion
    naive_only = 0 if purifier.models.unet is d.unet else module_bytes(d.unet) + module_bytes(d.vae)
    out["fast"]["own_peak_bytes"] = out["fast"]["peak_bytes"] - naive_only
    if naive is not None:
        out["naive"] = run_summary(naive)
        out["speedup"] = naive.seconds_per_video / fast.seconds_per_video
        out["votes_equal"] = bool(torch.equal(naive.result.winner, fast.result.winner))
        out["candidates_agree"] = float((naive.result.predictions == fast.result.predictions).float().mean())
    log(_one_line(out))
    return out


def module_bytes(module) -> int:
    """Bytes of a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _one_line(out: dict) -> str:
    text = f"  {out['arch']} {out['frames']}x{out['size']}x{out['size']} t*={out['t_star']}: fast {out['fast']['seconds_per_video']:.3f} s/video"
    if "naive" in out:
        text += (f", naive {out['naive']['seconds_per_video']:.3f} s/video, speedup {out['speedup']:.2f}x, "
                 f"votes equal {'yes' if out['votes_equal'] else 'no'}")
    return text


def _runtime_changes(runtime: Runtime) -> dict:
    default = Runtime()
    return {f.name: getattr(runtime, f.name) for f in dataclasses.fields(Runtime)
            if f.name != "device" and getattr(runtime, f.name) != getattr(default, f.name)}


# --- scaling, ablation, memory bound ----------------------------------------------------------------------------


def scaling(
    models: BenchModels,
    arch: str,
    device: torch.device,
    fast_changes: dict,
    frames: Sequence[int],
    t_stars: Sequence[int],
    size: int,
    run_naive: bool,
    log: Log = print,
    sizes: Sequence[int] = (),
) -> dict:
    """Time and peak memory of one video vs frame count (t*=6, `size` px), vs t_star and vs frame size (at the
    model set's native frame count)."""
    native_frames = NATIVE_SHAPE[arch][0]
    cases = {
        "frames": [Case(arch, f, size, 6, videos=1, warmup=0) for f in frames],
        "t_star": [Case(arch, native_frames, size, t, videos=1, warmup=0) for t in t_stars],
        "size": [Case(arch, native_frames, s, 6, videos=1, warmup=0) for s in sizes],
    }
    return {key: [comparison(models, case, device, fast_changes, log, run_naive) for case in group]
            for key, group in cases.items()}


def ablation_variants(device: torch.device, compile: bool) -> list[tuple[str, dict]]:
    """Fast-path variants, each changing one execution option (Runtime fields, relative to float32 eager)."""
    bf16_vae_flow = {"autocast": "bfloat16", "autocast_networks": ("vae", "flow")}
    variants = [
        ("fp32: one UNet call/step, decode chunk 16, one classifier batch", {}),
        ("fp32, chunk 32", {"chunk": 32}),
        ("fp32, chunk 64", {"chunk": 64}),
        ("fp32, channels_last", {"channels_last": True}),
        ("bf16 autocast on VAE + flow", bf16_vae_flow),
        ("bf16 autocast on UNet + VAE + flow", {"autocast": "bfloat16"}),
        ("bf16 autocast on VAE + flow, channels_last", {**bf16_vae_flow, "channels_last": True}),
    ]
    if device.type == "cuda":
        variants += [
            ("bf16 weights + autocast", {"dtype": "bfloat16", "autocast": "bfloat16"}),
            ("bf16 weights + autocast + channels_last", {"dtype": "bfloat16", "autocast": "bfloat16", "channels_last": True}),
            ("fp16 weights + autocast + channels_last", {"dtype": "float16", "autocast": "float16", "channels_last": True}),
        ]
    if compile:
        variants.append(("the above + torch.compile", {**variants[-1][1], "compile": True}))
    return variants


def ablation(models: BenchModels, case: Case, device: torch.device, compile: bool, log: Log = print) -> list[dict]:
    """Every variant's fast path and the naive path on the same videos, round robin per video (compare_many)."""
    videos, _ = bench_videos(case.arch, case.videos + case.warmup, case.frames, case.size)
    base = base_config(models, case.t_star)
    variants = ablation_variants(device, compile)
    purifiers = {name: fast_purifier(models, base, Runtime(device=str(device)).replace(**changes), _FAST_MODELS)
                 for name, changes in variants}
    log(f"  {len(variants)} variants and the naive path, {case.videos} videos round robin ...")
    runs = compare_many(models, base, purifiers, videos[case.warmup :], videos[: case.warmup] if case.warmup else None)
    naive = runs["naive"]
    rows = []
    for name, changes in variants:
        run = runs[name]
        rows.append({
            "variant": name, "changes": changes, "seconds_per_video": run.seconds_per_video,
            "speedup": naive.seconds_per_video / run.seconds_per_video, "peak_bytes": run.meter.peak_bytes,
            "votes_equal": bool(torch.equal(run.result.winner, naive.result.winner)),
            "stages": {k: v.seconds / len(run.video_seconds) for k, v in run.meter.stages.items()},
        })
        log(f"  {name}: {run.seconds_per_video:.3f} s/video, {rows[-1]['speedup']:.2f}x")
    log(f"  naive: {naive.seconds_per_video:.3f} s/video")
    return rows


def memory_bound(models: BenchModels, arch: str, frames: int, size: int, device: torch.device, log: Log = print) -> list[dict]:
    """The decode and encode working sets at `frames` with chunks of 16 frames vs everything in one call."""
    rows = []
    t_star = 6
    for name, chunk in (("chunks of 16 frames", 16), ("one call (no chunking)", (t_star + 1) * frames)):
        changes = {"chunk": chunk}
        out = comparison(models, Case(arch, frames, size, t_star, videos=1, warmup=0), device, changes, log, False)
        stages = out["fast"]["stages"]
        rows.append({"chunking": name, "decode_extra_bytes": stages["decode"]["extra_bytes"],
                     "encode_extra_bytes": stages["encode"]["extra_bytes"], "peak_bytes": out["fast"]["peak_bytes"],
                     "decode_seconds": stages["decode"]["seconds"]})
    return rows
