"""`videopure eval`: attacks x defences on a set of clips, per-video records, the paper's tables and plots.

    videopure eval --quick --out results/quick                                  # a few minutes on a CPU
    videopure eval --experiment table1 --out docs/results/world/table1          # one of the paper's experiments
    videopure eval --preset paper --data world --clips 48 --out results/world   # any defences x attacks
    videopure eval --train-surrogate DIR                                        # the second classifier (Table III)
    torchrun --nproc_per_node 2 -m videopure_core eval ...                      # shards clips across processes

See docs/evaluation.md for every option, the defences, the attacks, the experiments and what the numbers mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io import atomic_write

HELP = ("Evaluate robustness: defences x attacks on clips, or one of the paper's experiments (--experiment); writes "
        "per-video records, tables with 95% intervals and plots.")

# Settings a preset fills in unless given on the command line.
PRESETS = {
    "paper": dict(steps=10, eot_reps=20, tt_shift=7),
    "quick": dict(clips=4, frames=8, steps=2, eot_reps=2, tt_shift=1, batch_size=4, long_steps=3, aa_steps=2,
                  aa_eot_reps=2, transfer_steps=2, attack_clips="tt+bpda=2,eot+bpda=2,diffattack=1,pgd+full=1,"
                  "pgd-eot-full=1,autoattack=1"),
}
BASE = dict(clips=12, frames=None, steps=10, eot_reps=20, tt_shift=7, batch_size=4, attack_clips="", long_steps=100,
            long_eot_reps=4, transfer_steps=10, aa_steps=100, aa_eot_reps=20)
# Budget and step defaults per norm, in the units of --eps (1/255 for linf, raw L2 norm of the whole video for l2):
# the paper's 4/255 with step 2/255 (L_inf) and eps 2 (L2; step eps/4).
NORM_DEFAULTS = {"linf": dict(eps=4.0, step=2.0, long_step=1.0), "l2": dict(eps=2.0, step=0.5, long_step=0.25)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to run")
    g.add_argument("--experiment", help="one of the paper's experiments as one command (table1, table2, table3, table4, "
                   "table6, table7, table8, table9, table11, table12, fig5a, fig5b, fig6, fig7, strong); fixes defences, "
                   "attacks and settings, writes <out>/<name>.md")
    g.add_argument("--preset", choices=sorted(PRESETS), help="paper: 10 steps, EOT 20, TT L=7 (the defaults); quick: "
                   "4 clips of 8 frames, 2 steps, EOT 2, TT L=1, expensive attacks on 1-2 clips")
    g.add_argument("--quick", action="store_true", help="the same as --preset quick")
    g.add_argument("--defences", default="all", help="comma-separated defence specs (default all: "
                   "none,videopure,ddim-inversion,diffpure-ddim,diffpure-ddpm,jpeg,wavelet,shuffle); options as "
                   "name:key=value, e.g. jpeg:quality=50 or videopure:guidance=false")
    g.add_argument("--attacks", default="all", help="comma-separated (default all = Table I's: clean,pgd,pgd+bpda,tt,"
                   "tt+bpda,eot+bpda,diffattack; more: pgd+full,pgd-eot-full,pgd+flow,pgd+bpda+flow,tt+mi,autoattack)")
    g.add_argument("--ablations", action="store_true", help="add Table IV's VideoPure ablations as defences (run with "
                   "clean, pgd and pgd+bpda only, the columns of Table IV)")
    g.add_argument("--attack-clips", help="limit attacks to the first N clips, e.g. diffattack=20,eot+bpda=50; one cell "
                   "with DEFENCE/ATTACK=N, e.g. diffpure-ddpm/eot+bpda=6")
    g.add_argument("--out", help="results folder (records, tables, plots); reruns resume (default results, or "
                   "results/<experiment>)")
    g.add_argument("--report-only", action="store_true", help="only rebuild the reports from the records in --out")
    g.add_argument("--train-surrogate", metavar="DIR", help="train the second world classifier (Table III's source "
                   "model) into DIR and exit")

    g = p.add_argument_group("data")
    g.add_argument("--data", default="world", help="'world' (generated test split) or a folder: <label>/ frame PNGs, "
                   "<label>/<clip>/ frame PNGs, or <label>/<clip>.mp4 (needs PyAV)")
    g.add_argument("--clips", type=int, help="number of clips (default 12, experiments 48; world: the first N of the test split)")
    g.add_argument("--frames", type=int, help="keep the first N frames of each clip")
    g.add_argument("--size", type=int, help="resize frames to size x size (multiple of 8)")
    g.add_argument("--classes", help="file with one class name per line (label folders may then use names)")

    g = p.add_argument_group("models (default: the small world)")
    g.add_argument("--world", help="world weights folder (default: videopure_core/world/weights)")
    g.add_argument("--diffusion", help="ModelScope-style diffusers folder (instead of the world)")
    g.add_argument("--raft", help="RAFT weights file (with --diffusion)")
    g.add_argument("--raft-arch", default="raft_large", choices=["raft_large", "raft_small"])
    g.add_argument("--classifier-arch", default="r3d_18", help="torchvision video architecture (with --diffusion)")
    g.add_argument("--classifier-weights", help="classifier weights file (with --diffusion)")
    g.add_argument("--num-classes", type=int, default=400)
    g.add_argument("--surrogate", help="the second classifier's folder for tt+mi (default for --experiment table3: "
                   "<out>/surrogate, trained there when missing)")
    g.add_argument("--tiny", action="store_true", help="tiny random models built in code (tests and smoke runs only)")
    g.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="VideoPure options (PurifyConfig.with_options names) for the diffusion defences at defence time, "
                   "e.g. t_star=4 lambda_temp=0")
    g.add_argument("--attack-config", nargs="*", default=None, metavar="KEY=VALUE",
                   help="VideoPure options the adaptive attacker uses instead (Lee & Kim), e.g. t_star=4")
    g.add_argument("--device", default="auto")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])

    g = p.add_argument_group("attack settings")
    g.add_argument("--norm", choices=["linf", "l2"], help="default linf")
    g.add_argument("--eps", type=float, help="budget: in 1/255 for linf (default 4), raw L2 norm for l2 (default 2)")
    g.add_argument("--step", type=float, help="step size, same units as --eps (default 2/255 for linf, 0.5 for l2)")
    g.add_argument("--steps", type=int, help="iterations (default 10)")
    g.add_argument("--no-random-start", action="store_true")
    g.add_argument("--eot-reps", type=int, help="EOT draws per step for eot+bpda (default 20)")
    g.add_argument("--tt-shift", type=int, help="TT shift length L, shifts -L..L (default 7)")
    g.add_argument("--tt-kernel", default="gaussian", choices=["gaussian", "linear", "uniform"])
    g.add_argument("--full-eot-reps", type=int, default=1, help="EOT draws per step of pgd+full and diffattack on "
                   "stochastic defences (default 1)")
    g.add_argument("--dev-weight", type=float, default=1.0, help="diffattack: weight of the deviated-reconstruction loss")
    g.add_argument("--long-steps", type=int, help="pgd-eot-full: iterations (default 100)")
    g.add_argument("--long-step", type=float, help="pgd-eot-full: step size, units of --eps (default 1/255; l2 0.25)")
    g.add_argument("--long-eot-reps", type=int, help="pgd-eot-full: EOT draws on stochastic defences (default 4)")
    g.add_argument("--transfer-eps", type=float, default=16.0, help="tt+mi: L_inf budget in 1/255 (default 16)")
    g.add_argument("--transfer-steps", type=int, help="tt+mi: iterations (default 10)")
    g.add_argument("--aa-steps", type=int, help="autoattack: APGD iterations per loss (default 100)")
    g.add_argument("--aa-eot-reps", type=int, help="autoattack: EOT draws on stochastic defences (default 20)")
    g.add_argument("--flow-weight", type=float, default=1.0, help="pgd+flow, pgd+bpda+flow: weight of the flow term")
    g.add_argument("--flow-grad", action="store_true", help="full-gradient attacks also differentiate RAFT (default: "
                   "flow held fixed)")
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("counting and execution")
    g.add_argument("--eval-iterates", help="iterates whose defended prediction is recorded where it is not free, "
                   "e.g. 1,2,5 (adaptive attacks record every iterate for free)")
    g.add_argument("--resubmissions", type=int, help="evaluate every final video of a stochastic defence N more "
                   "times (the resubmission curve)")
    g.add_argument("--batch-size", type=int, help="clips per batch (default 4)")
    g.add_argument("--max-batch", type=int, default=32, help="at most this many videos per network call when EOT "
                   "draws and TT shifts are batched, and per classifier call (default 32; 0 = no limit)")
    g.add_argument("--loss-attack", default="pgd+bpda", help="attack whose loss curves are plotted (Fig. 4)")
    g.add_argument("--threads", type=int, help="torch CPU threads per process (torchrun sets 1 per process)")
    g.add_argument("--no-progress", action="store_true")


def _resolve(args) -> dict:
    preset = PRESETS["quick"] if args.quick else PRESETS.get(args.preset or "", {})
    out = {}
    for key, base in BASE.items():
        value = getattr(args, key, None)
        out[key] = value if value is not None else preset.get(key, base)
    norm = args.norm or "linf"
    out["norm"] = norm
    for key, base in NORM_DEFAULTS[norm].items():
        value = getattr(args, key, None)
        out[key] = value if value is not None else base
    return out


def _kv(items, what: str = "--config", example: str = "t_star=6") -> dict:
    from ..options import parse_assignments

    try:
        return parse_assignments(items or [], f"videopure eval: {what}", example)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def _defence_specs(args) -> list[str]:
    from ..defences import DEFENCES
    from .report import ABLATIONS

    specs = list(DEFENCES) if args.defences == "all" else [s.strip() for s in args.defences.split(",") if s.strip()]
    if args.ablations:
        specs += [spec for _, spec in ABLATIONS if spec not in specs]
    return specs


def _attack_list(args) -> list[str]:
    from .runner import ATTACKS, TABLE_ONE

    attacks = list(TABLE_ONE) if args.attacks == "all" else [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise SystemExit(f"videopure eval: unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}.")
    return attacks


def load_models(args, config, runtime, needs_diffusion: bool):
    """(purifier or None, classifier, classes, description) for the command line's model options."""
    import torch

    from .. import Purifier, load_raft, load_video_classifier

    device = runtime.torch_device
    if args.tiny:
        from ..tiny import tiny_purifier
        from ..world.generator import CLASSES
        from ..world.models import WorldClassifier

        torch.manual_seed(args.seed)
        classifier = WorldClassifier(len(CLASSES), width=4).eval().requires_grad_(False).to(device)
        purifier = None
        if needs_diffusion:
            flow = load_raft("raft_small", None, device) if config.needs_flow else None
            purifier = tiny_purifier(config, flow=flow, runtime=runtime)
        return purifier, classifier, CLASSES, "TINY RANDOM models (smoke test only; numbers mean nothing)"
    if args.diffusion:
        classifier = load_video_classifier(args.classifier_arch, args.classifier_weights, args.num_classes, device)
        purifier = None
        if needs_diffusion:
            flow = load_raft(args.raft_arch, args.raft, device) if args.raft else None
            purifier = Purifier.from_pretrained(args.diffusion, flow=flow, config=config, runtime=runtime)
        return purifier, classifier, None, f"diffusion {args.diffusion}, classifier {args.classifier_arch}"
    from ..world.models import WEIGHTS, load_world

    world = load_world(args.world or WEIGHTS, device)
    purifier = Purifier.from_pretrained(world.diffusion, world.raft, config, runtime) if needs_diffusion else None
    return purifier, world.classifier, world.classes, f"world {args.world or WEIGHTS}"


def base_config(args):
    """The VideoPure config of the command line: the world's options (unless --tiny/--diffusion) and --config."""
    from ..config import PurifyConfig
    from ..world import WORLD_OPTIONS

    base = {} if (args.tiny or args.diffusion) else dict(WORLD_OPTIONS)
    return PurifyConfig().with_options(**{**base, **_kv(args.config)})


def _check_run(out: Path, run: dict) -> None:
    """Refuse to mix results of different settings in one folder; record the settings on the first run."""
    path = out / "run.json"
    fixed = ("data", "frames", "size", "models", "settings", "config", "attack_config")
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in fixed if json.dumps(old.get(k), sort_keys=True) != json.dumps(run.get(k), sort_keys=True)]
        if diff:
            raise SystemExit(
                f"videopure eval: {out} holds results made with other settings ({', '.join(diff)} differ; see "
                f"{path}). Use a new --out, or delete the folder to start over."
            )
        run = {**old, **run, "defences": list(dict.fromkeys(old.get("defences", []) + run["defences"])),
               "attacks": list(dict.fromkeys(old.get("attacks", []) + run["attacks"]))}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(json.dumps(run, indent=1, sort_keys=True) + "\n")


def settings_from(r: dict, args):
    """AttackSettings from the resolved options (eps-like values converted from 1/255 for linf)."""
    from .runner import AttackSettings

    scale = 1 / 255 if r["norm"] == "linf" else 1.0
    return AttackSettings(
        r["norm"], r["eps"] * scale, r["step"] * scale, r["steps"], not args.no_random_start, r["eot_reps"],
        r["tt_shift"], args.tt_kernel, args.full_eot_reps, args.seed, dev_weight=args.dev_weight,
        long_steps=r["long_steps"], long_step=r["long_step"] * scale, long_eot_reps=r["long_eot_reps"],
        transfer_eps=args.transfer_eps / 255, transfer_steps=r["transfer_steps"], aa_steps=r["aa_steps"],
        aa_eot_reps=r["aa_eot_reps"], flow_weight=args.flow_weight)


def run(args: argparse.Namespace) -> int:
    if args.train_surrogate:
        from .surrogate import train_surrogate

        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        train_surrogate(args.train_surrogate)
        return 0
    if args.experiment:
        from .experiments import run_experiment

        args.out_given = args.out is not None
        return run_experiment(args, run_eval)
    return run_eval(args)


def run_eval(args: argparse.Namespace) -> int:
    from ..config import Runtime
    from ..defences import DIFFUSION_DEFENCES, build_defence, parse_spec
    from .data import load_dataset, read_classes
    from .distributed import barrier, init_distributed, local_device, shutdown
    from .records import load_records, merge_records
    from .report import write_reports
    from .runner import ATTACKS, FLOW, Context, evaluate

    out = Path(args.out or "results")
    r = _resolve(args)
    specs, attacks = _defence_specs(args), _attack_list(args)
    if args.report_only:
        records = load_records(out)
        if not records:
            raise SystemExit(f"videopure eval: no records under {out.resolve()}.")
        run_info = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else None
        paths = write_reports(records, out, run_info, args.loss_attack, (run_info or {}).get("defences", specs))
        print(f"reports: {', '.join(str(p) for p in paths.values())}")
        return 0

    rank, world_size = init_distributed()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        settings = settings_from(r, args)
        config = base_config(args)
        runtime = Runtime(device=local_device(args.device), dtype=args.dtype)
        attack_changes = _kv(args.attack_config, "--attack-config") if args.attack_config is not None else None
        needs_diffusion = any(parse_spec(s)[0] in DIFFUSION_DEFENCES for s in specs) or any(a in FLOW for a in attacks)
        purifier, classifier, classes, models = load_models(args, config, runtime, needs_diffusion)
        if args.classes:
            classes = read_classes(args.classes)
        dataset = load_dataset(args.data, r["clips"], r["frames"], args.size, classes)
        defences = {s: build_defence(s, purifier) for s in specs}
        attack_purifier = purifier.with_config(**attack_changes) if (purifier is not None and attack_changes) else None
        attack_defences = {s: build_defence(s, attack_purifier) if attack_purifier is not None and parse_spec(s)[0] in
                           DIFFUSION_DEFENCES else defences[s] for s in specs}
        if args.flow_grad:
            for d in attack_defences.values():
                d.flow_grad = d.uses_flow
        attack_clips = _kv(filter(None, (x.strip() for x in r["attack_clips"].split(","))),
                           "--attack-clips", "diffattack=20")
        for name, n in attack_clips.items():
            if name.rpartition("/")[2] not in ATTACKS or type(n) is not int or n < 0:
                raise SystemExit(f"videopure eval: --attack-clips entry {name}={n} is not ATTACK=N or DEFENCE/ATTACK=N "
                                 f"(e.g. diffattack=20, diffpure-ddpm/eot+bpda=6).")
        if args.attack_clips:  # a limit the user wrote for an attack this run lacks limits nothing: say so
            unused = [name for name in attack_clips if name.rpartition("/")[2] not in attacks]
            if unused:
                raise SystemExit(f"videopure eval: --attack-clips limits {', '.join(unused)}, which this run does not "
                                 f"include (attacks: {', '.join(attacks)}); limit one of those instead.")
        if args.ablations:  # the ablation rows only need Table IV's columns: Standard Acc, PGD, PGD+BPDA
            explicit = set(_defence_specs(argparse.Namespace(defences=args.defences, ablations=False)))
            for spec in specs:
                if spec not in explicit:
                    for attack in attacks:
                        if attack not in ("clean", "pgd", "pgd+bpda"):
                            attack_clips.setdefault(f"{spec}/{attack}", 0)
        context = _context(args, attacks, purifier, runtime)
        eval_iterates = [int(v) for v in str(args.eval_iterates or "").split(",") if v.strip()]
        run_info = {
            "command": "videopure eval " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:]),
            "data": args.data, "clips": len(dataset), "frames": r["frames"], "size": args.size, "models": models,
            "settings": {**vars(settings), "eps_255": settings.eps * 255 if settings.norm == "linf" else None,
                         "flow_grad": args.flow_grad, "surrogate": args.surrogate if "tt+mi" in attacks else None},
            "config": config.options(), "dtype": args.dtype,
            "attack_config": attack_changes, "defences": specs, "attacks": attacks, "attack_clips": attack_clips,
            "world_size": world_size, "batch_size": r["batch_size"], "max_batch": args.max_batch or None,
            "eval_iterates": eval_iterates, "resubmissions": args.resubmissions or 0,
        }
        if rank == 0:
            _check_run(out, run_info)
            print(f"videopure eval: {len(dataset)} clips from {dataset.name}; {models}; {len(specs)} defences x "
                  f"{len(attacks)} attacks; records in {out}/records/" + (f"; {world_size} processes" if world_size > 1 else ""))
        barrier()
        evaluate(dataset, classifier, defences, attacks, settings, str(out), attack_defences, rank, world_size,
                 r["batch_size"], attack_clips, runtime.torch_device, progress=not args.no_progress, context=context,
                 eval_iterates=eval_iterates, resubmissions=args.resubmissions or 0)
        barrier()
        if rank == 0:
            merge_records(out)
            records = load_records(out)
            info = json.loads((out / "run.json").read_text())
            paths = write_reports(records, out, info, args.loss_attack, info.get("defences", specs))
            print((out / "table1.md").read_text(), end="")
            print(f"reports: {', '.join(str(p) for p in paths.values())}")
        barrier()
    finally:
        shutdown()
    return 0


def _context(args, attacks, purifier, runtime):
    """The flow model (flow attacks) and the second classifier (tt+mi) the attacks need."""
    from ..attacks import differentiable_flow
    from .runner import FLOW, Context

    flow = differentiable_flow(purifier.flow) if (purifier is not None and any(a in FLOW for a in attacks)) else None
    surrogate = None
    if "tt+mi" in attacks:
        if not args.surrogate:
            raise SystemExit("videopure eval: tt+mi needs the second classifier: --surrogate DIR (train one with "
                             "--train-surrogate DIR), or run --experiment table3.")
        from .surrogate import ensure_surrogate

        surrogate = ensure_surrogate(args.surrogate, runtime.torch_device or "cpu")
    return Context(flow=flow, surrogate=surrogate, max_batch=args.max_batch or None)
