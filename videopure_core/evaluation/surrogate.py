"""A second world classifier, built differently from the world's, as the black-box attacker's surrogate (Table III).

The paper's black-box setting crafts TT+MI adversarial videos on one video model (NL or SlowFast) and evaluates
them on the other. In the small world the target is the world's `WorldClassifier` (a plain 3D CNN with BatchNorm
and max pooling); the surrogate here is a (2+1)D network instead: every block a spatial 1x3x3 convolution then a
temporal 3x1x1 convolution, GroupNorm and GELU, a strided first block then max pooling, mean+max pooled
features into the head, a different width and seed. It is trained on
clean clips of the world's *train* split only (the generator's public API), with cross-entropy and AdamW, so it
never sees the test clips, the target's weights or the purifier.

    videopure eval --train-surrogate DIR            # about 16 min on one CPU thread (97.9% on 96 test clips)
    videopure eval --experiment table3 ...          # trains it into <out>/surrogate first when it is missing

Folder layout: config.json (architecture, classes, training settings, test accuracy) and model.safetensors.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SeparableClassifier(nn.Module):
    """(2+1)D CNN: (B, 3, F, H, W) in [0,1] -> logits (B, num_classes); normalisation inside."""

    def __init__(self, num_classes: int = 12, width: int = 24):
        super().__init__()

        def block(cin, cout, stride, pool):
            return [nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1)), nn.GroupNorm(4, cout),
                    nn.GELU(), nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0)), nn.GroupNorm(4, cout), nn.GELU(),
                    nn.MaxPool3d(pool)]

        w = width
        # a strided first convolution (cheap at full resolution), then max pooling, which keeps the small moving
        # object's response (with strided convolutions only, the net stayed at chance for 600 of 1200 steps)
        self.features = nn.Sequential(*block(3, w, 2, (1, 2, 2)), *block(w, 2 * w, 1, (2, 2, 2)),
                                      *block(2 * w, 2 * w, 1, (2, 2, 2)))
        self.head = nn.Linear(4 * w, num_classes)
        self.num_classes, self.width = num_classes, width

    def forward(self, video: Tensor) -> Tensor:
        x = self.features(video * 2.0 - 1.0)
        return self.head(torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1))  # mean and max pooled


def save_surrogate(model: SeparableClassifier, folder: str | os.PathLike, classes, info: dict) -> None:
    from ..loading import save_safetensors_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic(model.state_dict(), folder / "model.safetensors")
    config = {"arch": "SeparableClassifier", "num_classes": model.num_classes, "width": model.width,
              "classes": list(classes), **info}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_surrogate(folder: str | os.PathLike, device="cpu") -> nn.Module:
    """The trained second classifier from `folder` (eval mode, no parameter gradients)."""
    from ..loading import ModelNotFoundError, load_weights

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"No second classifier at {(folder / 'config.json').resolve()}; train one with "
                                 f"`videopure eval --train-surrogate {folder}`.")
    config = json.loads((folder / "config.json").read_text())
    model = SeparableClassifier(config["num_classes"], config["width"])
    model.load_state_dict(load_weights(folder / "model.safetensors"))
    return model.eval().requires_grad_(False).to(device)


def _world_split(name: str, n: int) -> tuple[Tensor, Tensor]:
    from ..world.generator import make_split

    videos, _, labels = make_split(name, n)
    return videos.permute(0, 4, 1, 2, 3).contiguous(), labels  # (n, F, H, W, 3) -> (n, 3, F, H, W)


def accuracy(model: nn.Module, videos: Tensor, labels: Tensor, batch: int = 32) -> float:
    with torch.no_grad():
        preds = torch.cat([model(v).argmax(-1) for v in videos.split(batch)])
    return float((preds == labels).float().mean())


def train_surrogate(out: str | os.PathLike, steps: int = 1200, batch: int = 16, train_clips: int = 600,
                    test_clips: int = 96, width: int = 24, lr: float = 2e-3, seed: int = 7,
                    log: Callable[[str], None] = print) -> dict:
    """Train the second classifier on the world's train split and save it to `out`; returns its config."""
    from ..world.generator import CLASSES

    torch.manual_seed(seed)
    start = time.perf_counter()
    log(f"second classifier: rendering {train_clips} train and {test_clips} test clips of the world ...")
    train_x, train_y = _world_split("train", train_clips)
    test_x, test_y = _world_split("test", test_clips)
    model = SeparableClassifier(len(CLASSES), width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    log(f"second classifier: {steps} steps x {batch} clips, {sum(p.numel() for p in model.parameters())} parameters")
    curve = []
    for step in range(1, steps + 1):
        for group in opt.param_groups:  # cosine schedule
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        idx = torch.randint(len(train_x), (batch,), generator=g)
        x = train_x[idx]
        x = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)  # a little pixel noise
        loss = F.cross_entropy(model(x), train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, steps // 10) == 0 or step == steps:
            value = loss.item()
            curve.append((step, round(value, 4)))
            log(f"  step {step}: cross-entropy {value:.4f}")
    model.eval().requires_grad_(False)
    acc = accuracy(model, test_x, test_y)
    info = {"trained_on": f"world train split, first {train_clips} clips (clean)", "steps": steps, "batch": batch,
            "lr": lr, "seed": seed, "test_accuracy": acc, "test_clips": test_clips, "loss_curve": curve,
            "seconds": round(time.perf_counter() - start, 1)}
    save_surrogate(model, out, CLASSES, info)
    log(f"second classifier: test accuracy {100 * acc:.1f}% on {test_clips} clips, {info['seconds']:.0f} s; saved to {out}")
    return info


def ensure_surrogate(folder: str | os.PathLike, device="cpu", log: Callable[[str], None] = print,
                     **train_options) -> nn.Module:
    """The second classifier from `folder`, trained there first when it is missing."""
    if not (Path(folder) / "config.json").is_file():
        train_surrogate(folder, log=log, **train_options)
    return load_surrogate(folder, device)
