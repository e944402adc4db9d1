"""Where the node pack meets ComfyUI: devices, dtypes, progress, interruption, model folders, IMAGE batches.

Everything ComfyUI-specific that the nodes need goes through this module, and ComfyUI's modules (`comfy.*`,
`folder_paths`) are imported only when a function here runs, so the pack imports outside ComfyUI too (the
unit tests hand it small stand-ins for those modules).

Model folders (registered with folder_paths when the pack loads; extra_model_paths.yaml can add more paths):

    videopure              <models>/videopure/<name>/          diffusers folders (unet/, vae/, scheduler/, ...)
    videopure_raft         <models>/videopure_raft/<file>      torchvision RAFT weights (.pth / .safetensors)
    videopure_classifiers  <models>/videopure_classifiers/<file>  torchvision video classifier weights
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from videopure_core.loading import ModelNotFoundError
from videopure_core.video import from_frames, to_frames

log = logging.getLogger("videopure")

DIFFUSION_FOLDER = "videopure"
RAFT_FOLDER = "videopure_raft"
CLASSIFIER_FOLDER = "videopure_classifiers"
MODEL_FOLDERS = (DIFFUSION_FOLDER, RAFT_FOLDER, CLASSIFIER_FOLDER)
WEIGHT_EXTENSIONS = {".safetensors", ".pth", ".pt", ".bin", ".sft", ".ckpt"}

BUNDLED = "bundled: small world"  # the combo entry that picks videopure_core/world/weights


# --- ComfyUI modules, imported when needed ---------------------------------------------------------------------


def _mm():
    import comfy.model_management

    return comfy.model_management


def _folder_paths():
    import folder_paths

    return folder_paths


# --- model folders ---------------------------------------------------------------------------------------------


def register_model_folders() -> None:
    """Add <models>/videopure, <models>/videopure_raft and <models>/videopure_classifiers to ComfyUI's folders.

    Paths that extra_model_paths.yaml already gave these names are kept (ComfyUI reads the yaml before it loads
    custom nodes); the default folder under ComfyUI's models directory is added after them."""
    fp = _folder_paths()
    for name in MODEL_FOLDERS:
        default = os.path.join(fp.models_dir, name)
        if name in fp.folder_names_and_paths:
            paths, extensions = fp.folder_names_and_paths[name]
            if default not in paths:
                paths.append(default)
            if name != DIFFUSION_FOLDER and not extensions:  # the yaml registers names with "any extension"
                fp.folder_names_and_paths[name] = (paths, set(WEIGHT_EXTENSIONS))
        else:
            fp.folder_names_and_paths[name] = ([default], set() if name == DIFFUSION_FOLDER else set(WEIGHT_EXTENSIONS))


def folder_paths_of(name: str) -> list[str]:
    return list(_folder_paths().get_folder_paths(name))


def diffusion_folders() -> list[str]:
    """Names of the diffusers folders (sub-folders with unet/config.json) under every `videopure` path."""
    names = set()
    for root in folder_paths_of(DIFFUSION_FOLDER):
        if os.path.isdir(root):
            for entry in os.listdir(root):
                if os.path.isfile(os.path.join(root, entry, "unet", "config.json")) or os.path.isfile(
                    os.path.join(root, entry, "model_index.json")
                ):
                    names.add(entry)
    return sorted(names)


def weight_files(name: str) -> list[str]:
    """Weights files under every path of model folder `name` (RAFT or classifiers)."""
    return [f for f in _folder_paths().get_filename_list(name) if os.path.splitext(f)[1].lower() in WEIGHT_EXTENSIONS]


def find_diffusion_folder(name: str) -> str:
    """The path of diffusers folder `name` under a `videopure` model path; ModelNotFoundError names where to put it."""
    roots = folder_paths_of(DIFFUSION_FOLDER)
    for root in roots:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    where = os.path.join(roots[0], name) if roots else os.path.join("ComfyUI", "models", DIFFUSION_FOLDER, name)
    raise ModelNotFoundError(
        f"No diffusion model folder {name!r} in ComfyUI's '{DIFFUSION_FOLDER}' model folders ({', '.join(roots)}). "
        f"Put the diffusers folder (unet/, vae/, scheduler/, text_encoder/ + tokenizer/) at {where}, e.g. "
        f"`huggingface-cli download ali-vilab/text-to-video-ms-1.7b --local-dir {where}`, or pick '{BUNDLED}'."
    )


def find_weights(folder: str, name: str, what: str) -> str:
    """The full path of weights file `name` in model folder `folder`; ModelNotFoundError names where to put it."""
    path = _folder_paths().get_full_path(folder, name)
    if path is not None and os.path.isfile(path):
        return path
    roots = folder_paths_of(folder)
    where = os.path.join(roots[0], name) if roots else os.path.join("ComfyUI", "models", folder, name)
    raise ModelNotFoundError(
        f"No {what} weights file {name!r} in ComfyUI's '{folder}' model folders ({', '.join(roots)}). "
        f"Put the file at {where} (then refresh the node list), or pick '{BUNDLED}'."
    )


# --- devices and dtypes ----------------------------------------------------------------------------------------


def compute_device() -> torch.device:
    return torch.device(_mm().get_torch_device())


def offload_device() -> torch.device:
    return torch.device(_mm().unet_offload_device())


def output_device() -> torch.device:
    """Where tensors passed between nodes live (ComfyUI's intermediate device, normally the CPU)."""
    return torch.device(_mm().intermediate_device())


def network_dtype(choice: str, device: torch.device) -> torch.dtype:
    """float32 on the CPU whatever was asked; on a GPU "auto" picks bf16 or fp16 when ComfyUI says they fit."""
    if device.type == "cpu":
        if choice not in ("auto", "float32"):
            log.warning("VideoPure: %s runs only on a GPU; using float32 on the CPU.", choice)
        return torch.float32
    if choice == "auto":
        mm = _mm()
        if mm.should_use_bf16(device):
            return torch.bfloat16
        if mm.should_use_fp16(device):
            return torch.float16
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[choice]


def module_bytes(modules: Iterable[nn.Module]) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def move(modules: Iterable[nn.Module], device: torch.device, make_room: bool = False) -> None:
    """Move modules to `device` outside inference mode, so their parameters stay ordinary tensors (usable by
    autograd later, e.g. by the attack node). With make_room, ask ComfyUI to free GPU memory for them first."""
    modules = [m for m in modules if m is not None]
    todo = [m for m in modules if any(p.device != device for p in m.parameters())]
    if not todo:
        return
    if make_room and device.type != "cpu":
        _mm().free_memory(int(module_bytes(todo) * 1.2) + (256 << 20), device)
    with torch.inference_mode(False):
        for m in todo:
            m.to(device)


class ModelHandle:
    """Networks that live on the offload device between nodes and on the compute device while a node uses them.

    `with handle.on_device() as device:` moves them there (outside inference mode), and back afterwards unless
    keep_loaded. ComfyUI caches loader outputs, so a handle lives as long as its loader's output does.
    Subclasses list their networks in `networks()`."""

    keep_loaded: bool = False
    name: str = ""

    def networks(self) -> list[nn.Module]:
        raise NotImplementedError

    @contextlib.contextmanager
    def on_device(self):
        device = compute_device()
        move(self.networks(), device, make_room=True)
        try:
            yield device
        finally:
            if not self.keep_loaded:
                self.offload()

    def offload(self) -> None:
        target = offload_device()
        if any(p.device != target for m in self.networks() for p in m.parameters()):
            move(self.networks(), target)
            _mm().soft_empty_cache()


def load_outside_inference(fn, *args, **kwargs):
    """Run a model-building/loading function with inference mode off (ComfyUI runs nodes inside it), so the
    parameters are ordinary tensors."""
    with torch.inference_mode(False):
        return fn(*args, **kwargs)


# --- progress and interruption ---------------------------------------------------------------------------------


def check_interrupt() -> None:
    """Raise ComfyUI's interruption exception when the user pressed Cancel (or POST /interrupt came)."""
    _mm().throw_exception_if_processing_interrupted()


class Progress:
    """`callback(stage, step, total)` for the library, shown on the node's progress bar, checking interruption.

    With `stages` (name -> steps) one bar spans all of them in order; stages not listed get the bar to
    themselves while they run."""

    def __init__(self, stages: Optional[dict[str, int]] = None):
        import comfy.utils

        self.offsets, total = {}, 0
        for name, steps in (stages or {}).items():
            self.offsets[name] = total
            total += max(1, steps)
        self.total = max(1, total)
        self.bar = comfy.utils.ProgressBar(self.total)

    def __call__(self, stage: str, step: int, total: int) -> None:
        if stage in self.offsets:
            done = min(step, total) * self._span(stage) // max(1, total)
            self.bar.update_absolute(self.offsets[stage] + done, self.total)
        else:
            self.bar.update_absolute(step, total)
        check_interrupt()

    def _span(self, stage: str) -> int:
        names = list(self.offsets)
        i = names.index(stage)
        end = self.offsets[names[i + 1]] if i + 1 < len(names) else self.total
        return end - self.offsets[stage]


def hooks(stages: Optional[dict[str, int]] = None):
    """Pipeline hooks that drive the node's progress bar and check for Cancel (see Progress)."""
    from videopure_core.pipeline import Hooks

    return Hooks(Progress(stages))


# --- IMAGE batches <-> videos (the one place where the node pack converts layouts) --------------------------------


def image_to_video(image: Tensor, name: str = "images") -> Tensor:
    """A ComfyUI IMAGE batch (F, H, W, 3), one image per frame, -> one video (1, 3, F, H, W) float32, checked."""
    if isinstance(image, Tensor) and image.dim() != 4:
        raise ValueError(
            f"{name} has shape {tuple(image.shape)}; VideoPure takes an IMAGE batch (frames, height, width, 3), "
            f"one image per frame of one video."
        )
    return from_frames(image, name=name)


def video_to_image(video: Tensor) -> Tensor:
    """Videos (..., 3, F, H, W) in [0,1] (one video, a batch, candidates x batch) -> an IMAGE batch (frames, H, W, 3)
    on the intermediate device, videos one after the other."""
    return frames_to_image(to_frames(video.detach()))


def frames_to_image(frames: Tensor) -> Tensor:
    """Frames (..., H, W, 3) in [0,1] -> an IMAGE batch (N, H, W, 3) float32 on the intermediate device."""
    return frames.detach().reshape(-1, *frames.shape[-3:]).float().clamp(0, 1).contiguous().to(output_device())
