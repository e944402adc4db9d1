"""`videopure demo`: purify a video, let a classifier vote, print the table and save a picture.

Without model arguments it runs on TINY RANDOMLY INITIALISED models built in code: that shows every stage
running end to end in seconds, not that anything is purified. Point it at real weights with --model (a
ModelScope-style diffusers folder), --raft and --classifier-*.
"""

from __future__ import annotations

import argparse
import time

import torch

HELP = "Purify a video (bundled UCF-101 clip by default), vote with a classifier, print a table, save a picture."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", help="folder of frame PNGs (0.png, 1.png, ...); default: a bundled UCF-101 clip")
    p.add_argument("--frames", type=int, default=16, help="frames to use (default 16)")
    p.add_argument("--size", type=int, default=64, help="resize frames to size x size (multiple of 8; default 64)")
    p.add_argument("--model", help="ModelScope-style diffusers folder (unet/, vae/, scheduler/, text_encoder/...)")
    p.add_argument("--raft", help="RAFT weights file (safetensors or torchvision .pth)")
    p.add_argument("--raft-arch", default="raft_large", choices=["raft_large", "raft_small"])
    p.add_argument("--classifier-arch", default="r3d_18", help="torchvision video architecture (with --classifier-weights)")
    p.add_argument("--classifier-weights", help="weights file of the torchvision video classifier")
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--t-star", type=int, default=6)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--out", default="videopure-demo.png", help="where to save the picture")


def run(args: argparse.Namespace) -> int:
    from . import PurifyConfig, Purifier, load_raft, load_video_classifier
    from .io import bundled_clip, fit_video, read_frames
    from .progress import TqdmCallback
    from .tiny import tiny_purifier
    from .visualize import flow_to_rgb, save_rows

    config = PurifyConfig(t_star=args.t_star, device=args.device, dtype=args.dtype)
    device = config.torch_device
    video = read_frames(args.video, args.frames) if args.video else bundled_clip("17", args.frames)
    video = fit_video(video, args.size)

    if args.model:
        flow = load_raft(args.raft_arch, args.raft, device) if args.raft else None
        purifier = Purifier.from_pretrained(args.model, flow=flow, config=config)
        label = f"models from {args.model}"
    else:
        flow = load_raft("raft_small", None, device)
        purifier = tiny_purifier(config, flow=flow)
        purifier.unet.to(device), purifier.vae.to(device)
        label = "TINY RANDOM models built in code (no trained weights: this shows the pipeline runs, not that it purifies)"
    if args.classifier_weights:
        classifier = load_video_classifier(args.classifier_arch, args.classifier_weights, args.num_classes, device)
    else:
        torch.manual_seed(0)
        classifier = _tiny_random_classifier(args.num_classes).to(device)
        label += "; random classifier"

    print(f"VideoPure demo: {label}")
    print(f"video {tuple(video.shape)} (F, H, W, 3), t_star={config.t_star}, device={device}")
    start = time.perf_counter()
    with TqdmCallback() as progress:
        candidates = purifier.purify(video, callback=progress)
        result = purifier.vote(candidates, classifier)
    total = time.perf_counter() - start
    print(result.table())
    print("seconds per stage: " + ", ".join(f"{s} {t:.2f}" for s, t in result.timings.items()) + f"; total {total:.2f}")

    rows = [video] + [candidate[0].cpu() for candidate in candidates.videos]
    if purifier.flow_fn is not None:
        from .flow import video_flow

        fwd, _ = video_flow(purifier.flow_fn, purifier.prepare(video))
        rows.append(flow_to_rgb(fwd[0]))
    path = save_rows(rows, args.out)
    print(f"picture: {path} (rows: input, candidates z_0^{config.t_star} ... z_0^0, optical flow)")
    return 0


def _tiny_random_classifier(num_classes: int) -> torch.nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Conv3d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, num_classes)
    ).eval()
