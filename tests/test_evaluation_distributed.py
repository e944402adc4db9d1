"""Sharding with torch.distributed: two CPU processes (gloo) under torchrun, each writing its records, rank 0 merging."""

import json
import pytest
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_processes_shard_and_rank0_merges(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "videopure_core", "eval", "--tiny", "--data", "world", "--clips", "5", "--frames", "4", "--size", "32",
           "--defences", "none,jpeg,wavelet", "--attacks", "clean,pgd,pgd+bpda", "--steps", "1", "--batch-size", "2",
           "--threads", "1", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def lines(path):
        return [json.loads(line) for line in path.read_text().splitlines()]

    rank0, rank1 = lines(out / "records" / "rank-0.jsonl"), lines(out / "records" / "rank-1.jsonl")
    assert {r["index"] for r in rank0} == {0, 2, 4} and {r["index"] for r in rank1} == {1, 3}  # round-robin shards
    assert {r["rank"] for r in rank0} == {0} and {r["rank"] for r in rank1} == {1}
    merged = lines(out / "records.jsonl")
    keys = {(r["defence"], r["attack"], r["clip"]) for r in merged}
    assert len(merged) == len(keys) == 5 * (2 + 3 + 3)  # every cell of every clip once
    assert len(rank0) + len(rank1) == len(merged)
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert "| JPEG |" in (out / "table1.md").read_text()
    assert "| JPEG |" in done.stdout  # rank 0 printed the table
