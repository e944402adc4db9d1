"""What the real-ComfyUI tests share (test_comfyui_server.py: 0.3.75, in CI; test_comfyui_033.py: 0.33, when a tree
is given): a base directory laid out as a user's install (the pack linked into custom_nodes, a second copy of the
pack in another custom_nodes folder, model files in ComfyUI's own folders) and the workflows that measure Cancel."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import comfy_stub
from videopure_core.world.models import WEIGHTS

REPO = comfy_stub.REPO
BUNDLED = "bundled: small world"
COPY = "videopure_copy"  # the second copy of the pack (in a custom_nodes folder loaded after the first)
DUPLICATE_MESSAGE = "VideoPure is installed twice"


def make_base(root: Path) -> tuple[Path, Path]:
    """A --base-directory for ComfyUI under `root` and the extra_model_paths.yaml to pass with it.

    custom_nodes/videopure     the repository (a link)
    <other>/videopure_copy     a copy of the pack (its library a real folder of links), in a custom_nodes folder
                               that the yaml adds, so ComfyUI loads it second; it must refuse to load
    models/videopure/incomplete-model   a half-downloaded diffusers folder (no unet/)
    models/optical_flow/raft_small_copy.safetensors, models/diffusers/world   RAFT weights and a diffusers folder in
                               ComfyUI's own folders (the loaders also search those)"""
    base = root / "comfy-base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "videopure").symlink_to(REPO, target_is_directory=True)
    broken = base / "models" / "videopure" / "incomplete-model"
    (broken / "vae").mkdir(parents=True)
    (broken / "vae" / "config.json").write_text("{}")
    (broken / "model_index.json").write_text("{}")
    (base / "models" / "optical_flow").mkdir(parents=True)
    shutil.copy(WEIGHTS / "raft_small.safetensors", base / "models" / "optical_flow" / "raft_small_copy.safetensors")
    (base / "models" / "diffusers").mkdir(parents=True)
    (base / "models" / "diffusers" / "world").symlink_to(WEIGHTS / "diffusion", target_is_directory=True)

    others = root / "other-custom-nodes"
    copy = others / COPY
    (copy / "videopure_core").mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name not in ("videopure_core", ".git") and not entry.name.startswith("."):
            (copy / entry.name).symlink_to(entry)
    for entry in (REPO / "videopure_core").iterdir():
        (copy / "videopure_core" / entry.name).symlink_to(entry)
    yaml = root / "extra_model_paths.yaml"
    yaml.write_text(f"videopure_copy:\n  custom_nodes: {others}\n")
    return base, yaml


def server_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def long_clip(index: int, repeat: int = 8) -> dict:
    """Nodes 1-5: the world's diffusion model and RAFT, test clip `index` repeated to 16 x `repeat` frames, encoded."""
    return {
        "1": {"class_type": "VideoPureDiffusionLoader", "inputs": {"model": BUNDLED, "dtype": "auto",
                                                                   "keep_loaded": False}},
        "2": {"class_type": "VideoPureRAFTLoader", "inputs": {"weights": BUNDLED, "arch": "raft_small",
                                                              "keep_loaded": False}},
        "3": {"class_type": "VideoPureWorldClip", "inputs": {"split": "test", "index": index, "frames": 16}},
        "4": {"class_type": "RepeatImageBatch", "inputs": {"image": ["3", 0], "amount": repeat}},
        "5": {"class_type": "VideoPureVAEEncode", "inputs": {"model": ["1", 0], "images": ["4", 0], "chunk": 16}},
    }


def flow_workflow(index: int, repeat: int = 8) -> dict:
    """RAFT Flow on a long clip in one network call (chunk larger than the clip): node 6 runs for seconds."""
    return {**long_clip(index, repeat),
            "6": {"class_type": "VideoPureRAFTFlow", "inputs": {
                "raft": ["2", 0], "images": ["4", 0], "latent": ["5", 0], "iters": 10, "input_range": "-1,1",
                "bidirectional": False, "occlusion_mask": False, "chunk": 4096}},
            "7": {"class_type": "VideoPureFlowImage", "inputs": {"flow": ["6", 0]}},
            "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}}}


def inversion_workflow(index: int, repeat: int = 8) -> dict:
    """Temporal DDIM Inversion of a long clip (node 9: six UNet calls on every frame), then denoising and decoding."""
    return {**long_clip(index, repeat),
            "9": {"class_type": "VideoPureTemporalInversion", "inputs": {
                "model": ["1", 0], "latent": ["5", 0], "t_star": 6, "ddim_steps": 50, "temporal": True,
                "noise_frame": 0}},
            "10": {"class_type": "VideoPureGuidedDenoise", "inputs": {
                "model": ["1", 0], "latent": ["9", 0], "guidance": False, "alpha_s": -4.0, "lambda_temp": 0.0,
                "lambda_spa": 800.0, "guidance_reference": "", "variance_weight": "log", "guide_trajectory": False,
                "final_candidate": "release", "warp_grad": False}},
            "11": {"class_type": "VideoPureCandidateDecode", "inputs": {"model": ["1", 0], "candidates": ["10", 0],
                                                                        "candidate": -1, "chunk": 16}},
            "12": {"class_type": "PreviewImage", "inputs": {"images": ["11", 1]}}}


def import_failures(log: str) -> list[str]:
    """The "(IMPORT FAILED)" lines of a ComfyUI log that name a copy of the pack."""
    return [line for line in log.splitlines() if "IMPORT FAILED" in line and "videopure" in line]


def template_titles() -> dict[str, str]:
    """API workflow name -> the title (file name) of its template in example_workflows/, from workflows/build.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "workflows" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return {name: title for name, (title, _) in build.WORKFLOWS.items()}
