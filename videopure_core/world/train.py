"""Train the small world from scratch, seeded, on a CPU: `videopure train-world --out DIR`.

Stages, in order (each writes its models atomically, so an interrupted run leaves finished stages intact and
`--resume` skips them):
  1. vae         AutoencoderKL on 32-px crops of single frames (L1 + MSE + 1e-6 KL through the posterior mean);
                 then scaling_factor = 1 / std of the latents.
  2. classifier  WorldClassifier on clean clips and their VAE reconstructions (the purified candidates it will
                 see are VAE decodes).
  3. raft        torchvision raft_small on frame pairs upsampled 2x (as RaftFlow feeds them) against the
                 generator's ground-truth flow (RAFT's sequence loss, gamma 0.8).
  4. unet        UNet3DConditionModel, epsilon prediction with ModelScope's schedule on the VAE latents, fixed
                 null embedding; timesteps drawn 80% from [0, 250) (where purification works, t <= 101) and 20%
                 from [0, 1000); flips in space and time as augmentation (the denoiser is unconditional).
A log of every stage's losses and seconds goes to DIR/training_log.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..schedule import MODELSCOPE_SCHEDULER_CONFIG
from .generator import CLASSES, WorldSpec, make_batch, make_split
from .models import (
    WEIGHTS,
    WORLD_UNET_CONFIG,
    WORLD_VAE_CONFIG,
    WorldClassifier,
    null_embedding,
    save_classifier,
)

HELP = "Train the small world's VAE, classifier, RAFT-small and UNet3D from scratch (CPU, seeded)."
STAGES = ("vae", "classifier", "raft", "unet")


@dataclass(frozen=True)
class TrainPlan:
    """Steps and batch sizes of each stage (defaults: under two hours in total on 2 CPU cores)."""

    seed: int = 0
    pool_clips: int = 2400  # training clips generated once (200 per class), kept as uint8
    vae_steps: int = 8000
    vae_batch: int = 16  # frame crops
    vae_crop: int = 32  # pixels, a multiple of 8
    vae_lr: float = 1e-3
    classifier_steps: int = 4000
    classifier_batch: int = 16  # clips
    classifier_lr: float = 2e-3
    raft_steps: int = 1200
    raft_batch: int = 6  # frame pairs
    raft_iters: int = 8
    raft_lr: float = 4e-4
    unet_steps: int = 1800
    unet_batch: int = 8  # clips
    unet_lr: float = 5e-4

    def scaled(self, factor: float) -> "TrainPlan":
        """The same plan with every step count multiplied by `factor` (quick trials and tests)."""
        steps = {k: max(1, round(v * factor)) for k, v in asdict(self).items() if k.endswith("_steps")}
        return TrainPlan(**{**asdict(self), **steps, "pool_clips": max(12, round(self.pool_clips * factor) // 12 * 12)})


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


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _tmp_dir(out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))


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
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def train_vae(pool: Tensor, plan: TrainPlan, out: Path, log: _Log, progress: bool = True):
    """Stage 1: frames (N, F, H, W, 3) uint8 -> out/diffusion/vae (AutoencoderKL, scaling_factor fitted).

    Trained on random `plan.vae_crop`-pixel crops (aligned to the 8-pixel latent grid; the networks are
    convolutional, so a crop costs a quarter of a frame and teaches the same local code) through the posterior
    mean, which is what purification encodes with; loss L1 + MSE + 1e-6 KL.
    """
    from diffusers import AutoencoderKL

    torch.manual_seed(plan.seed)
    g = torch.Generator().manual_seed(plan.seed)
    frames = pool.flatten(0, 1)  # (N*F, H, W, 3)
    vae = AutoencoderKL(**WORLD_VAE_CONFIG).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=plan.vae_lr, weight_decay=0.0)
    start = time.perf_counter()
    bar = tqdm(range(plan.vae_steps), desc="vae", disable=not progress, mininterval=10)
    curve = _Curve(bar)
    size, crop = frames.shape[1], plan.vae_crop
    for step in bar:
        idx = torch.randint(len(frames), (plan.vae_batch,), generator=g)
        i, j = (torch.randint(0, (size - crop) // 8 + 1, (2,), generator=g) * 8).tolist()
        x = _as_float(frames[idx, i : i + crop, j : j + crop]).permute(0, 3, 1, 2) * 2 - 1
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.mean).sample
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean() + 1e-6 * post.kl().mean()
        _cosine_lr(opt, plan.vae_lr, step, plan.vae_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.add(step, loss.item())
    vae.eval()
    with torch.no_grad():
        sample = _as_float(frames[torch.randint(len(frames), (512,), generator=g)]).permute(0, 3, 1, 2) * 2 - 1
        latents = torch.cat([vae.encode(part).latent_dist.mean for part in sample.split(64)])
    scaling = 1.0 / float(latents.std())
    vae.register_to_config(scaling_factor=scaling)
    tmp = _tmp_dir(out, "vae")
    vae.save_pretrained(tmp)
    (out / "diffusion").mkdir(parents=True, exist_ok=True)
    _replace_dir(tmp, out / "diffusion" / "vae")
    log.stage("vae", curve.points, time.perf_counter() - start, scaling_factor=scaling)
    return vae


@torch.no_grad()
def reconstruct(vae, pool: Tensor, chunk: int = 64) -> Tensor:
    """VAE reconstructions of uint8 clips (N, F, H, W, 3), returned as uint8 (posterior mean, like purification)."""
    from ..vae import decode_latents, encode_video

    out = []
    for clips in pool.split(8):
        video = _as_float(clips).permute(0, 4, 1, 2, 3)
        out.append(_as_uint8(decode_latents(vae, encode_video(vae, video, chunk), chunk).permute(0, 2, 3, 4, 1)))
    return torch.cat(out)


def train_classifier(pool: Tensor, recon: Tensor, labels: Tensor, plan: TrainPlan, out: Path, log: _Log, progress=True):
    """Stage 2: clips and their VAE reconstructions (uint8) -> out/classifier."""
    torch.manual_seed(plan.seed + 1)
    g = torch.Generator().manual_seed(plan.seed + 1)
    model = WorldClassifier(len(CLASSES)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=plan.classifier_lr, weight_decay=1e-4)
    start = time.perf_counter()
    bar = tqdm(range(plan.classifier_steps), desc="classifier", disable=not progress, mininterval=10)
    curve = _Curve(bar)
    for step in bar:
        idx = torch.randint(len(pool), (plan.classifier_batch,), generator=g)
        use_recon = torch.rand(plan.classifier_batch, generator=g) < 0.5
        clips = torch.where(use_recon.view(-1, 1, 1, 1, 1), recon[idx], pool[idx])
        x = _as_float(clips).permute(0, 4, 1, 2, 3)
        loss = F.cross_entropy(model(x), labels[idx])
        _cosine_lr(opt, plan.classifier_lr, step, plan.classifier_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.add(step, loss.item())
    model.eval()
    tmp = _tmp_dir(out, "classifier")
    save_classifier(model, tmp, CLASSES)
    _replace_dir(tmp, out / "classifier")
    log.stage("classifier", curve.points, time.perf_counter() - start)
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


def train_raft(plan: TrainPlan, spec: WorldSpec, out: Path, log: _Log, progress=True):
    """Stage 3: raft_small on ground-truth flow -> out/raft_small.safetensors."""
    from torchvision.models.optical_flow import raft_small

    from ..loading import save_safetensors_atomic

    torch.manual_seed(plan.seed + 2)
    model = raft_small(weights=None, progress=False).train()
    opt = torch.optim.AdamW(model.parameters(), lr=plan.raft_lr, weight_decay=1e-5)
    start = time.perf_counter()
    bar = tqdm(range(plan.raft_steps), desc="raft", disable=not progress, mininterval=10)
    curve = _Curve(bar)
    for step in bar:
        a, b, flow = _raft_pairs(plan.raft_batch, step, plan, spec)
        preds = model(a, b, num_flow_updates=plan.raft_iters)
        n = len(preds)
        loss = sum(0.8 ** (n - k - 1) * (p - flow).abs().mean() for k, p in enumerate(preds))
        _cosine_lr(opt, plan.raft_lr, step, plan.raft_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        curve.add(step, float((preds[-1].detach() - flow).pow(2).sum(1).sqrt().mean()) / 2)  # EPE in 64-px frame units
    model.eval()
    save_safetensors_atomic(model.state_dict(), out / "raft_small.safetensors")
    log.stage("raft", curve.points, time.perf_counter() - start, curve_metric="train EPE (px at 64x64)")
    return model


def _augment(z: Tensor, g: torch.Generator) -> Tensor:
    """Random flips of latents (B, 4, F, h, w) in time, height and width."""
    for dim in (2, 3, 4):
        flip = torch.rand(z.shape[0], generator=g) < 0.5
        z = torch.where(flip.view(-1, 1, 1, 1, 1), z.flip(dim), z)
    return z


def train_unet(latents: Tensor, plan: TrainPlan, out: Path, log: _Log, progress=True):
    """Stage 4: latents (N, 4, F, h, w) -> out/diffusion/{unet, scheduler, empty_prompt.safetensors}."""
    from diffusers import DDIMScheduler, UNet3DConditionModel

    from ..loading import EMBEDDING_FILE, save_embedding

    torch.manual_seed(plan.seed + 3)
    g = torch.Generator().manual_seed(plan.seed + 3)
    scheduler = DDIMScheduler.from_config(MODELSCOPE_SCHEDULER_CONFIG)
    alphas = scheduler.alphas_cumprod.float()
    emb = null_embedding()
    unet = UNet3DConditionModel(**WORLD_UNET_CONFIG).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=plan.unet_lr, weight_decay=0.0)
    start = time.perf_counter()
    bar = tqdm(range(plan.unet_steps), desc="unet", disable=not progress, mininterval=10)
    curve = _Curve(bar)
    for step in bar:
        idx = torch.randint(len(latents), (plan.unet_batch,), generator=g)
        z0 = _augment(latents[idx], g)
        low = torch.rand(plan.unet_batch, generator=g) < 0.8
        t = torch.where(
            low, torch.randint(0, 250, (plan.unet_batch,), generator=g), torch.randint(0, 1000, (plan.unet_batch,), generator=g)
        )
        noise = torch.randn(z0.shape, generator=g)
        a = alphas[t].view(-1, 1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        pred = unet(zt, t, encoder_hidden_states=emb.expand(plan.unet_batch, -1, -1)).sample
        loss = F.mse_loss(pred, noise)
        _cosine_lr(opt, plan.unet_lr, step, plan.unet_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        curve.add(step, loss.item())
    unet.eval()
    tmp = _tmp_dir(out, "unet")
    unet.save_pretrained(tmp / "unet")
    scheduler.save_config(tmp / "scheduler")
    save_embedding(emb, tmp / EMBEDDING_FILE)
    diffusion = out / "diffusion"
    diffusion.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "scheduler", EMBEDDING_FILE):
        if (diffusion / name).is_dir():
            shutil.rmtree(diffusion / name)
        os.replace(tmp / name, diffusion / name)
    shutil.rmtree(tmp)
    log.stage("unet", curve.points, time.perf_counter() - start)
    return unet


def _done(out: Path, stage: str) -> bool:
    return {
        "vae": out / "diffusion" / "vae" / "config.json",
        "classifier": out / "classifier" / "config.json",
        "raft": out / "raft_small.safetensors",
        "unet": out / "diffusion" / "unet" / "config.json",
    }[stage].is_file()


def train_world(out: str | os.PathLike, plan: TrainPlan = TrainPlan(), spec: WorldSpec = WorldSpec(),
                stages=STAGES, resume: bool = False, progress: bool = True) -> Path:
    """Run the chosen stages into `out`; with `resume`, stages whose outputs exist are loaded instead."""
    from diffusers import AutoencoderKL

    from ..vae import encode_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out / "training_log.json")
    log.data["plan"] = asdict(plan)
    start = time.perf_counter()
    pool_videos, _, pool_labels = make_split("train", plan.pool_clips, spec)
    pool = _as_uint8(pool_videos)
    del pool_videos
    log.stage("data", [], time.perf_counter() - start, clips=plan.pool_clips)

    vae = None
    if "vae" in stages and not (resume and _done(out, "vae")):
        vae = train_vae(pool, plan, out, log, progress)
    if {"classifier", "unet"} & set(stages):
        vae = vae or AutoencoderKL.from_pretrained(out / "diffusion" / "vae").eval()
    if "classifier" in stages and not (resume and _done(out, "classifier")):
        t0 = time.perf_counter()
        recon = reconstruct(vae, pool)
        log.stage("reconstruct", [], time.perf_counter() - t0)
        train_classifier(pool, recon, pool_labels, plan, out, log, progress)
    if "raft" in stages and not (resume and _done(out, "raft")):
        train_raft(plan, spec, out, log, progress)
    if "unet" in stages and not (resume and _done(out, "unet")):
        t0 = time.perf_counter()
        with torch.no_grad():
            latents = torch.cat([encode_video(vae, _as_float(c).permute(0, 4, 1, 2, 3), 64) for c in pool.split(16)])
        log.stage("encode", [], time.perf_counter() - t0)
        train_unet(latents, plan, out, log, progress)
    log.data["total_seconds"] = round(time.perf_counter() - start, 1)
    log.write("total_seconds")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(WEIGHTS), help=f"weights folder to write (default: the shipped {WEIGHTS})")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every step count (e.g. 0.01 for a smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="skip stages whose outputs already exist in --out")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = TrainPlan(seed=args.seed).scaled(args.scale) if args.scale != 1.0 else TrainPlan(seed=args.seed)
    out = train_world(args.out, plan, stages=tuple(args.stages), resume=args.resume)
    print(f"world written to {out} (log: {out / 'training_log.json'})")
    return 0
