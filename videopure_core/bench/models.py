"""The model sets the benchmark runs on, and input videos of any length and size for them.

- "world": the trained small world (`videopure_core.world`), weights from its folder, native 16 x 64 x 64.
- "modelscope": the full-size ModelScope architecture (`videopure_core.modelscope`) with random weights, RAFT-large
  and a random torchvision r3d_18 classifier as a stand-in for the paper's I3D/SlowFast; the paper's 32 x 224 x 224.
- "tiny": tiny random models (`videopure_core.tiny`), for tests.
Every set can be built on the meta device (for FLOP counting) and copied for a fast path in another dtype.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from ..loading import DiffusionModels
from ..schedule import MODELSCOPE_SCHEDULER_CONFIG

ARCHS = ("world", "modelscope", "tiny")
NATIVE_SHAPE = {"world": (16, 64), "modelscope": (32, 224), "tiny": (8, 32)}  # (frames, size)


@dataclass
class BenchModels:
    """Everything a Purifier and the naive reference need: the diffusion model, RAFT, the classifier."""

    arch: str
    diffusion: DiffusionModels
    raft: Optional[nn.Module]
    classifier: nn.Module
    purify_options: dict  # VideoPure options this model set is run with (e.g. the world's lambda_reference)


def _prepare(module: nn.Module, device) -> nn.Module:
    return module.eval().requires_grad_(False).to(device)


def _world_classifier(folder: Path, device) -> nn.Module:
    from ..world.models import WorldClassifier, load_classifier

    if str(device) == "meta":
        config = json.loads((folder / "config.json").read_text())
        with torch.device("meta"):
            return _prepare(WorldClassifier(config["num_classes"], config["width"]), "meta")
    return load_classifier(folder, device)[0]


def world_models(weights: str | Path | None = None, device: str | torch.device = "cpu") -> BenchModels:
    """The trained small world (the package's weights unless `weights` names another folder)."""
    from diffusers import AutoencoderKL, UNet3DConditionModel

    from ..loading import load_diffusion
    from ..world import WORLD_OPTIONS
    from ..world.models import WEIGHTS, load_world

    folder = Path(weights) if weights else WEIGHTS
    overrides = dict(WORLD_OPTIONS)
    if str(device) == "meta":
        diffusion = folder / "diffusion"
        with torch.device("meta"):
            unet = UNet3DConditionModel.from_config(UNet3DConditionModel.load_config(diffusion / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(diffusion / "vae"))
        from ..loading import load_embedding
        from ..modelscope import build_raft

        shape = tuple(load_embedding(diffusion / "empty_prompt.safetensors").shape)
        diffusion = DiffusionModels(_prepare(unet, "meta"), _prepare(vae, "meta"), dict(MODELSCOPE_SCHEDULER_CONFIG),
                                    torch.empty(shape, device="meta"))
        return BenchModels("world", diffusion, build_raft("meta", "raft_small"),
                           _world_classifier(folder / "classifier", "meta"), overrides)
    world = load_world(folder, device)
    return BenchModels("world", load_diffusion(world.diffusion, device=device), world.raft, world.classifier, overrides)


def modelscope_models(device: str | torch.device = "cpu", seed: int = 0) -> BenchModels:
    """The full-size ModelScope architecture, RAFT-large and an r3d_18 classifier, all with random weights."""
    from ..classifiers import build_torchvision_classifier
    from ..modelscope import build_raft, build_unet, build_vae, random_embedding

    torch.manual_seed(seed)
    unet, vae, raft = build_unet(device), build_vae(device), build_raft(device)
    with torch.device(device):
        classifier = _prepare(build_torchvision_classifier("r3d_18", 400), device)
    diffusion = DiffusionModels(unet, vae, dict(MODELSCOPE_SCHEDULER_CONFIG), random_embedding(device=device))
    return BenchModels("modelscope", diffusion, raft, classifier, {})


def tiny_models(device: str | torch.device = "cpu", seed: int = 0) -> BenchModels:
    """Tiny random models of the real classes (`videopure_core.tiny`), RAFT-small and a narrow world classifier."""
    from diffusers import AutoencoderKL, UNet3DConditionModel

    from ..modelscope import build_raft, random_embedding
    from ..tiny import TINY_UNET_CONFIG, TINY_VAE_CONFIG
    from ..world.models import WorldClassifier

    torch.manual_seed(seed)
    with torch.device(device):
        unet, vae = UNet3DConditionModel(**TINY_UNET_CONFIG), AutoencoderKL(**TINY_VAE_CONFIG)
        classifier = WorldClassifier(num_classes=12, width=4)
    embedding = random_embedding((1, 8, TINY_UNET_CONFIG["cross_attention_dim"]), device, seed)
    diffusion = DiffusionModels(_prepare(unet, device), _prepare(vae, device), dict(MODELSCOPE_SCHEDULER_CONFIG), embedding)
    return BenchModels("tiny", diffusion, build_raft(device, "raft_small"), _prepare(classifier, device), {})


BUILDERS = {"world": lambda device, weights: world_models(weights, device),
            "modelscope": lambda device, weights: modelscope_models(device),
            "tiny": lambda device, weights: tiny_models(device)}


def load_models(arch: str, device: str | torch.device = "cpu", weights: str | None = None) -> BenchModels:
    if arch not in BUILDERS:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {ARCHS}.")
    return BUILDERS[arch](device, weights)


def extend_frames(video: Tensor, frames: int) -> Tensor:
    """(F, H, W, 3) -> (frames, H, W, 3) by playing the clip forwards and backwards (0..F-1, F-2..1, 0, ...).

    Longer test videos with the same motion statistics (timing does not depend on content).
    """
    f = video.shape[0]
    if frames <= f:
        return video[:frames]
    cycle = list(range(f)) + list(range(f - 2, 0, -1))
    return video[[cycle[i % len(cycle)] for i in range(frames)]]


def bench_videos(arch: str, n: int, frames: int, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """n input videos (n, 3, frames, size, size) in [0,1] and their labels (n,) (-1 where there are none).

    world: held-out test clips (labels cycle through the 12 classes); modelscope: the two bundled UCF-101 clips;
    tiny: seeded uniform noise. Clips are extended (`extend_frames`) and resized as needed.
    """
    from ..io import bundled_clip, fit_video

    if arch == "world":
        from ..world.generator import make_split

        batch = make_split("test", max(n, 1))
        clips, labels = list(batch.videos[:n]), batch.labels[:n]
    elif arch == "modelscope":
        base = [bundled_clip(name) for name in ("17", "21")]
        clips, labels = [base[i % 2] for i in range(n)], torch.full((n,), -1)
    else:
        g = torch.Generator().manual_seed(seed)
        clips, labels = [torch.rand(frames, size, size, 3, generator=g) for _ in range(n)], torch.full((n,), -1)
    from ..video import from_frames

    videos = from_frames(torch.stack([fit_video(extend_frames(c, frames), size) for c in clips]))
    return videos, labels
