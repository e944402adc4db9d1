"""Loading models from local files (or, if the user asks for it, a hub id). Nothing here downloads by itself.

- Diffusion: a diffusers folder laid out like `ali-vilab/text-to-video-ms-1.7b`: `unet/` (UNet3DConditionModel),
  `vae/` (AutoencoderKL), `scheduler/scheduler_config.json`, and either `text_encoder/` + `tokenizer/` (CLIP) or a
  cached `empty_prompt.safetensors` holding the empty-prompt embedding, so the text encoder need not be loaded.
  Every component folder follows one rule for its weights: the plain files when present, else the fp16 variant (the
  download users get), else an error naming the folder and the files looked for (`weights_variant`).
- The empty-prompt embedding is computed once ever: cached next to the model, or, when that folder is read-only or
  inside the Hugging Face cache, in the user cache `$XDG_CACHE_HOME/videopure/embeddings/<key>.safetensors`.
- Flow: torchvision `raft_large` / `raft_small` with weights from a local file.
- Classifiers: torchvision video models with weights from a local file.
Weights are read with safetensors; other files with `torch.load(..., weights_only=True)`, never unpickled freely.
Networks are built on the meta device and filled in the requested dtype (accelerate's low_cpu_mem_usage), so loading
an fp16 download in fp16 never holds a float32 copy on the host.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

EMBEDDING_FILE = "empty_prompt.safetensors"
EMBEDDING_VERSION = "1"  # part of the user-cache key: bump when encode_empty_prompt changes what it computes
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Which library saved each component, and so what its weight files are called. Sharded checkpoints have an
# `<name>.index.json`; a variant goes before the last extension (`model.fp16.safetensors`, `...index.fp16.json`),
# as both diffusers and transformers name them.
COMPONENT_LIBRARY = {"unet": "diffusers", "vae": "diffusers", "text_encoder": "transformers"}
_WEIGHT_NAMES = {
    "diffusers": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "transformers": ("model.safetensors", "pytorch_model.bin"),
}
VARIANTS = (None, "fp16")  # the order of preference: plain files, then the fp16 variant
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")


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


def save_embedding(embedding: Tensor, path: str | os.PathLike, metadata: dict | None = None) -> None:
    save_safetensors_atomic({"embedding": embedding}, path, metadata=metadata)


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


def _with_variant(name: str, variant: str | None) -> str:
    """`model.safetensors` -> `model.fp16.safetensors`, `m.safetensors.index.json` -> `m.safetensors.index.fp16.json`"""
    if variant is None:
        return name
    stem, ext = name.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def weight_file_names(component: str, variant: str | None = None) -> list[str]:
    """The weight file names (single file or sharded index) a component folder may hold for `variant`."""
    names = []
    for single in _WEIGHT_NAMES[COMPONENT_LIBRARY[component]]:
        names += [_with_variant(single, variant), _with_variant(single + ".index.json", variant)]
    return names


def weights_variant(folder: str | os.PathLike, component: str) -> str | None:
    """The variant to load a component (unet, vae, text_encoder) folder with: None when it has the plain weight files,
    "fp16" when it has only the fp16 variant (as ModelScope is downloaded); ModelNotFoundError otherwise, naming the
    folder, the files looked for and how to fix it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"Missing the {component}/ folder of the diffusion model: looked at {folder.resolve()}. A ModelScope-style "
            f"diffusers folder holds unet/, vae/, scheduler/ and text_encoder/ + tokenizer/ (or {EMBEDDING_FILE}); "
            f"download the whole model (e.g. ali-vilab/text-to-video-ms-1.7b, its fp16 variant is enough) into "
            f"{folder.parent.resolve()}."
        )
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"Missing {component}/config.json in the diffusion model folder: looked at {folder.resolve()}. Copy the "
            f"{component}/ folder of the downloaded model there complete (config.json and weights)."
        )
    for variant in VARIANTS:
        if any((folder / name).is_file() for name in weight_file_names(component, variant)):
            return variant
    held = sorted(p.name for p in folder.iterdir()) or ["nothing"]
    raise ModelNotFoundError(
        f"No {component} weights in {folder.resolve()}: looked for {', '.join(weight_file_names(component))}, then the "
        f"fp16 variant {', '.join(weight_file_names(component, 'fp16'))}; the folder holds {', '.join(held)}. Put the "
        f"{component} weights of the downloaded model there (e.g. {component}/"
        f"{weight_file_names(component, 'fp16')[0]} from ali-vilab/text-to-video-ms-1.7b)."
    )


def _accelerate_available() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def diffusers_load_kwargs(dtype: torch.dtype) -> dict:
    """from_pretrained arguments that build a diffusers model on the meta device and fill it in `dtype` directly."""
    return {"torch_dtype": dtype, "low_cpu_mem_usage": _accelerate_available()}


def transformers_load_kwargs(dtype: torch.dtype) -> dict:
    """The same for transformers (`dtype` since 4.56, `torch_dtype` before; v5 always builds on the meta device)."""
    import transformers
    from packaging.version import Version

    name = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {name: dtype, "low_cpu_mem_usage": _accelerate_available()}


def _load_component(cls, folder: Path, component: str, dtype: torch.dtype) -> nn.Module:
    variant = weights_variant(folder / component, component)
    kwargs = diffusers_load_kwargs(dtype)
    return cls.from_pretrained(folder / component, variant=variant, local_files_only=True, **kwargs)


def load_diffusion(
    model: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    local_files_only: bool = True,
    cache_embedding: bool = True,
) -> DiffusionModels:
    """Load UNet3D, VAE, scheduler config and the empty-prompt embedding from a diffusers folder or hub id.

    The embedding comes from `<folder>/empty_prompt.safetensors`, else from the user cache (`embedding_cache_file`);
    otherwise the CLIP text encoder and tokenizer are loaded (before the UNet, and freed right after) to compute it,
    and when `cache_embedding` it is saved (atomically) next to the model, or in the user cache when the model folder
    is read-only or inside the Hugging Face cache. Weights are read in `dtype` without a float32 copy on the host.
    """
    from diffusers import AutoencoderKL, UNet3DConditionModel

    where, local = _resolve(model, local_files_only)
    if local:
        folder = Path(where)
        for component in ("unet", "vae"):  # fail on a missing part before spending time on the text encoder
            weights_variant(folder / component, component)
        sched_file = folder / "scheduler" / "scheduler_config.json"
        if not sched_file.is_file():
            raise ModelNotFoundError(
                f"Missing scheduler config: looked at {sched_file.resolve()}. Copy scheduler/scheduler_config.json of "
                f"the downloaded model there."
            )
        scheduler_config = json.loads(sched_file.read_text())
        embedding = _local_embedding(folder, cache_embedding)
        unet = _load_component(UNet3DConditionModel, folder, "unet", dtype)
        vae = _load_component(AutoencoderKL, folder, "vae", dtype)
    else:
        from diffusers import DDIMScheduler

        embedding = _hub_embedding(where, local_files_only)
        kwargs = {"local_files_only": local_files_only, **diffusers_load_kwargs(dtype)}
        unet = UNet3DConditionModel.from_pretrained(where, subfolder="unet", **kwargs)
        vae = AutoencoderKL.from_pretrained(where, subfolder="vae", **kwargs)
        scheduler_config = dict(DDIMScheduler.load_config(where, subfolder="scheduler"))
    unet.requires_grad_(False).eval().to(device)
    vae.requires_grad_(False).eval().to(device)
    return DiffusionModels(unet, vae, scheduler_config, embedding)


# --- the empty-prompt embedding, computed once ever ---------------------------------------------------------------


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/videopure` (default `~/.cache/videopure`): embeddings of read-only model folders."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "videopure"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def embedding_cache_key(folder: str | os.PathLike) -> str:
    """A key for the empty-prompt embedding of a model folder, from what determines it without loading anything: the
    text encoder's config.json (content), its files' names and sizes, and the tokenizer files (content)."""
    folder = Path(folder)
    text_encoder, tokenizer = folder / "text_encoder", folder / "tokenizer"
    parts = {
        "version": EMBEDDING_VERSION,
        "config": _file_digest(text_encoder / "config.json"),
        "files": sorted((p.name, p.stat().st_size) for p in text_encoder.iterdir() if p.is_file()),
        "tokenizer": sorted((p.name, _file_digest(p)) for p in tokenizer.iterdir() if p.is_file()),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def embedding_cache_file(folder: str | os.PathLike) -> Path:
    """Where the user cache keeps the empty-prompt embedding of `folder`'s text encoder."""
    return user_cache_dir() / "embeddings" / f"{embedding_cache_key(folder)}.safetensors"


def _in_hf_cache(folder: Path) -> bool:
    """A snapshot of the Hugging Face hub cache (`models--org--name/snapshots/<revision>`), which we do not write to."""
    folder = folder.resolve()
    return folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--")


def _check_text_encoder(folder: Path) -> None:
    """The text encoder and tokenizer folders are complete, or a ModelNotFoundError says what is missing."""
    if not (folder / "text_encoder").is_dir():
        raise ModelNotFoundError(
            f"Neither {(folder / EMBEDDING_FILE).resolve()} nor {(folder / 'text_encoder').resolve()} exists: "
            f"VideoPure needs the empty-prompt embedding or the CLIP text encoder and tokenizer to compute it. "
            f"Download text_encoder/ and tokenizer/ of the model (needed once: the embedding is cached) into "
            f"{folder.resolve()}."
        )
    weights_variant(folder / "text_encoder", "text_encoder")
    tokenizer = folder / "tokenizer"
    if not any((tokenizer / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"No CLIP tokenizer in {tokenizer.resolve()}: looked for {', '.join(_TOKENIZER_FILES)} (vocab.json and "
            f"merges.txt, or tokenizer.json). Copy the tokenizer/ folder of the downloaded model there."
        )


def _local_embedding(folder: Path, cache: bool) -> Tensor:
    """The embedding of a local model folder: cached next to it, in the user cache, or computed (and cached) now."""
    beside = folder / EMBEDDING_FILE
    if beside.is_file():
        return load_embedding(beside)
    _check_text_encoder(folder)
    key = embedding_cache_key(folder)
    in_user_cache = user_cache_dir() / "embeddings" / f"{key}.safetensors"
    if in_user_cache.is_file():
        return load_embedding(in_user_cache)
    embedding = _compute_embedding(folder)
    if cache:
        metadata = {"model": str(folder.resolve()), "key": key, "version": EMBEDDING_VERSION}
        targets = [in_user_cache] if _in_hf_cache(folder) else [beside, in_user_cache]
        for target in targets:
            try:
                save_embedding(embedding, target, metadata)
                break
            except OSError:  # a read-only model folder (shared store): the user cache is next
                continue
        else:
            warnings.warn(
                f"Could not cache the empty-prompt embedding at {', '.join(map(str, targets))}; it will be computed "
                f"again on the next load. Make {user_cache_dir()} writable (or set XDG_CACHE_HOME).",
                stacklevel=3,
            )
    return embedding


def _compute_embedding(folder: Path) -> Tensor:
    """Load tokenizer and text encoder (float32, CPU: the embedding is shared by every dtype), encode "", free them."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(
        folder / "text_encoder",
        variant=weights_variant(folder / "text_encoder", "text_encoder"),
        local_files_only=True,
        **transformers_load_kwargs(torch.float32),
    ).eval()
    embedding = encode_empty_prompt(text_encoder, tokenizer)
    del text_encoder, tokenizer
    gc.collect()  # the 1.4 GB float32 encoder goes before the UNet is read, not whenever a cycle is collected
    return embedding


def _hub_embedding(where: str, local_files_only: bool) -> Tensor:
    """The embedding for a hub id (downloads allowed): computed on each load, nothing is written into the hub cache."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer", local_files_only=local_files_only)
    text_encoder = CLIPTextModel.from_pretrained(
        where, subfolder="text_encoder", local_files_only=local_files_only, **transformers_load_kwargs(torch.float32)
    ).eval()
    embedding = encode_empty_prompt(text_encoder, tokenizer)
    del text_encoder, tokenizer
    gc.collect()
    return embedding


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
