"""Where the node pack meets ComfyUI: model folders, model management, devices, progress, interruption, previews
and IMAGE batches.

Everything ComfyUI-specific that the nodes need goes through this module, and ComfyUI's modules (`comfy.*`,
`folder_paths`) are imported only when a function here runs, so the pack imports outside ComfyUI too (the
unit tests hand it small stand-ins for those modules).

Model folders (registered with folder_paths.add_model_folder_path when the pack loads; extra_model_paths.yaml can
add more paths under the same names). The loaders also search ComfyUI's own folders for the same kind of model:

    videopure              <models>/videopure/<name>/            diffusers folders (unet/, vae/, scheduler/, ...)
      + diffusers          <models>/diffusers/<name>/            (ComfyUI's folder for diffusers-format models)
    videopure_raft         <models>/videopure_raft/<file>        torchvision RAFT weights (.pth / .safetensors)
      + optical_flow       <models>/optical_flow/<file>          (ComfyUI 0.33's folder for OpticalFlowLoader;
                                                                  registered here on older ComfyUI)
    videopure_classifiers  <models>/videopure_classifiers/<file> torchvision video classifier weights

Model management: each loader output holds its networks in a ComfyUI ModelPatcher (`ModelHandle`). A node that
uses them asks ComfyUI to load them (comfy.model_management.load_models_gpu), which frees room first and may evict
them again later when another model needs the memory; nothing is moved by hand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor, nn

from videopure_core.loading import ModelNotFoundError
from videopure_core.pipeline import Hooks
from videopure_core.video import from_frames, to_frames

log = logging.getLogger("videopure")

DIFFUSION_FOLDER = "videopure"
RAFT_FOLDER = "videopure_raft"
CLASSIFIER_FOLDER = "videopure_classifiers"
MODEL_FOLDERS = (DIFFUSION_FOLDER, RAFT_FOLDER, CLASSIFIER_FOLDER)
CORE_DIFFUSERS_FOLDER = "diffusers"  # ComfyUI's (0.3.75 and 0.33)
CORE_FLOW_FOLDER = "optical_flow"  # ComfyUI 0.33's (OpticalFlowLoader); registered by the pack where missing
WEIGHT_EXTENSIONS = {".safetensors", ".pth", ".pt", ".bin", ".sft", ".ckpt"}

BUNDLED = "bundled: small world"  # the combo entry that picks videopure_core/world/weights
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_VIDEO = "videopure_world_clip.mp4"  # the video template's input, in example_workflows/


# --- ComfyUI modules, imported when needed ---------------------------------------------------------------------


def _mm():
    import comfy.model_management

    return comfy.model_management


def _folder_paths():
    import folder_paths

    return folder_paths


# --- model folders ---------------------------------------------------------------------------------------------


def register_model_folders() -> None:
    """Register <models>/videopure, <models>/videopure_raft, <models>/videopure_classifiers (and <models>/optical_flow
    where ComfyUI predates it) with folder_paths.add_model_folder_path.

    Paths that extra_model_paths.yaml already gave these names are kept in front (ComfyUI reads the yaml before it
    loads custom nodes); weight folders list weight files only, diffusion folders list sub-folders."""
    fp = _folder_paths()
    for name in MODEL_FOLDERS + (CORE_FLOW_FOLDER,):
        if name == CORE_FLOW_FOLDER and name in fp.folder_names_and_paths:
            continue  # ComfyUI's own folder: leave it as ComfyUI made it
        fp.add_model_folder_path(name, os.path.join(fp.models_dir, name))
        paths, extensions = fp.folder_names_and_paths[name]
        if name != DIFFUSION_FOLDER and not extensions:  # add_model_folder_path and the yaml give "any extension"
            fp.folder_names_and_paths[name] = (paths, set(WEIGHT_EXTENSIONS))


def install_sample_video() -> Optional[str]:
    """Copy the video template's sample clip into ComfyUI's input folder (where Load Video lists files), unless a
    file of that name is already there; returns its path there, or None when it could not be copied."""
    source = os.path.join(PACK_DIR, "example_workflows", SAMPLE_VIDEO)
    try:
        folder = _folder_paths().get_input_directory()
        target = os.path.join(folder, SAMPLE_VIDEO)
        if os.path.isfile(source) and not os.path.exists(target):
            os.makedirs(folder, exist_ok=True)
            shutil.copyfile(source, target)
        return target if os.path.exists(target) else None
    except OSError as err:
        log.warning("VideoPure: could not copy the sample clip %s into ComfyUI's input folder: %s", source, err)
        return None


def folder_paths_of(name: str) -> list[str]:
    """The paths of model folder `name`, [] when this ComfyUI does not know it."""
    fp = _folder_paths()
    if name not in fp.folder_names_and_paths:
        return []
    return list(fp.get_folder_paths(name))


def diffusion_roots() -> list[str]:
    """Where diffusers folders are looked for: the `videopure` paths, then ComfyUI's `diffusers` paths."""
    return list(dict.fromkeys(folder_paths_of(DIFFUSION_FOLDER) + folder_paths_of(CORE_DIFFUSERS_FOLDER)))


def diffusion_folders() -> list[str]:
    """Names of the diffusers folders (sub-folders with unet/config.json or model_index.json) in diffusion_roots()."""
    names = set()
    for root in diffusion_roots():
        if os.path.isdir(root):
            for entry in os.listdir(root):
                if os.path.isfile(os.path.join(root, entry, "unet", "config.json")) or os.path.isfile(
                    os.path.join(root, entry, "model_index.json")
                ):
                    names.add(entry)
    return sorted(names)


def weight_folders(name: str) -> tuple[str, ...]:
    """The model folders searched for weights of kind `name` (RAFT weights: also ComfyUI's optical_flow folder)."""
    return (name, CORE_FLOW_FOLDER) if name == RAFT_FOLDER else (name,)


def weight_files(name: str) -> list[str]:
    """Weights files under every path of model folder `name` (and the folders searched with it), without repeats."""
    fp = _folder_paths()
    files = []
    for folder in weight_folders(name):
        if folder in fp.folder_names_and_paths:
            files += [f for f in fp.get_filename_list(folder) if os.path.splitext(f)[1].lower() in WEIGHT_EXTENSIONS]
    return list(dict.fromkeys(files))


def find_diffusion_folder(name: str) -> str:
    """The path of diffusers folder `name` in diffusion_roots(); ModelNotFoundError names where to put it."""
    roots = diffusion_roots()
    for root in roots:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    where = os.path.join(roots[0], name) if roots else os.path.join("ComfyUI", "models", DIFFUSION_FOLDER, name)
    raise ModelNotFoundError(
        f"No diffusion model folder {name!r} in ComfyUI's '{DIFFUSION_FOLDER}' or '{CORE_DIFFUSERS_FOLDER}' model "
        f"folders ({', '.join(roots)}). Put the diffusers folder (unet/, vae/, scheduler/, text_encoder/ + tokenizer/) "
        f"at {where}, e.g. `huggingface-cli download ali-vilab/text-to-video-ms-1.7b --local-dir {where}`, or pick "
        f"'{BUNDLED}'."
    )


def find_weights(folder: str, name: str, what: str) -> str:
    """The full path of weights file `name` in model folder `folder` (or the folders searched with it);
    ModelNotFoundError names where to put it."""
    fp = _folder_paths()
    for kind in weight_folders(folder):
        if kind in fp.folder_names_and_paths:
            path = fp.get_full_path(kind, name)
            if path is not None and os.path.isfile(path):
                return path
    roots = folder_paths_of(folder)
    where = os.path.join(roots[0], name) if roots else os.path.join("ComfyUI", "models", folder, name)
    others = [k for k in weight_folders(folder)[1:]]
    also = f" or '{others[0]}'" if others else ""
    raise ModelNotFoundError(
        f"No {what} weights file {name!r} in ComfyUI's '{folder}'{also} model folders "
        f"({', '.join(p for k in weight_folders(folder) for p in folder_paths_of(k))}). "
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


# --- model management through ComfyUI ----------------------------------------------------------------------------


class Bundle(nn.Module):
    """The networks of one loader output as one module, which is what a ModelPatcher manages (diffusers models
    cannot be handed over directly: ModelPatcher sets `model.device`, a read-only property of theirs)."""

    def __init__(self, **networks: nn.Module):
        super().__init__()
        for name, network in networks.items():
            self.add_module(name, network)


def model_patcher(module: nn.Module):
    """A ComfyUI ModelPatcher for `module`: loaded to ComfyUI's compute device, evicted to its offload device."""
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(module, load_device=compute_device(), offload_device=offload_device())


def ordinary_tensors(module: nn.Module) -> int:
    """Replace inference-mode parameters and buffers of `module` by ordinary copies (outside inference mode), so
    autograd can use them (the guided step, the attack). ComfyUI runs nodes in inference mode, so a model it moved
    there (evicting it for another node, say) comes back as inference tensors. Returns how many were replaced."""
    replaced = 0
    with torch.inference_mode(False):
        for sub in module.modules():
            for name, p in list(sub._parameters.items()):
                if p is not None and p.is_inference():
                    sub._parameters[name] = nn.Parameter(p.clone(), requires_grad=p.requires_grad)
                    replaced += 1
            for name, b in list(sub._buffers.items()):
                if b is not None and b.is_inference():
                    sub._buffers[name] = b.clone()
                    replaced += 1
    return replaced


def load_models(patchers: Iterable, differentiable: bool = True) -> torch.device:
    """Ask ComfyUI to load ModelPatchers onto their device (it frees memory for them, and evicts other models if it
    must), outside inference mode so the weights it moves stay ordinary tensors. Our networks cannot run partly
    loaded (they have no ComfyUI cast layers), so they are loaded in full. Returns the device they are on."""
    patchers = list(patchers)
    with torch.inference_mode(False):
        _mm().load_models_gpu(patchers, force_full_load=True)
        for p in patchers:
            device = torch.device(p.load_device)
            if any(t.device != device for t in p.model.parameters()):  # e.g. --novram: a partial load anyway
                log.info("VideoPure: ComfyUI loaded %s only in part; moving all of it to %s.",
                         type(p.model).__name__, device)
                p.model.to(device)
            if differentiable:
                ordinary_tensors(p.model)
    return torch.device(patchers[0].load_device) if patchers else compute_device()


class ModelHandle:
    """Networks held by a ComfyUI ModelPatcher (`patcher`, its `.model` a module).

    `with handle.on_device() as device:` loads them through ComfyUI's model management and makes every call of
    one of their modules check for Cancel (so an interrupt stops a long network call within one layer).
    ComfyUI caches loader outputs, so a handle lives as long as its loader's output does. `differentiable` handles
    keep their weights ordinary tensors for autograd."""

    differentiable: bool = True
    name: str = ""
    patcher = None

    @contextlib.contextmanager
    def on_device(self):
        device = load_models([self.patcher], self.differentiable)
        with interruptible(self.patcher.model):
            yield device


def load_outside_inference(fn, *args, **kwargs):
    """Run a model-building/loading function with inference mode off (ComfyUI runs nodes inside it), so the
    parameters are ordinary tensors."""
    with torch.inference_mode(False):
        return fn(*args, **kwargs)


# --- progress, interruption and previews -------------------------------------------------------------------------


def check_interrupt() -> None:
    """Raise ComfyUI's interruption exception when the user pressed Cancel (or POST /interrupt came)."""
    _mm().throw_exception_if_processing_interrupted()


@contextlib.contextmanager
def interruptible(module: nn.Module):
    """While inside, every call of a leaf module of `module` first checks ComfyUI's interrupt flag: Cancel stops a
    network call within one layer instead of after the whole chunk of frames (RAFT on 16 frame pairs, a UNet step on
    a long video), without any change to the library's loops."""
    check = _mm().throw_exception_if_processing_interrupted

    def hook(_module, _args):
        check()

    handles = [m.register_forward_pre_hook(hook) for m in module.modules() if not any(True for _ in m.children())]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def previews_enabled() -> bool:
    """Whether ComfyUI shows previews during progress (--preview-method, or the frontend's live-preview setting)."""
    try:
        from comfy.cli_args import LatentPreviewMethod, args
    except ImportError:
        return False
    return args.preview_method != LatentPreviewMethod.NoPreviews


def preview_size() -> int:
    from comfy.cli_args import args

    return int(getattr(args, "preview_size", 512))


class Progress:
    """`callback(stage, step, total)` for the library, shown on the node's progress bar, checking interruption.

    `stages` (name -> the total that stage reports, e.g. from videopure_core.pipeline.progress_steps) lays the
    stages one after the other on one bar, so that it moves once per network call; stages not listed get the bar
    to themselves while they run. `preview(image)` shows a PIL image on the node while it runs."""

    def __init__(self, stages: Optional[dict[str, int]] = None):
        import comfy.utils

        self.offsets, total = {}, 0
        for name, steps in (stages or {}).items():
            if steps:
                self.offsets[name] = total
                total += steps
        self.total = max(1, total)
        self.value = 0
        self.bar = comfy.utils.ProgressBar(self.total)

    def __call__(self, stage: str, step: int, total: int) -> None:
        if stage in self.offsets:
            self.value = self.offsets[stage] + min(step, total) * self._span(stage) // max(1, total)
            self.bar.update_absolute(self.value, self.total)
        else:
            self.bar.update_absolute(step, total)
        check_interrupt()

    def preview(self, image) -> None:
        self.bar.update_absolute(self.value, self.total, ("JPEG", image, preview_size()))

    def _span(self, stage: str) -> int:
        names = list(self.offsets)
        i = names.index(stage)
        end = self.offsets[names[i + 1]] if i + 1 < len(names) else self.total
        return end - self.offsets[stage]


def candidate_preview(decode: Callable[[Tensor], Tensor]) -> Callable[[Tensor], object]:
    """latent (B, 4, F, h, w) -> a PIL image of the middle frame of its first video, decoded with `decode`
    ((N, 4, F, h, w) -> (N, 3, F, H, W) in [0,1], e.g. the VAE adapter through decode_latents)."""
    from PIL import Image

    def make(latent: Tensor):
        middle = latent.shape[2] // 2
        with torch.no_grad():
            frame = decode(latent[:1, :, middle:middle + 1].detach())[0, :, 0]
        pixels = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(pixels)

    return make


class ComfyHooks(Hooks):
    """Pipeline hooks reporting to a Progress (bar + Cancel) and showing each candidate with `preview` (a function
    latent (B, 4, F, h, w) -> PIL image), if given."""

    def __init__(self, progress: Progress, preview: Optional[Callable[[Tensor], object]] = None):
        super().__init__(progress)
        self.bar, self.preview = progress, preview

    def candidate(self, label: int, latent: Tensor) -> None:
        if self.preview is not None:
            self.bar.preview(self.preview(latent))


def hooks(stages: Optional[dict[str, int]] = None, preview: Optional[Callable[[Tensor], object]] = None) -> ComfyHooks:
    """Pipeline hooks that drive the node's progress bar, check for Cancel, and (when ComfyUI shows previews)
    show every candidate as it is made, made into a picture by `preview`."""
    return ComfyHooks(Progress(stages), preview if previews_enabled() else None)


# --- IMAGE batches <-> videos (the one place where the node pack converts layouts) --------------------------------


def image_to_video(image: Tensor, name: str = "images", purify: bool = True) -> Tensor:
    """A ComfyUI IMAGE batch (F, H, W, 3), one image per frame, -> one video (1, 3, F, H, W) float32, checked: for
    purification (`purify`) at least 2 frames (optical flow pairs frames) and sides divisible by 8 (the VAE), else
    (a classifier, an attack) any frame count and size; the classifier checks its own needs."""
    if isinstance(image, Tensor) and image.dim() != 4:
        raise ValueError(
            f"{name} has shape {tuple(image.shape)}; VideoPure takes an IMAGE batch (frames, height, width, 3), "
            f"one image per frame of one video."
        )
    if purify:
        return from_frames(image, name=name)
    return from_frames(image, min_frames=1, multiple=1, name=name)


def video_to_image(video: Tensor) -> Tensor:
    """Videos (..., 3, F, H, W) in [0,1] (one video, a batch, candidates x batch) -> an IMAGE batch (frames, H, W, 3)
    on the intermediate device, videos one after the other."""
    return frames_to_image(to_frames(video.detach()))


def frames_to_image(frames: Tensor) -> Tensor:
    """Frames (..., H, W, 3) in [0,1] -> an IMAGE batch (N, H, W, 3) float32 on the intermediate device."""
    return frames.detach().reshape(-1, *frames.shape[-3:]).float().clamp(0, 1).contiguous().to(output_device())
