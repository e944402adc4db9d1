"""The values that travel on VideoPure's custom sockets.

    VIDEOPURE_MODEL              DiffusionModel   UNet3D + VAE + scheduler config + empty-prompt embedding
    VIDEOPURE_RAFT               FlowModel        torchvision RAFT (or any flow_fn(img1, img2) -> flow); RAFT sockets
                                                  also take core OPTICAL_FLOW (ComfyUI 0.33), see as_flow_model
    VIDEOPURE_CLASSIFIER         VideoClassifier  (B, 3, F, H, W) in [0,1] -> logits, with class names
    VIDEOPURE_LATENT             LatentState      where a video is on the DDIM trajectory, and its candidates so far
    VIDEOPURE_FLOW               FlowState        optical flow of the input on the latent grid (core LatentFlow)
    VIDEOPURE_CANDIDATE_LATENTS  videopure_core.Candidates, latents only (videos None until Candidate Decode)
    VIDEOPURE_CANDIDATES         videopure_core.Candidates (decoded: videos (K, B, 3, F, H, W), latents, labels)

Tensors in these values live on ComfyUI's intermediate device (the CPU) between nodes; values are never
changed in place (ComfyUI caches node outputs and may hand the same value to several nodes).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from videopure_core.classifiers import min_frames
from videopure_core.config import PurifyConfig, Runtime
from videopure_core.flow import FlowFn, LatentFlow, RaftFlow
from videopure_core.loading import DiffusionModels
from videopure_core.pipeline import Candidates, Networks
from videopure_core.purifier import Purifier
from videopure_core.schedule import Schedule

from . import bridge
from .bridge import ModelHandle

MODEL = "VIDEOPURE_MODEL"
RAFT = "VIDEOPURE_RAFT"
RAFT_INPUT = "VIDEOPURE_RAFT,OPTICAL_FLOW"  # RAFT sockets also take ComfyUI 0.33's core OPTICAL_FLOW (a raft_large)
CLASSIFIER = "VIDEOPURE_CLASSIFIER"
LATENT = "VIDEOPURE_LATENT"
FLOW = "VIDEOPURE_FLOW"
CANDIDATE_LATENTS = "VIDEOPURE_CANDIDATE_LATENTS"
CANDIDATES = "VIDEOPURE_CANDIDATES"

FINISHED = -1  # LatentState.t once the last denoising step (and the final candidate) is done


class DiffusionModel(ModelHandle):
    """A ModelScope-style text-to-video model as VideoPure uses it (the text encoder is never kept): the core's
    DiffusionModels, its UNet and VAE in one ComfyUI ModelPatcher. (`keep_loaded` is ignored: ComfyUI decides.)"""

    def __init__(self, models: DiffusionModels, keep_loaded: bool = False, name: str = ""):
        self.models, self.name = models, name
        self.patcher = bridge.model_patcher(bridge.Bundle(unet=models.unet, vae=models.vae))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.models.unet.parameters()).dtype

    def purifier(self, config: PurifyConfig = PurifyConfig(), flow: Optional[FlowFn] = None,
                 runtime: Runtime = Runtime()) -> Purifier:
        """A core Purifier on these models; make it inside on_device() (its networks bind the current device)."""
        return Purifier(self.models, flow, config, runtime)

    def pipeline_networks(self, chunk: int = 16, flow: Optional[FlowFn] = None) -> Networks:
        """The pipeline's adapters for the stage nodes, `chunk` frames per VAE call; inside on_device()."""
        nets = self.purifier(flow=flow).networks()
        nets.chunk = chunk
        return nets


class FlowModel(ModelHandle):
    """An optical-flow network: torchvision RAFT (ours, or the core OPTICAL_FLOW model of ComfyUI 0.33's Load
    Optical Flow Model, already in a ModelPatcher), or any callable flow_fn(image1, image2) -> (N, 2, H, W)."""

    differentiable = False  # the nodes compute flow on the input, without gradient

    def __init__(self, raft: nn.Module | FlowFn, keep_loaded: bool = False, name: str = "", patcher=None):
        self.raft, self.name = raft, name
        if patcher is not None:
            self.patcher = patcher
        elif isinstance(raft, nn.Module):
            self.patcher = bridge.model_patcher(bridge.Bundle(raft=raft))

    @classmethod
    def from_core(cls, patcher) -> "FlowModel":
        """ComfyUI's OPTICAL_FLOW value (a ModelPatcher around torchvision raft_large) as a FlowModel."""
        return cls(patcher.model, name="OPTICAL_FLOW: " + type(patcher.model).__name__, patcher=patcher)

    @contextlib.contextmanager
    def on_device(self):
        if self.patcher is None:  # a plain function: nothing to load
            yield bridge.compute_device()
        else:
            with super().on_device() as device:
                yield device

    def flow_fn(self, iters: int = 10, input_range: str = "-1,1") -> FlowFn:
        from torchvision.models.optical_flow import RAFT as TorchvisionRAFT

        if isinstance(self.raft, TorchvisionRAFT):
            return RaftFlow(self.raft, iters, input_range)
        return self.raft


def as_flow_model(value) -> FlowModel:
    """What arrives on a RAFT socket: VideoPure's VIDEOPURE_RAFT (a FlowModel) or core OPTICAL_FLOW (a ModelPatcher
    around torchvision RAFT) -> FlowModel."""
    if isinstance(value, FlowModel):
        return value
    from torchvision.models.optical_flow import RAFT as TorchvisionRAFT

    if isinstance(getattr(value, "model", None), TorchvisionRAFT) and hasattr(value, "load_device"):
        return FlowModel.from_core(value)
    raise TypeError(f"The raft input got a {type(value).__name__}; connect a VideoPure RAFT Loader or ComfyUI's "
                    f"Load Optical Flow Model (a torchvision RAFT).")


class VideoClassifier(ModelHandle):
    """A video classifier (B, 3, F, H, W) in [0,1] -> logits (B, C) in a ComfyUI ModelPatcher; `frames` is the frame
    count it requires (None: any), `min_frames` the fewest it takes (from its layers), `classes` its class names
    (None: numbers). (`keep_loaded` is ignored: ComfyUI decides.)"""

    def __init__(self, model: nn.Module, classes: Optional[tuple[str, ...]] = None, frames: Optional[int] = None,
                 keep_loaded: bool = False, name: str = ""):
        self.model, self.classes, self.frames, self.name = model, classes, frames, name
        self.min_frames = min_frames(model)
        self.patcher = bridge.model_patcher(bridge.Bundle(classifier=model))

    def class_name(self, index: int) -> str:
        return self.classes[index] if self.classes and 0 <= index < len(self.classes) else str(index)

    def check_frames(self, frames: int) -> None:
        name = f"The classifier {self.name}" if self.name else "The classifier"
        if self.frames is not None and frames != self.frames:
            raise ValueError(
                f"{name} takes exactly {self.frames} frames; this video has {frames}. "
                f"Feed it {self.frames} frames (e.g. VideoPure Fit Video with max_frames={self.frames})."
            )
        if frames < self.min_frames:
            raise ValueError(
                f"{name} takes at least {self.min_frames} frames (its layers pool over time); this video has "
                f"{frames}. Feed it a longer clip (e.g. VideoPure Small World Clip with frames >= {self.min_frames})."
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
