"""`videopure bench`: time VideoPure per stage, naive (release-style) against fast, with FLOP floors and scaling.

    videopure bench --quick                      # the trained small world on this machine, < 5 min on a 2-core CPU
    videopure bench                              # + 12 videos, naive scaling, option ablation, chunking memory bound
    videopure bench --full --device cuda         # full-size ModelScope architecture, 32x224x224 (random weights)
    videopure bench --full --device cuda --compile
    videopure bench --throughput                 # evaluation workloads: videos/s at 1 vs 8 videos per network call

Writes bench-<tag>.json, bench-<tag>.md and scaling-<tag>.png to --out; the last line printed is
`fast/naive speedup: <ratio>x, votes equal: <yes|no>` (with --full: the full-size speedup and the trained world's
votes, the only ones that mean anything with random weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import options
from ..io import atomic_write

HELP = "Benchmark VideoPure per stage: naive (release-style) vs fast path, FLOP floors, peak memory, scaling."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="3 videos, fast-path-only scaling, no ablation (< 5 min on CPU)")
    p.add_argument("--full", action="store_true",
                   help="full-size ModelScope architecture at 32x224x224 with random weights (for a GPU), plus the "
                        "trained-world votes check on the same device")
    p.add_argument("--arch", choices=["world", "modelscope", "tiny"], help="model set (default world; modelscope with --full)")
    p.add_argument("--weights", help="trained world folder (default: the package's videopure_core/world/weights)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (default)")
    p.add_argument("--frames", type=int, help="frames per video (default: the model set's native 16, or 32 with --full)")
    p.add_argument("--size", type=int, help="frame size in pixels (default: native 64, or 224 with --full)")
    p.add_argument("--t-star", type=int, default=6, help="inversion steps (default 6)")
    p.add_argument("--videos", type=int, help="timed videos per path (default 3 with --quick or --full, else 12)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up videos per path (default 1)")
    p.add_argument("--scaling-frames", default="16,32,64,128", help="frame counts for the scaling table ('' = none)")
    p.add_argument("--scaling-t-star", default="2,6,10", help="t* values for the scaling table ('' = none)")
    p.add_argument("--scaling-sizes", help="frame sizes for the scaling table (default: native and 2x native for "
                   "the world, none with --quick or for modelscope)")
    p.add_argument("--no-scaling", action="store_true", help="skip the scaling tables")
    p.add_argument("--scaling-naive", action=argparse.BooleanOptionalAction, default=None,
                   help="run the naive path in the scaling tables too (default: not with --quick)")
    p.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=None,
                   help="time each fast-path option on its own (default: not with --quick or --full)")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE on the fast path")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON, markdown and PNG (default %(default)s)")
    p.add_argument("--tag", help="file name tag (default <device>-<arch>[-quick])")
    p.add_argument("--throughput", action="store_true", help="only the evaluation throughput: videos/s of the defended "
                   "prediction, a PGD+BPDA step, a TT+BPDA step and DiffPure-DDPM at 1 vs 8 videos per network call")
    p.add_argument("--batch-sizes", default="1,8", help="videos per call compared by --throughput (default 1,8)")
    p.add_argument("--workloads", default="defended,pgd+bpda,tt+bpda,diffpure-ddpm",
                   help="--throughput workloads (default all)")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def command_line(args: argparse.Namespace) -> str:
    """`videopure bench ...` with the options that differ from their defaults (for the report)."""
    return options.command_line(["videopure", "bench"], args, add_arguments)


def attention_processors(models) -> dict:
    """{"unet": {processor class: count}, "vae": {...}}: AttnProcessor2_0 means torch's scaled_dot_product_attention."""
    out = {}
    for name in ("unet", "vae"):
        counts: dict = {}
        for proc in getattr(getattr(models.diffusion, name), "attn_processors", {}).values():
            counts[type(proc).__name__] = counts.get(type(proc).__name__, 0) + 1
        out[name] = counts
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import Runtime
    from . import report, suite
    from .measure import describe_device, other_load
    from .models import NATIVE_SHAPE, load_models
    from .paths import fast_options

    if args.threads:
        torch.set_num_threads(args.threads)
    device = Runtime(device=args.device).torch_device
    arch = args.arch or ("modelscope" if args.full else "world")
    if args.throughput:
        return _throughput(args, device, arch)
    frames = args.frames or NATIVE_SHAPE[arch][0]
    size = args.size or NATIVE_SHAPE[arch][1]
    videos = args.videos or (3 if args.quick or args.full else 12)
    ablation = args.ablation if args.ablation is not None else not (args.quick or args.full)
    scaling_naive = args.scaling_naive if args.scaling_naive is not None else not args.quick
    tag = args.tag or f"{device.type}-{arch}{'-quick' if args.quick else ''}"
    out_dir = Path(args.out)
    log = lambda text: print(text, flush=True)  # noqa: E731

    results: dict = {
        "command": command_line(args),
        "device": describe_device(device),
        "other_load": other_load(),
        "memory_note": (
            "CUDA max_memory_allocated per stage (tensors; the caching allocator may hold more)"
            if device.type == "cuda" else
            "CPU peak resident set size (VmHWM, reset per stage through /proc/self/clear_refs): models, Python and "
            "the allocator's reserve included; 'working set' = peak minus the RSS when the stage started"
        ),
    }
    log(f"videopure bench on {results['device']}")
    if results["other_load"]:
        log(f"  note: other processes are using the CPU ({results['other_load']}); timings are pessimistic")

    log("counting FLOP floors on the meta device ...")
    results["floors"] = suite.flop_floors(arch, frames, size, args.t_star, args.weights)
    if arch != "modelscope" or (frames, size, args.t_star) != (32, 224, 6):
        results["full_floors"] = suite.flop_floors("modelscope", 32, 224, 6)
    log("measuring the device's matmul rates ...")
    results["rates"] = suite.device_rates(device)
    log("  " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in results["rates"].items()))

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels (both paths)
    log(f"loading {arch} models on {device} ...")
    models = load_models(arch, device, args.weights)
    results["attention"] = attention_processors(models)
    log(f"  attention processors: {results['attention']}")
    unet_flops = results["floors"]["fast"]["invert"] / args.t_star
    fast = fast_options(device, args.compile, unet_flops)
    log(f"naive vs fast, {videos} videos of {frames}x{size}x{size} ({args.warmup} warm-up) ...")
    head = suite.comparison(models, suite.Case(arch, frames, size, args.t_star, videos, args.warmup), device, fast, log)
    results["headline"] = head
    votes_equal = head["votes_equal"]

    if args.full and arch != "world":
        log("trained-world votes check on the same device ...")
        world = load_models("world", device, args.weights)
        wf, ws = NATIVE_SHAPE["world"]
        world_floors = suite.flop_floors("world", wf, ws, args.t_star, args.weights)
        check = suite.comparison(world, suite.Case("world", wf, ws, args.t_star, max(videos, 12), 1), device,
                                 fast_options(device, False, world_floors["fast"]["invert"] / args.t_star), log)
        results["world_check"] = check
        votes_equal = check["votes_equal"]

    if not args.no_scaling:
        log(f"scaling ({'fast and naive' if scaling_naive else 'fast path'}) ...")
        sizes = _ints(args.scaling_sizes) if args.scaling_sizes is not None else (
            [] if args.quick or arch == "modelscope" else [NATIVE_SHAPE[arch][1], 2 * NATIVE_SHAPE[arch][1]])
        results["scaling"] = suite.scaling(models, arch, device, fast, _ints(args.scaling_frames),
                                           _ints(args.scaling_t_star), size, scaling_naive, log, sizes)
        plot = report.scaling_plot(results["scaling"], out_dir / f"scaling-{tag}.png", f"{arch} {size}px")
        results["plot"] = str(plot) if plot else None
        if not args.quick and device.type == "cpu" and arch != "modelscope" and _ints(args.scaling_frames):
            top = max(_ints(args.scaling_frames))
            log(f"chunking memory bound at {top} frames ...")
            results["memory_bound"] = {"frames": top, "size": size,
                                       "rows": suite.memory_bound(models, arch, top, size, device, log)}
    if ablation:
        log("fast-path options one at a time ...")
        case = suite.Case(arch, frames, size, args.t_star, max(2, videos // 2), args.warmup)
        results["ablation"] = suite.ablation(models, case, device, args.compile, log)

    text = report.markdown(results)
    _write_report(out_dir / f"bench-{tag}", results, text)
    print(f"wrote {out_dir / f'bench-{tag}.md'} and .json" + (f", {results['plot']}" if results.get("plot") else ""))
    print(f"fast/naive speedup: {head['speedup']:.2f}x, votes equal: {'yes' if votes_equal else 'no'}")
    return 0


def _write_report(stem: Path, results: dict, text: str) -> None:
    """STEM.json (the results) and STEM.md (`text`), each written atomically; the markdown is printed too."""
    with atomic_write(stem.with_name(stem.name + ".json")) as f:
        f.write(json.dumps(results, indent=1, default=str) + "\n")
    with atomic_write(stem.with_name(stem.name + ".md")) as f:
        f.write(text)
    print()
    print(text)


def _throughput(args: argparse.Namespace, device, arch: str) -> int:
    """`videopure bench --throughput`: bench-throughput-<tag>.{md,json}; the last line gives the speedups."""
    from .measure import describe_device, other_load
    from .models import load_models
    from .throughput import markdown, throughput

    sizes = _ints(args.batch_sizes)
    tag = args.tag or f"{device.type}-{arch}"
    out_dir = Path(args.out)
    print(f"videopure bench --throughput on {describe_device(device)}", flush=True)
    load = other_load()
    if load:
        print(f"  note: other processes are using the CPU ({load}); wall times are pessimistic, see CPU time")
    models = load_models(arch, device, args.weights)
    results = throughput(models, device, sizes, args.videos or 8, [w for w in args.workloads.split(",") if w],
                         log=lambda t: print(t, flush=True))
    results.update({"command": command_line(args), "device": describe_device(device), "other_load": load,
                    "threads": torch_threads()})
    text = (f"# videopure bench --throughput\n\n- device: {results['device']}\n"
            f"- command: `{results['command']}`\n- other load during the run: {load or 'none seen'}\n\n"
            + markdown(results, sizes))
    _write_report(out_dir / f"bench-throughput-{tag}", results, text)
    lo, hi = min(sizes), max(sizes)
    speedups = ", ".join(f"{w} {results[w]['speedup']:.2f}x" for w in args.workloads.split(",") if w in results)
    print(f"throughput {hi} vs {lo} videos per call: {speedups}")
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
