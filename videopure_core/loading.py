"""Loading models from local files (or, if the user asks for it, a hub id). Nothing here downloads by itself.

- Diffusion: a diffusers folder laid out like `ali-vilab/text-to-video-ms-1.7b`: `unet/` (UNet3DConditionModel),
  `vae/` (AutoencoderKL), `scheduler/scheduler_config.json`, and either `text_encoder/` + `tokenizer/` (CLIP) or a
  cached `empty_prompt.safetensors` holding the empty-prompt embedding, so the text encoder need not be loaded.
- Flow: torchvision `raft_large` / `raft_small` with weights from a local file.
- Classifiers: torchvision video models with weights from a local file.
Weights are read with safetensors; other files with `torch.load(..., weights_only=True)`, never unpickled freely.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

EMBEDDING_FILE = "empty_prompt.safetensors"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFoundError(FileNotFoundError):
    """A model folder or weights file is missing; the message names the path that was looked at."""


@dataclass
class DiffusionModels:
    """The pieces of a ModelScope-style text-to-video model that VideoPure uses.

    embedding: (1, L, D) the encoded empty prompt; scheduler_config: dict for diffusers' DDIMScheduler.
    """

    unet: nn.Module
    vae: nn.Module
    scheduler_config: dict
    embedding: Tensor


def load_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from a .safetensors file, or from a torch file with weights_only=True (no arbitrary pickles)."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"No weights file at {path.resolve()}. Put the file there or pass the right path.")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(state).__name__}).")
    return state


def save_safetensors_atomic(tensors: dict[str, Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a safetensors file via a temporary file and a rename, so an interrupted write leaves nothing half-done."""
    from .io import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def encode_empty_prompt(text_encoder: nn.Module, tokenizer) -> Tensor:
    """The conditioning VideoPure uses: CLIP's last hidden state for the prompt "" padded to max length, (1, L, D)."""
    tokens = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    param = next(text_encoder.parameters())
    with torch.no_grad():
        out = text_encoder(tokens.input_ids.to(param.device))[0]
    return out.float().cpu()


def save_embedding(embedding: Tensor, path: str | os.PathLike) -> None:
    save_safetensors_atomic({"embedding": embedding}, path)


def load_embedding(path: str | os.PathLike) -> Tensor:
    return load_weights(path)["embedding"]


def _resolve(model: str | os.PathLike, local_files_only: bool) -> tuple[str, bool]:
    """(where to load from, whether it is a local folder); clear errors for paths that do not exist."""
    text = str(model)
    if os.path.isdir(text):
        return text, True
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        if local_files_only:
            raise ModelNotFoundError(
                f"No local folder {Path(text).resolve()} and hub downloads are off (local_files_only=True). Pass the "
                f"path of a downloaded diffusers folder, or allow downloads for the hub id {text!r}."
            )
        return text, False
    raise ModelNotFoundError(
        f"No model folder at {Path(text).expanduser().resolve()}. Expected a diffusers folder with unet/, vae/, "
        f"scheduler/ and text_encoder/+tokenizer/ (or {EMBEDDING_FILE})."
    )


def _variant(folder: Path) -> str | None:
    """'fp16' when a component folder only has the fp16 weights variant (as ModelScope is usually downloaded)."""
    plain = any(folder.glob("diffusion_pytorch_model.safetensors")) or any(folder.glob("diffusion_pytorch_model.bin"))
    return "fp16" if not plain and any(folder.glob("*.fp16.safetensors")) else None


def _require(folder: Path, component: str) -> Path:
    sub = folder / component
    if not (sub / "config.json").is_file():
        raise ModelNotFoundError(f"Missing {component}/config.json in the diffusion model folder: looked at {sub.resolve()}.")
    return sub


def load_diffusion(
    model: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    local_files_only: bool = True,
    cache_embedding: bool = True,
) -> DiffusionModels:
    """Load UNet3D, VAE, scheduler config and the empty-prompt embedding from a diffusers folder or hub id.

    The embedding comes from `<folder>/empty_prompt.safetensors` when present; otherwise the CLIP text encoder and
    tokenizer are loaded once to compute it, and it is cached to that file (atomically) when `cache_embedding`.
    """
    from diffusers import AutoencoderKL, UNet3DConditionModel

    where, local = _resolve(model, local_files_only)
    kwargs: dict = {"torch_dtype": dtype, "local_files_only": local_files_only or local}
    if local:
        folder = Path(where)
        unet = UNet3DConditionModel.from_pretrained(_require(folder, "unet"), variant=_variant(folder / "unet"), **kwargs)
        vae = AutoencoderKL.from_pretrained(_require(folder, "vae"), variant=_variant(folder / "vae"), **kwargs)
        sched_file = folder / "scheduler" / "scheduler_config.json"
        if not sched_file.is_file():
            raise ModelNotFoundError(f"Missing scheduler config: looked at {sched_file.resolve()}.")
        scheduler_config = json.loads(sched_file.read_text())
        emb_file = folder / EMBEDDING_FILE
    else:
        unet = UNet3DConditionModel.from_pretrained(where, subfolder="unet", **kwargs)
        vae = AutoencoderKL.from_pretrained(where, subfolder="vae", **kwargs)
        from diffusers import DDIMScheduler

        scheduler_config = dict(DDIMScheduler.load_config(where, subfolder="scheduler"))
        emb_file = None

    if emb_file is not None and emb_file.is_file():
        embedding = load_embedding(emb_file)
    else:
        embedding = _embedding_from_text_encoder(where, local, kwargs)
        if emb_file is not None and cache_embedding:
            save_embedding(embedding, emb_file)
    unet.requires_grad_(False).eval().to(device)
    vae.requires_grad_(False).eval().to(device)
    return DiffusionModels(unet, vae, scheduler_config, embedding)


def _embedding_from_text_encoder(where: str, local: bool, kwargs: dict) -> Tensor:
    from transformers import CLIPTextModel, CLIPTokenizer

    if local and not (Path(where) / "text_encoder").is_dir():
        raise ModelNotFoundError(
            f"Neither {Path(where, EMBEDDING_FILE).resolve()} nor {Path(where, 'text_encoder').resolve()} exists: "
            f"VideoPure needs the empty-prompt embedding or the CLIP text encoder and tokenizer to compute it."
        )
    tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer", local_files_only=kwargs["local_files_only"])
    text_encoder = CLIPTextModel.from_pretrained(
        where, subfolder="text_encoder", local_files_only=kwargs["local_files_only"]
    ).eval()
    return encode_empty_prompt(text_encoder, tokenizer)


def load_raft(arch: str = "raft_large", weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """torchvision RAFT (`raft_large` or `raft_small`) with weights from a local file (e.g. the C_T_V1 weights).

    weights=None gives random weights (tests and timing only).
    """
    from torchvision.models.optical_flow import raft_large, raft_small

    builders = {"raft_large": raft_large, "raft_small": raft_small}
    if arch not in builders:
        raise ValueError(f"Unknown RAFT architecture {arch!r}; choose 'raft_large' or 'raft_small'.")
    model = builders[arch](weights=None, progress=False)
    if weights is not None:
        model.load_state_dict(load_weights(weights))
    return model.requires_grad_(False).eval().to(device)


def load_video_classifier(
    arch: str, weights: str | os.PathLike | None, num_classes: int = 400, device: str | torch.device = "cpu"
) -> nn.Module:
    """A torchvision video model (r3d_18, mc3_18, r2plus1d_18, s3d, mvit_v2_s, swin3d_t) with local weights.

    The weights file holds the torchvision model's state dict (as downloaded from torchvision, or saved from it);
    the returned module maps (B, 3, F, H, W) in [0,1] to logits, normalisation included.
    """
    from .classifiers import build_torchvision_classifier

    classifier = build_torchvision_classifier(arch, num_classes)
    if weights is not None:
        classifier.model.load_state_dict(load_weights(weights))
    return classifier.requires_grad_(False).eval().to(device)
