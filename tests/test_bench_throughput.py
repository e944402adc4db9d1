"""`videopure bench --throughput`: the evaluation workloads at 1 vs N videos per network call (tiny models)."""

import json

import pytest


@pytest.mark.slow
def test_throughput_mode_reports_speedups_and_equality(tmp_path, capsys):
    from videopure_core.cli import main

    assert main(["bench", "--throughput", "--arch", "tiny", "--videos", "2", "--batch-sizes", "1,2", "--threads", "1",
                 "--workloads", "defended,tt+bpda", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench-throughput-cpu-tiny.json").read_text())
    for name in ("defended", "tt+bpda"):
        row = data[name]
        assert row["1"]["videos_per_s"] > 0 and row["2"]["videos_per_s"] > 0 and row["speedup"] > 0
    assert data["defended"]["equal"] is True  # batched votes = one-at-a-time votes
    assert data["tt+bpda"]["equal"] > 0.99  # gradient signs, up to float rounding
    text = (tmp_path / "bench-throughput-cpu-tiny.md").read_text()
    assert "| defended |" in text and "videos/s at 2" in text
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("throughput 2 vs 1 videos per call: defended")
