"""The evaluation loop: every (clip, attack, defence) once, written as a per-video record.

Attacks (names as in the paper's Table I):

    clean      no attack: Standard Acc of each defence (the "None" column)
    pgd        PGD on the bare classifier, then defended: gray-box, Robust Acc*
    tt         TT (temporal translation) on the bare classifier, then defended: gray-box, Robust Acc*
    pgd+bpda   PGD through the defence as it declares (exact / BPDA / surrogate): adaptive, Robust Acc
    tt+bpda    TT through the defence: adaptive
    eot+bpda   PGD through the defence with EOT over `eot_reps` draws: adaptive (deterministic defences: 1 draw)
    pgd+full   PGD with the exact gradient through the whole purifier (diffusion defences only): adaptive

Gray-box adversarial videos are crafted once per clip and shared by all defences. Random starts are drawn per
clip from seeds derived from (seed, attack, clip), so they do not depend on batching or sharding; the randomness of
stochastic defences comes from generators seeded by (seed, role, defence, attack, first clip of the batch).
The adaptive attacker attacks `attack_defences[name]` (the attack-time settings) and the result is judged by
`defences[name]` (the defence-time settings); they are the same object unless --attack-config is given.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..attacks import (
    ZeroGradientCheck,
    check_eot,
    classifier_grad_fn,
    defence_grad_fn,
    eot_grad_fn,
    full_gradient_grad_fn,
    pgd,
    random_start_point,
    tt_grad_fn,
)
from ..defences import Defence
from ..pipeline import vote_candidates
from .data import Dataset
from .records import RecordWriter

ATTACKS: tuple[str, ...] = ("clean", "pgd", "pgd+bpda", "tt", "tt+bpda", "eot+bpda", "pgd+full")
GRAY_BOX: tuple[str, ...] = ("pgd", "tt")
ADAPTIVE: tuple[str, ...] = ("pgd+bpda", "tt+bpda", "eot+bpda", "pgd+full")


@dataclass(frozen=True)
class AttackSettings:
    """PGD and its variants; eps and step are in [0,1] pixel units (L_inf 4/255 = the paper's default)."""

    norm: str = "linf"  # "linf" or "l2"
    eps: float = 4 / 255  # paper: 4/255 for L_inf (2 for L2)
    step: float = 2 / 255  # paper: 2/255
    steps: int = 10  # paper (and the release): 10
    random_start: bool = True  # uniform start inside the ball
    eot_reps: int = 20  # draws per step for eot+bpda (paper: 20)
    tt_shift: int = 7  # TT shift length L: shifts -L..L (TT release: kernel length 15)
    tt_kernel: str = "gaussian"  # TT weights over shifts
    full_eot_reps: int = 1  # draws per step for pgd+full on stochastic defences
    seed: int = 0

    def __post_init__(self):
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {self.norm!r}.")
        for name in ("steps", "eot_reps", "full_eot_reps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")


def stable_seed(*parts) -> int:
    """A seed from strings/ints that is the same in every process and Python session (unlike hash())."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def generator_for(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(stable_seed(*parts))


def applies(attack: str, defence: Defence) -> tuple[bool, str]:
    """Whether a (defence, attack) cell is run, and why not (Table I leaves such cells as "-")."""
    if attack not in ATTACKS:
        raise ValueError(f"Unknown attack {attack!r}; choose from {', '.join(ATTACKS)}.")
    if attack in ADAPTIVE and not defence.defends:
        return False, "no defence: adaptive attacks are the gray-box ones"
    if attack == "pgd+full":
        if not defence.differentiable:
            return False, "not differentiable: BPDA/surrogate is the strongest gradient"
        if defence.gradient == "exact":
            return False, "declared exact: pgd+bpda already uses the full gradient"
    return True, ""


def attack_grad_fn(attack: str, classifier: nn.Module, defence: Optional[Defence], settings: AttackSettings,
                   generator: Optional[torch.Generator]) -> tuple[Callable, dict]:
    """The GradFn an attack follows, and facts about it for the record (gradient kind, EOT draws)."""
    if attack in GRAY_BOX:
        base, info = classifier_grad_fn(classifier), {"gradient": "classifier"}
    elif attack == "pgd+full":
        base, info = full_gradient_grad_fn(classifier, defence, generator), {"gradient": "full"}
        if defence.stochastic and settings.full_eot_reps > 1:
            base, info["eot_reps"] = eot_grad_fn(base, settings.full_eot_reps), settings.full_eot_reps
    else:
        base, info = defence_grad_fn(classifier, defence, generator), {"gradient": defence.gradient}
        if attack == "eot+bpda":
            reps = settings.eot_reps if defence.stochastic else 1
            base, info["eot_reps"] = eot_grad_fn(base, reps), reps
    if attack in ("tt", "tt+bpda"):
        base, info["tt_shift"] = tt_grad_fn(base, settings.tt_shift, settings.tt_kernel), settings.tt_shift
    return base, info


def craft(attack: str, x: Tensor, y: Tensor, clip_ids: Sequence[str], classifier: nn.Module,
          defence: Optional[Defence], settings: AttackSettings, generator: Optional[torch.Generator] = None,
          callback=None) -> tuple[Tensor, Optional[Tensor], dict]:
    """Adversarial videos for one batch: x (B, 3, F, H, W), y (B,) -> (x_adv, losses (steps, B) or None, info)."""
    if attack == "clean":
        return x, None, {}
    grad_fn, info = attack_grad_fn(attack, classifier, defence, settings, generator)
    context = f"{attack} on {defence.name if defence is not None and attack in ADAPTIVE else 'the classifier'}"
    check = ZeroGradientCheck(grad_fn, context)
    warnings_ = []
    if attack in ("pgd+bpda", "tt+bpda") or (attack == "pgd+full" and info.get("eot_reps", 1) == 1):
        message = check_eot(defence, 1, context)
        if message:
            warnings_.append(message)
    init = None
    if settings.random_start:
        init = torch.cat([
            random_start_point(x[i : i + 1], settings.eps, settings.norm, generator_for(settings.seed, "start", attack, cid))
            for i, cid in enumerate(clip_ids)
        ])
    x_adv, losses = pgd(check, x, y, settings.eps, settings.step, settings.steps, settings.norm, settings.random_start,
                        None, callback, init=init)
    info["zero_grad_calls"] = check.zero_calls.tolist() if check.zero_calls is not None else None
    if check.flagged:
        warnings_.append(f"{context}: zero gradient for videos {check.flagged}")
    info["warnings"] = warnings_
    return x_adv, losses, info


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def evaluate(
    dataset: Dataset,
    classifier: nn.Module,
    defences: dict[str, Defence],
    attacks: Sequence[str],
    settings: AttackSettings,
    out: str,
    attack_defences: Optional[dict[str, Defence]] = None,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 4,
    attack_clips: Optional[dict[str, int]] = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> int:
    """Run every missing (defence, attack, clip) of this rank's shard and append the records; returns how many.

    Clips are sharded round-robin: rank r takes clips r, r + world_size, ... `attack_clips["eot+bpda"] = n`
    restricts an expensive attack to the first n clips of the dataset, `attack_clips["diffpure-ddpm/eot+bpda"] = n`
    one (defence, attack) cell (this wins over the attack's limit).
    """
    from tqdm.auto import tqdm

    from ..progress import TqdmCallback

    attack_defences = attack_defences or defences
    limits = attack_clips or {}

    def limit(defence: str, attack: str) -> int:
        return limits.get(f"{defence}/{attack}", limits.get(attack, len(dataset)))

    writer = RecordWriter(out, rank)
    indexed = list(enumerate(dataset.clips))[rank::world_size]
    units = [(a, d) for a in attacks for d in defences if applies(a, defences[d])[0]]
    total = sum(1 for i, _ in indexed for a, d in units if i < limit(d, a))
    done_before = sum(1 for i, c in indexed for a, d in units if i < limit(d, a) and (d, a, c.id) in writer.done)
    bar = tqdm(total=total, initial=done_before, desc=f"eval rank {rank}" if world_size > 1 else "eval",
               disable=not progress, position=rank, unit="cell")
    written = 0
    classifier = classifier.to(device)
    with TqdmCallback(disable=not progress) as stages:
        for batch in _batches(indexed, batch_size):
            cache: dict[str, tuple] = {}
            videos: Optional[Tensor] = None
            for attack in attacks:
                for name, defence in defences.items():
                    if not applies(attack, defence)[0]:
                        continue
                    todo = [(i, c) for i, c in batch if i < limit(name, attack) and (name, attack, c.id) not in writer.done]
                    if not todo:
                        continue
                    if videos is None:
                        videos = torch.stack([c.load() for _, c in batch]).to(device)
                        labels = torch.tensor([c.label for _, c in batch], device=device)
                    todo_index = {i for i, _ in todo}
                    rows = [k for k, (i, _) in enumerate(batch) if i in todo_index]
                    ids = [c.id for _, c in todo]
                    x, y = videos[rows], labels[rows]
                    cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
                    if cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                    if attack in GRAY_BOX:  # crafted once per batch on the bare classifier, shared by all defences
                        if attack not in cache:
                            start = time.perf_counter()
                            eligible = [k for k, (i, _) in enumerate(batch) if any(i < limit(d, attack) for d in defences)]
                            crafted = craft(attack, videos[eligible], labels[eligible], [batch[k][1].id for k in eligible],
                                            classifier, None, settings, None, stages)
                            cache[attack] = (eligible, crafted, (time.perf_counter() - start) / len(eligible))
                        eligible, (adv_all, losses_all, info_all), per_video = cache[attack]
                        pos = [eligible.index(k) for k in rows]
                        x_adv = adv_all[pos]
                        losses = None if losses_all is None else losses_all[:, pos]
                        info = _select(info_all, pos)
                        attack_seconds = per_video * len(rows)
                    else:
                        start = time.perf_counter()
                        gen = generator_for(settings.seed, "attack", name, attack, ids[0])
                        x_adv, losses, info = craft(attack, x, y, ids, classifier, attack_defences[name], settings, gen, stages)
                        attack_seconds = time.perf_counter() - start
                    start = time.perf_counter()
                    output = defence.candidates(x_adv, generator_for(settings.seed, "eval", name, attack, ids[0]), hooks=stages)
                    result = vote_candidates(classifier, output)
                    defence_seconds = time.perf_counter() - start
                    if cuda:  # peak GPU memory of this cell (attack + defence), as vcr-bench's VRAM profiling
                        info = {**info, "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
                    records = _records(name, attack, todo, x, x_adv, y, result, losses, info, attack_seconds,
                                       defence_seconds, defence, rank, dataset.classes)
                    writer.append(records)
                    written += len(records)
                    bar.update(len(records))
    bar.close()
    return written


def _select(info: dict, positions: list[int]) -> dict:
    """The info of a crafted batch restricted to some of its videos."""
    out = dict(info)
    if info.get("zero_grad_calls") is not None:
        out["zero_grad_calls"] = [info["zero_grad_calls"][p] for p in positions]
    return out


def _records(name, attack, todo, x, x_adv, y, result, losses, info, attack_seconds, defence_seconds, defence, rank, classes):
    n = len(todo)
    delta = (x_adv - x).flatten(1)
    records = []
    for k, (index, clip) in enumerate(todo):
        counts = result.counts[k].tolist()
        winner = int(result.winner[k])
        records.append({
            "defence": name,
            "attack": attack,
            "clip": clip.id,
            "index": index,
            "label": int(y[k]),
            "prediction": winner,
            "correct": winner == int(y[k]),
            "class": classes[winner] if classes and winner < len(classes) else str(winner),
            "candidate_labels": list(result.candidate_labels),
            "candidate_predictions": result.predictions[:, k].tolist(),
            "votes": {str(c): v for c, v in enumerate(counts) if v},
            "losses": None if losses is None else [round(float(v), 5) for v in losses[:, k]],
            "linf_255": round(float(delta[k].abs().max()) * 255, 4),
            "l2": round(float(delta[k].norm()), 5),
            "gradient": info.get("gradient"),
            "eot_reps": info.get("eot_reps"),
            "tt_shift": info.get("tt_shift"),
            "zero_grad_calls": None if info.get("zero_grad_calls") is None else info["zero_grad_calls"][k],
            "warnings": info.get("warnings", []),
            "stochastic": bool(defence.stochastic),
            "timings": {s: round(t / n, 4) for s, t in result.timings.items()},
            "attack_seconds": round(attack_seconds / n, 4),
            "defence_seconds": round(defence_seconds / n, 4),
            "seconds": round((attack_seconds + defence_seconds) / n, 4),
            "batch": n,
            "peak_gpu_mb": info.get("peak_gpu_mb"),
            "rank": rank,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
    return records


def settings_dict(settings: AttackSettings) -> dict:
    return asdict(settings)
