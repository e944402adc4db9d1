"""Fig. 7: the decoded candidates z_0^t of one clip, clean (Standard Acc), under PGD on the classifier (Robust Acc*)
and under PGD+BPDA through VideoPure (Robust Acc), each with the classifier's prediction and the vote."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def candidates_figure(args: argparse.Namespace, path: Path, clip: int = 0, frame: int | None = None) -> Path:
    """Craft the two attacks on clip `clip` of the data, purify the three videos with VideoPure and save a grid of
    the middle frame (or `frame`) of the input and of every candidate, titled with its prediction."""
    from ..attacks import bpda_grad_fn, classifier_grad_fn, pgd
    from ..config import Runtime
    from ..defences import VideoPureDefence
    from ..io import atomic_path
    from ..pipeline import vote_candidates
    from .cli import _resolve, base_config, load_models, settings_from
    from .data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    r = _resolve(args)
    settings = settings_from(r, args)
    runtime = Runtime(device=args.device)
    purifier, classifier, classes, _ = load_models(args, base_config(args), runtime, True)
    data = load_dataset(args.data, clip + 1, r["frames"], args.size, classes)
    device = purifier.device
    x = data.clips[clip].load()[None].to(device)
    y = torch.tensor([data.clips[clip].label], device=device)
    g = torch.Generator().manual_seed(settings.seed)
    x_pgd, _ = pgd(classifier_grad_fn(classifier), x, y, settings.eps, settings.step, settings.steps, settings.norm,
                   settings.random_start, g)
    defence = VideoPureDefence(purifier)
    x_bpda, _ = pgd(bpda_grad_fn(classifier, defence), x, y, settings.eps, settings.step, settings.steps, settings.norm,
                    settings.random_start, g)
    name = (lambda c: classes[c]) if classes else str  # noqa: E731
    rows = []
    for title, video in (("clean", x), ("PGD (Robust Acc*)", x_pgd), ("PGD+BPDA (Robust Acc)", x_bpda)):
        cands = defence.candidates(video)
        result = vote_candidates(classifier, cands)
        with torch.no_grad():
            input_pred = int(classifier(video).argmax(-1)[0])
        f = frame if frame is not None else video.shape[2] // 2
        images = [(f"input\n-> {name(input_pred)}", video[0, :, f])]
        for k, t in enumerate(cands.labels):
            images.append((f"z_0^{t}\n-> {name(int(result.predictions[k, 0]))}", cands.videos[k, 0, :, f]))
        rows.append((f"{title}: input -> {name(input_pred)}; vote of the candidates -> {name(int(result.winner[0]))} "
                     f"(label {name(int(y[0]))})", images))

    import matplotlib.style
    from matplotlib.figure import Figure

    cols = max(len(images) for _, images in rows)
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(1.5 * cols, 2.2 * len(rows)), dpi=100, layout="constrained")
        for sub, (row_title, images) in zip(fig.subfigures(len(rows), 1), rows):
            sub.suptitle(row_title, fontsize=9, x=0.01, ha="left")
            axes = sub.subplots(1, cols, squeeze=False)[0]
            for j, ax in enumerate(axes):
                ax.axis("off")
                if j < len(images):
                    caption, image = images[j]
                    ax.imshow(image.detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
                    ax.set_title(caption, fontsize=7)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    return path
