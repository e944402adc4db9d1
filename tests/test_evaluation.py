"""Evaluation: data loading, append-only records and resume, the runner, reports, plot and the CLI (tiny models)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from videopure_core import PurifyConfig, to_frames
from videopure_core.defences import build_defence
from videopure_core.evaluation import (
    AttackSettings,
    RecordWriter,
    applies,
    evaluate,
    folder_dataset,
    load_dataset,
    load_records,
    merge_records,
    read_jsonl,
    table_four,
    table_one,
    write_reports,
)
from videopure_core.evaluation.plot import line_plot
from videopure_core.evaluation.report import loss_curves, ordering, table_one_markdown
from videopure_core.io import write_frames
from videopure_core.world.models import WorldClassifier


def record(defence, attack, clip, correct, losses=None, seconds=0.5):
    return {"defence": defence, "attack": attack, "clip": clip, "correct": correct, "losses": losses,
            "defence_seconds": seconds, "timings": {"classify": seconds / 2}, "warnings": []}


def test_records_append_resume_and_merge(tmp_path):
    w0 = RecordWriter(tmp_path, rank=0)
    w0.append([record("jpeg", "pgd", "a", True), record("jpeg", "pgd", "b", False)])
    w1 = RecordWriter(tmp_path, rank=1)
    w1.append([record("jpeg", "pgd", "c", True), record("jpeg", "pgd", "a", False)])  # "a" is done: skipped
    with open(tmp_path / "records" / "rank-1.jsonl", "a") as f:
        f.write('{"defence": "jpeg", "attack": "cl')  # a line cut short by a crash
    assert len(read_jsonl(tmp_path / "records" / "rank-1.jsonl")) == 1
    resumed = RecordWriter(tmp_path, rank=0)
    assert resumed.done == {("jpeg", "pgd", c) for c in "abc"}
    merged = merge_records(tmp_path)
    rows = read_jsonl(merged)
    assert [r["clip"] for r in rows] == ["a", "b", "c"] and rows[0]["correct"] is True
    assert len(load_records(tmp_path)) == 3  # merged file + rank files, deduplicated


def test_folder_dataset_layouts(tmp_path):
    g = torch.Generator().manual_seed(0)
    write_frames(torch.rand(5, 24, 24, 3, generator=g), tmp_path / "data" / "3")  # root/<label>/frames
    write_frames(torch.rand(4, 24, 24, 3, generator=g), tmp_path / "data" / "disk-up" / "clipA")  # nested, by name
    data = folder_dataset(tmp_path / "data", classes=["disk-left", "disk-right", "disk-up", "x"], frames=4, size=16)
    assert [(c.id, c.label) for c in data.clips] == [("3", 3), ("disk-up/clipA", 2)]
    video = data.clips[0].load()
    assert video.shape == (3, 4, 16, 16) and 0 <= float(video.min()) <= float(video.max()) <= 1
    with pytest.raises(ValueError, match="neither a class index"):
        folder_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="fewer than --frames 5"):
        load_dataset(str(tmp_path / "data"), frames=5, classes=["a", "b", "disk-up"]).clips[1].load()
    with pytest.raises(FileNotFoundError, match="No data folder"):
        folder_dataset(tmp_path / "missing")


@pytest.mark.slow
def test_video_files_via_pyav(tmp_path):
    av = pytest.importorskip("av")
    frames = (np.linspace(0, 1, 32)[None, :, None] * np.ones((32, 32, 3))).astype(np.float32)
    path = tmp_path / "data" / "7" / "clip.mp4"
    path.parent.mkdir(parents=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(6):
            image = (np.clip(frames * (0.5 + 0.1 * i), 0, 1) * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = load_dataset(str(tmp_path / "data"), frames=5)
    assert [(c.id, c.label) for c in data.clips] == [("7/clip.mp4", 7)]
    video = data.clips[0].load()
    assert video.shape == (3, 5, 32, 32)
    expected = torch.from_numpy(np.stack([np.clip(frames * (0.5 + 0.1 * i), 0, 1) for i in range(5)]))
    assert float((to_frames(video) - expected).abs().mean()) < 0.03  # lossy codec, same picture


def test_world_dataset():
    data = load_dataset("world", clips=5, frames=4, size=32)
    assert [c.label for c in data.clips] == [0, 1, 2, 3, 4] and data.classes[2] == "disk-up"
    assert data.clips[0].load().shape == (3, 4, 32, 32)
    assert data.clips[0].id == "world-test-00000"


def test_tables_from_records(tmp_path):
    recs = [record("none", "clean", c, True) for c in "ab"] + [record("none", "pgd", c, False) for c in "ab"]
    recs += [record("videopure", "clean", "a", True), record("videopure", "clean", "b", False)]
    recs += [record("videopure", "pgd", c, True, seconds=2.0) for c in "ab"]
    recs += [record("videopure", "pgd+bpda", "a", True, losses=[1.0, 2.0]),
             record("videopure", "pgd+bpda", "b", False, losses=[3.0, 4.0])]
    recs += [record("videopure", "pgd+full", "a", False)]
    recs += [record("ddim-inversion", a, "a", a == "clean") for a in ("clean", "pgd", "pgd+bpda")]
    rows = table_one(recs, ["videopure", "none"], ["clean", "pgd", "pgd+bpda", "pgd+full"])
    assert [r["defence"] for r in rows] == ["videopure", "none", "ddim-inversion"]
    vp = rows[0]
    assert vp["clean"] == (1, 2) and vp["pgd"] == (2, 2) and vp["pgd+full"] == (0, 1)
    assert vp["average"] == pytest.approx((100 + 50 + 0) / 3)  # attack columns only
    assert rows[1]["average"] == 0.0 and rows[1]["pgd+bpda"] is None
    md = table_one_markdown(rows, ["clean", "pgd", "pgd+bpda", "pgd+full"])
    assert "| VideoPure | 50.0 | 100.0 | 50.0 | 0.0 (n=1) | 50.0 |" in md
    assert "| None | 100.0 | 0.0 | - | - | 0.0 |" in md
    four = table_four(recs)
    assert [r["defence"] for r in four] == ["ddim-inversion", "videopure"]
    assert four[0]["modules"] == (False, False, False) and four[1]["pgd+bpda"] == (1, 2)
    assert loss_curves(recs) == {"VideoPure": [2.0, 3.0]}
    order = ordering(rows, ["clean", "pgd"])
    assert order[1] == ("- PGD: here VideoPure > None = DDIM Inversion; paper VideoPure > DDIM Inversion > None "
                        "(83% of 3 pairs in the paper's order)")  # the None/DDIM-inversion tie counts half
    paths = write_reports(recs, tmp_path, {"command": "videopure eval ..."})
    assert set(paths) == {"table1", "table4", "loss", "report"}
    report = (tmp_path / "report.md").read_text()
    assert "Ordering against the paper" in report and "Table I layout" in report and "Table IV layout" in report and "![loss](loss.png)" in report
    assert "videopure,pgd,100.00,2,2" in (tmp_path / "table1.csv").read_text()
    assert "| VideoPure | 0.500 |" in (tmp_path / "table10.md").read_text()  # clean records only


def test_line_plot_is_a_png_of_the_asked_size_with_both_series(tmp_path):
    series = {"a": [1.0, 2.0, 3.0], "b": [3.0, None, float("nan"), 2.0]}  # missing points are left out
    path = line_plot(series, tmp_path / "p.png", "t", "x", "y", size=(400, 300))
    assert path == tmp_path / "p.png" and [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary left
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (400, 300)
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours = set(map(tuple, pixels.tolist()))
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # both series drawn (tab10 blue, orange)
    assert len(colours) > 50 and (pixels < 128).all(axis=1).mean() > 0.002  # text and axes, not a blank page


class _Tiny:
    """Tiny world for the runner: 3 clips of 4 frames 32x32, a random classifier, a tiny purifier."""

    def __init__(self, tiny_purifier):
        torch.manual_seed(0)
        self.classifier = WorldClassifier(12, width=4).eval().requires_grad_(False)
        self.data = load_dataset("world", clips=3, frames=4, size=32)
        self.purifier = tiny_purifier(PurifyConfig(t_star=1).with_options(lambda_temp=0.0))
        self.defences = {s: build_defence(s, self.purifier) for s in ("none", "jpeg", "videopure")}


@pytest.mark.slow
def test_evaluate_records_resume_and_shared_graybox(tmp_path, tiny_purifier):
    t = _Tiny(tiny_purifier)
    settings = AttackSettings(steps=1, eot_reps=2, tt_shift=1)
    attacks = ["clean", "pgd", "pgd+bpda"]
    n = evaluate(t.data, t.classifier, t.defences, attacks, settings, str(tmp_path), batch_size=2, progress=False)
    assert n == 3 * (2 + 3 + 3)  # "none" has no adaptive attack
    assert evaluate(t.data, t.classifier, t.defences, attacks, settings, str(tmp_path), progress=False) == 0  # resumed
    recs = load_records(tmp_path)
    by = {(r["defence"], r["attack"], r["clip"]): r for r in recs}
    r = by[("videopure", "pgd+bpda", "world-test-00001")]
    assert len(r["candidate_predictions"]) == 2 and r["candidate_labels"] == [1, 0] and sum(r["votes"].values()) == 2
    assert len(r["losses"]) == 1 and r["gradient"] == "bpda" and 0 < r["linf_255"] <= 4.0 + 1e-4
    assert {"encode", "invert", "denoise", "decode", "classify"} <= set(r["timings"]) and r["seconds"] > 0
    for clip in ("world-test-00000", "world-test-00002"):  # one gray-box video per clip, shared by the defences
        assert len({by[(d, "pgd", clip)]["l2"] for d in t.defences}) == 1
    assert by[("none", "clean", "world-test-00000")]["l2"] == 0.0
    # random starts are per clip: batching does not change the attack
    other = tmp_path / "b1"
    evaluate(t.data, t.classifier, {"jpeg": t.defences["jpeg"]}, ["pgd+bpda"], settings, str(other), batch_size=1, progress=False)
    for r1 in load_records(other):
        assert r1["l2"] == pytest.approx(by[("jpeg", "pgd+bpda", r1["clip"])]["l2"], rel=1e-5)


def test_applies_and_eot_collapse(tmp_path, tiny_purifier):
    t = _Tiny(tiny_purifier)
    assert not applies("pgd+bpda", t.defences["none"])[0]
    assert not applies("pgd+full", t.defences["jpeg"])[0] and applies("pgd+full", t.defences["videopure"])[0]
    assert not applies("pgd+full", build_defence("wavelet"))[0]  # exact already
    with pytest.raises(ValueError, match="Unknown attack"):
        applies("fgsm", t.defences["none"])
    defences = {"shuffle": build_defence("shuffle"), "jpeg": t.defences["jpeg"]}
    with pytest.warns(UserWarning, match="stochastic"):
        evaluate(t.data, t.classifier, defences, ["eot+bpda", "tt+bpda"], AttackSettings(steps=1, eot_reps=3, tt_shift=1),
                 str(tmp_path), attack_clips={"tt+bpda": 1, "jpeg/eot+bpda": 2}, progress=False)
    recs = {(r["defence"], r["attack"], r["clip"]): r for r in load_records(tmp_path)}
    assert recs[("shuffle", "eot+bpda", "world-test-00000")]["eot_reps"] == 3
    assert recs[("jpeg", "eot+bpda", "world-test-00000")]["eot_reps"] == 1  # deterministic: one draw is exact
    assert sum(1 for k in recs if k[1] == "tt+bpda") == 2  # first clip only, two defences
    assert sum(1 for k in recs if k[:2] == ("jpeg", "eot+bpda")) == 2  # a per-cell limit
    assert sum(1 for k in recs if k[:2] == ("shuffle", "eot+bpda")) == 3
    assert recs[("shuffle", "tt+bpda", "world-test-00000")]["warnings"]


def test_cli_quick_and_report_only(tmp_path):
    from videopure_core.cli import main

    out = tmp_path / "out"
    args = ["eval", "--tiny", "--quick", "--clips", "2", "--frames", "4", "--size", "32", "--threads", "1",
            "--defences", "none,videopure,wavelet", "--attacks", "clean,pgd,pgd+bpda,pgd+full",
            "--config", "t_star=1", "lambda_temp=0", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["steps"] == 2 and run["attack_clips"]["pgd+full"] == 1 and run["config"]["t_star"] == 1
    assert run["frames"] == 4  # the explicit option wins over the preset's 8
    recs = load_records(out)
    assert len(recs) == 2 * (2 + 3 + 3) + 1  # pgd+full: videopure only, first clip only (preset)
    assert {"table1.md", "table1.csv", "report.md", "loss.png", "table10.md", "records.jsonl"} <= {p.name for p in out.iterdir()}
    (out / "table1.md").unlink()
    assert main(["eval", "--report-only", "--out", str(out)]) == 0
    assert "| VideoPure |" in (out / "table1.md").read_text()
    with pytest.raises(SystemExit, match="other settings"):
        main([*args[:-3], "--steps", "3", "--out", str(out), "--no-progress"])


def test_cli_ablations_get_table_four_columns_only(tmp_path):
    from videopure_core.cli import main

    out = tmp_path / "out"
    assert main(["eval", "--tiny", "--clips", "1", "--frames", "4", "--size", "32", "--steps", "1", "--threads", "1",
                 "--defences", "none,videopure,ddim-inversion", "--ablations", "--attacks", "clean,pgd,tt",
                 "--config", "t_star=1", "lambda_temp=0", "--out", str(out), "--no-progress"]) == 0
    cells_ = {(r["defence"], r["attack"]) for r in load_records(out)}
    middle = ["videopure:guidance=false:single_candidate=0", "videopure:guidance=false", "videopure:single_candidate=0"]
    assert {("videopure", "tt"), ("ddim-inversion", "tt"), ("none", "tt")} <= cells_
    assert all((m, "tt") not in cells_ and (m, "pgd") in cells_ for m in middle)
    assert "guidance=false" not in (out / "table1.md").read_text()
    table4 = (out / "table4.md").read_text()
    assert all(f"`{m}`" in table4 for m in middle) and table4.count("\n") == 7  # header, rule, 5 rows
