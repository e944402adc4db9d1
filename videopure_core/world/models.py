"""The small world's models: the same classes users load for real, at a size a 2-core CPU can train.

- VAE: diffusers AutoencoderKL, per frame, 4x down, 4 latent channels (`WORLD_VAE_CONFIG`).
- Denoiser: diffusers UNet3DConditionModel on the VAE latents with ModelScope's noise schedule, conditioned on a
  fixed null embedding (`WORLD_UNET_CONFIG`, `null_embedding`).
- Flow: torchvision `raft_small`, trained on the generator's ground-truth flow (loaded with `load_raft`).
- Classifier: `WorldClassifier`, a small 3D CNN mapping (B, 3, F, H, W) in [0,1] to logits.

Shipped trained weights live in `videopure_core/world/weights/` (see MODEL_CARD.md there); `load_world` loads them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHTS = Path(__file__).parent / "weights"

WORLD_VAE_CONFIG = dict(
    block_out_channels=(32, 64, 64),  # three blocks = two 2x downsamples = 4x: a 16x16 latent for 64x64 frames
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,
    norm_num_groups=1,  # one group: per-channel colour survives the norms (8 groups trained ~1 dB slower here)
    latent_channels=4,
    sample_size=64,
)
"""4x down, not ModelScope's 8x: at 8x a 64x64 frame is an 8x8 latent, the objects 2-3 latent cells across, and
every class error of purification in the 8x world was a shape error (see the model card's experiment log)."""

WORLD_UNET_CONFIG = dict(
    block_out_channels=(32, 64, 64, 64),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=8,
    sample_size=16,
    # no spatial attention on the full 16x16 grid (a sixth of the step time), temporal layers everywhere
    down_block_types=("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"),
)

WORLD_PURIFY_OPTIONS: dict = {"guidance_reference": (32, 28, 28)}
"""VideoPure's setting in the small world, as PurifyConfig field -> value (everything else: the paper's defaults).

The guidance step is rescaled from the paper's 32x28x28 latent to the world's: both losses are means, so the
unscaled lambdas would move each element of the world's much smaller latent far more per step than at the paper's
size (see PurifyConfig.guidance_reference). This is the one definition: the world's evaluation, tests, demo,
bench, evaluation CLI and workflows all take it from here, e.g. `PurifyConfig(**WORLD_PURIFY_OPTIONS)`.
"""

NULL_EMBEDDING_SHAPE = (1, 4, 32)  # (1, tokens, cross_attention_dim): the world's "empty prompt"


def null_embedding() -> Tensor:
    """The fixed conditioning of the world's denoiser (it has no text encoder): seeded N(0,1), (1, 4, 32)."""
    return torch.randn(*NULL_EMBEDDING_SHAPE, generator=torch.Generator().manual_seed(20240101))


class WorldClassifier(nn.Module):
    """A small 3D CNN: (B, 3, F, H, W) in [0,1] -> logits (B, num_classes).

    Four 3x3x3 conv blocks (BatchNorm, ReLU) with spatial then spatio-temporal pooling, global average pooling
    and a linear head. Normalisation ((x - 0.5) / 0.25) is inside, so attacks work in [0,1] pixel space.
    """

    def __init__(self, num_classes: int = 12, width: int = 16):
        super().__init__()

        def block(cin, cout, pool):
            return [nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True), nn.MaxPool3d(pool)]

        w = width
        self.features = nn.Sequential(
            *block(3, w, (1, 2, 2)),
            *block(w, 2 * w, (2, 2, 2)),
            *block(2 * w, 4 * w, (2, 2, 2)),
            *block(4 * w, 4 * w, (1, 1, 1)),
        )
        self.head = nn.Linear(4 * w, num_classes)
        self.num_classes, self.width = num_classes, width

    def forward(self, video: Tensor) -> Tensor:
        x = self.features((video - 0.5) / 0.25)
        return self.head(x.mean(dim=(2, 3, 4)))


@dataclass
class World:
    """The loaded small world: diffusion folder path and models ready for a Purifier and attacks."""

    diffusion: str  # diffusers-style folder: unet/, vae/, scheduler/, empty_prompt.safetensors
    raft: nn.Module
    classifier: nn.Module
    classes: tuple[str, ...]


def save_classifier(model: WorldClassifier, folder: str | os.PathLike, classes: tuple[str, ...]) -> None:
    from ..loading import save_safetensors_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic(model.state_dict(), folder / "model.safetensors")
    config = {"num_classes": model.num_classes, "width": model.width, "classes": list(classes)}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_classifier(folder: str | os.PathLike = WEIGHTS / "classifier", device="cpu") -> tuple[WorldClassifier, tuple[str, ...]]:
    """The world classifier and its class names from a folder with config.json and model.safetensors."""
    from ..loading import ModelNotFoundError, load_weights

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"No world classifier config at {(folder / 'config.json').resolve()}.")
    config = json.loads((folder / "config.json").read_text())
    model = WorldClassifier(config["num_classes"], config["width"])
    model.load_state_dict(load_weights(folder / "model.safetensors"))
    return model.eval().requires_grad_(False).to(device), tuple(config["classes"])


def load_world(weights: str | os.PathLike = WEIGHTS, device="cpu") -> World:
    """Load the shipped (or a freshly trained) world from its weights folder."""
    from ..loading import ModelNotFoundError, load_raft

    weights = Path(weights)
    if not (weights / "diffusion" / "unet" / "config.json").is_file():
        raise ModelNotFoundError(
            f"No trained world at {weights.resolve()} (expected diffusion/, raft_small.safetensors, classifier/). "
            f"Train one with `videopure train-world --out {weights}`."
        )
    classifier, classes = load_classifier(weights / "classifier", device)
    raft = load_raft("raft_small", weights / "raft_small.safetensors", device)
    return World(str(weights / "diffusion"), raft, classifier, classes)
