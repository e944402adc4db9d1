"""Markdown tables and the scaling plot from the benchmark's numbers (the dict `videopure bench` writes as JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .flops import STAGES
from .plot import Panel, panels_png


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def rate_dtype(fast_config: dict) -> str:
    """The dtype the fast path's networks compute in, to pick the matching measured matmul rate."""
    return fast_config.get("autocast") or fast_config.get("dtype") or "float32"


def stage_table(result: dict, floors: dict, rates: dict) -> str:
    """Per stage: naive and fast seconds per video, speedup, fast memory, FLOP floor, achieved rate, floor time."""
    fast, naive = result["fast"]["stages"], result.get("naive", {}).get("stages", {})
    dtype = rate_dtype(result["fast_config"])
    rate = rates.get(dtype) or rates["float32"]
    header = ["stage", "naive s", "fast s", "speedup", "fast peak mem", "fast working set", "floor GFLOP",
              "fast GFLOP/s", f"floor time at {rate / 1e9:.0f} GFLOP/s ({dtype} matmul)"]
    rows = []
    for stage in STAGES:
        if stage not in fast:
            continue
        f, n = fast[stage], naive.get(stage)
        flops = floors["fast"].get(stage, 0)
        rows.append([
            stage,
            f"{n['seconds']:.3f}" if n else "-",
            f"{f['seconds']:.3f}",
            f"{n['seconds'] / f['seconds']:.1f}x" if n and f["seconds"] > 0 else "-",
            gib(f["peak_bytes"]),
            gib(f["extra_bytes"]),
            f"{flops / 1e9:.1f}",
            f"{flops / f['seconds'] / 1e9:.0f}" if f["seconds"] > 0 else "-",
            f"{flops / rate * 1e3:.1f} ms",
        ])
    total_n = result.get("naive", {}).get("seconds_per_video")
    total_f = result["fast"]["seconds_per_video"]
    total_flops = sum(floors["fast"].values())
    rows.append([
        "**total**", f"{total_n:.3f}" if total_n else "-", f"{total_f:.3f}",
        f"{total_n / total_f:.2f}x" if total_n else "-", gib(result["fast"]["peak_bytes"]), "",
        f"{total_flops / 1e9:.1f}", f"{total_flops / total_f / 1e9:.0f}", f"{total_flops / rate * 1e3:.1f} ms",
    ])
    return _table(header, rows)


def floors_table(floors: dict, reference_rate: float = 800e12, rate_name: str = "") -> str:
    """FLOPs per stage, fast and naive, and the time the fast path's FLOPs take at `reference_rate` FLOP/s."""
    rows = []
    for stage in STAGES:
        f, n = floors["fast"][stage], floors["naive"][stage]
        rows.append([stage, f"{f / 1e12:.4f}", f"{n / 1e12:.4f}", f"{f / reference_rate * 1e3:.2f} ms"])
    f, n = sum(floors["fast"].values()), sum(floors["naive"].values())
    rows.append(["**total**", f"{f / 1e12:.3f}", f"{n / 1e12:.3f}", f"{f / reference_rate * 1e3:.1f} ms"])
    rate = f"{reference_rate / 1e12:.3g} TFLOP/s" + (f" ({rate_name})" if rate_name else "")
    return _table(["stage", "fast TFLOP", "naive TFLOP", f"fast floor at {rate}"], rows)


def params_line(floors: dict) -> str:
    p = floors["params"]
    return ", ".join(f"{name} {n / 1e6:.1f} M params ({n * 2 / 2**30:.2f} GiB in bf16)" for name, n in p.items())


def scaling_table(points: list[dict], key: str) -> str:
    header = [key, "fast s/video", "naive s/video", "speedup", "fast peak mem", "fast decode working set",
              "naive peak mem", "votes equal"]
    rows = []
    for p in points:
        n = p.get("naive")
        rows.append([
            str({"frames": p["frames"], "t*": p["t_star"], "size": p["size"]}[key]),
            f"{p['fast']['seconds_per_video']:.2f}",
            f"{n['seconds_per_video']:.2f}" if n else "-",
            f"{p['speedup']:.2f}x" if n else "-",
            gib(p["fast"]["peak_bytes"]),
            gib(p["fast"]["stages"]["decode"]["extra_bytes"]),
            gib(n["peak_bytes"]) if n else "-",
            ("yes" if p["votes_equal"] else "no") if n else "-",
        ])
    return _table(header, rows)


def ablation_table(rows: list[dict]) -> str:
    stages = [s for s in STAGES if any(s in r.get("stages", {}) for r in rows)]
    return _table(
        ["fast-path variant", "s/video", "speedup vs naive", *[f"{s} s" for s in stages], "votes equal naive"],
        [[r["variant"], f"{r['seconds_per_video']:.3f}", f"{r['speedup']:.2f}x",
          *[f"{r['stages'].get(s, 0):.3f}" for s in stages], "yes" if r["votes_equal"] else "no"] for r in rows],
    )


def memory_bound_table(rows: list[dict]) -> str:
    return _table(
        ["decode/encode", "decode working set", "encode working set", "peak mem", "decode s"],
        [[r["chunking"], gib(r["decode_extra_bytes"]), gib(r["encode_extra_bytes"]), gib(r["peak_bytes"]),
          f"{r['decode_seconds']:.2f}"] for r in rows],
    )


def scaling_plot(scaling: dict, path: str | Path, title: str) -> Optional[Path]:
    """Seconds and peak memory vs frames, seconds vs t_star, as one PNG."""
    frames, stars = scaling.get("frames", []), scaling.get("t_star", [])
    if not frames and not stars:
        return None

    def series(points, fn):
        out = {"fast": [fn(p["fast"]) for p in points]}
        if any("naive" in p for p in points):
            out["naive"] = [fn(p["naive"]) if "naive" in p else None for p in points]
        return out

    panels = []
    if frames:
        xs = [p["frames"] for p in frames]
        panels.append(Panel(f"{title}: time vs frames", xs, series(frames, lambda r: r["seconds_per_video"]),
                            "frames (log2 axis)", "s / video", log2_x=True))
        panels.append(Panel("peak memory vs frames", xs, series(frames, lambda r: r["peak_bytes"] / 2**30),
                            "frames (log2 axis)", "GiB", log2_x=True))
    if stars:
        panels.append(Panel("time vs t*", [p["t_star"] for p in stars],
                            series(stars, lambda r: r["seconds_per_video"]), "t* (inversion steps)", "s / video"))
    return panels_png(panels, path)


def markdown(results: dict) -> str:
    """The whole report as markdown."""
    head = results["headline"]
    parts = [
        f"# videopure bench: {head['arch']} {head['frames']}x{head['size']}x{head['size']}, t*={head['t_star']}",
        "",
        f"- device: {results['device']}",
        f"- command: `{results['command']}`",
        f"- other load during the run: {results['other_load'] or 'none seen'}",
        f"- measured matmul rates: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in results["rates"].items()),
        f"- fast path options: `{head['fast_config']}`",
        f"- attention processors: {results.get('attention', {})} (AttnProcessor2_0 = torch SDPA)",
        f"- memory: {results['memory_note']}",
        "",
        "## Per stage (seconds per video, mean over the timed videos)",
        "",
        stage_table(head, results["floors"], results["rates"]),
        "",
        f"Fast {head['fast']['seconds_per_video']:.3f} s/video vs naive "
        f"{head['naive']['seconds_per_video']:.3f} s/video over {head['videos']} videos: "
        f"**{head['speedup']:.2f}x**; votes equal: **{'yes' if head['votes_equal'] else 'no'}** "
        f"(per-candidate predictions agree on {head['candidates_agree']:.0%}). Peak memory of the fast path: "
        f"{gib(head['fast']['own_peak_bytes'])}"
        + (" (its peak minus the naive path's float32 model copies, which share the device in this run)."
           if head['fast']['own_peak_bytes'] != head['fast']['peak_bytes'] else "."),
    ]
    if "world_check" in results:
        w = results["world_check"]
        parts += ["", f"Trained-world check on the same device ({w['frames']}x{w['size']}x{w['size']}, {w['videos']} "
                  f"videos): fast {w['fast']['seconds_per_video']:.3f} s vs naive {w['naive']['seconds_per_video']:.3f} s, "
                  f"{w['speedup']:.2f}x, votes equal: {'yes' if w['votes_equal'] else 'no'}."]
    f = results["floors"]
    dtype = rate_dtype(head["fast_config"])
    rate = results["rates"].get(dtype) or results["rates"]["float32"]
    parts += ["", f"## FLOP floors of this run ({f['arch']} {f['frames']}x{f['size']}x{f['size']}, t*={f['t_star']}, "
              f"RAFT {f['raft_iters']} iterations)", "", floors_table(f, rate, f"measured {dtype} matmul"), "",
              params_line(f)]
    if "full_floors" in results:
        g = results["full_floors"]
        parts += ["", f"## FLOP floors of the full-size ModelScope pipeline ({g['frames']}x{g['size']}x{g['size']}, "
                  f"t*={g['t_star']}, RAFT-large {g['raft_iters']} iterations)", "",
                  floors_table(g, 800e12, "a round H100 dense bf16 rate"), "", params_line(g)]
    if "scaling" in results:
        s = results["scaling"]
        if s["frames"]:
            parts += ["", "## Scaling with frames (t*=6)", "", scaling_table(s["frames"], "frames")]
        if s["t_star"]:
            parts += ["", "## Scaling with t*", "", scaling_table(s["t_star"], "t*")]
        if s.get("size"):
            parts += ["", "## Scaling with frame size (t*=6)", "", scaling_table(s["size"], "size")]
        if results.get("plot"):
            parts += ["", f"![scaling]({Path(results['plot']).name})"]
    if "memory_bound" in results:
        m = results["memory_bound"]
        parts += ["", f"## Chunking bounds memory ({m['frames']} frames, {m['size']} px, t*=6: "
                  f"{7 * m['frames']} candidate frames to decode)", "", memory_bound_table(m["rows"])]
    if "ablation" in results:
        parts += ["", "## Fast-path options, one at a time (all variants and the naive path round robin per video)", "",
                  ablation_table(results["ablation"])]
    return "\n".join(parts) + "\n"
