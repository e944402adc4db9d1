"""Metrics and reports from the per-video records: Table I, Table IV (ablations), Table X (time), Fig. 4 (loss).

- Standard Acc: accuracy of the defended model on clean clips (attack "clean", Table I's "None" column);
  the undefended classifier's clean accuracy is the ("none", "clean") cell.
- Robust Acc*: accuracy under gray-box attacks (pgd, tt) crafted on the bare classifier.
- Robust Acc: accuracy under adaptive attacks through the defence (pgd+bpda, tt+bpda, eot+bpda, pgd+full).
- Average: mean over the attack columns a defence has (the paper's "Average", which leaves out "-" cells).
Every number is computed from the records, so a report can be rebuilt at any time (`videopure eval --report-only`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from ..config import DDIM_INVERSION, TABLE_IV
from ..io import atomic_write
from .plot import line_plot
from .runner import ATTACKS

ATTACK_TITLES = {"clean": "None", "pgd": "PGD", "pgd+bpda": "PGD+BPDA", "tt": "TT", "tt+bpda": "TT+BPDA",
                 "eot+bpda": "EOT+BPDA", "pgd+full": "PGD+Full"}
DEFENCE_TITLES = {"none": "None", "jpeg": "JPEG", "wavelet": "WD", "shuffle": "Temporal Shuffle",
                  "diffpure-ddpm": "DiffPure_DDPM", "diffpure-ddim": "DiffPure_DDIM", "ddim-inversion": "DDIM Inversion",
                  "videopure": "VideoPure"}


def _ablation(options: dict) -> tuple[tuple[bool, bool, bool], str]:
    """A row of config.TABLE_IV -> ((temporal inversion, optimisation, voting), defence spec)."""
    modules = (options.get("temporal", True), options.get("guidance", True), options.get("single_candidate") is None)
    if options == DDIM_INVERSION:
        return modules, "ddim-inversion"  # the Table I baseline is the same defence
    return modules, "videopure" + "".join(f":{k}={str(v).lower()}" for k, v in options.items())


# Table IV: (temporal DDIM inversion, spatial-temporal optimisation, multi-step voting) -> defence spec.
ABLATIONS: tuple[tuple[tuple[bool, bool, bool], str], ...] = tuple(_ablation(o) for o in TABLE_IV.values())
# Paper Table I, NL on UCF-101 (for the side-by-side in the report): defence -> attack -> Robust Acc (%).
PAPER_TABLE_I = {
    "none": {"clean": 100, "pgd": 8.9, "tt": 11.8},
    "jpeg": {"clean": 99, "pgd": 8.9, "pgd+bpda": 9.9, "tt": 13.9, "tt+bpda": 16.8, "eot+bpda": 9.9},
    "wavelet": {"clean": 100, "pgd": 7.9, "pgd+bpda": 9.9, "tt": 12.9, "tt+bpda": 12.9, "eot+bpda": 9.9},
    "shuffle": {"clean": 95, "pgd": 84.1, "pgd+bpda": 12.87, "tt": 12.9, "tt+bpda": 9.9, "eot+bpda": 5.9},
    "diffpure-ddpm": {"clean": 94, "pgd": 88.2, "pgd+bpda": 72.3, "tt": 72.3, "tt+bpda": 62.4, "eot+bpda": 39.6, "pgd+full": 65.4},
    "diffpure-ddim": {"clean": 96, "pgd": 85.1, "pgd+bpda": 41.6, "tt": 54.5, "tt+bpda": 54.5, "eot+bpda": 13.9, "pgd+full": 22.8},
    "ddim-inversion": {"clean": 98, "pgd": 36.6, "pgd+bpda": 13.9, "tt": 21.8, "tt+bpda": 18.8, "eot+bpda": 12.9, "pgd+full": 22.8},
    "videopure": {"clean": 96, "pgd": 94.1, "pgd+bpda": 100, "tt": 55.4, "tt+bpda": 80.2, "eot+bpda": 97.0, "pgd+full": 89.1},
}


def defence_title(spec: str) -> str:
    name, _, options = spec.partition(":")
    title = DEFENCE_TITLES.get(name, name)
    return f"{title} ({options.replace(':', ', ')})" if options else title


def cells(records: Sequence[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    """(defence, attack) -> (correct, n) over the records."""
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        cell = out[(r["defence"], r["attack"])]
        cell[0] += int(bool(r["correct"]))
        cell[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def _order(records: Sequence[dict], key: str, preferred: Sequence[str] = ()) -> list[str]:
    seen = list(dict.fromkeys(r[key] for r in records))
    return [p for p in preferred if p in seen] + [s for s in seen if s not in preferred]


def table_one(records: Sequence[dict], defences: Sequence[str] = (), attacks: Sequence[str] = ATTACKS) -> list[dict]:
    """Rows of Table I: {"defence", "title", attack: (correct, n) or None ..., "average": % or None}."""
    acc = cells(records)
    attacks = [a for a in attacks if any(k[1] == a for k in acc)]
    rows = []
    for d in _order(records, "defence", defences):
        row = {"defence": d, "title": defence_title(d)}
        scores = []
        for a in attacks:
            row[a] = acc.get((d, a))
            if row[a] and a != "clean":
                scores.append(100.0 * row[a][0] / row[a][1])
        row["average"] = sum(scores) / len(scores) if scores else None
        rows.append(row)
    return rows


def _pct(cell) -> str:
    return "-" if not cell else f"{100.0 * cell[0] / cell[1]:.1f}"


def table_one_markdown(rows: list[dict], attacks: Sequence[str]) -> str:
    """Table I's layout: defences as rows; None, attacks and Average as columns; "-" where a cell does not apply."""
    attacks = [a for a in attacks if any(r.get(a) for r in rows)]
    full_n = max((r[a][1] for r in rows for a in attacks if r.get(a)), default=0)
    head = ["Defence"] + [ATTACK_TITLES.get(a, a) for a in attacks] + ["Average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells_ = []
        for a in attacks:
            text = _pct(r.get(a))
            if r.get(a) and r[a][1] != full_n:
                text += f" (n={r[a][1]})"
            cells_.append(text)
        average = "-" if r["average"] is None else f"{r['average']:.1f}"
        lines.append("| " + " | ".join([r["title"]] + cells_ + [average]) + " |")
    return "\n".join(lines)


def table_one_csv(rows: list[dict], attacks: Sequence[str]) -> str:
    """Long format: defence, attack, accuracy (%), correct, n; plus one 'average' line per defence."""
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(["defence", "attack", "accuracy", "correct", "n"])
    for r in rows:
        for a in attacks:
            if r.get(a):
                w.writerow([r["defence"], a, f"{100.0 * r[a][0] / r[a][1]:.2f}", r[a][0], r[a][1]])
        if r["average"] is not None:
            w.writerow([r["defence"], "average", f"{r['average']:.2f}", "", ""])
    return buffer.getvalue()


def table_four(records: Sequence[dict]) -> list[dict]:
    """Table IV rows present in the records: modules, Standard Acc, Robust Acc* (pgd), Robust Acc (pgd+bpda)."""
    acc = cells(records)
    rows = []
    for modules, spec in ABLATIONS:
        if not any(k[0] == spec for k in acc):
            continue
        rows.append({"defence": spec, "modules": modules, "clean": acc.get((spec, "clean")),
                     "pgd": acc.get((spec, "pgd")), "pgd+bpda": acc.get((spec, "pgd+bpda"))})
    return rows


def table_four_markdown(rows: list[dict]) -> str:
    mark = lambda b: "✓" if b else ""  # noqa: E731
    lines = ["| Temporal DDIM Inversion | Spatial-temporal Optimization | Multi-step Voting | config | Standard Acc | "
             "Robust Acc* | Robust Acc |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        t, o, v = r["modules"]
        lines.append(f"| {mark(t)} | {mark(o)} | {mark(v)} | `{r['defence']}` | {_pct(r['clean'])} | {_pct(r['pgd'])} | "
                     f"{_pct(r['pgd+bpda'])} |")
    return "\n".join(lines)


def table_ten(records: Sequence[dict], rows_one: list[dict]) -> list[dict]:
    """Seconds per video of each defence on clean clips (purification + classifying every candidate), by stage."""
    average = {r["defence"]: r["average"] for r in rows_one}
    out = []
    for d in _order(records, "defence"):
        clean = [r for r in records if r["defence"] == d and r["attack"] == "clean"]
        if not clean:
            continue
        stages: dict[str, float] = defaultdict(float)
        for r in clean:
            for s, t in r.get("timings", {}).items():
                stages[s] += t / len(clean)
        peaks = [r["peak_gpu_mb"] for r in clean if r.get("peak_gpu_mb")]
        out.append({"defence": d, "seconds": sum(r["defence_seconds"] for r in clean) / len(clean),
                    "stages": dict(stages), "average": average.get(d), "n": len(clean),
                    "peak_gpu_mb": max(peaks) if peaks else None})
    return out


def table_ten_markdown(rows: list[dict]) -> str:
    gpu = any(r.get("peak_gpu_mb") for r in rows)
    head = "| Defence | Time (s / video) | stages (s / video) | Avg. Defence (%) |" + (" peak GPU MB (clean) |" if gpu else "")
    lines = [head, "|---|---|---|---|" + ("---|" if gpu else "")]
    for r in rows:
        stages = ", ".join(f"{s} {t:.3f}" for s, t in r["stages"].items())
        avg = "-" if r["average"] is None else f"{r['average']:.1f}"
        extra = f" {r.get('peak_gpu_mb') or '-'} |" if gpu else ""
        lines.append(f"| {defence_title(r['defence'])} | {r['seconds']:.3f} | {stages} | {avg} |" + extra)
    return "\n".join(lines)


def loss_curves(records: Sequence[dict], attack: str = "pgd+bpda") -> dict[str, list[float]]:
    """defence -> mean attacker loss per iteration over the clips of `attack` (paper Fig. 4)."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        if r["attack"] != attack or not r.get("losses"):
            continue
        s = sums.setdefault(r["defence"], [0.0] * len(r["losses"]))
        if len(s) != len(r["losses"]):
            continue
        for i, v in enumerate(r["losses"]):
            s[i] += v
        counts[r["defence"]] += 1
    return {defence_title(d): [v / counts[d] for v in s] for d, s in sums.items()}


def ordering(rows: list[dict], attacks: Sequence[str]) -> list[str]:
    """Per column: the defences ranked by accuracy here and in the paper's Table I (NL, UCF-101), with the share of
    defence pairs ordered the same way (ties here count as half)."""
    lines = []
    for a in [*attacks, "average"]:
        here = {r["defence"].split(":")[0]: (100.0 * r[a][0] / r[a][1] if a != "average" else r[a])
                for r in rows if (r.get(a) if a != "average" else r["average"] is not None) and ":" not in r["defence"]}
        paper = {d: (v.get(a) if a != "average" else _paper_average(v)) for d, v in PAPER_TABLE_I.items()
                 if a != "average" or d != "none"}  # the paper gives no average for the undefended model
        common = [d for d in here if paper.get(d) is not None]
        if len(common) < 2:
            continue
        agree = total = 0.0
        for i, d in enumerate(common):
            for e in common[i + 1 :]:
                if paper[d] == paper[e]:
                    continue
                total += 1
                diff = (here[d] - here[e]) * (paper[d] - paper[e])
                agree += 1.0 if diff > 0 else 0.5 if here[d] == here[e] else 0.0
        def rank(values):  # "A > B = C": equal accuracies are ties
            ordered = sorted(common, key=lambda d: -values[d])
            text = DEFENCE_TITLES.get(ordered[0], ordered[0])
            for prev, d in zip(ordered, ordered[1:]):
                text += (" = " if values[d] == values[prev] else " > ") + DEFENCE_TITLES.get(d, d)
            return text

        share = f"{100 * agree / total:.0f}% of {int(total)} pairs in the paper's order" if total else "no strict pairs"
        lines.append(f"- {ATTACK_TITLES.get(a, 'Average')}: here {rank(here)}; paper {rank(paper)} ({share})")
    return lines


def _paper_average(cells_: dict) -> float | None:
    values = [v for a, v in cells_.items() if a != "clean"]
    return sum(values) / len(values) if values else None


def warnings_summary(records: Sequence[dict]) -> list[str]:
    """One line per (defence, attack) whose records carry sanity warnings."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        for w in r.get("warnings") or []:
            out[(r["defence"], r["attack"])].add(w.split(": ", 1)[-1].split(";")[0])
    return [f"{d} / {a}: {'; '.join(sorted(ws))}" for (d, a), ws in out.items()]


def _write(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_reports(records: Sequence[dict], out: str | os.PathLike, run: dict | None = None,
                  loss_attack: str = "pgd+bpda", defences: Sequence[str] = ()) -> dict[str, Path]:
    """table1.{csv,md}, table4.{csv,md} (when ablations ran), table10.md, loss.png and report.md under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    attacks = [a for a in ATTACKS if any(r["attack"] == a for r in records)]
    rows4 = table_four(records)
    # the intermediate ablation rows belong to Table IV (they have only its columns)
    middle = {spec for _, spec in ABLATIONS[1:-1]} if len(rows4) > 1 else set()
    rows = table_one([r for r in records if r["defence"] not in middle], defences, attacks)
    md1 = table_one_markdown(rows, attacks)
    _write(out / "table1.csv", table_one_csv(rows, attacks))
    _write(out / "table1.md", md1 + "\n")
    paths["table1"] = out / "table1.md"
    md4 = table_four_markdown(rows4) if len(rows4) > 1 else ""
    if md4:
        buffer = io.StringIO()
        w = csv.writer(buffer, lineterminator="\n")
        w.writerow(["defence", "temporal_inversion", "optimisation", "voting", "standard_acc", "robust_acc_star", "robust_acc"])
        for r in rows4:
            w.writerow([r["defence"], *map(int, r["modules"]), *(_pct(r[k]) for k in ("clean", "pgd", "pgd+bpda"))])
        _write(out / "table4.csv", buffer.getvalue())
        _write(out / "table4.md", md4 + "\n")
        paths["table4"] = out / "table4.md"
    rows10 = table_ten(records, rows)
    md10 = table_ten_markdown(rows10)
    _write(out / "table10.md", md10 + "\n")
    curves = loss_curves(records, loss_attack)
    if curves:
        title = f"{ATTACK_TITLES.get(loss_attack, loss_attack)}: attacker's loss per iteration (mean over clips)"
        paths["loss"] = line_plot(curves, out / "loss.png", title, "attack iteration", "cross-entropy (mean over candidates)")
    paper = [f"| {defence_title(d)} | " + " | ".join(str(PAPER_TABLE_I[d].get(a, "-")) for a in attacks) + " |"
             for d in PAPER_TABLE_I if any(r["defence"] == d for r in rows)]
    n_clips = len({r["clip"] for r in records})
    parts = [
        "# Robustness evaluation",
        "",
        f"{len(records)} records, {n_clips} clips. Accuracy in %; '-' = not applicable (see docs/evaluation.md).",
        "",
        "## Table I layout: Standard Acc (None), Robust Acc* (PGD, TT), Robust Acc (adaptive)",
        "",
        md1,
        "",
    ]
    if paper:
        parts += ["Paper, Table I (NL on UCF-101), for comparison of the ordering:", "",
                  "| Defence | " + " | ".join(ATTACK_TITLES[a] for a in attacks) + " |", "|" + "---|" * (len(attacks) + 1),
                  *paper, ""]
    order = ordering(rows, attacks)
    if order:
        parts += ["## Ordering against the paper's Table I", "", *order, ""]
    if md4:
        parts += ["## Table IV layout: ablations (PGD for Robust Acc*, PGD+BPDA for Robust Acc)", "", md4, ""]
    parts += ["## Table X layout: time per video and average defence", "", md10, ""]
    if curves:
        parts += [f"## Fig. 4 layout: loss vs attack iteration ({loss_attack})", "", "![loss](loss.png)", ""]
    sanity = warnings_summary(records)
    if sanity:
        parts += ["## Sanity warnings", "", *[f"- {w}" for w in sanity], ""]
    if run:
        parts += ["## Run", "", "```json", json.dumps(run, indent=1, sort_keys=True), "```", ""]
    _write(out / "report.md", "\n".join(parts))
    paths["report"] = out / "report.md"
    return paths
