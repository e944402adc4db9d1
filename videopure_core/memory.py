"""Memory per stage, estimated before a run: Algorithm 1 traced on the meta device (shapes only, no compute).

    models = meta_models("models/text-to-video-ms-1.7b", raft="raft_large", classifier="r3d_18")   # configs only
    estimate = estimate_memory(models, (1, 3, 32, 224, 224), PurifyConfig(), Runtime(dtype="float16"))
    print(estimate.table())          # weights per network, working set and peak per stage, the run's peak

The pipeline's own stage functions run on networks built on the meta device (from their config files; no weights
are read), under a dispatch mode that follows every tensor the ops create and when its storage dies: a stage's
working set is the most bytes alive at once during it above what was alive when it started, and its peak adds the
tensors alive from earlier stages (input, latents, flow, candidates). Weights are counted per network in the dtype
they run in. The UNet is traced once; the t* calls of inversion and denoising replay its working set, so an
estimate of the full-size pipeline takes seconds.

What is counted: tensors, as CUDA's `max_memory_allocated` counts them. Not counted: the CUDA context and cuDNN /
cuBLAS workspaces (a few hundred MiB), the caching allocator's reserve and fragmentation, on the CPU the Python
runtime and libraries (about 0.5-1 GiB of resident memory) and the allocator's slack. Attention is counted as a
fused kernel (flash / memory-efficient scaled-dot-product attention, which never materialises the score matrix, as
torch uses on CUDA and on the CPU); `attention_matrix_bytes` is what one call of the math kernel would add.
Autocast is counted as running the network's activations in the autocast dtype with its weights as held (autocast
caches low-precision weight copies only for weights that require grad, which loaded networks do not).
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .config import PurifyConfig, Runtime
from .pipeline import STAGES

GiB = 2**30


class LiveTensors(TorchDispatchMode):
    """Follows the storages that ops create while it is active: `current` bytes alive, `peak` since `reset_peak`.

    A storage counts from the op that created it until its last reference dies (checked before every op, so as
    an allocator sees it: an op's output is alive together with its inputs). Tensors made before the mode started
    (weights, inputs) are not counted; in-place ops and views allocate nothing new.
    """

    def __init__(self):
        super().__init__()
        self._alive: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _sweep(self) -> None:
        dead = [key for key, (ref, _) in self._alive.items() if ref.expired()]
        for key in dead:
            self.current -= self._alive.pop(key)[1]

    def reset_peak(self) -> int:
        """Forget the peak so far; returns (and starts the new peak at) the bytes alive now."""
        self._sweep()
        self.peak = self.current
        return self.current

    def allocate(self, nbytes: int) -> None:
        """Count a transient allocation of `nbytes` that ends at once (a working set replayed, not traced)."""
        self._sweep()
        self.peak = max(self.peak, self.current + int(nbytes))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._sweep()  # what died since the last op is gone before this one allocates
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)}
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self._alive and key not in inputs:  # not a view of an input (e.g. of a weight)
                    self._alive[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


class FusedAttention(TorchFunctionMode):
    """Counts scaled-dot-product attention as a fused kernel does its work: the output and a float32 log-sum-exp
    row per query, never the (L, S) score matrix (which the meta device's math decomposition would build).
    `matrix_bytes` keeps the largest score matrix the math kernel would have materialised."""

    def __init__(self):
        super().__init__()
        self.matrix_bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k, v = args[:3]
            scores = q.shape[:-1] + (k.shape[-2],)
            self.matrix_bytes = max(self.matrix_bytes, _numel(scores) * q.element_size())
            lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)  # alive with the output
            out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
            del lse
            return out
        return func(*args, **kwargs)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# --- the networks on the meta device ------------------------------------------------------------------------------


def to_meta(module: nn.Module, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """A copy of `module` on the meta device (in `dtype` if given) without copying any weight: the parameters and
    buffers are replaced by meta tensors of the same shapes, the rest of the module is deep-copied."""
    memo = {}
    for name, tensor in list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers()):
        if id(tensor) in memo:
            continue
        target = dtype if (dtype is not None and tensor.is_floating_point()) else tensor.dtype
        empty = torch.empty(tensor.shape, dtype=target, device="meta")
        memo[id(tensor)] = nn.Parameter(empty, requires_grad=False) if isinstance(tensor, nn.Parameter) else empty
    return copy.deepcopy(module, memo).eval().requires_grad_(False)


@dataclass
class MetaModels:
    """The networks of a run on the meta device: unet, vae, flow (a RAFT module or None), classifier (or None),
    the shape of the empty-prompt embedding, and each network's parameter count."""

    unet: nn.Module
    vae: nn.Module
    flow: Optional[nn.Module]
    classifier: Optional[nn.Module]
    embedding_shape: tuple[int, ...]

    def parameters(self) -> dict[str, int]:
        nets = {"unet": self.unet, "vae": self.vae, "flow": self.flow, "classifier": self.classifier}
        return {name: _param_count(net) for name, net in nets.items() if net is not None}


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())


def meta_models(
    model: str | os.PathLike | None = None,
    raft: str | nn.Module | None = "raft_large",
    classifier: str | nn.Module | None = "r3d_18",
    num_classes: int = 400,
) -> MetaModels:
    """The networks of a run on the meta device, from config files only (nothing is loaded).

    model:      a ModelScope-style diffusers folder (its unet/ and vae/ config.json), or None for the full-size
                ModelScope architecture (videopure_core.modelscope).
    raft:       "raft_large" / "raft_small", a RAFT module (copied to meta), or None (no temporal loss).
    classifier: a torchvision video architecture name, a module (copied to meta), or None (no vote).
    """
    from diffusers import AutoencoderKL, UNet3DConditionModel

    from .modelscope import MODELSCOPE_EMBEDDING_SHAPE, MODELSCOPE_UNET_CONFIG, MODELSCOPE_VAE_CONFIG, build_raft

    with torch.device("meta"):
        if model is None:
            unet = UNet3DConditionModel(**MODELSCOPE_UNET_CONFIG)
            vae = AutoencoderKL(**MODELSCOPE_VAE_CONFIG)
            embedding = MODELSCOPE_EMBEDDING_SHAPE
        else:
            folder = Path(model)
            from .loading import weights_variant

            for component in ("unet", "vae"):
                weights_variant(folder / component, component)  # the same errors as loading would give
            unet = UNet3DConditionModel.from_config(UNet3DConditionModel.load_config(folder / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
            embedding = _embedding_shape(folder, unet)
    flow = None
    if isinstance(raft, str):
        flow = build_raft("meta", raft)
    elif raft is not None:
        flow = to_meta(raft)
    net = None
    if isinstance(classifier, str):
        from .classifiers import build_torchvision_classifier

        with torch.device("meta"):
            net = build_torchvision_classifier(classifier, num_classes).eval().requires_grad_(False)
    elif classifier is not None:
        net = to_meta(classifier)
    return MetaModels(unet.eval().requires_grad_(False), vae.eval().requires_grad_(False), flow, net, embedding)


def _embedding_shape(folder: Path, unet: nn.Module) -> tuple[int, ...]:
    from safetensors import safe_open

    from .loading import EMBEDDING_FILE

    path = folder / EMBEDDING_FILE
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            return tuple(f.get_slice("embedding").get_shape())
    return (1, 77, int(unet.config.cross_attention_dim))


def meta_models_of(purifier, classifier: Optional[nn.Module] = None) -> MetaModels:
    """Meta copies of a Purifier's networks (and a classifier), shapes and dtypes kept, no weights copied."""
    from .flow import RaftFlow

    m = purifier.models
    flow = purifier.flow.model if isinstance(purifier.flow, RaftFlow) else None
    return MetaModels(to_meta(m.unet), to_meta(m.vae), to_meta(flow) if flow is not None else None,
                      to_meta(classifier) if isinstance(classifier, nn.Module) else None, tuple(m.embedding.shape))


# --- the estimate -------------------------------------------------------------------------------------------------


@dataclass
class StageMemory:
    """working: most bytes alive at once during the stage above those alive when it began (its working set);
    peak: most bytes alive at once during it, tensors kept from earlier stages included (weights excluded)."""

    working: int
    peak: int


@dataclass
class MemoryEstimate:
    """Bytes per network's weights, per stage, and the run's peak (weights + the largest stage peak)."""

    video_shape: tuple[int, ...]
    dtype: str
    weights: dict[str, int]
    stages: dict[str, StageMemory]
    unet_call: int  # working set of one UNet call
    attention_matrix_bytes: int  # the largest attention score matrix a math (unfused) kernel would materialise
    notes: list[str] = field(default_factory=list)

    @property
    def weights_total(self) -> int:
        return sum(self.weights.values())

    @property
    def peak(self) -> int:
        return self.weights_total + max((s.peak for s in self.stages.values()), default=0)

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=lambda s: self.stages[s].peak)

    def to_dict(self) -> dict:
        return {
            "video_shape": list(self.video_shape), "dtype": self.dtype, "weights": self.weights,
            "stages": {k: {"working": v.working, "peak": v.peak} for k, v in self.stages.items()},
            "unet_call": self.unet_call, "attention_matrix_bytes": self.attention_matrix_bytes,
            "peak": self.peak, "notes": self.notes,
        }

    def table(self) -> str:
        """A markdown table: weights per network, then working set and peak (weights included) per stage."""
        b, _, f, h, w = self.video_shape
        lines = [f"memory estimate for {b} x {f}x{h}x{w}, networks in {self.dtype} (tensors only; see "
                 f"videopure_core/memory.py for what is not counted)", "",
                 "| | working set | peak with weights |", "| --- | --- | --- |"]
        for name, n in self.weights.items():
            lines.append(f"| weights: {name} | | {_gib(n)} |")
        base = self.weights_total
        for name, s in self.stages.items():
            lines.append(f"| {name} | {_gib(s.working)} | {_gib(base + s.peak)} |")
        lines.append(f"| **peak** ({self.peak_stage}) | | **{_gib(self.peak)}** |")
        lines.append("")
        lines.append(f"one UNet call: {_gib(self.unet_call)} working set; an unfused (math) attention kernel would "
                     f"add up to {_gib(self.attention_matrix_bytes)} to it.")
        lines += self.notes
        return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= 0.1 * GiB else f"{n / 2**20:.1f} MiB"


class _StageTracker:
    """pipeline.Hooks that record each stage's working set and peak from a LiveTensors mode."""

    def __init__(self, live: LiveTensors):
        from .pipeline import Hooks

        self.live = live
        self.stages: dict[str, StageMemory] = {}
        self.hooks = Hooks()
        self.hooks.stage = self.stage  # the pipeline only calls stage / progress / candidate

    @contextlib.contextmanager
    def stage(self, name: str):
        start = self.live.reset_peak()
        try:
            yield
        finally:
            self.live._sweep()
            prev = self.stages.get(name)
            peak = self.live.peak
            working = peak - start
            if prev is None or peak > prev.peak:
                self.stages[name] = StageMemory(working, peak)


def _run_dtype(runtime: Runtime, name: str, held: torch.dtype) -> torch.dtype:
    """The dtype a network's activations run in: the autocast dtype when autocast covers it, else its own."""
    from .networks import AUTOCAST_DTYPES

    auto = runtime.autocast_for(name)
    return AUTOCAST_DTYPES[auto] if auto is not None else held


def estimate_memory(
    models: MetaModels,
    video_shape: tuple[int, int, int, int, int],
    config: PurifyConfig = PurifyConfig(),
    runtime: Runtime = Runtime(),
    batch_size: int = 8,
    dtype: Optional[torch.dtype] = None,
) -> MemoryEstimate:
    """Estimate the memory of purifying and voting on a batch of videos `video_shape` = (B, 3, F, H, W).

    models:  MetaModels (meta_models from configs, or meta_models_of a loaded Purifier).
    config:  the algorithm (t_star, guidance: whether the flow runs). runtime: dtype, autocast, chunk, unet_batch
             (device, channels_last and compile do not change the count). batch_size: videos per classifier call.
    dtype:   the networks' dtype when the runtime does not set one (default float32).
    The flow network runs in float32 (the Purifier never casts it) unless autocast covers it; the classifier runs
    in float32. Returns a MemoryEstimate (bytes).
    """
    from . import pipeline
    from .classifiers import classify
    from .flow import RaftFlow
    from .networks import FrameVAE, unet_eps_fn
    from .schedule import MODELSCOPE_SCHEDULER_CONFIG, make_schedule

    b, c, f, h, w = video_shape
    base = runtime.torch_dtype or dtype or torch.float32
    held = {"unet": base, "vae": base, "flow": torch.float32, "classifier": torch.float32}  # as the Purifier has them
    dtypes = {k: _run_dtype(runtime, k, v) for k, v in held.items()}
    dtypes["flow"] = torch.float32  # RAFT mixes its own float32 grids in: traced in float32 (an overestimate)
    cast = nn.Module.to  # (diffusers' own `to` warns about casting)
    unet, vae = cast(models.unet, dtypes["unet"]), cast(models.vae, dtypes["vae"])
    flow_net = cast(models.flow, dtypes["flow"]) if models.flow is not None else None
    nets = {"unet": models.unet, "vae": models.vae, "flow": models.flow, "classifier": models.classifier}
    counts = {k: _param_count(v) for k, v in nets.items() if v is not None}
    weights = {k: n * torch.empty((), dtype=held[k]).element_size() for k, n in counts.items()}

    embedding = torch.empty(models.embedding_shape, device="meta")
    live, attention = LiveTensors(), FusedAttention()
    latent = (b, 4, f, h // 8, w // 8)
    with torch.no_grad(), attention, live:  # one UNet call, traced
        start = live.reset_peak()
        z = torch.empty(latent, device="meta")
        real_eps = unet_eps_fn(unet, embedding, batch=runtime.unet_batch)
        out = real_eps(z, 1)
        unet_call = live.peak - start
        del z, out

    def replay_eps(z: Tensor, t: int) -> Tensor:  # each later call: the traced working set, then eps
        live.allocate(unet_call)
        return torch.empty_like(z)

    tracker = _StageTracker(live)
    flow_fn = RaftFlow(flow_net) if flow_net is not None else None
    networks = pipeline.Networks(replay_eps, FrameVAE(vae), flow_fn, runtime.chunk)
    schedule = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, config.ddim_steps, config.t_star)
    if config.needs_flow and flow_fn is None:
        raise ValueError("The temporal loss needs a flow network: pass raft=... to meta_models, or set lambda_temp=0.")
    with attention, live:
        video = torch.empty(video_shape, device="meta")
        candidates = pipeline.purify(networks, video, schedule, config, tracker.hooks)
        if models.classifier is not None:
            with tracker.stage("classify"):
                classify(models.classifier, candidates.videos.flatten(0, 1), batch_size)
    stages = {name: tracker.stages[name] for name in STAGES if name in tracker.stages}
    notes = []
    if runtime.autocast:
        notes.append(f"autocast {runtime.autocast} on {', '.join(runtime.autocast_networks)}: activations counted in "
                     f"{runtime.autocast} (RAFT's in float32), weights as held.")
    return MemoryEstimate(tuple(video_shape), str(base).replace("torch.", ""), weights, stages, unet_call,
                          attention.matrix_bytes, notes)

