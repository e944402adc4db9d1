"""Same votes in half precision as in float32, on the trained small world: held-out clips, clean and under PGD.

    PYTHONPATH=. python benchmarks/dtype_votes.py --device cuda                      # fp16 and bf16 vs fp32, 24 clips
    PYTHONPATH=. python benchmarks/dtype_votes.py --device cpu --clips 4 --dtypes bfloat16   # a dry run on the CPU

For each dtype the Purifier runs with its networks in that dtype (weights cast, latent arithmetic float32, as
Runtime(dtype=...) does) on the same clean and adversarial clips (L_inf PGD 4/255 on the bare classifier, 10 steps)
as the float32 reference; the winners must be equal on every clip (exit 1 otherwise). Prints per dtype: winners
equal, per-candidate agreement, seconds per video and peak memory (CUDA max_memory_allocated; the process's
VmHWM on the CPU). Writes --out/dtype-votes-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--dtypes", default="float16,bfloat16")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()

    from videopure_core import Purifier, PurifyConfig, Runtime, from_frames
    from videopure_core.attacks import classifier_grad_fn, pgd
    from videopure_core.bench.measure import describe_device, peak_rss_bytes, reset_peak_rss
    from videopure_core.world import WORLD_OPTIONS
    from videopure_core.world.generator import make_split
    from videopure_core.world.models import load_world

    device = torch.device(args.device)
    world = load_world(device=device)
    batch = make_split("test", args.clips)
    clean = from_frames(batch.videos).to(device)
    labels = batch.labels.to(device)
    adv, _ = pgd(classifier_grad_fn(world.classifier), clean, labels, eps=4 / 255, step=2 / 255, steps=10,
                 generator=torch.Generator().manual_seed(0))
    videos = torch.cat([clean, adv])
    config = PurifyConfig().with_options(**WORLD_OPTIONS)

    def run(dtype: str) -> dict:
        runtime = Runtime(device=str(device), dtype=dtype)
        purifier = Purifier.from_pretrained(world.diffusion, world.raft, config, runtime)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            reset_peak_rss()
        start = time.perf_counter()
        results = [purifier.predict(v[None], world.classifier) for v in videos]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - start) / len(videos)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()
        return {"winners": [int(r.winner[0]) for r in results],
                "predictions": [r.predictions[:, 0].tolist() for r in results],
                "seconds_per_video": seconds, "peak_bytes": peak}

    print(f"dtype votes on {describe_device(device)}: {args.clips} clean + {args.clips} PGD clips of the world")
    reference = run("float32")
    rows = {"float32": reference}
    ok = True
    for dtype in [d for d in args.dtypes.split(",") if d]:
        r = rows[dtype] = run(dtype)
        equal = r["winners"] == reference["winners"]
        agree = sum(a == b for x, y in zip(r["predictions"], reference["predictions"]) for a, b in zip(x, y))
        total = sum(len(x) for x in r["predictions"])
        r.update(winners_equal=equal, candidates_agree=agree / total)
        ok = ok and equal
    truth = labels.tolist() * 2
    for dtype, r in rows.items():
        acc_clean = sum(w == t for w, t in zip(r["winners"][: args.clips], truth)) / args.clips
        acc_adv = sum(w == t for w, t in zip(r["winners"][args.clips :], truth)) / args.clips
        r.update(accuracy_clean=acc_clean, accuracy_pgd=acc_adv)
        extra = "" if dtype == "float32" else (f", winners equal to float32: {'yes' if r['winners_equal'] else 'NO'}, "
                                               f"candidates agree {r['candidates_agree']:.1%}")
        print(f"  {dtype}: {r['seconds_per_video']:.3f} s/video, peak {r['peak_bytes'] / 2**20:.0f} MiB, "
              f"accuracy clean {acc_clean:.1%} / PGD {acc_adv:.1%}{extra}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"dtype-votes-{device.type}.json").write_text(json.dumps(
        {"device": describe_device(device), "clips": args.clips, "rows": rows}, indent=1) + "\n")
    print(f"dtype votes equal: {'yes' if ok else 'no'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
