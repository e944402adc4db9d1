"""The evaluation loop: every (clip, attack, defence) once, written as a per-video record.

Attacks (each named by what it is; Table I's columns are the first seven, `TABLE_ONE`):

    clean          no attack: Standard Acc of each defence (the "None" column)
    pgd            PGD on the bare classifier, then defended: gray-box, Robust Acc*
    pgd+bpda       PGD through the defence as it declares (exact / BPDA / surrogate): adaptive, Robust Acc
    tt             TT (temporal translation) on the bare classifier, then defended: gray-box, Robust Acc*
    tt+bpda        TT through the defence: adaptive
    eot+bpda       PGD through the defence with EOT over `eot_reps` draws: adaptive (deterministic defences: 1 draw)
    diffattack     DiffAttack-style: PGD on CE + the deviated-reconstruction loss, exact gradient through the whole
                   purifier with per-call checkpointing (diffusion defences; the paper's PGD+DiffAttack column)
    pgd+full       PGD on CE with the exact gradient through the whole purifier (diffusion defences)
    pgd-eot-full   PGD-EOT with the exact gradient and many steps (`long_steps`, Lee & Kim 2023) (diffusion defences)
    pgd+flow       PGD on the bare classifier + the flow-deviation loss through the flow model (gray-box, Table VI)
    pgd+bpda+flow  PGD+BPDA + the flow-deviation loss through the flow model (adaptive, Table VI)
    tt+mi          TT+MI (momentum) on a second, differently built classifier at `transfer_eps`: black-box transfer
                   (Table III)
    autoattack     AutoAttack 'rand' (APGD-CE + APGD-DLR, ART's implementation) through the defence as it declares,
                   EOT over `aa_eot_reps` draws of stochastic defences (Table II)

Gray-box and transfer adversarial videos are crafted once per clip and shared by all defences. Random starts are
drawn per clip from seeds derived from (seed, attack, clip), so they do not depend on batching or sharding; the
randomness of stochastic defences comes from generators seeded by (seed, role, defence, attack, first clip of the
batch). The adaptive attacker attacks `attack_defences[name]` (the attack-time settings) and the result is judged
by `defences[name]` (the defence-time settings); they are the same object unless --attack-config is given.

Beyond the final prediction a record holds (docs/evaluation.md, "Counting"):
- `iterate_predictions`: the defended vote at the attack's iterates. Free for the adaptive PGD attacks on a
  defence judged as attacked (their forward pass runs the defence at x_i; `attacks.IteratePredictions`); for the
  other attacks only at the iterates asked for with `eval_iterates`, each one defence run. `any_iterate_correct`
  is False when any of them, or the final prediction, is wrong ("any iterate succeeds").
- `resubmissions`: for a stochastic defence, the correctness of `resubmissions` independent further evaluations of
  the final video (the attacker wins if any of N submissions is wrong; the resubmission figure).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..attacks import (
    IteratePredictions,
    ZeroGradientCheck,
    autoattack,
    check_eot,
    classifier_grad_fn,
    defence_grad_fn,
    diffattack_grad_fn,
    eot_grad_fn,
    flow_deviation_grad_fn,
    full_gradient_grad_fn,
    pgd,
    random_start_point,
    reconstruction_trajectory,
    reference_flow,
    sum_grad_fns,
    tt_grad_fn,
)
from ..defences import Defence
from ..pipeline import vote_candidates
from .data import Dataset
from .records import RecordWriter

ATTACKS: tuple[str, ...] = ("clean", "pgd", "pgd+bpda", "tt", "tt+bpda", "eot+bpda", "diffattack", "pgd+full",
                            "pgd-eot-full", "pgd+flow", "pgd+bpda+flow", "tt+mi", "autoattack")
TABLE_ONE: tuple[str, ...] = ATTACKS[:7]  # the paper's Table I columns, in its order
GRAY_BOX: tuple[str, ...] = ("pgd", "tt", "pgd+flow")  # crafted once on the bare classifier, shared
TRANSFER: tuple[str, ...] = ("tt+mi",)  # crafted once on the second classifier, shared
SHARED: tuple[str, ...] = GRAY_BOX + TRANSFER
ADAPTIVE: tuple[str, ...] = ("pgd+bpda", "tt+bpda", "eot+bpda", "diffattack", "pgd+full", "pgd-eot-full",
                             "pgd+bpda+flow", "autoattack")
FULL_GRADIENT: tuple[str, ...] = ("diffattack", "pgd+full", "pgd-eot-full")  # the diffusion defences only
FLOW: tuple[str, ...] = ("pgd+flow", "pgd+bpda+flow")  # need the flow model


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
    full_eot_reps: int = 1  # draws per step for pgd+full and diffattack on stochastic defences
    seed: int = 0
    dev_weight: float = 1.0  # diffattack: weight of the deviated-reconstruction loss (attacks/diffattack.py)
    long_steps: int = 100  # pgd-eot-full: iterations (Lee & Kim 2023 recommend 100-200 for diffusion purifiers)
    long_step: float = 1 / 255  # pgd-eot-full: step size (a quarter of the paper's eps: many small steps)
    long_eot_reps: int = 4  # pgd-eot-full: EOT draws per step on stochastic defences (Lee & Kim: 20)
    transfer_eps: float = 16 / 255  # tt+mi: the paper's black-box budget (L_inf)
    transfer_steps: int = 10  # tt+mi: iterations (step = transfer_eps / transfer_steps, momentum 1, no random start)
    aa_steps: int = 100  # autoattack: APGD iterations per loss ('rand' version: 100)
    aa_eot_reps: int = 20  # autoattack: EOT draws on stochastic defences ('rand' version: 20)
    flow_weight: float = 1.0  # pgd+flow, pgd+bpda+flow: weight of the flow end-point-error term (pixels)

    def __post_init__(self):
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {self.norm!r}.")
        for name in ("steps", "eot_reps", "full_eot_reps", "long_steps", "long_eot_reps", "transfer_steps",
                     "aa_steps", "aa_eot_reps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")

    def steps_of(self, attack: str) -> int:
        """How many PGD iterations `attack` takes."""
        return {"pgd-eot-full": self.long_steps, "tt+mi": self.transfer_steps, "autoattack": self.aa_steps}.get(
            attack, self.steps)


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
    if attack in FULL_GRADIENT:
        if not defence.differentiable:
            return False, "not differentiable: BPDA/surrogate is the strongest gradient"
        if defence.gradient == "exact":
            return False, "declared exact: pgd+bpda already uses the full gradient"
    return True, ""


@dataclass
class Context:
    """What attacks need besides the classifier and the defence: the flow model (pgd+flow, pgd+bpda+flow), the
    second classifier (tt+mi), the largest number of videos per network call in expanded batches."""

    flow: Optional[Callable] = None  # a differentiable FlowFn (e.g. RaftFlow(grad=True)) of the defence's flow model
    surrogate: Optional[nn.Module] = None  # the transfer attack's classifier
    max_batch: Optional[int] = None


def attack_grad_fn(attack: str, classifier: nn.Module, defence: Optional[Defence], settings: AttackSettings,
                   generator: Optional[torch.Generator], probe=None, x: Optional[Tensor] = None,
                   context: Context = Context()) -> tuple[Callable, dict]:
    """The GradFn an attack follows, and facts about it for the record (gradient kind, EOT draws). `x` (the clean
    videos) is needed by the attacks that compare with the clean input (diffattack, the flow attacks)."""
    mb = context.max_batch
    if attack in ("pgd", "tt", "pgd+flow"):
        base, info = classifier_grad_fn(classifier), {"gradient": "classifier"}
    elif attack == "tt+mi":
        if context.surrogate is None:
            raise ValueError("tt+mi is a transfer attack: it needs the second classifier (context.surrogate).")
        base, info = classifier_grad_fn(context.surrogate), {"gradient": "surrogate classifier"}
    elif attack in ("pgd+full", "diffattack", "pgd-eot-full"):
        if attack == "diffattack":
            reference = reconstruction_trajectory(defence, x, generator)
            base = diffattack_grad_fn(classifier, defence, reference, generator, settings.dev_weight, probe)
            info = {"gradient": "full", "dev_weight": settings.dev_weight}
        else:
            base, info = full_gradient_grad_fn(classifier, defence, generator, probe), {"gradient": "full"}
        reps = settings.long_eot_reps if attack == "pgd-eot-full" else settings.full_eot_reps
        if defence.stochastic and reps > 1:
            base, info["eot_reps"] = eot_grad_fn(base, reps, max_batch=mb), reps
    else:
        base, info = defence_grad_fn(classifier, defence, generator, probe=probe, max_batch=mb), {"gradient": defence.gradient}
        if attack == "eot+bpda":
            reps = settings.eot_reps if defence.stochastic else 1
            base, info["eot_reps"] = eot_grad_fn(base, reps, max_batch=mb), reps
    if attack in FLOW:
        if context.flow is None:
            raise ValueError(f"{attack} attacks the optical-flow model too: it needs the flow model (context.flow).")
        flow_term = flow_deviation_grad_fn(context.flow, reference_flow(context.flow, x), settings.flow_weight)
        base, info["flow_weight"] = sum_grad_fns(base, flow_term), settings.flow_weight
    if attack in ("tt", "tt+bpda", "tt+mi"):
        base, info["tt_shift"] = tt_grad_fn(base, settings.tt_shift, settings.tt_kernel, max_batch=mb), settings.tt_shift
    return base, info


def craft(attack: str, x: Tensor, y: Tensor, clip_ids: Sequence[str], classifier: nn.Module,
          defence: Optional[Defence], settings: AttackSettings, generator: Optional[torch.Generator] = None,
          callback=None, probe: Optional[IteratePredictions] = None, keep: Sequence[int] = (),
          context: Context = Context()) -> tuple[Tensor, Optional[Tensor], dict]:
    """Adversarial videos for one batch: x (B, 3, F, H, W), y (B,) -> (x_adv, losses (steps, B) or None, info).

    info["iterates"] holds the videos x_i of the iterates listed in `keep`; `probe` collects the defended vote
    at every iterate when the attack's forward pass runs the defence."""
    if attack == "clean":
        return x, None, {}
    if attack == "autoattack":
        reps = settings.aa_eot_reps if defence.stochastic else 1
        seed = stable_seed(settings.seed, "start", attack, *clip_ids)
        x_adv = autoattack(classifier, defence, x, y, settings.eps, settings.aa_steps, reps, settings.norm, seed,
                           generator)
        return x_adv, None, {"gradient": defence.gradient, "eot_reps": reps, "warnings": []}
    grad_fn, info = attack_grad_fn(attack, classifier, defence, settings, generator, probe, x, context)
    context_name = f"{attack} on {defence.name if defence is not None and attack in ADAPTIVE else 'the classifier'}"
    check = ZeroGradientCheck(grad_fn, context_name)
    warnings_ = []
    if attack in ("pgd+bpda", "tt+bpda", "pgd+bpda+flow") or (attack in FULL_GRADIENT and info.get("eot_reps", 1) == 1):
        message = check_eot(defence, 1, context_name)
        if message:
            warnings_.append(message)
    eps, step, steps, momentum, random_start = settings.eps, settings.step, settings.steps, 0.0, settings.random_start
    if attack == "pgd-eot-full":
        step, steps = settings.long_step, settings.long_steps
    elif attack == "tt+mi":  # MI-FGSM as in the TT release: from x itself, eps / steps per step, momentum 1
        eps, steps, momentum, random_start = settings.transfer_eps, settings.transfer_steps, 1.0, False
        step = eps / steps
    norm = "linf" if attack == "tt+mi" else settings.norm
    init = None
    if random_start:
        init = torch.cat([
            random_start_point(x[i : i + 1], eps, norm, generator_for(settings.seed, "start", attack, cid))
            for i, cid in enumerate(clip_ids)
        ])
    iterates: dict = {}
    x_adv, losses = pgd(check, x, y, eps, step, steps, norm, random_start, None, callback, init=init,
                        momentum=momentum, probe=probe, keep=keep, iterates=iterates)
    info["zero_grad_calls"] = check.zero_calls.tolist() if check.zero_calls is not None else None
    if check.flagged:
        warnings_.append(f"{context_name}: zero gradient for videos {check.flagged}")
    info["warnings"] = warnings_
    info["iterates"] = iterates
    return x_adv, losses, info


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def defended_predictions(defence: Defence, classifier: nn.Module, x: Tensor, generator: Optional[torch.Generator],
                         hooks=None, max_batch: Optional[int] = None):
    """The defended vote for videos x (B, ...): VoteResult; the defence sees at most max_batch videos per call and
    the classifier all K x B candidates in one call (at most max_batch when given)."""

    def vote(videos):
        out = defence.candidates(videos, generator, hooks=hooks)
        return vote_candidates(classifier, out, max_batch or out.videos.shape[0] * out.videos.shape[1])

    if max_batch is None or x.shape[0] <= max_batch:
        return vote(x)
    parts = [vote(p) for p in x.split(max_batch)]
    return type(parts[0])(torch.cat([p.logits for p in parts], 1), torch.cat([p.predictions for p in parts], 1),
                          torch.cat([p.counts for p in parts]), torch.cat([p.winner for p in parts]),
                          parts[0].candidate_labels, parts[0].timings)


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
    context: Context = Context(),
    eval_iterates: Sequence[int] = (),
    resubmissions: int = 0,
) -> int:
    """Run every missing (defence, attack, clip) of this rank's shard and append the records; returns how many.

    Clips are sharded round-robin: rank r takes clips r, r + world_size, ... `attack_clips["eot+bpda"] = n`
    restricts an expensive attack to the first n clips of the dataset, `attack_clips["diffpure-ddpm/eot+bpda"] = n`
    one (defence, attack) cell (this wins over the attack's limit). `eval_iterates`: iterates whose defended
    prediction is recorded where it is not free (one defence run each); `resubmissions`: independent further
    evaluations of every final video of a stochastic defence.
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
    mb = context.max_batch
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
                    keep = [k for k in eval_iterates if 0 <= k < settings.steps_of(attack)]  # the last one is x_adv
                    probe = None
                    if attack in SHARED:  # crafted once per batch on a bare classifier, shared by all defences
                        if attack not in cache:
                            start, cpu = time.perf_counter(), time.process_time()
                            eligible = [k for k, (i, _) in enumerate(batch) if any(i < limit(d, attack) for d in defences)]
                            crafted = craft(attack, videos[eligible], labels[eligible], [batch[k][1].id for k in eligible],
                                            classifier, None, settings, None, stages, keep=keep, context=context)
                            cache[attack] = (eligible, crafted, (time.perf_counter() - start) / len(eligible),
                                             (time.process_time() - cpu) / len(eligible))
                        eligible, (adv_all, losses_all, info_all), per_video, per_video_cpu = cache[attack]
                        pos = [eligible.index(k) for k in rows]
                        x_adv = adv_all[pos]
                        losses = None if losses_all is None else losses_all[:, pos]
                        info = _select(info_all, pos)
                        attack_seconds, attack_cpu = per_video * len(rows), per_video_cpu * len(rows)
                    else:
                        start, cpu = time.perf_counter(), time.process_time()
                        gen = generator_for(settings.seed, "attack", name, attack, ids[0])
                        judged_as_attacked = attack_defences[name] is defence
                        probe = IteratePredictions() if (attack in ADAPTIVE and judged_as_attacked) else None
                        x_adv, losses, info = craft(attack, x, y, ids, classifier, attack_defences[name], settings, gen,
                                                    stages, probe, keep, context)
                        attack_seconds, attack_cpu = time.perf_counter() - start, time.process_time() - cpu
                    start, cpu = time.perf_counter(), time.process_time()
                    result = defended_predictions(defence, classifier, x_adv,
                                                  generator_for(settings.seed, "eval", name, attack, ids[0]), stages, mb)
                    defence_seconds, defence_cpu = time.perf_counter() - start, time.process_time() - cpu
                    cpu = time.process_time()
                    iterate_preds = _iterate_predictions(defence, classifier, info.pop("iterates", {}) if info else {},
                                                         probe, settings, name, attack, ids[0], mb)
                    if iterate_preds:
                        iterate_preds[settings.steps_of(attack)] = result.winner.cpu()
                    resubmitted = None
                    if resubmissions and defence.stochastic and attack != "clean":
                        gen = generator_for(settings.seed, "resubmit", name, attack, ids[0])
                        again = defended_predictions(defence, classifier, x_adv.repeat(resubmissions, 1, 1, 1, 1), gen,
                                                     None, mb).winner.view(resubmissions, -1).cpu()
                        resubmitted = again
                    extra_cpu = time.process_time() - cpu  # iterate evaluations and resubmissions
                    if cuda:  # peak GPU memory of this cell (attack + defence), as vcr-bench's VRAM profiling
                        info = {**info, "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
                    info = {**info, "cpu_seconds": attack_cpu + defence_cpu + extra_cpu, "attack_cpu_seconds": attack_cpu}
                    records = _records(name, attack, todo, x, x_adv, y, result, losses, info, attack_seconds,
                                       defence_seconds, defence, rank, dataset.classes, iterate_preds, resubmitted)
                    writer.append(records)
                    written += len(records)
                    bar.update(len(records))
    bar.close()
    return written


def _iterate_predictions(defence, classifier, iterates: dict, probe, settings, name, attack, first_id, mb) -> dict:
    """{iterate: (B,) defended votes}: from the probe (free) or by running the defence on the kept iterates."""
    out: dict[int, Tensor] = {}
    if probe is not None and probe.predictions is not None:
        for i, row in enumerate(probe.predictions):
            out[i] = row
    for i, x_i in sorted(iterates.items()):
        if i in out:
            continue
        gen = generator_for(settings.seed, "iterate", name, attack, first_id, i)
        out[i] = defended_predictions(defence, classifier, x_i, gen, None, mb).winner.cpu()
    return out


def _select(info: dict, positions: list[int]) -> dict:
    """The info of a crafted batch restricted to some of its videos."""
    out = dict(info)
    if info.get("zero_grad_calls") is not None:
        out["zero_grad_calls"] = [info["zero_grad_calls"][p] for p in positions]
    if info.get("iterates"):
        out["iterates"] = {i: v[positions] for i, v in info["iterates"].items()}
    return out


def _records(name, attack, todo, x, x_adv, y, result, losses, info, attack_seconds, defence_seconds, defence, rank,
             classes, iterate_preds=None, resubmitted=None):
    n = len(todo)
    delta = (x_adv - x).flatten(1)
    records = []
    for k, (index, clip) in enumerate(todo):
        counts = result.counts[k].tolist()
        winner = int(result.winner[k])
        label = int(y[k])
        iterates = {str(i): int(p[k]) for i, p in sorted((iterate_preds or {}).items())}
        records.append({
            "defence": name,
            "attack": attack,
            "clip": clip.id,
            "index": index,
            "label": label,
            "prediction": winner,
            "correct": winner == label,
            "class": classes[winner] if classes and winner < len(classes) else str(winner),
            "candidate_labels": list(result.candidate_labels),
            "candidate_predictions": result.predictions[:, k].tolist(),
            "votes": {str(c): v for c, v in enumerate(counts) if v},
            "losses": None if losses is None else [round(float(v), 5) for v in losses[:, k]],
            "iterate_predictions": iterates or None,
            "any_iterate_correct": (winner == label) and all(p == label for p in iterates.values()),
            "resubmissions": None if resubmitted is None else [int(p) == label for p in resubmitted[:, k]],
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
            "cpu_seconds": round(info.get("cpu_seconds", 0.0) / n, 4),
            "attack_cpu_seconds": round(info.get("attack_cpu_seconds", 0.0) / n, 4),
            "batch": n,
            "peak_gpu_mb": info.get("peak_gpu_mb"),
            "rank": rank,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
    return records


def settings_dict(settings: AttackSettings) -> dict:
    return asdict(settings)
