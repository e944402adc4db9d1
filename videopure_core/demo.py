"""`videopure demo`: attack a video classifier, purify with VideoPure, vote, print a table and save a picture.

By default everything runs offline in the trained small world shipped with the package (videopure_core/world:
a 16-frame 64x64 procedural clip, its AutoencoderKL + UNet3D diffusion model, RAFT-small and a 3D-CNN classifier):
1. a held-out clip (or your frames with --video) is classified as it is;
2. L_inf PGD on the bare classifier (gray-box, eps 4/255) makes an adversarial copy;
3. VideoPure purifies both; every candidate z_0^t is classified and the majority wins;
4. a table goes to the terminal and a picture (clean / adversarial / perturbation / candidates / flow) to --out.
Real models: --model (ModelScope-style diffusers folder), --raft, --classifier-arch/--classifier-weights.
"""

from __future__ import annotations

import argparse
import time

import torch

HELP = "Attack a classifier, purify with VideoPure, vote; prints a table and saves a picture (small world by default)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", help="folder of frame PNGs (0.png, 1.png, ...) to use instead of a generated clip")
    p.add_argument("--label", type=int, default=0, help="true class of --video, or the class of the generated clip")
    p.add_argument("--seed", type=int, default=0, help="which held-out generated clip (test split index)")
    p.add_argument("--frames", type=int, default=16, help="frames to use (default 16)")
    p.add_argument("--size", type=int, default=64, help="resize frames to size x size (multiple of 8; default 64)")
    p.add_argument("--eps", type=float, default=4.0, help="PGD L_inf budget in 1/255 units (default 4)")
    p.add_argument("--steps", type=int, default=10, help="PGD iterations (default 10)")
    p.add_argument("--t-star", type=int, default=6)
    p.add_argument("--model", help="ModelScope-style diffusers folder instead of the small world's")
    p.add_argument("--raft", help="RAFT weights file (with --model)")
    p.add_argument("--raft-arch", default="raft_large", choices=["raft_large", "raft_small"])
    p.add_argument("--classifier-arch", default="r3d_18", help="torchvision video architecture (with --classifier-weights)")
    p.add_argument("--classifier-weights", help="weights file of a torchvision video classifier")
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--out", default="videopure-demo.png", help="where to save the picture")


def _load(args, config, runtime):
    """(purifier, classifier, class names, description) from the arguments."""
    from . import Purifier, load_raft, load_video_classifier
    from .world.models import load_world

    device = runtime.torch_device
    world = None if (args.model and args.classifier_weights) else load_world(device=device)
    if args.model:
        flow = load_raft(args.raft_arch, args.raft, device) if args.raft else None
        purifier = Purifier.from_pretrained(args.model, flow, config, runtime)
        what = f"diffusion model from {args.model}"
    else:
        purifier = Purifier.from_pretrained(world.diffusion, world.raft, config, runtime)
        what = "the trained small world (videopure_core/world/weights)"
    if args.classifier_weights:
        classifier = load_video_classifier(args.classifier_arch, args.classifier_weights, args.num_classes, device)
        names = None
    else:
        classifier, names = world.classifier, world.classes
    return purifier, classifier, names, what


def run(args: argparse.Namespace) -> int:
    from .attacks import classifier_grad_fn, pgd
    from .classifiers import classify
    from .config import PurifyConfig, Runtime
    from .flow import video_flow
    from .io import fit_video, read_frames
    from .progress import TqdmCallback
    from .video import from_frames, to_frames
    from .visualize import flow_to_rgb, save_rows
    from .world import WORLD_OPTIONS
    from .world.generator import make_split

    start = time.perf_counter()
    config = PurifyConfig(t_star=args.t_star)
    if not args.model:
        config = config.with_options(**WORLD_OPTIONS)
    runtime = Runtime(device=args.device, dtype=args.dtype)
    purifier, classifier, names, what = _load(args, config, runtime)
    name = (lambda c: names[c]) if names else str  # noqa: E731

    if args.video:
        video, label = fit_video(read_frames(args.video, args.frames), args.size), args.label
        source = args.video
    else:
        batch = make_split("test", args.seed + 1)
        video, label = batch.videos[args.seed], int(batch.labels[args.seed])
        source = f"generated held-out clip {args.seed}"
    x = purifier.prepare(from_frames(video))
    y = torch.tensor([label], device=x.device)
    print(f"VideoPure demo on {what}")
    print(f"input: {source}, {tuple(video.shape)} (F, H, W, 3), true class {name(label)}")
    if x.device.type == "cuda":  # what the run will need, before it runs (videopure_core/memory.py)
        print(purifier.estimate_memory(tuple(x.shape), classifier).table())

    with TqdmCallback() as progress:
        adv, losses = pgd(classifier_grad_fn(classifier), x, y, eps=args.eps / 255, step=args.eps / 510,
                          steps=args.steps, generator=torch.Generator().manual_seed(0), callback=progress)
        bare = classify(classifier, torch.cat([x, adv])).argmax(-1).tolist()
        clean_c = purifier.purify(x, progress)
        adv_c = purifier.purify(adv, progress)
        clean_v, adv_v = purifier.vote(clean_c, classifier), purifier.vote(adv_c, classifier)

    def row(title, pred, votes=""):
        mark = "correct" if pred == label else "WRONG"
        return f"{title:<28} {name(pred):<16} {mark:<8} {votes}"

    def tally(v):
        return ", ".join(f"{name(c)} x{n}" for c, n in enumerate(v.counts[0].tolist()) if n)

    print()
    print(f"{'':<28} {'prediction':<16} {'':<8} votes of the {len(adv_c.labels)} candidates")
    print(row("clean, no defence", bare[0]))
    print(row(f"PGD eps {args.eps:g}/255, no defence", bare[1]))
    print(row("clean + VideoPure", int(clean_v.winner[0]), tally(clean_v)))
    print(row("PGD + VideoPure", int(adv_v.winner[0]), tally(adv_v)))
    print(f"\nper-candidate predictions on the adversarial video:\n{adv_v.table(names)}")
    print("\nseconds per stage (adversarial video): " + ", ".join(f"{s} {t:.2f}" for s, t in adv_v.timings.items()))

    adv_video = to_frames(adv[0]).cpu()
    perturbation = ((adv_video - video.cpu()) * (255 / (2 * args.eps)) + 0.5).clamp(0, 1)
    rows = [video.cpu(), adv_video, perturbation] + list(to_frames(adv_c.videos[:, 0]).cpu())
    if purifier.flow is not None:
        rows.append(flow_to_rgb(video_flow(purifier.flow, adv)[0][0]))
    path = save_rows(rows, args.out)
    print(f"\npicture: {path}")
    print(f"  rows: clean, adversarial, perturbation (x{255 / (2 * args.eps):.0f}), purified candidates "
          f"z_0^{config.t_star} ... z_0^0 of the adversarial video, optical flow of the adversarial video")
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0
