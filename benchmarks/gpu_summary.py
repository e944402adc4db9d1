"""Summarise `videopure purify` runs in several dtypes (benchmarks/gpu.sh step 1) as a markdown table.

    python benchmarks/gpu_summary.py benchmarks/results float16 bfloat16 float32

Reads <results>/gpu-purify-<dtype>/report.json: seconds per stage, measured peak memory per stage (CUDA
max_memory_allocated, weights included; on the CPU the process's resident set) against videopure_core.memory's
estimate made before the run, and whether each dtype's votes equal those of float32 (when float32 ran).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STAGES = ("encode", "flow", "invert", "denoise", "decode", "classify")


def main() -> int:
    results, dtypes = Path(sys.argv[1]), sys.argv[2:]
    reports = {}
    for dtype in dtypes:
        path = results / f"gpu-purify-{dtype}" / "report.json"
        if path.is_file():
            reports[dtype] = json.loads(path.read_text())
    if not reports:
        print(f"no reports in {results}/gpu-purify-*/")
        return 1
    first = next(iter(reports.values()))
    gib = lambda n: f"{n / 2**30:.2f}"  # noqa: E731
    print(f"# videopure purify with the ModelScope folder: {first['input']['frames']}x{first['input']['size'][0]}x"
          f"{first['input']['size'][1]}, t*={first['t_star']}\n")
    print(f"{first['device']}; {first['date']}; random weights (votes compare dtypes, they mean nothing else).\n")
    print("| dtype | load s | " + " | ".join(f"{s} s" for s in STAGES) + " | total s | peak GiB measured | "
          "peak GiB estimated | winner | candidates as float32 |")
    print("| --- " * (len(STAGES) + 7) + "|")
    reference = reports.get("float32")
    for dtype, r in reports.items():
        sec = r["seconds"]
        measured = max(s["peak"] for s in r["memory"]["stages"].values())
        est = r["memory"].get("estimate")
        same = ""
        if reference is not None:
            a = [c["prediction"] for c in r["candidates"]]
            b = [c["prediction"] for c in reference["candidates"]]
            same = f"{sum(x == y for x, y in zip(a, b))}/{len(a)}"
        print(f"| {dtype} | {sec['load']:.1f} | " + " | ".join(f"{sec.get(s, 0):.2f}" for s in STAGES) +
              f" | {sec['total']:.1f} | {gib(measured)} | {gib(est['peak']) if est else ''} | "
              f"{r['winner']['class']} | {same} |")
    print("\nPer stage, measured / estimated peak in GiB (" + first["memory"]["what"] + "):\n")
    print("| dtype | " + " | ".join(STAGES) + " |")
    print("| --- " * (len(STAGES) + 1) + "|")
    for dtype, r in reports.items():
        est = r["memory"].get("estimate") or {}
        weights = sum(est.get("weights", {}).values())
        cells = []
        for s in STAGES:
            m = r["memory"]["stages"].get(s, {}).get("peak")
            e = est.get("stages", {}).get(s, {}).get("peak")
            cells.append(f"{gib(m) if m is not None else '-'} / {gib(e + weights) if e is not None else '-'}")
        print(f"| {dtype} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
