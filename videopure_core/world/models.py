"""The small world's models: the same classes users load for real, at a size a 2-core CPU can train.

- VAE: diffusers AutoencoderKL, per frame, 4x down, 4 latent channels (`WORLD_VAE_CONFIG`; 8x: `WORLD_VAE_CONFIG_8X`).
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

WORLD_VAE_CONFIG_8X = dict(
    WORLD_VAE_CONFIG,
    block_out_channels=(16, 32, 64, 64),  # four blocks = three 2x downsamples = 8x: an 8x8 latent
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
"""The 8x-down VAE of the world shipped before issue 11: a 64x64 frame is an 8x8 latent with the objects 2-3 latent
cells across, and that world's purification errors were shape errors (see the model card's experiment log)."""

WORLD_UNET_CONFIG_8X = dict(
    WORLD_UNET_CONFIG,
    sample_size=8,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
)
"""The UNet for the 8x VAE's 8x8 latent (same widths as WORLD_UNET_CONFIG, spatial attention on every level)."""

WORLD_CONFIGS: dict[int, tuple[dict, dict]] = {4: (WORLD_VAE_CONFIG, WORLD_UNET_CONFIG),
                                               8: (WORLD_VAE_CONFIG_8X, WORLD_UNET_CONFIG_8X)}
"""VAE downsampling factor -> (VAE config, UNet config): `videopure train-world --vae-down 4|8` (4: the shipped world)."""

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


def _vae_networks(vae: nn.Module, chunk: int):
    from ..networks import FrameVAE
    from ..pipeline import Networks

    return Networks(vae=FrameVAE(vae), chunk=chunk)


@torch.no_grad()
def vae_encode(vae: nn.Module, video: Tensor, chunk: int = 16) -> Tensor:
    """Latents (B, 4, F, h, w) of videos (B, 3, F, H, W) in [0,1], as purification encodes them (pipeline.encode)."""
    from ..pipeline import Hooks, encode

    return encode(_vae_networks(vae, chunk), video, Hooks())


@torch.no_grad()
def vae_decode(vae: nn.Module, latents: Tensor, chunk: int = 16) -> Tensor:
    """Videos (B, 3, F, H, W) in [0,1] of latents (B, 4, F, h, w), as purification decodes them (pipeline.decode)."""
    from ..pipeline import Hooks, decode

    return decode(_vae_networks(vae, chunk), latents[None], Hooks())[0]


def vae_round_trip(vae: nn.Module, video: Tensor, chunk: int = 16) -> Tensor:
    """D(E(x)) for videos (B, 3, F, H, W) in [0,1]: what every purified candidate passes through."""
    return vae_decode(vae, vae_encode(vae, video, chunk), chunk)


def save_classifier(model: WorldClassifier, folder: str | os.PathLike, classes: tuple[str, ...]) -> None:
    from ..io import atomic_write
    from ..loading import save_safetensors_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic(model.state_dict(), folder / "model.safetensors")
    config = {"num_classes": model.num_classes, "width": model.width, "classes": list(classes)}
    with atomic_write(folder / "config.json") as f:
        f.write(json.dumps(config, indent=2) + "\n")


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
