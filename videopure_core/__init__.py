"""VideoPure: diffusion-based adversarial purification for video recognition (Jiang et al.), as a library.

The stages of the paper's Algorithm 1, each a small function over tensors:

    encode_video -> ddim_invert (temporal) -> latent_flow -> guided_denoise -> decode_latents -> classify -> vote

`pipeline` wires them once (Algorithm 1: video -> candidates -> vote) with the networks injected as adapters;
`Purifier` holds the loaded models, the algorithm's `PurifyConfig` (with its `Guidance`) and a `Runtime`, and calls
the pipeline. Videos are (B, 3, F, H, W) in [0,1]; `from_frames` converts frames (F, H, W, 3) / (B, F, H, W, 3).
"""

from .classifiers import ClassifierOutputError, NormalizedClassifier, build_torchvision_classifier, classify
from .config import DDIM_INVERSION, TABLE_IV, Guidance, PurifyConfig, Runtime
from .ddim import ddim_step, predict_x0
from .denoise import Step, denoise_step, denoise_steps, final_candidate, guided_denoise
from .flow import LatentFlow, RaftFlow, backward_warp, latent_flow, resize_flow, video_flow
from .guidance import guidance_gradient, guidance_loss, guided_latent, spatial_loss, temporal_loss
from .inversion import ddim_invert, replicate_frame_noise
from .loading import (
    DiffusionModels,
    ModelNotFoundError,
    encode_empty_prompt,
    load_diffusion,
    load_embedding,
    load_raft,
    load_video_classifier,
    load_weights,
    save_embedding,
)
from .networks import FrameVAE, unet_eps_fn
from .pipeline import Candidates, Hooks, Networks, vote_candidates
from .purifier import Purifier
from .schedule import MODELSCOPE_SCHEDULER_CONFIG, Schedule, make_schedule
from .vae import decode_latents, encode_video
from .video import VideoInputError, check_video, from_frames, to_frames
from .vote import VoteResult, majority, vote

__version__ = "0.1.0"

__all__ = [name for name in dir() if not name.startswith("_")]
