"""Evaluation throughput: videos per second with 1 video per network call against `batch` videos per call.

`videopure bench --throughput` times the evaluation's own workloads (through the defences and attacks it uses),
each on the same clips at batch 1 and at batch 8 (`--batch-sizes`), after one untimed warm-up batch:

    defended     VideoPure purification + classification of every candidate + vote (the defended prediction)
    pgd+bpda     one PGD+BPDA gradient step through VideoPure (purify, classifier forward+backward on all candidates)
    tt+bpda      one TT+BPDA step through VideoPure (2L+1 temporally shifted copies; at batch 1 one copy per call,
                 batched: every clip's copies in one call, RAFT once per distinct frame pair)
    diffpure-ddpm  DiffPure-DDPM purification + vote (101 UNet calls per video)

Both wall time and process CPU time are reported (CPU time is what other jobs on a shared machine distort least);
the deterministic workloads also check that the batched results equal the one-at-a-time ones (votes, and the
gradient's sign agreement).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from ..config import PurifyConfig, Runtime

WORKLOADS = ("defended", "pgd+bpda", "tt+bpda", "diffpure-ddpm")


def _timed(fn: Callable, items: torch.Tensor, labels: torch.Tensor, batch: int) -> tuple[float, float, list]:
    outs = []
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, items.shape[0], batch):
        outs.append(fn(items[i : i + batch], labels[i : i + batch]))
    return time.perf_counter() - wall, time.process_time() - cpu, outs


def throughput(models, device: torch.device, batch_sizes: Sequence[int] = (1, 8), videos: int = 8,
               workloads: Sequence[str] = WORKLOADS, tt_shift: int = 3, max_batch: int = 32, log=print) -> dict:
    """{workload: {batch: {"videos_per_s", "cpu_videos_per_s", ...}, "speedup", "equal"}} on `videos` world clips."""
    from ..attacks import bpda_grad_fn, tt_grad_fn
    from ..defences import DiffPureDDPM, VideoPureDefence
    from ..pipeline import vote_candidates
    from ..purifier import Purifier
    from .models import NATIVE_SHAPE, bench_videos

    frames, size = NATIVE_SHAPE[models.arch]
    x, labels = bench_videos(models.arch, videos + max(batch_sizes), frames, size)
    labels = labels.clamp_min(0)
    x, labels = x.to(device), labels.to(device)
    warm, warm_y, x, labels = x[: max(batch_sizes)], labels[: max(batch_sizes)], x[max(batch_sizes):], labels[max(batch_sizes):]
    config = PurifyConfig().with_options(**models.purify_options)
    purifier = Purifier(models.diffusion, models.raft, config, Runtime(device=str(device)))
    classifier = models.classifier
    videopure = VideoPureDefence(purifier)

    def defended(v, y):
        return vote_candidates(classifier, videopure.candidates(v), 64).winner.cpu()

    def bpda(v, y):
        return bpda_grad_fn(classifier, videopure, max_batch=max_batch)(v, y)[1].cpu()

    def tt(batched):
        def step(v, y):
            inner = bpda_grad_fn(classifier, videopure, max_batch=max_batch)
            return tt_grad_fn(inner, tt_shift, batched=batched, max_batch=max_batch)(v, y)[1].cpu()
        return step

    def ddpm(v, y):
        g = torch.Generator().manual_seed(0)
        return vote_candidates(classifier, DiffPureDDPM(purifier).candidates(v, g), 64).winner.cpu()

    fns = {"defended": lambda b: defended, "pgd+bpda": lambda b: bpda, "tt+bpda": lambda b: tt(b > 1),
           "diffpure-ddpm": lambda b: ddpm}
    results: dict = {"videos": videos, "arch": models.arch, "frames": frames, "size": size, "tt_shift": tt_shift,
                     "max_batch": max_batch}
    for name in workloads:
        row: dict = {}
        outs = {}
        for b in batch_sizes:
            fn = fns[name](b)
            fn(warm[:b], warm_y[:b])  # warm-up (allocator, first-call overheads)
            wall, cpu, out = _timed(fn, x, labels, b)
            row[b] = {"seconds": wall, "cpu_seconds": cpu, "videos_per_s": videos / wall, "cpu_videos_per_s": videos / cpu}
            outs[b] = torch.cat(out)
            log(f"  {name}, {b} video(s) per call: {videos / wall:.3f} videos/s (CPU time: {videos / cpu:.3f})")
        lo, hi = min(batch_sizes), max(batch_sizes)
        row["speedup"] = row[hi]["videos_per_s"] / row[lo]["videos_per_s"]
        row["cpu_speedup"] = row[hi]["cpu_videos_per_s"] / row[lo]["cpu_videos_per_s"]
        if name == "diffpure-ddpm":
            row["equal"] = None  # stochastic: the draws depend on the batch composition
        elif outs[lo].dtype == torch.long:
            row["equal"] = bool(torch.equal(outs[lo], outs[hi]))
        else:
            row["equal"] = float((outs[lo].sign() == outs[hi].sign()).float().mean())
        results[name] = row
    return results


def markdown(results: dict, batch_sizes: Sequence[int]) -> str:
    lo, hi = min(batch_sizes), max(batch_sizes)
    lines = [f"## Evaluation throughput: {lo} vs {hi} videos per network call ({results['arch']} "
             f"{results['frames']}x{results['size']}x{results['size']}, {results['videos']} clips, TT L={results['tt_shift']}, "
             f"at most {results['max_batch']} videos per call)",
             "", f"| workload | videos/s at {lo} | videos/s at {hi} | speedup | CPU-time speedup | batched = one at a time |",
             "|---|---|---|---|---|---|"]
    for name in WORKLOADS:
        row = results.get(name)
        if not row:
            continue
        eq = row["equal"]
        eq_text = "n/a (stochastic)" if eq is None else ("yes" if eq is True else "no" if eq is False else
                                                         f"{100 * eq:.1f}% of gradient signs")
        lines.append(f"| {name} | {row[lo]['videos_per_s']:.3f} | {row[hi]['videos_per_s']:.3f} | {row['speedup']:.2f}x | "
                     f"{row['cpu_speedup']:.2f}x | {eq_text} |")
    return "\n".join(lines) + "\n"
