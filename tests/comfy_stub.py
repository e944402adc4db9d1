"""Minimal stand-ins for the ComfyUI modules the node pack touches (comfy.utils, comfy.model_management,
comfy.model_patcher, comfy.cli_args, folder_paths), and a loader that imports the pack the way ComfyUI does: its top-level __init__.py as a package
under a path-derived name, so its relative imports are exercised.

    with comfy_stub.installed(tmp_path / "models") as comfy:
        pack = comfy_stub.load_pack()
        pack.NODE_CLASS_MAPPINGS[...]
        comfy.interrupt = True        # the next interrupt check raises InterruptProcessingException
        comfy.loads                   # every load_models_gpu call: [(patcher, ...), ...]
        comfy.previews = True         # as --preview-method auto: nodes send preview images with their progress
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACK_MODULE = str(REPO).replace(".", "_x_")  # what ComfyUI names a pack loaded from this folder


class InterruptProcessingException(Exception):
    pass


class StubState:
    """What the stand-ins record and what tests can switch."""

    def __init__(self, models_dir: Path):
        self.models_dir = str(models_dir)
        self.interrupt = False
        self.progress: list[tuple[int, int]] = []  # every (value, total) a ProgressBar reported
        self.previews: list = []  # every preview a ProgressBar got: ("JPEG", PIL image, max size)
        self.device = torch.device("cpu")
        self.offload = torch.device("cpu")
        self.loads: list[tuple] = []  # the patchers of every load_models_gpu call
        self.load_modes: list[bool] = []  # whether each load_models_gpu call ran in inference mode
        self.show_previews = False


def _modules(state: StubState) -> dict[str, types.ModuleType]:
    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    mm = types.ModuleType("comfy.model_management")
    mp = types.ModuleType("comfy.model_patcher")
    cli = types.ModuleType("comfy.cli_args")
    fp = types.ModuleType("folder_paths")

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            self.current = min(value, self.total)
            if preview is not None:
                state.previews.append(preview)
            else:
                state.progress.append((self.current, self.total))
            throw_exception_if_processing_interrupted()  # as ComfyUI's progress hook does

        def update(self, value):
            self.update_absolute(self.current + value)

    utils.ProgressBar = ProgressBar

    def throw_exception_if_processing_interrupted():
        if state.interrupt:
            state.interrupt = False
            raise InterruptProcessingException()

    mm.InterruptProcessingException = InterruptProcessingException
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.processing_interrupted = lambda: state.interrupt
    mm.get_torch_device = lambda: state.device
    mm.unet_offload_device = lambda: state.offload
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.should_use_fp16 = lambda device=None, **kw: False
    mm.should_use_bf16 = lambda device=None, **kw: False
    mm.soft_empty_cache = lambda force=False: None

    class ModelPatcher:  # ComfyUI's, as far as the pack uses it (model, load/offload devices, the model's size)
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
            if not hasattr(model, "device"):
                model.device = offload_device

        def model_size(self):
            return sum(t.numel() * t.element_size() for t in self.model.state_dict().values())

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        state.loads.append(tuple(models))
        state.load_modes.append(torch.is_inference_mode_enabled())
        for m in models:  # as ComfyUI does: modules moved to the load device (here in whatever mode it runs in)
            m.model.to(m.load_device)
            m.model.device = m.load_device

    mp.ModelPatcher = ModelPatcher
    mm.load_models_gpu = load_models_gpu

    class LatentPreviewMethod:
        NoPreviews = "none"
        Auto = "auto"

    class Args:
        preview_size = 512

        @property
        def preview_method(self):
            return LatentPreviewMethod.Auto if state.show_previews else LatentPreviewMethod.NoPreviews

    cli.LatentPreviewMethod, cli.args = LatentPreviewMethod, Args()

    fp.models_dir = state.models_dir
    fp.get_input_directory = lambda: os.path.join(os.path.dirname(state.models_dir), "input")
    fp.supported_pt_extensions = {".ckpt", ".pt", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
    fp.folder_names_and_paths = {}

    def add_model_folder_path(name, path, is_default=False):
        paths, _ = fp.folder_names_and_paths.setdefault(name, ([], set()))
        if path not in paths:
            paths.insert(0, path) if is_default else paths.append(path)

    def get_folder_paths(name):
        return list(fp.folder_names_and_paths[name][0])

    def get_filename_list(name):
        paths, exts = fp.folder_names_and_paths[name]
        out = []
        for root in paths:
            for folder, _, files in os.walk(root):
                for f in files:
                    if not exts or os.path.splitext(f)[1].lower() in exts:
                        out.append(os.path.relpath(os.path.join(folder, f), root))
        return sorted(set(out))

    def get_full_path(name, filename):
        for root in fp.folder_names_and_paths.get(name, ([], set()))[0]:
            path = os.path.join(root, filename)
            if os.path.isfile(path):
                return path
        return None

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = get_folder_paths
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path

    comfy.utils, comfy.model_management, comfy.model_patcher, comfy.cli_args = utils, mm, mp, cli
    return {"comfy": comfy, "comfy.utils": utils, "comfy.model_management": mm, "comfy.model_patcher": mp,
            "comfy.cli_args": cli, "folder_paths": fp}


@contextlib.contextmanager
def installed(models_dir):
    """Put the stand-ins into sys.modules (restoring whatever was there afterwards); yields their StubState."""
    state = StubState(Path(models_dir))
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    names = ["comfy", "comfy.utils", "comfy.model_management", "comfy.model_patcher", "comfy.cli_args", "folder_paths"]
    pack_names = [n for n in sys.modules if n == PACK_MODULE or n.startswith(PACK_MODULE + ".")]
    saved = {n: sys.modules.get(n) for n in names + pack_names}
    for n in pack_names:
        del sys.modules[n]
    sys.modules.update(_modules(state))
    try:
        yield state
    finally:
        for n in [n for n in sys.modules if n == PACK_MODULE or n.startswith(PACK_MODULE + ".")]:
            del sys.modules[n]
        for n, module in saved.items():
            if module is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = module


def load_pack():
    """Import the repository's __init__.py as ComfyUI would (a package named after its path)."""
    spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module
