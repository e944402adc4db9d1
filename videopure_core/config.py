"""One frozen config object holding every hyperparameter and option of VideoPure.

The defaults reproduce the authors' public release (see SPEC.md and the paper, Section IV-A); the options give
the paper's other readings and the ablations of Table IV:

    ============================================  ==========================================================
    Table IV row                                  config
    ============================================  ==========================================================
    plain DDIM inversion (no module)              temporal=False, guidance=False, single_candidate=0
    temporal DDIM inversion only                  guidance=False, single_candidate=0
    temporal inversion + multi-step voting        guidance=False
    temporal inversion + spatial-temporal opt.    single_candidate=0
    full VideoPure                                PurifyConfig()
    ============================================  ==========================================================

"No voting" keeps candidate z_0^0 (the last one), which is the row of Table VII labelled 0; Table VII's other
rows are single_candidate=t for t in t_star..1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

VarianceWeight = Literal["log", "linear"]
FinalCandidate = Literal["release", "clean"]
RaftInputRange = Literal["-1,1", "0,1"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class PurifyConfig:
    """Hyperparameters of VideoPure (paper Algorithm 1) and the switches for its ablations."""

    # --- diffusion (Section IV-A) -----------------------------------------------------------------------------
    t_star: int = 6  # number of DDIM inversion steps (paper t* = 6); there are t_star + 1 candidates
    ddim_steps: int = 50  # DDIM grid over the 1000 training steps: 981, 961, ..., 21, 1
    temporal: bool = True  # temporal DDIM inversion (Eq. 11); False gives plain DDIM inversion (Eq. 10)
    noise_frame: int = 0  # the frame whose predicted noise is replicated to every frame (Eq. 11: the first)

    # --- guided spatial-temporal optimisation (Eqs. 12-16) ----------------------------------------------------
    guidance: bool = True  # False removes the spatial-temporal optimisation (Table IV): candidates are x0_hat
    alpha_s: float = -4.0  # guidance scale of Eq. 16
    lambda_temp: float = 5.0  # weight of the flow-warp L1 loss L_temp (Eq. 13)
    lambda_spa: float = 800.0  # weight of L_spa = -MSE(x0_hat, z0_input) (Eq. 12)
    variance_weight: VarianceWeight = "log"  # "log": log of the DDPM posterior variance (IV-A, release);
    #                                          "linear": the variance itself (Eq. 16 read literally)
    guide_trajectory: bool = False  # True feeds the optimised latent back into the DDIM trajectory (Table VIII)
    final_candidate: FinalCandidate = "release"  # how the last candidate z_0^0 is made (Algorithm 1, l. 12-14):
    #   "release": x0_hat of the final latent with tau=1's eps and coefficients, the updated latent kept;
    #   "clean":   the final latent is taken as x0 directly and optimised in place.
    warp_grad: bool = False  # let the gradient of L_temp flow through the warped frame (release: no)
    bidirectional: bool = False  # add the backward-flow term of L_temp (release: forward only)
    occlusion_mask: bool = False  # weight L_temp by a forward-backward flow consistency mask (release: no)
    guidance_reference: tuple[int, int, int] | None = None  # (frames, h, w) of the latent the lambdas were tuned
    #   at, e.g. (32, 28, 28) for the paper's 32x224x224. Both losses are means, so one step moves each element by
    #   ~1/size: None (release) uses the lambdas as they are; a reference rescales lambda_spa by (F h w)/(F' h' w')
    #   and lambda_temp by (h w)/(h' w') so a step changes the candidate as much as at the reference size.

    # --- optical flow -----------------------------------------------------------------------------------------
    raft_iters: int = 10  # RAFT refinement iterations
    raft_input_range: RaftInputRange = "-1,1"  # what RAFT is fed; the release feeds "0,1" by mistake

    # --- voting (Section III-B-3) -----------------------------------------------------------------------------
    single_candidate: int | None = None  # None: all t_star+1 candidates vote; t: only z_0^t (Table VII)

    # --- execution --------------------------------------------------------------------------------------------
    encode_chunk: int = 16  # frames per VAE encode call
    decode_chunk: int = 16  # frames per VAE decode call
    flow_chunk: int = 16  # frame pairs per flow-model call
    dtype: str = "float32"  # network dtype: "float32", "float16" or "bfloat16" (latent arithmetic stays fp32)
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ... or "auto"
    autocast: str | None = None  # "bfloat16" / "float16": run the networks in `autocast_networks` under
    #   torch.autocast (matmuls and convolutions in low precision, norms and softmax in fp32); latents and the
    #   guidance stay fp32 and the classifier runs as given. On GPU use with dtype="bfloat16" (docs/performance.md).
    autocast_networks: tuple[str, ...] = ("unet", "vae", "flow")  # which networks autocast applies to (a small
    #   UNet is overhead-bound on CPU and only gets slower in bf16, while its VAE and RAFT gain ~2x)
    channels_last: bool = False  # NHWC layout for the VAE's and UNet's 2-D convolutions (converts both modules in
    #   place: same values, another memory layout). Helps tensor-core convolutions on GPU; no gain measured on CPU.
    compile: bool = False  # torch.compile the UNet and the VAE (compiled on first use: minutes on CPU, worth it on
    #   GPU only for many videos); False runs eagerly
    compile_mode: str | None = None  # torch.compile mode, e.g. "max-autotune"; None is torch's default
    unet_batch: int | None = None  # videos per UNet call; None = the whole batch (memory grows with the batch)
    vae_tiling: bool = False  # diffusers' spatial VAE tiling (only splits frames larger than the VAE's
    #   sample_size, 512 px for ModelScope; chunking over frames already bounds memory at the paper's 224 px)

    def __post_init__(self):
        if not 1 <= self.t_star <= self.ddim_steps:
            raise ValueError(f"t_star={self.t_star} must be between 1 and ddim_steps={self.ddim_steps}.")
        if self.variance_weight not in ("log", "linear"):
            raise ValueError(f"variance_weight must be 'log' or 'linear', got {self.variance_weight!r}.")
        if self.final_candidate not in ("release", "clean"):
            raise ValueError(f"final_candidate must be 'release' or 'clean', got {self.final_candidate!r}.")
        if self.raft_input_range not in ("-1,1", "0,1"):
            raise ValueError(f"raft_input_range must be '-1,1' or '0,1', got {self.raft_input_range!r}.")
        if self.single_candidate is not None and not 0 <= self.single_candidate <= self.t_star:
            raise ValueError(
                f"single_candidate={self.single_candidate} must be None or a step label between 0 and "
                f"t_star={self.t_star} (z_0^t as in Table VII)."
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}.")
        if self.guidance_reference is not None and (
            len(self.guidance_reference) != 3 or min(self.guidance_reference) < 1
        ):
            raise ValueError(f"guidance_reference must be None or (frames, h, w) >= 1, got {self.guidance_reference}.")
        if self.noise_frame < 0:
            raise ValueError(f"noise_frame must be >= 0, got {self.noise_frame}.")
        for name in ("encode_chunk", "decode_chunk", "flow_chunk", "raft_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.autocast not in (None, "float16", "bfloat16"):
            raise ValueError(f"autocast must be None, 'float16' or 'bfloat16', got {self.autocast!r}.")
        if not set(self.autocast_networks) <= {"unet", "vae", "flow"}:
            raise ValueError(
                f"autocast_networks must name 'unet', 'vae' and/or 'flow', got {self.autocast_networks!r}."
            )
        if self.unet_batch is not None and self.unet_batch < 1:
            raise ValueError(f"unet_batch must be None or >= 1, got {self.unet_batch}.")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def autocast_for(self, network: str) -> str | None:
        """The autocast dtype for "unet", "vae" or "flow" (None: the network runs in its own dtype)."""
        return self.autocast if network in self.autocast_networks else None

    @property
    def needs_flow(self) -> bool:
        """Whether purification needs optical flow (the temporal loss is active)."""
        return self.guidance and self.lambda_temp != 0

    @property
    def candidate_labels(self) -> tuple[int, ...]:
        """Paper labels t of the candidates z_0^t that vote, in the order they are produced (t_star ... 0)."""
        if self.single_candidate is not None:
            return (self.single_candidate,)
        return tuple(range(self.t_star, -1, -1))

    def replace(self, **changes) -> "PurifyConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))
