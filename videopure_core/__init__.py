"""VideoPure: diffusion-based adversarial purification for video recognition (Jiang et al.), as a library.

The stages of the paper's Algorithm 1, each a small function over tensors:

    encode_video -> ddim_invert (temporal) -> latent_flow -> guided_denoise -> decode_latents -> classify -> vote

`Purifier` holds the loaded models and runs them in order; `PurifyConfig` holds every hyperparameter and option.
Videos are (B, F, H, W, 3) or (F, H, W, 3) in [0,1] at the edges, (B, 3, F, H, W) inside.
"""

from .classifiers import ClassifierOutputError, NormalizedClassifier, build_torchvision_classifier, classify
from .config import PurifyConfig
from .ddim import ddim_step, predict_x0, unet_eps_fn
from .denoise import denoise_step, final_candidate, guided_denoise
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
from .purifier import Candidates, Purifier
from .schedule import MODELSCOPE_SCHEDULER_CONFIG, Schedule, make_schedule
from .vae import decode_latents, encode_video
from .video import VideoInputError, check_video, to_channels_first, to_channels_last
from .vote import VoteResult, majority, vote

__version__ = "0.1.0"

__all__ = [name for name in dir() if not name.startswith("_")]
