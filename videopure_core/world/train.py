"""Train the small world from scratch, seeded, on a CPU: `videopure train-world --out DIR`.

Stages, in order (each writes its models atomically, so an interrupted run leaves finished stages intact and
`--resume` skips them; inside a stage a checkpoint every `plan.checkpoint_every` steps, DIR/.checkpoints/<stage>.pt,
holds the models, optimiser, EMA and random states, so `--resume` also continues an interrupted stage where its
last checkpoint left it, with the same result as an uninterrupted run):
  1. vae         AutoencoderKL on crops of single frames (L1 + MSE + 1e-6 KL through the posterior mean), a
                 fraction of the crops with fine uniform noise added (input and target alike) so that the code
                 carries fine detail; then scaling_factor = 1 / std of the latents.
  2. classifier  WorldClassifier on clean clips and their VAE reconstructions (the purified candidates it will
                 see are VAE decodes).
  3. raft        torchvision raft_small on frame pairs upsampled 2x (as RaftFlow feeds them) against the
                 generator's ground-truth flow (RAFT's sequence loss, gamma 0.8).
  4. unet        UNet3DConditionModel, epsilon prediction with ModelScope's schedule on runs of consecutive
                 frames of the VAE latents, fixed null embedding; timesteps mostly from the low range where
                 purification works (t <= 101), the rest from [0, 1000); Gaussian noise that is independent per
                 frame for some clips and shared by all frames (wholly or partly) for others (`_video_noise`);
                 flips in space and time as augmentation (the denoiser is unconditional); an exponential moving
                 average of the weights is what gets saved.
A log of every stage's losses and seconds goes to DIR/training_log.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..io import atomic_path, atomic_write
from ..schedule import MODELSCOPE_SCHEDULER_CONFIG
from .generator import CLASSES, WorldSpec, make_batch, make_split
from .models import (
    WEIGHTS,
    WORLD_CONFIGS,
    WORLD_UNET_CONFIG,
    WORLD_VAE_CONFIG,
    WorldClassifier,
    null_embedding,
    save_classifier,
    vae_encode,
    vae_round_trip,
)

HELP = "Train the small world's VAE, classifier, RAFT-small and UNet3D from scratch (CPU, seeded)."
STAGES = ("vae", "classifier", "raft", "unet")


@dataclass(frozen=True)
class TrainPlan:
    """Steps, batch sizes and recipe of each stage (the defaults made the shipped 4x world; see its model card).

    Fields named after a stage (`vae_*`, `classifier_*`, `raft_*`, `unet_*`) belong to it; `seed` and `pool_clips`
    to every stage; `checkpoint_every` only says how often a checkpoint is written (results do not depend on it).
    """

    seed: int = 0
    pool_clips: int = 1200  # training clips generated once (100 per class), kept as uint8
    checkpoint_every: int = 250  # steps between mid-stage checkpoints (DIR/.checkpoints/<stage>.pt)
    vae_steps: int = 3000
    vae_pool_clips: int = 600  # the VAE trains on the first this many pool clips (0: all); frames are plentiful
    vae_batch: int = 16  # frame crops
    vae_crop: int = 32  # pixels, a multiple of the VAE's downsampling factor
    vae_lr: float = 1e-3
    vae_noise: float = 0.0  # fine-detail augmentation: uniform noise of amplitude up to vae_noise / 255 ...
    vae_noise_fraction: float = 0.0  # ... added to this fraction of the crops (input and target)
    classifier_steps: int = 4000
    classifier_batch: int = 16  # clips
    classifier_lr: float = 2e-3
    raft_steps: int = 1200
    raft_batch: int = 6  # frame pairs
    raft_iters: int = 8
    raft_lr: float = 4e-4
    unet_steps: int = 1500
    unet_batch: int = 4  # clips
    unet_frames: int = 8  # each clip a random run of this many consecutive frames (0: all); the UNet's temporal
    #   layers are convolutions and attention without positional embedding, so they run on any number of frames
    unet_lr: float = 5e-4
    unet_t_low: int = 150  # timesteps: a fraction unet_low_fraction uniform in [0, unet_t_low), the rest in [0, 1000)
    unet_low_fraction: float = 0.95
    unet_noise_mix: tuple[float, float, float] = (0.5, 0.25, 0.25)  # clips with noise (independent per frame,
    #   shared by all frames, a random blend of the two); see _video_noise
    unet_ema: float = 0.999  # decay of the exponential moving average of the UNet's weights that is saved (0: none)

    def scaled(self, factor: float) -> "TrainPlan":
        """The same plan with every step count multiplied by `factor` (quick trials and tests)."""
        steps = {k: max(1, round(v * factor)) for k, v in asdict(self).items() if k.endswith("_steps")}
        clips = lambda n: max(12, round(n * factor) // 12 * 12) if n else 0  # noqa: E731
        return TrainPlan(**{**asdict(self), **steps, "pool_clips": clips(self.pool_clips),
                            "vae_pool_clips": clips(self.vae_pool_clips)})

    def stage_fields(self, stage: str) -> dict:
        """The fields that decide `stage`'s result: seed, pool_clips and the stage's own."""
        return {k: v for k, v in asdict(self).items() if k in ("seed", "pool_clips") or k.startswith(stage + "_")}


WORLD_PLANS: dict[int, TrainPlan] = {
    4: TrainPlan(),
    8: TrainPlan(pool_clips=2400, vae_steps=4000, vae_pool_clips=0, unet_steps=4000),
}
"""VAE downsampling factor -> the plan `videopure train-world --vae-down N` runs (4: the shipped world; 8: today's
recipe for the 8x VAE and UNet of WORLD_CONFIGS[8]; the 8x world shipped before issue 11 came from older code, see
the experiment log in the model card)."""


class _Curve:
    """The mean of a per-step value over every `every` steps, as [[step, mean], ...], shown on the progress bar."""

    def __init__(self, bar, every: int = 50):
        self.bar, self.every, self.points, self.running = bar, every, [], 0.0

    def add(self, step: int, value: float) -> None:
        self.running += value
        if (step + 1) % self.every == 0:
            self.points.append([step + 1, round(self.running / self.every, 5)])
            self.running = 0.0
            self.bar.set_postfix(loss=self.points[-1][1], refresh=False)


def _cosine_lr(opt: torch.optim.Optimizer, base: float, step: int, total: int, warmup: int = 100) -> None:
    lr = base * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
    for group in opt.param_groups:
        group["lr"] = lr


def _as_uint8(videos: Tensor) -> Tensor:
    return (videos.clamp(0, 1) * 255).round().to(torch.uint8)


def _as_float(videos: Tensor) -> Tensor:
    return videos.float() / 255.0


class _Log:
    """Losses every `every` steps and seconds per stage, kept in DIR/training_log.json."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def stage(self, name: str, curve: list, seconds: float, **extra) -> None:
        self.data[name] = {"curve": curve, "seconds": round(seconds, 1), "threads": torch.get_num_threads(), **extra}
        self.write(name)

    def write(self, *names: str) -> None:
        """Merge this run's entries `names` into the file (stages may train in parallel processes)."""
        merged = json.loads(self.path.read_text()) if self.path.is_file() else {}
        merged.update({k: self.data[k] for k in ("plan", *names) if k in self.data})
        self.data = {**merged, **{k: self.data[k] for k in names}}
        with atomic_write(self.path) as f:  # a unique temporary per writer: parallel stages never collide
            f.write(json.dumps(self.data, indent=1))


class StagePaused(Exception):
    """A stage stopped before its last step (`stop_after`); its checkpoint lets `--resume` continue it."""


@dataclass
class _Loop:
    """One stage's optimisation: the loop, its learning-rate schedule, EMA, loss curve and checkpoints.

    `loss_fn(step, generator)` draws its batch from the generator and returns (loss, value for the curve). Every
    `plan.checkpoint_every` steps the whole state (model, EMA, optimiser, the stage generator, torch's global RNG,
    curve, seconds so far) goes atomically to DIR/.checkpoints/<name>.pt; `run(resume=True)` continues from it, so
    an interrupted stage ends with the same weights as an uninterrupted one.
    """

    name: str
    out: Path
    plan: TrainPlan
    model: nn.Module
    opt: torch.optim.Optimizer
    lr: float
    steps: int
    generator: torch.Generator
    clip_grad: float | None = None
    ema_decay: float = 0.0

    def __post_init__(self):
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if self.ema_decay else None

    @property
    def checkpoint(self) -> Path:
        return self.out / ".checkpoints" / f"{self.name}.pt"

    def _save(self, step: int, curve: _Curve, seconds: float) -> None:
        state = {
            "plan": asdict(self.plan), "step": step, "seconds": seconds, "curve": curve.points, "running": curve.running,
            "model": self.model.state_dict(), "opt": self.opt.state_dict(), "generator": self.generator.get_state(),
            "rng": torch.get_rng_state(), "ema": None if self.ema is None else self.ema.state_dict(),
        }
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def _load(self, curve: _Curve) -> tuple[int, float]:
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        same = lambda plan: json.loads(json.dumps(plan))  # noqa: E731  (tuples and lists alike)
        mine = self.plan.stage_fields(self.name)
        theirs = {k: state["plan"].get(k, TrainPlan.__dataclass_fields__[k].default) for k in mine}
        if same(theirs) != same(mine):
            differ = ", ".join(f"{k} {theirs[k]} (now {mine[k]})" for k in mine if same(theirs[k]) != same(mine[k]))
            raise ValueError(
                f"{self.checkpoint} was written with another TrainPlan for the {self.name} stage ({differ}); delete it "
                f"to restart the stage, or resume with the plan it was made with."
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        curve.points, curve.running = [list(p) for p in state["curve"]], state["running"]
        return state["step"], state["seconds"]

    def run(self, loss_fn: Callable[[int, torch.Generator], tuple[Tensor, float]], resume: bool = False,
            stop_after: int | None = None, progress: bool = True) -> tuple[nn.Module, list, float]:
        """Train to `steps`; returns (the model to save: EMA if any, curve points, seconds over all runs).

        `stop_after` ends this call after that many steps (with a checkpoint) by raising StagePaused.
        """
        bar = tqdm(total=self.steps, desc=self.name, disable=not progress, mininterval=10)
        curve = _Curve(bar)
        first, before = (0, 0.0)
        if resume and self.checkpoint.is_file():
            first, before = self._load(curve)
            bar.update(first)
        elif self.checkpoint.is_file():
            self.checkpoint.unlink()
        start = time.perf_counter()
        self.model.train()
        for step in range(first, self.steps):
            loss, value = loss_fn(step, self.generator)
            _cosine_lr(self.opt, self.lr, step, self.steps)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
            self.opt.step()
            if self.ema is not None:
                decay = min(self.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for e, p in zip(self.ema.parameters(), self.model.parameters()):
                        e.lerp_(p, 1 - decay)
            curve.add(step, value)
            bar.update(1)
            done = step + 1
            if done < self.steps and (done % self.plan.checkpoint_every == 0 or done - first == stop_after):
                self._save(done, curve, before + time.perf_counter() - start)
            if done < self.steps and done - first == stop_after:
                bar.close()
                raise StagePaused(f"{self.name} paused at step {done} of {self.steps}; continue with --resume.")
        bar.close()
        model = (self.ema if self.ema is not None else self.model).eval()
        return model, curve.points, before + time.perf_counter() - start

    def finish(self) -> None:
        """Drop the checkpoint once the stage's outputs are written."""
        self.checkpoint.unlink(missing_ok=True)
        if self.checkpoint.parent.is_dir() and not any(self.checkpoint.parent.iterdir()):
            self.checkpoint.parent.rmdir()


def vae_downsampling(config: dict = WORLD_VAE_CONFIG) -> int:
    """The VAE's spatial downsampling factor: 2 ** (number of blocks - 1)."""
    return 2 ** (len(config["block_out_channels"]) - 1)


def train_vae(pool: Tensor, plan: TrainPlan, out: Path, log: _Log, progress: bool = True, resume: bool = False,
              stop_after: int | None = None, config: dict = WORLD_VAE_CONFIG):
    """Stage 1: frames (N, F, H, W, 3) uint8 -> out/diffusion/vae (AutoencoderKL, scaling_factor fitted).

    Trained on random `plan.vae_crop`-pixel crops (aligned to the latent grid; the networks are convolutional, so
    a crop costs a fraction of a frame and teaches the same local code) through the posterior mean, which is what
    purification encodes with; loss L1 + MSE + 1e-6 KL. A fraction `plan.vae_noise_fraction` of the crops gets
    uniform noise of a random amplitude up to `plan.vae_noise` / 255 in input and target: the world itself is all
    smooth, and a VAE that never saw fine detail learns to drop it (and with it small perturbations).
    """
    from diffusers import AutoencoderKL

    torch.manual_seed(plan.seed)
    g = torch.Generator().manual_seed(plan.seed)
    frames = pool[: plan.vae_pool_clips or None].flatten(0, 1)  # (N*F, H, W, 3)
    vae = AutoencoderKL(**config)
    opt = torch.optim.AdamW(vae.parameters(), lr=plan.vae_lr, weight_decay=0.0)
    size, crop, grid = frames.shape[1], plan.vae_crop, vae_downsampling(config)

    def loss_fn(step: int, g: torch.Generator):
        idx = torch.randint(len(frames), (plan.vae_batch,), generator=g)
        i, j = (torch.randint(0, (size - crop) // grid + 1, (2,), generator=g) * grid).tolist()
        x = _as_float(frames[idx, i : i + crop, j : j + crop]).permute(0, 3, 1, 2)
        if plan.vae_noise_fraction > 0:
            amplitude = torch.rand(plan.vae_batch, 1, 1, 1, generator=g) * plan.vae_noise / 255
            amplitude = amplitude * (torch.rand(plan.vae_batch, 1, 1, 1, generator=g) < plan.vae_noise_fraction)
            x = (x + amplitude * (torch.rand(x.shape, generator=g) * 2 - 1)).clamp(0, 1)
        x = x * 2 - 1
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.mean).sample
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean() + 1e-6 * post.kl().mean()
        return loss, loss.item()

    loop = _Loop("vae", out, plan, vae, opt, plan.vae_lr, plan.vae_steps, g)
    vae, curve, seconds = loop.run(loss_fn, resume, stop_after, progress)
    with torch.no_grad():
        sample = _as_float(frames[torch.randint(len(frames), (512,), generator=g)]).permute(0, 3, 1, 2) * 2 - 1
        latents = torch.cat([vae.encode(part).latent_dist.mean for part in sample.split(64)])
    scaling = 1.0 / float(latents.std())
    vae.register_to_config(scaling_factor=scaling)
    with atomic_path(out / "diffusion" / "vae", directory=True) as tmp:
        vae.save_pretrained(tmp)
    log.stage("vae", curve, seconds, scaling_factor=scaling, config=config)
    loop.finish()
    return vae


@torch.no_grad()
def reconstruct(vae, pool: Tensor, chunk: int = 64) -> Tensor:
    """VAE reconstructions of uint8 clips (N, F, H, W, 3), returned as uint8 (posterior mean, like purification)."""
    out = []
    for clips in pool.split(8):
        video = _as_float(clips).permute(0, 4, 1, 2, 3)
        out.append(_as_uint8(vae_round_trip(vae, video, chunk).permute(0, 2, 3, 4, 1)))
    return torch.cat(out)


def train_classifier(pool: Tensor, recon: Tensor, labels: Tensor, plan: TrainPlan, out: Path, log: _Log, progress=True,
                     resume: bool = False, stop_after: int | None = None):
    """Stage 2: clips and their VAE reconstructions (uint8), half and half -> out/classifier."""
    torch.manual_seed(plan.seed + 1)
    g = torch.Generator().manual_seed(plan.seed + 1)
    model = WorldClassifier(len(CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=plan.classifier_lr, weight_decay=1e-4)

    def loss_fn(step: int, g: torch.Generator):
        idx = torch.randint(len(pool), (plan.classifier_batch,), generator=g)
        use_recon = torch.rand(plan.classifier_batch, generator=g) < 0.5
        clips = torch.where(use_recon.view(-1, 1, 1, 1, 1), recon[idx], pool[idx])
        loss = F.cross_entropy(model(_as_float(clips).permute(0, 4, 1, 2, 3)), labels[idx])
        return loss, loss.item()

    loop = _Loop("classifier", out, plan, model, opt, plan.classifier_lr, plan.classifier_steps, g)
    model, curve, seconds = loop.run(loss_fn, resume, stop_after, progress)
    with atomic_path(out / "classifier", directory=True) as tmp:
        save_classifier(model, tmp, CLASSES)
    log.stage("classifier", curve, seconds)
    loop.finish()
    return model


def _raft_pairs(n: int, step: int, plan: TrainPlan, spec: WorldSpec) -> tuple[Tensor, Tensor, Tensor]:
    """n random consecutive-frame pairs from fresh training clips, upsampled 2x: (n,3,2H,2W) x2, flow (n,2,2H,2W)."""
    g = torch.Generator().manual_seed(plan.seed * 1_000_003 + step)
    labels = torch.randint(len(CLASSES), (n,), generator=g)
    seeds = (torch.randint(0, 10**6, (n,), generator=g) + 10**7).tolist()  # a seed range of their own
    videos, flows, _ = make_batch(labels.tolist(), seeds, spec)
    i = torch.randint(videos.shape[1] - 1, (n,), generator=g)
    rows = torch.arange(n)
    a = videos[rows, i].permute(0, 3, 1, 2)
    b = videos[rows, i + 1].permute(0, 3, 1, 2)
    flow = flows[rows, i].permute(0, 3, 1, 2)
    up = lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
    return up(a) * 2 - 1, up(b) * 2 - 1, up(flow) * 2


def train_raft(plan: TrainPlan, spec: WorldSpec, out: Path, log: _Log, progress=True, resume: bool = False,
               stop_after: int | None = None):
    """Stage 3: raft_small on ground-truth flow -> out/raft_small.safetensors."""
    from torchvision.models.optical_flow import raft_small

    from ..loading import save_safetensors_atomic

    torch.manual_seed(plan.seed + 2)
    model = raft_small(weights=None, progress=False)
    opt = torch.optim.AdamW(model.parameters(), lr=plan.raft_lr, weight_decay=1e-5)

    def loss_fn(step: int, g: torch.Generator):
        a, b, flow = _raft_pairs(plan.raft_batch, step, plan, spec)  # seeded by the step itself
        preds = model(a, b, num_flow_updates=plan.raft_iters)
        n = len(preds)
        loss = sum(0.8 ** (n - k - 1) * (p - flow).abs().mean() for k, p in enumerate(preds))
        return loss, float((preds[-1].detach() - flow).pow(2).sum(1).sqrt().mean()) / 2  # EPE in 64-px frame units

    loop = _Loop("raft", out, plan, model, opt, plan.raft_lr, plan.raft_steps, torch.Generator(), clip_grad=1.0)
    model, curve, seconds = loop.run(loss_fn, resume, stop_after, progress)
    save_safetensors_atomic(model.state_dict(), out / "raft_small.safetensors")
    log.stage("raft", curve, seconds, curve_metric="train EPE (px at 64x64)")
    loop.finish()
    return model


def _augment(z: Tensor, g: torch.Generator) -> Tensor:
    """Random flips of latents (B, 4, F, h, w) in time, height and width."""
    for dim in (2, 3, 4):
        flip = torch.rand(z.shape[0], generator=g) < 0.5
        z = torch.where(flip.view(-1, 1, 1, 1, 1), z.flip(dim), z)
    return z


def _frame_runs(latents: Tensor, idx: Tensor, frames: int, g: torch.Generator) -> Tensor:
    """latents[idx] (B, 4, F, h, w), each cut to a random run of `frames` consecutive frames (0: all F)."""
    total = latents.shape[2]
    if not frames or frames >= total:
        return latents[idx]
    starts = torch.randint(0, total - frames + 1, (len(idx),), generator=g).tolist()
    return torch.stack([latents[i, :, s : s + frames] for i, s in zip(idx.tolist(), starts)])


def _video_noise(shape: tuple[int, ...], mix: tuple[float, float, float], g: torch.Generator) -> Tensor:
    """N(0, 1) noise (B, C, F, h, w) whose frames are independent, shared, or a blend, per clip.

    With probabilities mix = (independent, shared, blend): eps_f = n_f, eps_f = s, or eps_f = sqrt(r) s +
    sqrt(1 - r) n_f with r ~ U(0, 1) (s and n_f independent N(0, 1)). Every element stays N(0, 1); the frames'
    correlation is 0, 1 or r. Temporal DDIM inversion (Eq. 11) hands the denoiser exactly the shared kind: the
    first frame's noise replicated to all frames.
    """
    b = shape[0]
    independent = torch.randn(shape, generator=g)
    shared = torch.randn(*shape[:2], 1, *shape[3:], generator=g).expand(shape)
    kind = torch.multinomial(torch.tensor(mix, dtype=torch.float64), b, replacement=True, generator=g)
    r = torch.where(kind == 0, 0.0, torch.where(kind == 1, 1.0, torch.rand(b, generator=g, dtype=torch.float64)))
    r = r.float().view(-1, 1, 1, 1, 1)
    return r.sqrt() * shared + (1 - r).sqrt() * independent


def train_unet(latents: Tensor, plan: TrainPlan, out: Path, log: _Log, progress=True, resume: bool = False,
               stop_after: int | None = None, config: dict = WORLD_UNET_CONFIG):
    """Stage 4: latents (N, 4, F, h, w) -> out/diffusion/{unet, scheduler, empty_prompt.safetensors}."""
    from diffusers import DDIMScheduler, UNet3DConditionModel

    from ..loading import EMBEDDING_FILE, save_embedding

    torch.manual_seed(plan.seed + 3)
    g = torch.Generator().manual_seed(plan.seed + 3)
    scheduler = DDIMScheduler.from_config(MODELSCOPE_SCHEDULER_CONFIG)
    alphas = scheduler.alphas_cumprod.float()
    emb = null_embedding()
    unet = UNet3DConditionModel(**config)
    opt = torch.optim.AdamW(unet.parameters(), lr=plan.unet_lr, weight_decay=0.0)
    n = plan.unet_batch

    def loss_fn(step: int, g: torch.Generator):
        z0 = _augment(_frame_runs(latents, torch.randint(len(latents), (n,), generator=g), plan.unet_frames, g), g)
        low = torch.rand(n, generator=g) < plan.unet_low_fraction
        t = torch.where(low, torch.randint(0, plan.unet_t_low, (n,), generator=g), torch.randint(0, 1000, (n,), generator=g))
        noise = _video_noise(tuple(z0.shape), plan.unet_noise_mix, g)
        a = alphas[t].view(-1, 1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(zt, t, encoder_hidden_states=emb.expand(n, -1, -1)).sample, noise)
        return loss, loss.item()

    loop = _Loop("unet", out, plan, unet, opt, plan.unet_lr, plan.unet_steps, g, clip_grad=1.0, ema_decay=plan.unet_ema)
    unet, curve, seconds = loop.run(loss_fn, resume, stop_after, progress)
    diffusion = out / "diffusion"
    with atomic_path(diffusion / "unet", directory=True) as tmp:
        unet.save_pretrained(tmp)
    with atomic_path(diffusion / "scheduler", directory=True) as tmp:
        scheduler.save_config(tmp)
    save_embedding(emb, diffusion / EMBEDDING_FILE)  # (atomic itself)
    log.stage("unet", curve, seconds, config=config)
    loop.finish()
    return unet


def _done(out: Path, stage: str) -> bool:
    return {
        "vae": out / "diffusion" / "vae" / "config.json",
        "classifier": out / "classifier" / "config.json",
        "raft": out / "raft_small.safetensors",
        "unet": out / "diffusion" / "unet" / "config.json",
    }[stage].is_file()


def train_world(out: str | os.PathLike, plan: TrainPlan = TrainPlan(), spec: WorldSpec = WorldSpec(),
                stages=STAGES, resume: bool = False, progress: bool = True, stop_after: int | None = None,
                vae_config: dict = WORLD_VAE_CONFIG, unet_config: dict = WORLD_UNET_CONFIG) -> Path:
    """Run the chosen stages into `out` (the models built from `vae_config` and `unet_config`; tests pass tiny ones).

    With `resume`, stages whose outputs exist are loaded instead, and a stage with a checkpoint continues from it.
    `stop_after` ends a stage after that many steps in this call (raising StagePaused, its checkpoint written):
    a long stage can be split over several runs.
    """
    from diffusers import AutoencoderKL

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out / "training_log.json")
    log.data["plan"] = asdict(plan)
    start = time.perf_counter()
    pool_videos, _, pool_labels = make_split("train", plan.pool_clips, spec)
    pool = _as_uint8(pool_videos)
    del pool_videos
    log.stage("data", [], time.perf_counter() - start, clips=plan.pool_clips)
    todo = lambda stage: stage in stages and not (resume and _done(out, stage))  # noqa: E731

    vae = None
    if todo("vae"):
        vae = train_vae(pool, plan, out, log, progress, resume, stop_after, vae_config)
    if todo("classifier") or todo("unet"):
        vae = vae or AutoencoderKL.from_pretrained(out / "diffusion" / "vae").eval()
    if todo("classifier"):
        t0 = time.perf_counter()
        recon = reconstruct(vae, pool)
        log.stage("reconstruct", [], time.perf_counter() - t0)
        train_classifier(pool, recon, pool_labels, plan, out, log, progress, resume, stop_after)
    if todo("raft"):
        train_raft(plan, spec, out, log, progress, resume, stop_after)
    if todo("unet"):
        t0 = time.perf_counter()
        with torch.no_grad():
            latents = torch.cat([vae_encode(vae, _as_float(c).permute(0, 4, 1, 2, 3), 64) for c in pool.split(16)])
        log.stage("encode", [], time.perf_counter() - t0)
        train_unet(latents, plan, out, log, progress, resume, stop_after, unet_config)
    log.data["total_seconds"] = round(time.perf_counter() - start, 1)
    log.write("total_seconds")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(WEIGHTS), help=f"weights folder to write (default: the shipped {WEIGHTS})")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every step count (e.g. 0.01 for a smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true",
                   help="skip stages whose outputs already exist in --out and continue a stage from its checkpoint")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                   help="end each stage after this many steps in this run (checkpointed; continue with --resume)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--vae-down", type=int, default=4, choices=sorted(WORLD_CONFIGS),
                   help="VAE downsampling, which picks the models and the plan (WORLD_PLANS): 4 (a 16x16 latent, the "
                        "shipped world) or 8 (an 8x8 latent, the world shipped before issue 11)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = replace(WORLD_PLANS[args.vae_down], seed=args.seed)
    plan = plan.scaled(args.scale) if args.scale != 1.0 else plan
    try:
        vae_config, unet_config = WORLD_CONFIGS[args.vae_down]
        out = train_world(args.out, plan, stages=tuple(args.stages), resume=args.resume, stop_after=args.stop_after,
                          vae_config=vae_config, unet_config=unet_config)
    except StagePaused as paused:
        print(paused)
        return 0
    print(f"world written to {out} (log: {out / 'training_log.json'})")
    return 0
