"""Loader nodes: the diffusion model, the RAFT flow network and the video classifier.

Each offers the bundled small world (videopure_core/world/weights, runs anywhere) or files from ComfyUI's model
folders (see bridge.py). A missing file is reported when the loader runs, with the path where it belongs; the
combo check at queue time is skipped for the model name on purpose (VALIDATE_INPUTS), so that a workflow naming a
model this machine lacks gets that message instead of a bare "value not in list".
Models are built and loaded outside inference mode, on the CPU, into ComfyUI ModelPatchers: ComfyUI's model
management loads them onto its device when a node uses them and evicts them when another model needs the memory.
"""

from __future__ import annotations

from videopure_core.classifiers import TORCHVISION_VIDEO_MODELS, required_frames
from videopure_core.loading import ModelNotFoundError, load_diffusion, load_raft, load_video_classifier
from videopure_core.world.models import WEIGHTS, load_classifier

from . import bridge
from .bridge import BUNDLED, CLASSIFIER_FOLDER, RAFT_FOLDER, load_outside_inference
from .types import CLASSIFIER, MODEL, RAFT, DiffusionModel, FlowModel, VideoClassifier

KEEP_LOADED = ("BOOLEAN", {"default": False, "advanced": True, "tooltip": "Ignored (kept so that saved workflows "
                           "load): ComfyUI's model management now keeps the weights loaded while there is room and "
                           "evicts them when another model needs the memory."})


def _download_hint(arch: str, weights_name: str | None = None) -> str:
    """Where torchvision publishes weights for `arch` (named so users can fetch them; nothing downloads here)."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
        weights = enum[weights_name] if weights_name else enum.DEFAULT
        return f" torchvision's {arch} weights: {weights.url}"
    except (KeyError, ValueError):
        return ""


class VideoPureDiffusionLoader:
    DESCRIPTION = ("Load a ModelScope-style text-to-video diffusion model (diffusers folder: unet/, vae/, "
                   "scheduler/, text_encoder/ + tokenizer/ or empty_prompt.safetensors) from ComfyUI's "
                   "models/videopure/ or models/diffusers/, or the bundled small world.")
    CATEGORY = "VideoPure/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The video UNet, the VAE, the DDIM scheduler config and the empty-prompt embedding, for "
                       "VideoPure's stage nodes and Purify.",)
    SEARCH_ALIASES = ["videopure", "modelscope", "text-to-video", "load diffusion", "purification model"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ([BUNDLED] + bridge.diffusion_folders(), {
                    "tooltip": "A diffusers folder under models/videopure/ or models/diffusers/ (e.g. "
                               "text-to-video-ms-1.7b), or the small world shipped with VideoPure."}),
                "dtype": (["auto", "float32", "float16", "bfloat16"], {
                    "default": "auto", "tooltip": "Network precision. auto: fp16/bf16 on a GPU that supports it, "
                                                  "float32 on the CPU (half precision is used only on a GPU)."}),
                "keep_loaded": KEEP_LOADED,
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        return True  # a missing model is reported when the node runs, with the folder it belongs in

    def load(self, model, dtype, keep_loaded):
        if model == BUNDLED:
            path = str(_bundled("diffusion/unet/config.json").parents[1])
        else:
            path = bridge.find_diffusion_folder(model)
        torch_dtype = bridge.network_dtype(dtype, bridge.compute_device())
        m = load_outside_inference(load_diffusion, path, torch_dtype, "cpu")
        return (DiffusionModel(m, name=model),)


class VideoPureRAFTLoader:
    DESCRIPTION = ("Load torchvision RAFT (raft_large / raft_small) with weights from ComfyUI's "
                   "models/videopure_raft/ or models/optical_flow/, or the small world's RAFT-small. The paper uses "
                   "raft_large C_T_V1. (ComfyUI 0.33's Load Optical Flow Model works in its place.)")
    CATEGORY = "VideoPure/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (RAFT,)
    RETURN_NAMES = ("raft",)
    OUTPUT_TOOLTIPS = ("The optical-flow network for VideoPure RAFT Flow and Purify (the temporal loss).",)
    SEARCH_ALIASES = ["raft", "optical flow", "videopure flow", "load raft"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weights": ([BUNDLED] + bridge.weight_files(RAFT_FOLDER), {
                    "tooltip": "A RAFT state dict (.pth/.safetensors) under models/videopure_raft/ or "
                               "models/optical_flow/, or the small world's RAFT-small."}),
                "arch": (["raft_large", "raft_small"], {
                    "default": "raft_large", "tooltip": "Architecture of the weights file. Not used for the bundled "
                                                        "weights (RAFT-small; the widget is hidden then)."}),
                "keep_loaded": KEEP_LOADED,
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, weights):
        return True

    def load(self, weights, arch, keep_loaded):
        if weights == BUNDLED:
            arch, path = "raft_small", _bundled("raft_small.safetensors")
        else:
            path = _find(RAFT_FOLDER, weights, "RAFT", _download_hint(arch, "C_T_V1"))
        try:
            raft = load_outside_inference(load_raft, arch, path, "cpu")
        except RuntimeError as err:  # load_state_dict: missing / unexpected keys
            other = "raft_small" if arch == "raft_large" else "raft_large"
            raise ValueError(f"The weights {weights!r} do not fit {arch}; if they are {other} weights, set arch to "
                             f"{other}. ({str(err).splitlines()[0]})") from err
        return (FlowModel(raft, name=f"{arch}: {weights}"),)


class VideoPureClassifierLoader:
    DESCRIPTION = ("Load a video classifier: a torchvision video model (r3d_18, mc3_18, r2plus1d_18, s3d, "
                   "mvit_v2_s, swin3d_t) with weights from ComfyUI's models/videopure_classifiers/, or the small "
                   "world's 12-class 3D CNN. It maps frames in [0,1] to logits (normalisation inside).")
    CATEGORY = "VideoPure/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (CLASSIFIER,)
    RETURN_NAMES = ("classifier",)
    OUTPUT_TOOLTIPS = ("The video classifier with its class names, for Classify, Classifier Vote, Purify's vote and "
                       "the PGD attack.",)
    SEARCH_ALIASES = ["video classifier", "action recognition", "kinetics", "r3d_18", "load classifier"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weights": ([BUNDLED] + bridge.weight_files(CLASSIFIER_FOLDER), {
                    "tooltip": "The torchvision model's state dict under models/videopure_classifiers/, or the "
                               "small world's classifier."}),
                "arch": (sorted(TORCHVISION_VIDEO_MODELS), {
                    "default": "r3d_18", "tooltip": "torchvision architecture of the weights file. Not used for the "
                                                    "bundled classifier (the widget is hidden then)."}),
                "num_classes": ("INT", {"default": 400, "min": 1, "max": 100000,
                                        "tooltip": "Classes of the weights file (Kinetics-400: 400). Not used for "
                                                   "the bundled classifier (the widget is hidden then)."}),
                "keep_loaded": KEEP_LOADED,
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, weights):
        return True

    def load(self, weights, arch, num_classes, keep_loaded):
        if weights == BUNDLED:
            folder = _bundled("classifier/config.json").parent
            model, classes = load_outside_inference(load_classifier, folder, "cpu")
            return (VideoClassifier(model, classes, None, name="small world classifier"),)
        path = _find(CLASSIFIER_FOLDER, weights, "classifier", _download_hint(arch))
        try:
            model = load_outside_inference(load_video_classifier, arch, path, num_classes, "cpu")
        except RuntimeError as err:
            raise ValueError(f"The weights {weights!r} do not fit {arch} with num_classes={num_classes}: check the "
                             f"architecture and the class count. ({str(err).splitlines()[0]})") from err
        return (VideoClassifier(model, _class_names(arch, num_classes), required_frames(arch), name=f"{arch}: {weights}"),)


def _bundled(relative: str):
    """A file of the bundled small world, or an error saying where it should be."""
    path = WEIGHTS / relative
    if not path.is_file():
        raise ModelNotFoundError(
            f"The bundled small world is incomplete: {path} is missing. Reinstall VideoPure with its weights "
            f"folder ({WEIGHTS}), or train one there with `videopure train-world --out {WEIGHTS}`."
        )
    return path


def _find(folder: str, name: str, what: str, hint: str) -> str:
    try:
        return bridge.find_weights(folder, name, what)
    except FileNotFoundError as err:
        raise type(err)(f"{err}{hint}") from None


def _class_names(arch: str, num_classes: int):
    """Kinetics-400 names (from torchvision's metadata, no download) when the head has 400 classes."""
    from torchvision.models import get_model_weights

    try:
        names = get_model_weights(arch).DEFAULT.meta.get("categories")
    except (KeyError, ValueError):
        return None
    return tuple(names) if names and len(names) == num_classes else None


NODE_CLASS_MAPPINGS = {
    "VideoPureDiffusionLoader": VideoPureDiffusionLoader,
    "VideoPureRAFTLoader": VideoPureRAFTLoader,
    "VideoPureClassifierLoader": VideoPureClassifierLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VideoPureDiffusionLoader": "VideoPure Diffusion Model Loader",
    "VideoPureRAFTLoader": "VideoPure RAFT Loader",
    "VideoPureClassifierLoader": "VideoPure Video Classifier Loader",
}
