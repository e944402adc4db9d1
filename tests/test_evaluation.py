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
    # Average: attack columns only, on the clips all of them measured (pgd+full has clip a only): (1 + 1 + 0) / 3
    assert vp["average"] == pytest.approx(100 * 2 / 3) and vp["average_info"]["n"] == 1
    assert vp["average_info"]["columns"] == ["pgd", "pgd+bpda", "pgd+full"]
    assert rows[1]["average"] is None and rows[1]["pgd+bpda"] is None  # the undefended row has no Average
    md = table_one_markdown(rows, ["clean", "pgd", "pgd+bpda", "pgd+full"])
    assert ("| VideoPure | 50.0 [9.5, 90.5] n=2 | 100.0 [34.2, 100.0] n=2 | 50.0 [9.5, 90.5] n=2 | "
            "0.0 [0.0, 79.3] n=1 | 66.7 [66.7, 66.7] n=1 |") in md
    assert "| None | 100.0 [34.2, 100.0] n=2 | 0.0 [0.0, 65.8] n=2 | - | - | - |" in md
    assert "| DDIM Inversion | 100.0 [20.7, 100.0] n=1 | 0.0 [0.0, 79.3] n=1 | 0.0 [0.0, 79.3] n=1 | - | 0.0 [0.0, 0.0] n=1, 2 cols |" in md
    four = table_four(recs)
    assert [r["defence"] for r in four] == ["ddim-inversion", "videopure"]
    assert four[0]["modules"] == (False, False, False) and four[1]["pgd+bpda"] == (1, 2)
    assert loss_curves(recs) == {"VideoPure": [2.0, 3.0]}
    order = ordering(rows, ["clean", "pgd"])
    assert order[1] == ("- PGD: here VideoPure > None = DDIM Inversion; paper VideoPure > DDIM Inversion > None "
                        "(83% of 3 pairs in the paper's order; no reversal is significant)")  # the tie counts half
    paths = write_reports(recs, tmp_path, {"command": "videopure eval ..."})
    assert set(paths) == {"table1", "table4", "loss", "report"}
    report = (tmp_path / "report.md").read_text()
    assert "Ordering against the paper" in report and "Table I layout" in report and "Table IV layout" in report and "![loss](loss.png)" in report
    assert "Which of the paper's orderings hold" in report
    assert "videopure,pgd,100.00,2,2,34.24,100.00," in (tmp_path / "table1.csv").read_text()
    assert "videopure,average,66.67,,1," in (tmp_path / "table1.csv").read_text()
    assert "| VideoPure | 0.500 |" in (tmp_path / "table10.md").read_text()  # clean records only


def test_wilson_interval_and_clip_bootstrap():
    from videopure_core.evaluation.stats import bootstrap_mean, wilson

    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert wilson(48, 48) == pytest.approx((0.92590, 1.0), abs=1e-5)
    mean, lo, hi = bootstrap_mean([[1, 0], [1, 1], [0, 0], [1, 1]])
    assert mean == pytest.approx(0.625) and 0.0 <= lo < mean < hi <= 1.0
    assert bootstrap_mean([[1, 1]] * 5)[1:] == (1.0, 1.0)


def test_average_uses_only_the_clips_all_its_columns_share():
    """A column measured on 2 of 12 clips restricts the Average to those 2 clips (no mixing of n=12 and n=2)."""
    clips = [f"c{i}" for i in range(12)]
    recs = [record("videopure", "pgd", c, i < 6) for i, c in enumerate(clips)]
    recs += [record("videopure", "pgd+bpda", c, True) for c in clips]
    recs += [record("videopure", "eot+bpda", c, False) for c in clips[:2]]
    recs += [record("jpeg", "pgd", c, True) for c in clips] + [record("jpeg", "pgd+bpda", c, False) for c in clips]
    rows = {r["defence"]: r for r in table_one(recs, attacks=["pgd", "pgd+bpda", "eot+bpda"])}
    vp = rows["videopure"]["average_info"]
    assert vp["n"] == 2 and vp["value"] == pytest.approx(100 * 2 / 3)  # clips c0, c1: pgd 1, bpda 1, eot 0
    shared = rows["videopure"]["shared"]  # the columns every defence has: pgd, pgd+bpda, on all 12 clips
    assert shared["columns"] == ["pgd", "pgd+bpda"] and shared["n"] == 12 and shared["value"] == pytest.approx(75.0)
    assert rows["jpeg"]["average"] == pytest.approx(50.0) and rows["jpeg"]["average_info"]["n"] == 12


def test_claims_read_the_paper_orderings():
    from videopure_core.evaluation.report import claims

    clips = [f"c{i}" for i in range(20)]
    recs = []
    for d, acc in (("videopure", 18), ("diffpure-ddpm", 2), ("diffpure-ddim", 14)):
        for a in ("pgd", "pgd+bpda", "tt", "tt+bpda", "eot+bpda", "diffattack"):
            recs += [record(d, a, c, i < acc) for i, c in enumerate(clips)]
    lines = claims(table_one(recs))
    assert "- VideoPure beats DiffPure-DDPM under every adaptive attack: **holds (all significant)**" in lines
    assert any(line.startswith("- DiffPure-DDPM beats DiffPure-DDIM under every attack: **does not hold (6 significant")
               for line in lines)


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
    with pytest.raises(SystemExit, match="tt\\+bpda, which this run does not include"):  # a limit that limits nothing
        main([*args[:-3], "--attack-clips", "pgd+full=1,tt+bpda=1", "--out", str(tmp_path / "other"), "--no-progress"])


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


def test_norm_specific_defaults():
    """--norm l2 alone gives the paper's L2 budget (eps 2, step 0.5), not the L_inf numbers in other units."""
    import argparse

    from videopure_core.evaluation.cli import _resolve, add_arguments, settings_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    l2 = parser.parse_args(["--norm", "l2"])
    r = _resolve(l2)
    assert (r["eps"], r["step"], r["long_step"]) == (2.0, 0.5, 0.25)
    s = settings_from(r, l2)
    assert (s.norm, s.eps, s.step) == ("l2", 2.0, 0.5)
    linf = settings_from(_resolve(parser.parse_args([])), parser.parse_args([]))
    assert (linf.eps, linf.step, linf.long_step, linf.transfer_eps) == pytest.approx((4 / 255, 2 / 255, 1 / 255, 16 / 255))
    assert _resolve(parser.parse_args(["--norm", "l2", "--eps", "1.5"]))["eps"] == 1.5


@pytest.mark.slow
def test_batched_evaluation_equals_one_clip_at_a_time(tmp_path, tiny_purifier):
    """Clips batched together (and TT shifts / EOT draws batched inside the attacks) give the records of one clip
    at a time: same predictions, same perturbations up to float rounding."""
    t = _Tiny(tiny_purifier)
    defences = {"videopure": t.defences["videopure"], "wavelet": build_defence("wavelet")}
    settings = AttackSettings(steps=2, eot_reps=2, tt_shift=1)
    attacks = ["clean", "pgd", "pgd+bpda", "tt+bpda", "eot+bpda"]
    evaluate(t.data, t.classifier, defences, attacks, settings, str(tmp_path / "b3"), batch_size=3, progress=False)
    evaluate(t.data, t.classifier, defences, attacks, settings, str(tmp_path / "b1"), batch_size=1, progress=False,
             context=__import__("videopure_core.evaluation", fromlist=["Context"]).Context(max_batch=1))
    one = {(r["defence"], r["attack"], r["clip"]): r for r in load_records(tmp_path / "b1")}
    for r in load_records(tmp_path / "b3"):
        o = one[(r["defence"], r["attack"], r["clip"])]
        assert r["candidate_predictions"] == o["candidate_predictions"], (r["defence"], r["attack"])
        assert r["l2"] == pytest.approx(o["l2"], rel=1e-4, abs=1e-6)
        if r["losses"]:
            assert r["losses"] == pytest.approx(o["losses"], rel=1e-4, abs=1e-5)


def test_any_iterate_resubmissions_and_iterate_evaluation(tmp_path, tiny_purifier):
    t = _Tiny(tiny_purifier)
    defences = {"videopure": t.defences["videopure"], "shuffle": build_defence("shuffle")}
    settings = AttackSettings(steps=3, eot_reps=2, tt_shift=1)
    evaluate(t.data, t.classifier, defences, ["pgd", "pgd+bpda", "eot+bpda"], settings, str(tmp_path), batch_size=2,
             progress=False, eval_iterates=[1], resubmissions=3)
    recs = {(r["defence"], r["attack"], r["clip"]): r for r in load_records(tmp_path)}
    r = recs[("videopure", "pgd+bpda", "world-test-00001")]
    assert sorted(r["iterate_predictions"], key=int) == ["0", "1", "2", "3"]  # every iterate free, plus the final
    assert r["iterate_predictions"]["3"] == r["prediction"]
    assert r["any_iterate_correct"] == all(p == r["label"] for p in r["iterate_predictions"].values())
    assert r["resubmissions"] is None  # deterministic: nothing to resubmit
    g = recs[("videopure", "pgd", "world-test-00000")]  # gray-box: only the asked iterate (one purification)
    assert sorted(g["iterate_predictions"]) == ["1", "3"]
    s = recs[("shuffle", "eot+bpda", "world-test-00002")]
    assert len(s["resubmissions"]) == 3 and all(isinstance(v, bool) for v in s["resubmissions"])
    from videopure_core.evaluation import resubmission_curves

    curves = resubmission_curves(list(recs.values()))
    assert set(curves) == {"Temporal Shuffle / PGD", "Temporal Shuffle / PGD+BPDA", "Temporal Shuffle / EOT+BPDA"}
    for values in curves.values():
        assert len(values) == 4 and all(a >= b for a, b in zip(values, values[1:]))  # never rises with N


def test_diffattack_transfer_and_flow_cells(tmp_path, tiny_purifier):
    from videopure_core.evaluation import Context
    from videopure_core.evaluation.surrogate import SeparableClassifier

    t = _Tiny(tiny_purifier)
    torch.manual_seed(1)
    surrogate = SeparableClassifier(12, width=8).eval().requires_grad_(False)

    def flow(a, b):
        return torch.cat([(b - a).mean(1, keepdim=True), (a * b).mean(1, keepdim=True)], 1) * 4.0

    settings = AttackSettings(steps=1, eot_reps=2, tt_shift=1, transfer_steps=2)
    defences = {"none": t.defences["none"], "videopure": t.defences["videopure"], "jpeg": t.defences["jpeg"]}
    evaluate(t.data, t.classifier, defences, ["diffattack", "tt+mi", "pgd+flow", "pgd+bpda+flow"], settings,
             str(tmp_path), batch_size=3, progress=False, attack_clips={"diffattack": 1},
             context=Context(flow=flow, surrogate=surrogate))
    recs = {(r["defence"], r["attack"], r["clip"]): r for r in load_records(tmp_path)}
    assert recs[("videopure", "diffattack", "world-test-00000")]["gradient"] == "full"
    assert ("jpeg", "diffattack", "world-test-00000") not in recs  # not differentiable: "-"
    mi = recs[("none", "tt+mi", "world-test-00001")]
    assert 15.9 < mi["linf_255"] <= 16.0 + 1e-3 and mi["gradient"] == "surrogate classifier"
    assert len({recs[(d, "tt+mi", "world-test-00001")]["l2"] for d in defences}) == 1  # crafted once, shared
    assert recs[("videopure", "pgd+bpda+flow", "world-test-00002")]["iterate_predictions"] is not None


def test_experiment_command_writes_its_table(tmp_path):
    from videopure_core.cli import main
    from videopure_core.evaluation import EXPERIMENTS

    assert {"table1", "table2", "table3", "table4", "table6", "table7", "table8", "table9", "table11", "table12",
            "fig5a", "fig5b", "fig6", "fig7", "strong"} <= set(EXPERIMENTS)
    out = tmp_path / "t11"
    args = ["eval", "--experiment", "table11", "--tiny", "--clips", "1", "--frames", "4", "--size", "32", "--steps", "1",
            "--threads", "1", "--config", "t_star=1", "lambda_temp=0", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    summary = (out / "table11.md").read_text()
    assert "eps4" in summary and "eps16" in summary and "n=1" in summary and "Table XI" in summary
    runs = {p.name: json.loads((p / "run.json").read_text()) for p in out.iterdir() if (p / "run.json").is_file()}
    assert runs["eps16"]["settings"]["eps_255"] == pytest.approx(16.0) and runs["eps4"]["settings"]["steps"] == 1
    assert main([*args, "--report-only"]) == 0  # rebuilds the summary from the records
    with pytest.raises(SystemExit, match="fixes the defences"):
        main([*args[:-1], "--defences", "none", "--no-progress"])


def test_fig7_draws_the_three_videos_and_every_candidate_and_says_which_clip(tmp_path):
    from PIL import Image

    from videopure_core.cli import main

    out = tmp_path / "f7"
    args = ["eval", "--experiment", "fig7", "--tiny", "--frames", "4", "--size", "32", "--steps", "1",
            "--threads", "1", "--config", "t_star=2", "lambda_temp=0", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    page = (out / "fig7.md").read_text()
    assert "Clip 0 of the world's test split" in page and "![fig7](fig7.png)" in page
    with Image.open(out / "fig7.png") as im:  # 3 rows (clean, PGD, PGD+BPDA) x (input + t*+1 = 3 candidates)
        width, height = im.size
    assert width == int(1.5 * 4 * 100) and height == int(2.2 * 3 * 100)


def test_second_classifier_trains_and_loads(tmp_path):
    from videopure_core.evaluation.surrogate import SeparableClassifier, load_surrogate, train_surrogate

    model = SeparableClassifier(12, width=8)
    assert model(torch.rand(2, 3, 16, 64, 64)).shape == (2, 12)
    info = train_surrogate(tmp_path / "s", steps=2, batch=2, train_clips=4, test_clips=2, width=8, log=lambda _: None)
    assert 0 <= info["test_accuracy"] <= 1 and info["steps"] == 2
    loaded = load_surrogate(tmp_path / "s")
    assert not any(p.requires_grad for p in loaded.parameters()) and loaded.width == 8
    with pytest.raises(Exception, match="train one"):
        load_surrogate(tmp_path / "missing")
