"""Metrics and reports from the per-video records: Table I, Table IV (ablations), Table X (time), Fig. 4 (loss),
"any iterate" robust accuracy, resubmission curves, and how the paper's orderings fare.

- Standard Acc: accuracy of the defended model on clean clips (attack "clean", Table I's "None" column);
  the undefended classifier's clean accuracy is the ("none", "clean") cell.
- Robust Acc*: accuracy under gray-box attacks (pgd, tt) crafted on the bare classifier.
- Robust Acc: accuracy under adaptive attacks through the defence (pgd+bpda, tt+bpda, eot+bpda, diffattack, ...).
- Every cell is k of n clips, shown as `acc [lo, hi] n=..` with the 95% Wilson interval (stats.py).
- Average: the mean over a defence's attack columns (not Standard Acc, as the paper), computed only on the clips
  that every one of those columns measured, with that n and a clip-bootstrap 95% interval; "-" for the
  undefended row, as in the paper. "Average (shared)" uses only the columns every defended row has; when those
  columns cover different numbers of clips (cheap columns on 48, adaptive ones on 8), it is also given over the
  shared columns covering at least 48, at least 8, ... clips in every row, so a small adaptive subset does not
  shrink the comparison of the large columns to its few clips.
Every number is computed from the records, so a report can be rebuilt at any time (`videopure eval --report-only`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from ..config import DDIM_INVERSION, TABLE_IV
from ..io import atomic_write
from .plot import line_plot
from .runner import ATTACKS, TABLE_ONE
from .stats import bootstrap_mean, overlap, wilson

ATTACK_TITLES = {"clean": "None", "pgd": "PGD", "pgd+bpda": "PGD+BPDA", "tt": "TT", "tt+bpda": "TT+BPDA",
                 "eot+bpda": "EOT+BPDA", "diffattack": "DiffAttack-style", "pgd+full": "PGD+full-grad.",
                 "pgd-eot-full": "PGD-EOT full-grad. (long)", "pgd+flow": "PGD+flow", "pgd+bpda+flow": "PGD+BPDA+flow",
                 "tt+mi": "TT+MI transfer", "autoattack": "AutoAttack+BPDA"}
ATTACK_DESCRIPTIONS = {
    "diffattack": "DiffAttack-style: PGD on CE + the deviated-reconstruction loss, exact gradient through the whole "
                  "purifier with per-call checkpointing (our reading of Kang et al., 2023; the paper's PGD+DiffAttack "
                  "column)",
    "pgd+full": "PGD on CE with the exact gradient through the whole purifier (checkpointed)",
    "pgd-eot-full": "PGD-EOT with the exact gradient and many small steps (Lee & Kim, 2023)",
    "pgd+flow": "PGD on the bare classifier plus a loss that moves the optical flow of the input (gray-box, Table VI)",
    "pgd+bpda+flow": "PGD+BPDA plus the flow-deviation loss (adaptive, Table VI)",
    "tt+mi": "TT with momentum on a second, differently built classifier (black-box transfer, Table III)",
    "autoattack": "AutoAttack 'rand' (APGD-CE + APGD-DLR, ART) through the defence as declared (Table II)",
}
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
# Paper Table I, NL on UCF-101: defence -> attack -> accuracy (%); its last column, PGD+Diffattack, is our
# DiffAttack-style attack ("diffattack"). The paper gives no Average for the undefended row.
PAPER_TABLE_I = {
    "none": {"clean": 100, "pgd": 8.9, "tt": 11.8},
    "jpeg": {"clean": 99, "pgd": 8.9, "pgd+bpda": 9.9, "tt": 13.9, "tt+bpda": 16.8, "eot+bpda": 9.9},
    "wavelet": {"clean": 100, "pgd": 7.9, "pgd+bpda": 9.9, "tt": 12.9, "tt+bpda": 12.9, "eot+bpda": 9.9},
    "shuffle": {"clean": 95, "pgd": 84.1, "pgd+bpda": 12.87, "tt": 12.9, "tt+bpda": 9.9, "eot+bpda": 5.9},
    "diffpure-ddpm": {"clean": 94, "pgd": 88.2, "pgd+bpda": 72.3, "tt": 72.3, "tt+bpda": 62.4, "eot+bpda": 39.6, "diffattack": 65.4},
    "diffpure-ddim": {"clean": 96, "pgd": 85.1, "pgd+bpda": 41.6, "tt": 54.5, "tt+bpda": 54.5, "eot+bpda": 13.9, "diffattack": 22.8},
    "ddim-inversion": {"clean": 98, "pgd": 36.6, "pgd+bpda": 13.9, "tt": 21.8, "tt+bpda": 18.8, "eot+bpda": 12.9, "diffattack": 22.8},
    "videopure": {"clean": 96, "pgd": 94.1, "pgd+bpda": 100, "tt": 55.4, "tt+bpda": 80.2, "eot+bpda": 97.0, "diffattack": 89.1},
}
PAPER_AVERAGE = {"jpeg": 11.8, "wavelet": 10.7, "shuffle": 25.1, "diffpure-ddpm": 66.7, "diffpure-ddim": 45.4,
                 "ddim-inversion": 21.1, "videopure": 85.9}


def defence_title(spec: str) -> str:
    name, _, options = spec.partition(":")
    title = DEFENCE_TITLES.get(name, name)
    return f"{title} ({options.replace(':', ', ')})" if options else title


def undefended(spec: str) -> bool:
    return spec.split(":")[0] == "none"


def clip_results(records: Sequence[dict], key: str = "correct") -> dict[tuple[str, str], dict[str, bool]]:
    """(defence, attack) -> {clip: record[key]} (key "correct", or "any_iterate_correct")."""
    out: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)
    for r in records:
        if r.get(key) is not None:
            out[(r["defence"], r["attack"])][r["clip"]] = bool(r[key])
    return dict(out)


def cells(records: Sequence[dict], key: str = "correct") -> dict[tuple[str, str], tuple[int, int]]:
    """(defence, attack) -> (correct, n) over the records."""
    return {k: (sum(v.values()), len(v)) for k, v in clip_results(records, key).items()}


def pct(cell) -> str:
    return "-" if not cell else f"{100.0 * cell[0] / cell[1]:.1f}"


def cell_text(cell) -> str:
    """'66.7 [39.1, 86.2] n=12': accuracy, 95% Wilson interval and n; '-' for no cell."""
    if not cell:
        return "-"
    lo, hi = wilson(*cell)
    return f"{100.0 * cell[0] / cell[1]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] n={cell[1]}"


def average_of(per_clip: dict[tuple[str, str], dict[str, bool]], defence: str, attacks: Sequence[str]) -> Optional[dict]:
    """Mean accuracy of `defence` over the `attacks` columns it has, on the clips all of them measured:
    {"value", "lo", "hi" (%), "n" (clips), "columns"} or None."""
    columns = [a for a in attacks if a != "clean" and (defence, a) in per_clip]
    if not columns:
        return None
    common = set.intersection(*(set(per_clip[(defence, a)]) for a in columns))
    if not common:
        return None
    rows = [[float(per_clip[(defence, a)][c]) for a in columns] for c in sorted(common)]
    mean, lo, hi = bootstrap_mean(rows)
    return {"value": 100 * mean, "lo": 100 * lo, "hi": 100 * hi, "n": len(common), "columns": columns}


def average_text(avg: Optional[dict], total_columns: Optional[int] = None) -> str:
    if not avg:
        return "-"
    cols = "" if total_columns is not None and len(avg["columns"]) == total_columns else f", {len(avg['columns'])} cols"
    return f"{avg['value']:.1f} [{avg['lo']:.1f}, {avg['hi']:.1f}] n={avg['n']}{cols}"


def _order(records: Sequence[dict], key: str, preferred: Sequence[str] = ()) -> list[str]:
    seen = list(dict.fromkeys(r[key] for r in records))
    return [p for p in preferred if p in seen] + [s for s in seen if s not in preferred]


def table_one(records: Sequence[dict], defences: Sequence[str] = (), attacks: Sequence[str] = ATTACKS) -> list[dict]:
    """Rows of Table I: {"defence", "title", attack: (correct, n) or None ..., "average": % or None, "average_info":
    the Average's value, interval, n and columns, "shared": the Average over the columns every defended row has,
    "shared_levels": Averages over the shared columns that every defended row measured on at least N clips, one per
    distinct N, most clips first (the last is "shared")}."""
    per_clip = clip_results(records)
    attacks = [a for a in attacks if any(k[1] == a for k in per_clip)]
    order = _order(records, "defence", defences)
    defended = [d for d in order if not undefended(d)]
    shared_cols = [a for a in attacks if a != "clean" and defended and all((d, a) in per_clip for d in defended)]
    coverage = {a: min(len(per_clip[(d, a)]) for d in defended) for a in shared_cols}
    levels = sorted(set(coverage.values()), reverse=True)
    rows = []
    for d in order:
        row = {"defence": d, "title": defence_title(d)}
        for a in attacks:
            c = per_clip.get((d, a))
            row[a] = (sum(c.values()), len(c)) if c else None
        info = None if undefended(d) else average_of(per_clip, d, attacks)
        row["average_info"] = info
        row["average"] = None if info is None else info["value"]
        row["shared_levels"] = [] if undefended(d) else [
            average_of(per_clip, d, [a for a in shared_cols if coverage[a] >= n]) for n in levels]
        row["shared"] = row["shared_levels"][-1] if row["shared_levels"] else None  # every shared column
        rows.append(row)
    return rows


def table_one_markdown(rows: list[dict], attacks: Sequence[str]) -> str:
    """Table I's layout: defences as rows; None, attacks and Average as columns; "-" where a cell does not apply.
    Each cell: accuracy [95% Wilson interval] n=clips; Average: on the clips all its columns share, with its n."""
    attacks = [a for a in attacks if any(r.get(a) for r in rows)]
    most = max((len(r["average_info"]["columns"]) for r in rows if r.get("average_info")), default=0)
    head = ["Defence"] + [ATTACK_TITLES.get(a, a) for a in attacks] + ["Average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        texts = [cell_text(r.get(a)) for a in attacks]
        lines.append("| " + " | ".join([r["title"]] + texts + [average_text(r.get("average_info"), most)]) + " |")
    return "\n".join(lines)


def _shared_levels(rows: list[dict]) -> list[dict]:
    """The coverage levels of the shared columns (see `table_one`), read from the first row that has them."""
    return next((r["shared_levels"] for r in rows if r.get("shared")), [])


def shared_average_markdown(rows: list[dict]) -> str:
    """The Average over the attack columns that every defended row has, on each row's common clips; one column per
    coverage level when the shared columns cover different numbers of clips (see `table_one`)."""
    shared = [r for r in rows if r.get("shared")]
    if not shared:
        return ""
    levels = [lv["columns"] for lv in _shared_levels(rows)]
    titles = [", ".join(ATTACK_TITLES.get(a, a) for a in cols) for cols in levels]
    if len(levels) == 1:
        lines = [f"Average over the columns every defence has ({titles[0]}):", "", "| Defence | Average (shared) |",
                 "|---|---|"]
    else:
        lines = ["Average over the columns every defence has, on each row's common clips; the shared columns cover "
                 "different numbers of clips, so also over the subsets that cover more:", "",
                 "| Defence | " + " | ".join(titles) + " |", "|---|" + "---|" * len(levels)]
    for r in sorted(shared, key=lambda r: -r["shared"]["value"]):
        cells = r["shared_levels"]
        lines.append(f"| {r['title']} | " + " | ".join(average_text(c, len(c["columns"]) if c else None) for c in cells) + " |")
    return "\n".join(lines)


def table_one_csv(rows: list[dict], attacks: Sequence[str]) -> str:
    """Long format: defence, attack, accuracy (%), correct, n, 95% interval; plus 'average', 'average_shared' and
    'average_shared_subset' (one per coverage level, see `table_one`) lines per defence (n = the clips the average
    is on, interval from the clip bootstrap)."""
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(["defence", "attack", "accuracy", "correct", "n", "lo95", "hi95", "columns"])
    for r in rows:
        for a in attacks:
            if r.get(a):
                lo, hi = wilson(*r[a])
                w.writerow([r["defence"], a, f"{100.0 * r[a][0] / r[a][1]:.2f}", r[a][0], r[a][1],
                            f"{100 * lo:.2f}", f"{100 * hi:.2f}", ""])
        averages = [(r.get("average_info"), "average"), (r.get("shared"), "average_shared")]
        averages += [(lv, "average_shared_subset") for lv in r["shared_levels"][:-1]]
        for avg, label in averages:
            if avg:
                w.writerow([r["defence"], label, f"{avg['value']:.2f}", "", avg["n"], f"{avg['lo']:.2f}",
                            f"{avg['hi']:.2f}", "+".join(avg["columns"])])
    return buffer.getvalue()


def defence_attack_markdown(records: Sequence[dict], defences: Sequence[str], attacks: Sequence[str],
                            key: str = "correct", column_titles: Optional[dict] = None) -> str:
    """A defences x attacks table of `acc [lo, hi] n=..` cells (key: "correct" or "any_iterate_correct")."""
    acc = cells(records, key)
    attacks = [a for a in attacks if any(acc.get((d, a)) for d in defences)]
    titles = column_titles or {}
    head = ["Defence"] + [titles.get(a, ATTACK_TITLES.get(a, a)) for a in attacks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in defences:
        if any(acc.get((d, a)) for a in attacks):
            lines.append("| " + " | ".join([defence_title(d)] + [cell_text(acc.get((d, a))) for a in attacks]) + " |")
    return "\n".join(lines)


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
        lines.append(f"| {mark(t)} | {mark(o)} | {mark(v)} | `{r['defence']}` | {cell_text(r['clean'])} | "
                     f"{cell_text(r['pgd'])} | {cell_text(r['pgd+bpda'])} |")
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


def cost_markdown(records: Sequence[dict]) -> str:
    """Per (defence, attack) cell: CPU seconds per clip (process time, i.e. core-seconds with one thread; less
    sensitive than wall time to other jobs on the machine) and wall seconds in brackets, attack + defended
    evaluation (+ iterate evaluations and resubmissions), from the records: the cost model of the runs."""
    cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    wall: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        cpu[(r["defence"], r["attack"])].append(r.get("cpu_seconds"))
        wall[(r["defence"], r["attack"])].append(r.get("seconds") or 0.0)
    attacks = [a for a in ATTACKS if any(k[1] == a for k in cpu)]
    defences = _order(records, "defence")
    lines = ["| Defence | " + " | ".join(ATTACK_TITLES.get(a, a) for a in attacks) + " | total |",
             "|" + "---|" * (len(attacks) + 2)]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    for d in defences:
        texts, total_c, total_w = [], 0.0, 0.0
        for a in attacks:
            if not cpu.get((d, a)):
                texts.append("-")
                continue
            w = mean(wall[(d, a)])
            total_w += w
            if None in cpu[(d, a)]:  # records written before CPU time was recorded: wall time only
                total_c = None
                texts.append(f"- ({w:.1f})")
                continue
            c = mean(cpu[(d, a)])
            total_c = None if total_c is None else total_c + c
            texts.append(f"{c:.1f} ({w:.1f})")
        total = "-" if total_c is None else f"{total_c:.1f}"
        lines.append(f"| {defence_title(d)} | " + " | ".join(texts) + f" | {total} ({total_w:.1f}) |")
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


def iterate_accuracy(records: Sequence[dict], defence: str, attack: str) -> dict[int, tuple[int, int]]:
    """{iterate k: (correct, n)}: the defended accuracy at x_k over the clips that recorded it."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        if r["defence"] == defence and r["attack"] == attack and r.get("iterate_predictions"):
            for k, p in r["iterate_predictions"].items():
                out[int(k)][0] += int(p == r["label"])
                out[int(k)][1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def resubmission_curves(records: Sequence[dict]) -> dict[str, list[float]]:
    """'defence / attack' -> accuracy (%) when the attacker may submit the final video N = 1, 2, ... times and wins
    if any evaluation is wrong (stochastic defences; deterministic ones are flat by construction)."""
    groups: dict[tuple[str, str], list[list[bool]]] = defaultdict(list)
    for r in records:
        if r.get("resubmissions") is not None:
            groups[(r["defence"], r["attack"])].append([bool(r["correct"])] + list(r["resubmissions"]))
    out = {}
    for (d, a), runs in groups.items():
        m = min(len(x) for x in runs)
        out[f"{defence_title(d)} / {ATTACK_TITLES.get(a, a)}"] = [
            100.0 * sum(all(x[:n]) for x in runs) / len(runs) for n in range(1, m + 1)]
    return out


def _strict_pairs(paper: dict, here: dict) -> list[tuple[str, str]]:
    common = [d for d in here if paper.get(d) is not None]
    return [(d, e) for i, d in enumerate(common) for e in common[i + 1 :] if paper[d] != paper[e]]


def ordering(rows: list[dict], attacks: Sequence[str]) -> list[str]:
    """Per column: the defences ranked by accuracy here and in the paper's Table I (NL, UCF-101), with the share of
    defence pairs ordered the same way (ties here count as half) and how many of the reversals are significant
    (95% intervals apart)."""
    lines = []
    for a in [*attacks, *(("average", i) for i in range(len(_shared_levels(rows))))]:
        here, intervals, title = {}, {}, ATTACK_TITLES.get(a, a)
        for r in rows:
            name = r["defence"]
            if ":" in name:
                continue
            if isinstance(a, tuple):  # across rows: the Average over the shared columns (one coverage level)
                info = r["shared_levels"][a[1]] if r.get("shared") else None
                if info is None:
                    continue
                here[name] = info["value"]
                intervals[name] = (info["lo"], info["hi"])
                title = "Average (here over " + ", ".join(ATTACK_TITLES.get(c, c) for c in info["columns"]) + ")"
            elif r.get(a):
                here[name] = 100.0 * r[a][0] / r[a][1]
                lo, hi = wilson(*r[a])
                intervals[name] = (100 * lo, 100 * hi)
        paper = PAPER_AVERAGE if isinstance(a, tuple) else {d: v.get(a) for d, v in PAPER_TABLE_I.items()}
        pairs = _strict_pairs(paper, here)
        if not pairs:
            continue
        agree, significant_reversals = 0.0, []
        for d, e in pairs:
            diff = (here[d] - here[e]) * (paper[d] - paper[e])
            agree += 1.0 if diff > 0 else 0.5 if here[d] == here[e] else 0.0
            if diff < 0 and not overlap(intervals[d], intervals[e]):
                first, second = (d, e) if here[d] > here[e] else (e, d)
                significant_reversals.append(f"{DEFENCE_TITLES.get(first, first)} > {DEFENCE_TITLES.get(second, second)}")
        common = [d for d in here if paper.get(d) is not None]

        def rank(values):  # "A > B = C": equal accuracies are ties
            ordered = sorted(common, key=lambda d: -values[d])
            text = DEFENCE_TITLES.get(ordered[0], ordered[0])
            for prev, d in zip(ordered, ordered[1:]):
                text += (" = " if values[d] == values[prev] else " > ") + DEFENCE_TITLES.get(d, d)
            return text

        rev = (f"; significant reversals: {', '.join(significant_reversals)}" if significant_reversals
               else "; no reversal is significant")
        lines.append(f"- {title}: here {rank(here)}; paper {rank(paper)} "
                     f"({100 * agree / len(pairs):.0f}% of {len(pairs)} pairs in the paper's order{rev})")
    return lines


def _claim(rows: dict, level: int, lhs, rhs) -> Optional[tuple[float, float, bool]]:
    """(value lhs, value rhs, intervals apart) for a claim's two sides, or None when not measured; an "average"
    side is the shared-columns Average at coverage `level` (index into "shared_levels"; -1 = all shared columns)."""
    def side(spec):
        d, a = spec
        r = rows.get(d)
        if r is None:
            return None
        if a == "average":  # the shared-columns Average, comparable across rows
            info = r["shared_levels"][level] if r.get("shared") else None
            return None if info is None else (info["value"], (info["lo"], info["hi"]))
        if not r.get(a):
            return None
        lo, hi = wilson(*r[a])
        return 100.0 * r[a][0] / r[a][1], (100 * lo, 100 * hi)

    left, right = side(lhs), side(rhs)
    if left is None or right is None:
        return None
    return left[0], right[0], not overlap(left[1], right[1])


# The paper's main orderings (Section IV-B), as (statement, pairs (left > right)).
PAPER_CLAIMS: tuple[tuple[str, tuple], ...] = (
    ("VideoPure has the best Average (over the columns every defence has)", tuple((("videopure", "average"), (d, "average")) for d in
                                             ("diffpure-ddpm", "diffpure-ddim", "ddim-inversion", "jpeg", "wavelet", "shuffle"))),
    ("VideoPure beats DiffPure-DDPM under every adaptive attack", tuple((("videopure", a), ("diffpure-ddpm", a)) for a in
                                                                         ("pgd+bpda", "tt+bpda", "eot+bpda", "diffattack"))),
    ("DiffPure-DDPM beats DiffPure-DDIM under every attack", tuple((("diffpure-ddpm", a), ("diffpure-ddim", a)) for a in
                                                                    ("pgd", "pgd+bpda", "tt", "tt+bpda", "eot+bpda", "diffattack"))),
    ("Temporal inversion and guidance make VideoPure more robust than plain DDIM inversion (PGD, PGD+BPDA)",
     tuple((("videopure", a), ("ddim-inversion", a)) for a in ("pgd", "pgd+bpda"))),
    ("Temporal Shuffle resists gray-box PGD but not PGD+BPDA", ((("shuffle", "pgd"), ("shuffle", "pgd+bpda")),)),
    ("EOT hurts the stochastic DiffPures more than PGD+BPDA does", tuple((((d, "pgd+bpda"), (d, "eot+bpda"))) for d in
                                                                         ("diffpure-ddpm", "diffpure-ddim"))),
    ("TT is a stronger gray-box attack on VideoPure than PGD", ((("videopure", "pgd"), ("videopure", "tt")),)),
    ("VideoPure beats JPEG and WD under PGD+BPDA", tuple((("videopure", "pgd+bpda"), (d, "pgd+bpda")) for d in ("jpeg", "wavelet"))),
)


def claims(rows: list[dict]) -> list[str]:
    """Which of the paper's orderings hold here: per claim, how many of its comparisons go the paper's way and how
    many of them (or of the reversals) are significant at 95% (intervals apart)."""
    by = {r["defence"]: r for r in rows}
    lines = []
    levels = _shared_levels(rows)
    for statement, pairs in PAPER_CLAIMS:
        if any(a == "average" for side in pairs for _, a in side) and len(levels) > 1:
            for i, level in enumerate(levels):  # once per coverage level of the shared columns
                columns = ", ".join(ATTACK_TITLES.get(a, a) for a in level["columns"])
                lines += _claim_line(f"{statement}, over {columns}", pairs, by, i)
        else:
            lines += _claim_line(statement, pairs, by, -1)
    return lines


def _reversals(count: int) -> str:
    return f"{count} significant reversal" + ("" if count == 1 else "s")


def _claim_line(statement: str, pairs: tuple, by: dict, level: int) -> list[str]:
    results = [c for c in (_claim(by, level, l, r) for l, r in pairs) if c is not None]
    if not results:
        return []
    held = sum(1 for a, b, _ in results if a > b)
    ties = sum(1 for a, b, _ in results if a == b)
    significant = sum(1 for a, b, apart in results if a > b and apart)
    reversed_sig = sum(1 for a, b, apart in results if a < b and apart)
    if held == len(results):
        verdict = "holds" + (" (all significant)" if significant == len(results) else
                             f" ({significant} of {len(results)} comparisons significant)")
    elif ties == len(results):
        verdict = "no difference measured (ties)"
    elif held == 0:
        verdict = "does not hold" + (f" ({_reversals(reversed_sig)})" if reversed_sig else " (within noise)")
    else:
        verdict = f"partly: {held} of {len(results)} comparisons" + (f", {_reversals(reversed_sig)}" if reversed_sig else "")
    measured = "" if len(results) == len(pairs) else f" ({len(results)} of its {len(pairs)} comparisons measured)"
    return [f"- {statement}: **{verdict}**{measured}"]


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
    """table1.{csv,md}, table4.{csv,md} (when ablations ran), table10.md, loss.png, resubmission.png (when any),
    cost.md and report.md under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    attacks = [a for a in ATTACKS if any(r["attack"] == a for r in records)]
    rows4 = table_four(records)
    # the intermediate ablation rows belong to Table IV (they have only its columns)
    middle = {spec for _, spec in ABLATIONS[1:-1]} if len(rows4) > 1 else set()
    rows = table_one([r for r in records if r["defence"] not in middle], defences, attacks)
    md1 = table_one_markdown(rows, attacks)
    shared = shared_average_markdown(rows)
    _write(out / "table1.csv", table_one_csv(rows, attacks))
    _write(out / "table1.md", md1 + ("\n\n" + shared if shared else "") + "\n")
    paths["table1"] = out / "table1.md"
    md4 = table_four_markdown(rows4) if len(rows4) > 1 else ""
    if md4:
        buffer = io.StringIO()
        w = csv.writer(buffer, lineterminator="\n")
        w.writerow(["defence", "temporal_inversion", "optimisation", "voting", "standard_acc", "robust_acc_star",
                    "robust_acc", "n_clean", "n_pgd", "n_pgd_bpda"])
        for r in rows4:
            w.writerow([r["defence"], *map(int, r["modules"]), *(pct(r[k]) for k in ("clean", "pgd", "pgd+bpda")),
                        *((r[k] or (0, 0))[1] for k in ("clean", "pgd", "pgd+bpda"))])
        _write(out / "table4.csv", buffer.getvalue())
        _write(out / "table4.md", md4 + "\n")
        paths["table4"] = out / "table4.md"
    rows10 = table_ten(records, rows)
    md10 = table_ten_markdown(rows10)
    _write(out / "table10.md", md10 + "\n")
    cost = cost_markdown(records)
    _write(out / "cost.md", "CPU seconds per clip of each cell (wall seconds in brackets), attack + defended "
           "evaluation, from the records.\n\n" + cost + "\n")
    curves = loss_curves(records, loss_attack)
    if curves:
        title = f"{ATTACK_TITLES.get(loss_attack, loss_attack)}: attacker's loss per iteration (mean over clips)"
        paths["loss"] = line_plot(curves, out / "loss.png", title, "attack iteration", "cross-entropy (mean over candidates)")
    resub = resubmission_curves(records)
    if resub:
        paths["resubmission"] = line_plot(resub, out / "resubmission.png", "Robust accuracy when the attacker may "
                                          "resubmit N times", "evaluations N", "accuracy (%)")
    any_defences = _order(records, "defence", defences)
    any_table = defence_attack_markdown([r for r in records if r.get("iterate_predictions")], any_defences,
                                        [a for a in attacks if a != "clean"], "any_iterate_correct")
    final_table = defence_attack_markdown([r for r in records if r.get("iterate_predictions")], any_defences,
                                          [a for a in attacks if a != "clean"], "correct")
    paper_cols = [a for a in attacks if a in TABLE_ONE]
    paper = [f"| {defence_title(d)} | " + " | ".join(str(PAPER_TABLE_I[d].get(a, "-")) for a in paper_cols) +
             f" | {PAPER_AVERAGE.get(d, '-')} |" for d in PAPER_TABLE_I if any(r["defence"] == d for r in rows)]
    n_clips = len({r["clip"] for r in records})
    described = [f"- **{ATTACK_TITLES[a]}**: {ATTACK_DESCRIPTIONS[a]}" for a in attacks if a in ATTACK_DESCRIPTIONS]
    parts = [
        "# Robustness evaluation",
        "",
        f"{len(records)} records, {n_clips} clips. Each cell: accuracy in % [95% Wilson interval] n=clips; '-' = not "
        "applicable. Average: mean over the row's attack columns on the clips they all measured (n), with a clip-"
        "bootstrap interval (docs/evaluation.md).",
        "",
        "## Table I layout: Standard Acc (None), Robust Acc* (PGD, TT), Robust Acc (adaptive)",
        "",
        md1,
        "",
    ]
    if shared:
        parts += [shared, ""]
    if described:
        parts += ["Attacks named by what they are:", "", *described, ""]
    if paper:
        parts += ["Paper, Table I (NL on UCF-101), for comparison of the ordering (its PGD+Diffattack column is "
                  "compared with the DiffAttack-style attack):", "",
                  "| Defence | " + " | ".join(ATTACK_TITLES[a] for a in paper_cols) + " | Average |",
                  "|" + "---|" * (len(paper_cols) + 2), *paper, ""]
    order = ordering(rows, attacks)
    if order:
        parts += ["## Ordering against the paper's Table I", "", *order, ""]
    held = claims(rows)
    if held:
        parts += ["## Which of the paper's orderings hold here", "",
                  "A comparison is significant when the two 95% intervals do not overlap.", "", *held, ""]
    if any_table:
        parts += ["## Robust Acc counting any iterate (the attacker keeps the first input that fools the defence)",
                  "", any_table, "", "The same cells counting only the final iterate:", "", final_table, ""]
    if md4:
        parts += ["## Table IV layout: ablations (PGD for Robust Acc*, PGD+BPDA for Robust Acc)", "", md4, ""]
    parts += ["## Table X layout: time per video and average defence", "", md10, ""]
    parts += ["## Cost: CPU seconds per clip of each cell (wall seconds in brackets)", "", cost, ""]
    if curves:
        parts += [f"## Fig. 4 layout: loss vs attack iteration ({loss_attack})", "", "![loss](loss.png)", ""]
    if resub:
        parts += ["## Resubmission (N evaluations of the final video; the attacker wins if any is wrong)", "",
                  "![resubmission](resubmission.png)", ""]
    sanity = warnings_summary(records)
    if sanity:
        parts += ["## Sanity warnings", "", *[f"- {w}" for w in sanity], ""]
    if run:
        parts += ["## Run", "", "```json", json.dumps(run, indent=1, sort_keys=True), "```", ""]
    _write(out / "report.md", "\n".join(parts))
    paths["report"] = out / "report.md"
    return paths
