"""Robustness evaluation (paper Section IV): data, the evaluation loop, per-video records, reports, sharding.

    dataset = load_dataset("world", clips=12)
    evaluate(dataset, classifier, {"videopure": VideoPureDefence(purifier)}, ["clean", "pgd", "pgd+bpda"],
             AttackSettings(), out="results")
    write_reports(load_records("results"), "results")

The command line is `videopure eval` (videopure_core/evaluation/cli.py); see docs/evaluation.md.
"""

from .data import Clip, Dataset, folder_dataset, load_dataset, read_video_file, world_dataset
from .records import RecordWriter, load_records, merge_records, read_jsonl
from .report import ABLATIONS, cells, loss_curves, table_four, table_one, table_ten, write_reports
from .runner import ADAPTIVE, ATTACKS, GRAY_BOX, AttackSettings, applies, attack_grad_fn, craft, evaluate, stable_seed

__all__ = [n for n in dir() if not n.startswith("_")]
