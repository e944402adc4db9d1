"""Video sources: a clip of the small world (so the bundled workflows run anywhere) and fitting frames to VideoPure."""

from __future__ import annotations

from videopure_core.io import fit_video
from videopure_core.world.generator import CLASSES, SPLIT_SEEDS, WorldSpec, make_clip

from . import bridge


class VideoPureWorldClip:
    DESCRIPTION = ("A clip of the small world (64x64, a shape moving left/right/up/down): clip `index` of a split "
                   "has class index % 12, the same clip on every machine.")
    CATEGORY = "VideoPure/data"
    FUNCTION = "clip"
    RETURN_TYPES = ("IMAGE", "INT", "STRING")
    RETURN_NAMES = ("images", "label", "class_name")
    OUTPUT_TOOLTIPS = ("The clip's frames (frames x 64 x 64), one image per frame.",
                       "Its true class index (index % 12), e.g. for the PGD attack's label.",
                       "Its true class name.")
    SEARCH_ALIASES = ["small world", "test clip", "sample video", "videopure clip"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "split": (list(SPLIT_SEEDS), {"default": "test", "tooltip": "The classifier and diffusion model "
                          "were trained on 'train'; 'test' clips are held out."}),
                "index": ("INT", {"default": 0, "min": 0, "max": 999_999, "tooltip": "Clip number; its class is "
                          "index % 12 (" + ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES)) + ")."}),
                "frames": ("INT", {"default": 16, "min": 2, "max": 16, "tooltip": "Frames (the world was trained "
                           "on 16)."}),
            }
        }

    def clip(self, split, index, frames):
        label = index % len(CLASSES)
        clip = make_clip(label, SPLIT_SEEDS[split] + index, WorldSpec(frames=frames))
        return (bridge.frames_to_image(clip.video), label, CLASSES[label])


class VideoPureFitVideo:
    DESCRIPTION = ("Fit frames to VideoPure: keep the first max_frames (0: all) and resize so height and width are "
                   "multiples of 8 (to size x size when size > 0). Put it after a video loader.")
    CATEGORY = "VideoPure/data"
    FUNCTION = "fit"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The kept frames, height and width multiples of 8, ready for VideoPure.",)
    SEARCH_ALIASES = ["resize video", "crop frames", "fit frames", "multiple of 8", "max frames"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The video's frames, one image per frame (e.g. from Get Video "
                                                "Components or a video loader)."}),
                "size": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8, "tooltip": "0: round the size "
                         "down to multiples of 8; else resize to size x size (the paper: 224)."}),
                "max_frames": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "0: every frame (the "
                               "paper: 32)."}),
            }
        }

    def fit(self, images, size, max_frames):
        video = images[:max_frames] if max_frames else images
        return (bridge.frames_to_image(fit_video(video.float(), size or None)),)


NODE_CLASS_MAPPINGS = {"VideoPureWorldClip": VideoPureWorldClip, "VideoPureFitVideo": VideoPureFitVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoPureWorldClip": "VideoPure Small World Clip",
                              "VideoPureFitVideo": "VideoPure Fit Video"}
