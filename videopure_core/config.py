"""What VideoPure computes, in two frozen dataclasses, and how it runs, in a third.

    PurifyConfig   the algorithm (paper Algorithm 1): t*, the DDIM grid, temporal inversion, candidates, voting
    Guidance       the spatial-temporal optimisation (Eqs. 12-16): all that `guidance.py` takes
    Runtime        device, dtype and the execution options (autocast, NHWC, compile, chunk sizes); it changes how
                   the networks run, never what the stages compute. Held by the Purifier, not by the algorithm.

The defaults reproduce the authors' public release (SPEC.md, paper Section IV-A). Table IV's ablations are data,
`TABLE_IV` below, applied with `PurifyConfig.with_options`:

    ============================================  ==========================================================
    Table IV row                                  options
    ============================================  ==========================================================
    plain DDIM inversion (no module)              temporal=False, guidance=False, single_candidate=0
    temporal DDIM inversion only                  guidance=False, single_candidate=0
    temporal inversion + multi-step voting        guidance=False
    temporal inversion + spatial-temporal opt.    single_candidate=0
    full VideoPure                                (none)
    ============================================  ==========================================================

"No voting" keeps candidate z_0^0 (the last one), the row of Table VII labelled 0; Table VII's other rows are
single_candidate=t for t in t_star..1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

VarianceWeight = Literal["log", "linear"]
FinalCandidate = Literal["release", "clean"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Guidance:
    """The guided spatial-temporal step of Algorithm 1 (lines 7-9, Eqs. 12-16): L = lambda_temp L_temp +
    lambda_spa L_spa, z' = z - alpha_s w_t grad_z L."""

    enabled: bool = True  # False removes the optimisation (Table IV): the candidates are the plain x0_hat
    alpha_s: float = -4.0  # guidance scale of Eq. 16 (paper: -4)
    lambda_temp: float = 5.0  # weight of the flow-warp L1 loss L_temp (Eq. 13; paper: 5)
    lambda_spa: float = 800.0  # weight of L_spa = -MSE(x0_hat, z0_input) (Eq. 12; paper: 800)
    lambda_reference: Optional[tuple[int, int, int]] = None  # (frames, h, w) of the latent the lambdas were tuned
    #   at, e.g. (32, 28, 28) for the paper's 32x224x224. Both losses are means, so one step moves each element by
    #   ~1/size: None (release) uses the lambdas as they are; a reference rescales lambda_spa by (F h w)/(F' h' w')
    #   and lambda_temp by (h w)/(h' w') so that a step changes the candidate as much as at the reference size.
    variance_weight: VarianceWeight = "log"  # w_t of Eq. 16: "log" of the DDPM posterior variance (IV-A, release)
    #                                          or "linear", the variance itself (Eq. 16 read literally)
    warp_grad: bool = False  # let the gradient of L_temp flow through the warped frame (release: no)
    bidirectional: bool = False  # add the backward-flow term of L_temp (release: forward flow only)
    occlusion_mask: bool = False  # weight L_temp by a forward-backward flow consistency mask (release: no)

    def __post_init__(self):
        if self.variance_weight not in ("log", "linear"):
            raise ValueError(f"variance_weight must be 'log' or 'linear', got {self.variance_weight!r}.")
        if self.lambda_reference is not None:
            ref = tuple(self.lambda_reference)
            if len(ref) != 3 or min(ref) < 1:
                raise ValueError(f"lambda_reference must be None or (frames, h, w) >= 1, got {self.lambda_reference}.")
            object.__setattr__(self, "lambda_reference", tuple(int(v) for v in ref))

    @property
    def needs_flow(self) -> bool:
        """Whether the temporal loss is active, so that the optical flow of the input is needed."""
        return self.enabled and self.lambda_temp != 0

    @property
    def needs_backward_flow(self) -> bool:
        return self.needs_flow and (self.bidirectional or self.occlusion_mask)

    def weights(self, latent_shape: tuple[int, ...]) -> tuple[float, float]:
        """(lambda_temp, lambda_spa) for latents of shape (..., F, h, w), rescaled when lambda_reference is set."""
        if self.lambda_reference is None:
            return self.lambda_temp, self.lambda_spa
        f_ref, h_ref, w_ref = self.lambda_reference
        f, h, w = latent_shape[-3:]
        return self.lambda_temp * (h * w) / (h_ref * w_ref), self.lambda_spa * (f * h * w) / (f_ref * h_ref * w_ref)


@dataclass(frozen=True)
class PurifyConfig:
    """VideoPure's algorithm (paper Algorithm 1) and the switches for its ablations."""

    t_star: int = 6  # number of DDIM inversion steps (paper t* = 6); there are t_star + 1 candidates
    ddim_steps: int = 50  # DDIM grid over the 1000 training steps: 981, 961, ..., 21, 1
    temporal: bool = True  # temporal DDIM inversion (Eq. 11); False gives plain DDIM inversion (Eq. 10)
    noise_frame: int = 0  # the frame whose predicted noise is replicated to every frame (Eq. 11: the first)
    guidance: Guidance = field(default_factory=Guidance)  # the spatial-temporal optimisation (Eqs. 12-16)
    guide_trajectory: bool = False  # feed the optimised latent back into the DDIM trajectory (Table VIII "Ours*")
    final_candidate: FinalCandidate = "release"  # how the last candidate z_0^0 is made (Algorithm 1, l. 12-14):
    #   "release": x0_hat of the final latent with tau=1's eps and coefficients, the updated latent kept;
    #   "clean":   the final latent is taken as x0 directly and optimised in place.
    single_candidate: Optional[int] = None  # None: all t_star+1 candidates vote; t: only z_0^t (Table VII)

    def __post_init__(self):
        if not 1 <= self.t_star <= self.ddim_steps:
            raise ValueError(f"t_star={self.t_star} must be between 1 and ddim_steps={self.ddim_steps}.")
        if self.final_candidate not in ("release", "clean"):
            raise ValueError(f"final_candidate must be 'release' or 'clean', got {self.final_candidate!r}.")
        if self.single_candidate is not None and not 0 <= self.single_candidate <= self.t_star:
            raise ValueError(
                f"single_candidate={self.single_candidate} must be None or a step label between 0 and "
                f"t_star={self.t_star} (z_0^t as in Table VII)."
            )
        if self.noise_frame < 0:
            raise ValueError(f"noise_frame must be >= 0, got {self.noise_frame}.")
        if not isinstance(self.guidance, Guidance):
            raise TypeError(f"guidance must be a Guidance, got {type(self.guidance).__name__} (for on/off use "
                            f"with_options(guidance=False)).")

    @property
    def needs_flow(self) -> bool:
        """Whether purification needs optical flow (the temporal loss is active)."""
        return self.guidance.needs_flow

    @property
    def candidate_labels(self) -> tuple[int, ...]:
        """Paper labels t of the candidates z_0^t that vote, in the order they are produced (t_star ... 0)."""
        if self.single_candidate is not None:
            return (self.single_candidate,)
        return tuple(range(self.t_star, -1, -1))

    def with_options(self, **options) -> "PurifyConfig":
        """A copy with options changed by their flat names: fields of PurifyConfig or of Guidance, and
        `guidance=True/False` for Guidance.enabled (the names that `key=value` option strings use).

            PurifyConfig().with_options(t_star=4, guidance=False)       # Table IV's "temporal inversion + voting"
            PurifyConfig().with_options(lambda_spa=0, alpha_s=-2.0)
        """
        top, guide = {}, {}
        for name, value in options.items():
            if name == "guidance" and not isinstance(value, Guidance):
                guide["enabled"] = bool(value)
            elif name in _CONFIG_FIELDS:
                top[name] = value
            elif name in _GUIDANCE_FIELDS:
                guide[name] = value
            else:
                raise ValueError(f"Unknown VideoPure option {name!r}; options are {', '.join(option_names())} "
                                 f"(execution settings such as device or dtype belong to Runtime).")
        if guide:
            top["guidance"] = dataclasses.replace(top.get("guidance", self.guidance), **guide)
        return dataclasses.replace(self, **top)

    def options(self) -> dict:
        """The flat options that differ from the defaults (inverse of `with_options`), e.g. for run records."""
        default, out = PurifyConfig(), {}
        for name in _CONFIG_FIELDS:
            if name != "guidance" and getattr(self, name) != getattr(default, name):
                out[name] = getattr(self, name)
        for name in _GUIDANCE_FIELDS:
            value = getattr(self.guidance, name)
            if value != getattr(default.guidance, name):
                out["guidance" if name == "enabled" else name] = list(value) if isinstance(value, tuple) else value
        return out


_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(PurifyConfig))
_GUIDANCE_FIELDS = tuple(f.name for f in dataclasses.fields(Guidance))


def option_names() -> tuple[str, ...]:
    """Every flat option name `with_options` takes."""
    return tuple(n for n in _CONFIG_FIELDS) + tuple(n for n in _GUIDANCE_FIELDS if n != "enabled")


TABLE_IV: dict[str, dict] = {
    "plain DDIM inversion": dict(temporal=False, guidance=False, single_candidate=0),
    "temporal DDIM inversion": dict(guidance=False, single_candidate=0),
    "temporal inversion + voting": dict(guidance=False),
    "temporal inversion + optimisation": dict(single_candidate=0),
    "VideoPure": dict(),
}
"""Table IV's rows (key modules switched on one at a time) as `with_options` options."""

DDIM_INVERSION = TABLE_IV["plain DDIM inversion"]
"""The DDIM-inversion baseline (Table I): per-frame eps, t* steps up, t* DDIM steps down, one output."""


@dataclass(frozen=True)
class Runtime:
    """How the networks run. A setting that is given is honoured (the Purifier moves and casts its networks to
    device/dtype) or rejected with an error; None means "as the models are"."""

    device: Optional[str] = None  # "cpu", "cuda", "cuda:1", "auto" (cuda when available); None: the models' device
    dtype: Optional[str] = None  # network dtype "float32" / "float16" / "bfloat16"; None: the models' dtype.
    #                              Latent arithmetic (inversion, DDIM steps, guidance) always stays float32.
    autocast: Optional[str] = None  # "bfloat16" / "float16": run the networks in `autocast_networks` under
    #   torch.autocast (matmuls and convolutions in low precision, norms and softmax in fp32); latents and the
    #   guidance stay fp32 and the classifier runs as given. On GPU use with dtype="bfloat16" (docs/performance.md).
    autocast_networks: tuple[str, ...] = ("unet", "vae", "flow")  # which networks autocast applies to (a small
    #   UNet is overhead-bound on CPU and only gets slower in bf16, while its VAE and RAFT gain ~2x)
    channels_last: bool = False  # NHWC layout for the VAE's and UNet's 2-D convolutions (converts both modules in
    #   place: same values, another memory layout). Helps tensor-core convolutions on GPU; no gain measured on CPU.
    compile: bool = False  # torch.compile the UNet and the VAE (compiled on first use: minutes on CPU)
    chunk: int = 16  # frames per VAE call and frame pairs per flow call (bounds memory on long videos)
    unet_batch: Optional[int] = None  # videos per UNet call; None = the whole batch (memory grows with the batch)

    def __post_init__(self):
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be None or one of {sorted(DTYPES)}, got {self.dtype!r}.")
        if self.autocast not in (None, "float16", "bfloat16"):
            raise ValueError(f"autocast must be None, 'float16' or 'bfloat16', got {self.autocast!r}.")
        if not set(self.autocast_networks) <= {"unet", "vae", "flow"}:
            raise ValueError(f"autocast_networks must name 'unet', 'vae' and/or 'flow', got {self.autocast_networks!r}.")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}.")
        if self.unet_batch is not None and self.unet_batch < 1:
            raise ValueError(f"unet_batch must be None or >= 1, got {self.unet_batch}.")
        if self.device is not None:
            self.torch_device  # noqa: B018  (raises for a device string torch does not know)

    @property
    def torch_dtype(self) -> Optional[torch.dtype]:
        return None if self.dtype is None else DTYPES[self.dtype]

    @property
    def torch_device(self) -> Optional[torch.device]:
        if self.device is None:
            return None
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"device {self.device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'auto').") from err

    def autocast_for(self, network: str) -> Optional[str]:
        """The autocast dtype for "unet", "vae" or "flow" (None: the network runs in its own dtype)."""
        return self.autocast if network in self.autocast_networks else None

    def replace(self, **changes) -> "Runtime":
        return dataclasses.replace(self, **changes)
