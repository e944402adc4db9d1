"""`videopure purify VIDEO --out DIR`: purify one video file or frame folder, write the purified video, every
candidate, the optical flow as a picture and a vote report.

    videopure purify videopure_core/data/ucf101/17 --out out/17                      # the bundled small world
    videopure purify clip.mp4 --model models/text-to-video-ms-1.7b --raft raft_large_C_T_V1-22a6c225.pth \\
        --classifier r3d_18-b3b3357e.pth --classifier-arch r3d_18 --size 224 --frames 32 --device cuda --out out/
    videopure purify clip.mp4 --model ... --size 224 --frames 32 --device cuda --estimate-only   # memory per stage

Writes into DIR: purified.mp4 (candidate z_0^0, or --candidate), input.mp4 (the input as purified: cut and
resized), candidates/z0_t<t>.mp4 for every candidate, flow.png (input frames over their optical flow),
candidates.png (input and every candidate), report.json and report.md (per-candidate predictions, the vote, the
classifier on the undefended input, seconds and memory per stage, the files). Models default to the bundled small
world (diffusion model, RAFT-small, 12-class classifier) piece by piece; with --model, pass --raft too.
On a GPU (or with --estimate) the memory per stage is estimated before anything is loaded
(videopure_core/memory.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

from . import options

HELP = "Purify a video file or frame folder: purified mp4, every candidate, the flow picture, a vote report."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file (.mp4, .avi, .mov, ...; needs PyAV) or a folder of frame PNGs")
    p.add_argument("--out", help="output folder (created; files in it are replaced)")
    g = p.add_argument_group("models (each defaults to the bundled small world's)")
    g.add_argument("--model", help="ModelScope-style diffusers folder (unet/, vae/, scheduler/, text_encoder/ + "
                                   "tokenizer/), e.g. a download of ali-vilab/text-to-video-ms-1.7b")
    g.add_argument("--raft", help="RAFT weights file (torchvision raft_large C_T_V1 for the paper)")
    g.add_argument("--raft-arch", default="raft_large", choices=["raft_large", "raft_small"])
    g.add_argument("--classifier", help="weights file of a torchvision video classifier (--classifier-arch)")
    g.add_argument("--classifier-arch", default="r3d_18",
                   help="r3d_18 (default), mc3_18, r2plus1d_18, s3d, mvit_v2_s, swin3d_t")
    g.add_argument("--num-classes", type=int, default=400, help="classes of --classifier (Kinetics-400: 400)")
    g.add_argument("--classes", help="text file with one class name per line (default: Kinetics-400's names for "
                                     "400-class torchvision classifiers, the world's for its classifier)")
    g = p.add_argument_group("input")
    g.add_argument("--frames", type=int, help="use the first N frames (default: all)")
    g.add_argument("--size", type=int, help="resize frames to SIZE x SIZE (a multiple of 8; default: 64 for the "
                                            "world, else the video's own size rounded down to multiples of 8)")
    g.add_argument("--fps", type=float, help="frame rate of the written videos (default: the input file's, 8 for "
                                             "frame folders)")
    g = p.add_argument_group("purification")
    g.add_argument("--t-star", type=int, default=6, help="inversion steps t* (default 6: 7 candidates)")
    g.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="more PurifyConfig options, e.g. lambda_temp=0 guidance=false (see README, Options)")
    g.add_argument("--candidate", type=int, default=-1,
                   help="which candidate z_0^t is purified.mp4 (default -1: the last made, z_0^0)")
    g.add_argument("--batch-size", type=int, default=1,
                   help="candidate videos per classifier call (default 1: the classifier's activations at 32x224 "
                        "are ~0.5 GiB per video)")
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (default)")
    g.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="network dtype (default float32; float16 is what the fp16 download holds, for GPUs)")
    g.add_argument("--autocast", choices=["float16", "bfloat16"], help="autocast the networks (GPU)")
    g.add_argument("--chunk", type=int, default=16, help="frames per VAE call, frame pairs per RAFT call")
    g.add_argument("--estimate", action=argparse.BooleanOptionalAction, default=None,
                   help="estimate memory per stage before the run (default: on a GPU)")
    g.add_argument("--estimate-only", action="store_true", help="print the memory estimate and stop")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is faster where "
                                               "other jobs share the cores)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


# --- pieces ---------------------------------------------------------------------------------------------------------


def class_names(args, world) -> list[str] | None:
    """Class names for the report: --classes, the world's, or Kinetics-400's for a 400-class torchvision model."""
    if args.classes:
        names = [line.strip() for line in Path(args.classes).read_text().splitlines() if line.strip()]
        return names
    if not args.classifier:
        return list(world.classes)
    if args.num_classes == 400:
        from torchvision.models import get_model_weights

        try:
            return list(next(iter(get_model_weights(args.classifier_arch))).meta["categories"])
        except (KeyError, ValueError, StopIteration):
            return None
    return None


def _raft_hint() -> str:
    from torchvision.models.optical_flow import Raft_Large_Weights

    return Raft_Large_Weights.C_T_V1.url


def check_arguments(args, config) -> None:
    """Errors that need nothing loaded, with the fix."""
    from .classifiers import TORCHVISION_VIDEO_MODELS, required_frames

    if not args.out and not args.estimate_only:
        raise UsageError("--out DIR is needed (the folder to write the purified video and the report into).")
    if args.model and not args.raft and config.needs_flow:
        raise UsageError(f"--model needs --raft WEIGHTS for the temporal loss: torchvision's raft_large C_T_V1 "
                         f"weights ({_raft_hint()}), saved locally. Or purify without the temporal loss: "
                         f"--config lambda_temp=0.")
    if args.classifier and args.classifier_arch not in TORCHVISION_VIDEO_MODELS:
        raise UsageError(f"--classifier-arch {args.classifier_arch!r} is not one of "
                         f"{', '.join(sorted(TORCHVISION_VIDEO_MODELS))}.")
    need = required_frames(args.classifier_arch) if args.classifier else None
    if need is not None and args.frames not in (None, need):
        raise UsageError(f"{args.classifier_arch} takes exactly {need} frames; pass --frames {need}.")
    if args.size is not None and (args.size < 8 or args.size % 8):
        raise UsageError(f"--size {args.size} must be a positive multiple of 8 (the VAE downsamples 8x).")
    if args.batch_size < 1 or args.chunk < 1:
        raise UsageError("--batch-size and --chunk must be at least 1.")


class UsageError(ValueError):
    """A command-line mistake; the message says what to pass instead."""


def read_input(args, world_size: int | None):
    """(frames (F, H, W, 3) fitted, source (F, H, W), fps) from VIDEO."""
    from .classifiers import required_frames
    from .io import fit_video
    from .videoio import read_video

    frames, fps = read_video(args.video, args.frames)
    source = tuple(frames.shape[:3])
    if args.frames and frames.shape[0] < args.frames:
        raise UsageError(f"{args.video} has {frames.shape[0]} frames, fewer than --frames {args.frames}.")
    need = required_frames(args.classifier_arch) if args.classifier else None
    if need is not None and frames.shape[0] != need:
        raise UsageError(f"{args.classifier_arch} takes exactly {need} frames and {args.video} has "
                         f"{frames.shape[0]}; pass --frames {need}.")
    size = args.size or world_size
    return fit_video(frames, size), source, fps


def estimate(args, config, runtime, shape, world):
    """The memory estimate for this run, from config files and shapes only."""
    from .memory import estimate_memory, meta_models

    if args.model:
        diffusion = args.model
    else:
        diffusion = world.diffusion
    raft = args.raft_arch if args.raft else (world.raft if config.needs_flow else None)
    if not config.needs_flow:
        raft = None
    classifier = args.classifier_arch if args.classifier else world.classifier
    models = meta_models(diffusion, raft, classifier, args.num_classes)
    return estimate_memory(models, shape, config, runtime, args.batch_size)


def load(args, config, runtime, world):
    """(purifier, classifier, what was loaded: {diffusion, flow, classifier})."""
    from . import Purifier, load_raft, load_video_classifier

    device = runtime.torch_device
    if args.raft:
        flow, flow_name = load_raft(args.raft_arch, args.raft, device), f"{args.raft_arch}: {args.raft}"
    else:
        flow, flow_name = world.raft, "the world's RAFT-small"
    if not config.needs_flow:
        flow, flow_name = None, "none (no temporal loss)"
    diffusion = args.model or world.diffusion
    purifier = Purifier.from_pretrained(diffusion, flow, config, runtime)
    if args.classifier:
        classifier = load_video_classifier(args.classifier_arch, args.classifier, args.num_classes, device)
        cls_name = f"{args.classifier_arch}: {args.classifier}"
    else:
        classifier, cls_name = world.classifier.to(device), "the world's classifier (12 procedural classes)"
    what = {"diffusion": args.model or "the bundled small world", "flow": flow_name, "classifier": cls_name}
    return purifier, classifier, what


def command_line(args: argparse.Namespace) -> str:
    """`videopure purify VIDEO ...` with the options that differ from their defaults (for the report)."""
    import shlex

    return options.command_line(["videopure", "purify", shlex.quote(str(args.video))], args, add_arguments)


def recording_flow(nets):
    """The networks with their flow function wrapped to keep what it returns: (networks, list of flows (N, 2, H, W)
    in pixels, forward pairs first), so the flow picture needs no second RAFT run."""
    flows = []
    if nets.flow is None:
        return nets, flows
    inner = nets.flow

    def flow_fn(image1, image2):
        out = inner(image1, image2)
        flows.append(out.detach().float().cpu())
        return out

    nets.flow = flow_fn
    return nets, flows


def _stage_bars():
    from .progress import TqdmCallback

    class StageBars(TqdmCallback):
        """One tqdm bar at a time: a stage's bar closes when the next stage starts (the stages run in order)."""

        def __call__(self, stage, step, total):
            if stage not in self.bars:
                self.close()
            super().__call__(stage, step, total)

    return StageBars


def _probabilities(logits):
    return logits.float().softmax(-1)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def write_outputs(out: Path, x, candidates, flow_frames, fps: float, pick: int = -1) -> dict:
    """The videos and pictures (purified.mp4 is candidate z_0^pick, -1: the last); returns {relative path: bytes}."""
    from .video import to_frames
    from .videoio import write_video
    from .visualize import save_rows

    files = {}

    def keep(path: Path):
        files[str(path.relative_to(out))] = path.stat().st_size

    keep(write_video(to_frames(x[0]).cpu(), out / "input.mp4", fps))
    videos = to_frames(candidates.videos[:, 0]).cpu()  # (K, F, H, W, 3)
    for label, video in zip(candidates.labels, videos):
        keep(write_video(video, out / "candidates" / f"z0_t{label}.mp4", fps))
    keep(write_video(videos[-1 if pick == -1 else list(candidates.labels).index(pick)], out / "purified.mp4", fps))
    n = min(8, x.shape[2])
    keep(save_rows([to_frames(x[0]).cpu()] + list(videos), out / "candidates.png", frames=n))
    if flow_frames is not None:
        keep(save_rows([to_frames(x[0]).cpu(), flow_frames], out / "flow.png", frames=n))
    return files


def markdown(report: dict) -> str:
    """report.md from the report's dict."""
    r = report
    inp = r["input"]
    lines = [f"# VideoPure purification of `{inp['path']}`", "",
             f"{r['date']}, videopure {r['videopure']}, {r['device']}.", "",
             f"`{r['command']}`", "",
             "| input | |", "| --- | --- |",
             f"| frames read | {inp['source'][0]} at {inp['source'][1]}x{inp['source'][2]} |",
             f"| purified at | {inp['frames']} frames, {inp['size'][0]}x{inp['size'][1]} |",
             f"| diffusion model | {r['models']['diffusion']} |",
             f"| optical flow | {r['models']['flow']} |",
             f"| classifier | {r['models']['classifier']} |",
             f"| options | {', '.join(f'{k}={v}' for k, v in {'t_star': r['t_star'], **r['config']}.items())} |",
             f"| runtime | {', '.join(f'{k}={v}' for k, v in r['runtime'].items())} |", "",
             "## Votes", "",
             "| candidate | prediction | p |", "| --- | --- | --- |"]
    for c in r["candidates"]:
        lines.append(f"| z_0^{c['label']} | {c['class']} | {c['p']:.3f} |")
    lines += ["", f"Votes: {', '.join(f'{k} x{v}' for k, v in r['votes'].items())}. "
                  f"**Winner: {r['winner']['class']}.** Without purification the classifier says "
                  f"{r['no_defence']['class']} (p {r['no_defence']['p']:.3f}).", "",
              f"purified.mp4 is candidate z_0^{r['purified_candidate']}.", "",
              "## Seconds and memory", "",
              f"| stage | seconds | peak {r['memory']['what']} | working set | estimated working set |",
              "| --- | --- | --- | --- | --- |"]
    est = (r["memory"].get("estimate") or {}).get("stages", {})
    for stage, s in r["memory"]["stages"].items():
        e = est.get(stage, {}).get("working")
        lines.append(f"| {stage} | {r['seconds'].get(stage, 0):.2f} | {_human(s['peak'])} | {_human(s['working'])} | "
                     f"{_human(e) if e is not None else ''} |")
    lines += ["", f"Loading took {r['seconds']['load']:.1f} s, writing the files {r['seconds']['write']:.1f} s, "
                  f"all of it {r['seconds']['total']:.1f} s. {r['memory']['note']}", ""]
    if r["memory"].get("estimate"):
        lines.append(f"Estimated peak before the run: {_human(r['memory']['estimate']['peak'])} (tensors, weights "
                     f"included).")
        lines.append("")
    lines += ["## Files", "", "| file | size |", "| --- | --- |"]
    lines += [f"| {name} | {_human(size)} |" for name, size in r["files"].items()]
    lines += ["| report.json, report.md | this report |"]
    return "\n".join(lines) + "\n"


# --- the command ----------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except Exception as err:  # noqa: BLE001  (known mistakes get one line; anything else its traceback)
        from .loading import ModelNotFoundError
        from .video import VideoInputError

        if isinstance(err, (UsageError, ModelNotFoundError, VideoInputError, FileNotFoundError, ImportError)):
            print(f"videopure purify: error: {err}", file=sys.stderr)
            return 2
        raise


def _run(args: argparse.Namespace) -> int:
    import torch

    from . import __version__
    from .bench.measure import StageMeter, describe_device
    from .classifiers import classify
    from .config import PurifyConfig, Runtime
    from . import pipeline
    from .io import atomic_write
    from .options import parse_assignments
    from .video import from_frames
    from .visualize import flow_to_rgb
    from .world import WORLD_OPTIONS
    from .world.models import load_world

    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731
    base = {} if args.model else dict(WORLD_OPTIONS)
    try:
        config = PurifyConfig(t_star=args.t_star).with_options(**{**base, **parse_assignments(args.config, "--config")})
        runtime = Runtime(device=args.device, dtype=args.dtype, autocast=args.autocast, chunk=args.chunk)
    except ValueError as err:
        raise UsageError(str(err)) from err
    check_arguments(args, config)
    device = runtime.torch_device
    world = None if (args.model and args.classifier) else load_world(device="cpu")  # the defaults' source
    frames, source, fps = read_input(args, None if args.model else 64)
    x = from_frames(frames)
    log(f"input: {args.video}: {source[0]} frames at {source[1]}x{source[2]} -> {tuple(x.shape[2:])} (F, H, W)")

    est = None
    if args.estimate or args.estimate_only or (args.estimate is None and device.type == "cuda"):
        est = estimate(args, config, runtime, tuple(x.shape), world)
        log(est.table())
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            log(f"{device}: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
            if est.peak > free:
                log(f"warning: the estimated peak {est.peak / 2**30:.1f} GiB exceeds the free memory; try --dtype "
                    f"float16, fewer --frames, a smaller --size or --chunk.")
        if args.estimate_only:
            return 0

    out = Path(args.out)
    t0 = time.perf_counter()
    log(f"loading models on {device} ...")
    purifier, classifier, what = load(args, config, runtime, world)
    load_seconds = time.perf_counter() - t0
    log(f"  {load_seconds:.1f} s: diffusion {what['diffusion']}; flow {what['flow']}; classifier {what['classifier']}")
    if args.model and not args.classifier:
        log("  note: the world's classifier knows only the 12 classes of the procedural world; pass --classifier "
            "for meaningful votes on real video")
    names = class_names(args, world)
    name = (lambda c: names[c] if names and c < len(names) else str(c))  # noqa: E731

    x = purifier.prepare(x)
    meter = StageMeter(purifier.device)
    nets, pixel_flow = recording_flow(purifier.networks())
    with _stage_bars()(disable=args.no_progress) as progress:
        meter.callback = progress
        candidates = pipeline.purify(nets, x, purifier.schedule, purifier.config, meter)
        result = purifier.vote(candidates, classifier, args.batch_size, meter)
        bare = classify(classifier, x)[0]
    flow_frames = flow_to_rgb(torch.cat(pixel_flow)[: x.shape[2] - 1]) if pixel_flow else None
    if args.candidate != -1 and args.candidate not in candidates.labels:
        raise UsageError(f"--candidate {args.candidate} is not among the candidates z_0^t, t in "
                         f"{list(candidates.labels)}.")

    t0 = time.perf_counter()
    files = write_outputs(out, x, candidates, flow_frames, args.fps or fps or 8.0, args.candidate)
    write_seconds = time.perf_counter() - t0

    probs, bare_p = _probabilities(result.logits[:, 0]), _probabilities(bare)
    stages = {k: {"peak": s.peak_bytes, "working": s.extra_bytes} for k, s in meter.stages.items()}
    cuda = purifier.device.type == "cuda"
    report = {
        "command": command_line(args),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "videopure": __version__, "torch": torch.__version__, "device": describe_device(purifier.device),
        "input": {"path": str(args.video), "source": list(source), "frames": int(x.shape[2]),
                  "size": [int(x.shape[3]), int(x.shape[4])], "fps": fps},
        "models": what, "t_star": config.t_star, "config": config.options(),
        "runtime": {k: v for k, v in vars(runtime).items() if v != getattr(Runtime(), k)},
        "no_defence": {"prediction": int(bare.argmax()), "class": name(int(bare.argmax())),
                       "p": float(bare_p.max())},
        "candidates": [
            {"label": t, "prediction": int(c), "class": name(int(c)), "p": float(probs[k, int(c)]),
             "file": f"candidates/z0_t{t}.mp4"}
            for k, (t, c) in enumerate(zip(candidates.labels, result.predictions[:, 0].tolist()))],
        "votes": {name(c): int(n) for c, n in enumerate(result.counts[0].tolist()) if n},
        "winner": {"prediction": int(result.winner[0]), "class": name(int(result.winner[0]))},
        "purified_candidate": candidates.labels[-1] if args.candidate == -1 else args.candidate,
        "seconds": {"load": load_seconds, **{k: s.seconds for k, s in meter.stages.items()},
                    "write": write_seconds, "total": time.perf_counter() - start},
        "memory": {
            "what": "CUDA allocated" if cuda else "RSS",
            "note": ("Peaks are torch.cuda.max_memory_allocated (weights included)." if cuda else
                     "Peaks are the process's resident set (VmHWM, models, Python and libraries included); the "
                     "working set is the peak above the resident set when the stage began, so memory the allocator "
                     "kept from an earlier stage does not show again."),
            "stages": stages, "estimate": est.to_dict() if est is not None else None,
        },
        "files": files,
    }
    with atomic_write(out / "report.md") as f:
        f.write(markdown(report))
    with atomic_write(out / "report.json") as f:
        f.write(json.dumps(report, indent=1, default=str) + "\n")

    log("")
    log(result.table(names))
    log(f"no defence: {name(int(bare.argmax()))}")
    log("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()))
    log(f"wrote {out}/: " + ", ".join(f"{k} ({_human(v)})" for k, v in files.items()) + ", report.json, report.md")
    return 0
