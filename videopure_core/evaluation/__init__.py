"""Robustness evaluation (paper Section IV): data, the evaluation loop, per-video records, reports, experiments.

    dataset = load_dataset("world", clips=12)
    evaluate(dataset, classifier, {"videopure": VideoPureDefence(purifier)}, ["clean", "pgd", "pgd+bpda"],
             AttackSettings(), out="results")
    write_reports(load_records("results"), "results")

The command line is `videopure eval` (videopure_core/evaluation/cli.py), the paper's experiments
`videopure eval --experiment NAME` (experiments.py); see docs/evaluation.md.
"""

from .data import Clip, Dataset, folder_dataset, load_dataset, read_video_file, world_dataset
from .experiments import EXPERIMENTS, Experiment, Run
from .records import RecordWriter, load_records, merge_records, read_jsonl
from .report import (
    ABLATIONS,
    cell_text,
    cells,
    claims,
    loss_curves,
    resubmission_curves,
    table_four,
    table_one,
    table_ten,
    write_reports,
)
from .runner import (
    ADAPTIVE,
    ATTACKS,
    GRAY_BOX,
    SHARED,
    TABLE_ONE,
    TRANSFER,
    AttackSettings,
    Context,
    applies,
    attack_grad_fn,
    craft,
    evaluate,
    stable_seed,
)
from .stats import bootstrap_mean, wilson

__all__ = [n for n in dir() if not n.startswith("_")]
