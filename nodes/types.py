"""The values that travel on VideoPure's custom sockets.

    VIDEOPURE_MODEL              DiffusionModel   UNet3D + VAE + scheduler config + empty-prompt embedding
    VIDEOPURE_RAFT               FlowModel        torchvision RAFT (or any flow_fn(img1, img2) -> flow)
    VIDEOPURE_CLASSIFIER         VideoClassifier  (B, 3, F, H, W) in [0,1] -> logits, with class names
    VIDEOPURE_LATENT             LatentState      where a video is on the DDIM trajectory, and its candidates so far
    VIDEOPURE_FLOW               FlowState        optical flow of the input on the latent grid (core LatentFlow)
    VIDEOPURE_CANDIDATE_LATENTS  videopure_core.Candidates, latents only (videos None until Candidate Decode)
    VIDEOPURE_CANDIDATES         videopure_core.Candidates (decoded: videos (K, B, 3, F, H, W), latents, labels)

Tensors in these values live on ComfyUI's intermediate device (the CPU) between nodes; values are never
changed in place (ComfyUI caches node outputs and may hand the same value to several nodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from videopure_core.config import PurifyConfig
from videopure_core.flow import FlowFn, LatentFlow, RaftFlow
from videopure_core.loading import DiffusionModels
from videopure_core.pipeline import Candidates, Networks
from videopure_core.purifier import Purifier
from videopure_core.schedule import Schedule

from .bridge import ModelHandle

MODEL = "VIDEOPURE_MODEL"
RAFT = "VIDEOPURE_RAFT"
CLASSIFIER = "VIDEOPURE_CLASSIFIER"
LATENT = "VIDEOPURE_LATENT"
FLOW = "VIDEOPURE_FLOW"
CANDIDATE_LATENTS = "VIDEOPURE_CANDIDATE_LATENTS"
CANDIDATES = "VIDEOPURE_CANDIDATES"

FINISHED = -1  # LatentState.t once the last denoising step (and the final candidate) is done


class DiffusionModel(ModelHandle):
    """A ModelScope-style text-to-video model as VideoPure uses it (the text encoder is never kept): the core's
    DiffusionModels, moved between the offload and compute devices by the handle."""

    def __init__(self, models: DiffusionModels, keep_loaded: bool = False, name: str = ""):
        self.models, self.keep_loaded, self.name = models, keep_loaded, name

    def networks(self) -> list[nn.Module]:
        return [self.models.unet, self.models.vae]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.models.unet.parameters()).dtype

    def purifier(self, config: PurifyConfig = PurifyConfig(), flow: Optional[FlowFn] = None) -> Purifier:
        """A core Purifier on these models; make it inside on_device() (its networks bind the current device)."""
        return Purifier(self.models, flow, config)

    def pipeline_networks(self, chunk: int = 16, flow: Optional[FlowFn] = None) -> Networks:
        """The pipeline's adapters for the stage nodes, `chunk` frames per VAE call; inside on_device()."""
        nets = self.purifier(flow=flow).networks()
        nets.chunk = chunk
        return nets


class FlowModel(ModelHandle):
    """An optical-flow network: torchvision RAFT, or any callable flow_fn(image1, image2) -> (N, 2, H, W)."""

    def __init__(self, raft: nn.Module | FlowFn, keep_loaded: bool = False, name: str = ""):
        self.raft, self.keep_loaded, self.name = raft, keep_loaded, name

    def networks(self) -> list[nn.Module]:
        return [self.raft] if isinstance(self.raft, nn.Module) else []

    def flow_fn(self, iters: int = 10, input_range: str = "-1,1") -> FlowFn:
        from torchvision.models.optical_flow import RAFT as TorchvisionRAFT

        if isinstance(self.raft, TorchvisionRAFT):
            return RaftFlow(self.raft, iters, input_range)
        return self.raft


class VideoClassifier(ModelHandle):
    """A video classifier (B, 3, F, H, W) in [0,1] -> logits (B, C); `frames` is the frame count it requires
    (None: any), `classes` its class names (None: numbers)."""

    def __init__(self, model: nn.Module, classes: Optional[tuple[str, ...]] = None, frames: Optional[int] = None,
                 keep_loaded: bool = False, name: str = ""):
        self.model, self.classes, self.frames = model, classes, frames
        self.keep_loaded, self.name = keep_loaded, name

    def networks(self) -> list[nn.Module]:
        return [self.model]

    def class_name(self, index: int) -> str:
        return self.classes[index] if self.classes and 0 <= index < len(self.classes) else str(index)

    def check_frames(self, frames: int) -> None:
        if self.frames is not None and frames != self.frames:
            raise ValueError(
                f"The classifier {self.name or ''} takes exactly {self.frames} frames; this video has {frames}. "
                f"Feed it {self.frames} frames (e.g. VideoPure Fit Video with max_frames={self.frames})."
            )


@dataclass(frozen=True)
class LatentState:
    """A video on VideoPure's DDIM trajectory.

    z:  (B, 4, F, h, w) float32, the current latent: z0 after VAE Encode, z_{t*} after inversion, then the
        latent each Guided Denoise Step lands on.
    z0: (B, 4, F, h, w) float32, the encoded input (what L_spa pushes away from).
    t:  the timestep of z: 0 for the clean latent, the largest schedule timestep after inversion, FINISHED once
        the last step made the final candidate.
    schedule: the DDIM grid chosen at inversion (None before); ddim_steps: its number of steps.
    candidates: the candidates made so far (None before the first step).
    image_size: (H, W) of the frames it came from.
    """

    z: Tensor
    z0: Tensor
    t: int
    image_size: tuple[int, int]
    schedule: Optional[Schedule] = None
    ddim_steps: int = 50
    candidates: Optional[Candidates] = None

    @property
    def frames(self) -> int:
        return self.z.shape[2]

    def describe(self) -> str:
        if self.schedule is None:
            return "the clean latent from VAE Encode"
        if self.t == FINISHED:
            return "a finished trajectory (all denoising steps done)"
        done = len(self.candidates.labels) if self.candidates else 0
        return f"a latent at timestep {self.t} ({done} of {len(self.schedule.timesteps)} denoising steps done)"


@dataclass(frozen=True)
class FlowState:
    """Optical flow of the input video on the latent grid (core LatentFlow, (B, F-1, 2, h, w) tensors) and the
    (H, W) of the frames it was estimated on."""

    flow: LatentFlow
    image_size: tuple[int, int]

    @property
    def frames(self) -> int:
        return self.flow.forward.shape[1] + 1
