"""`videopure purify`: a frame folder or video file in, a playable mp4, every candidate, the flow picture and a vote
report out (on the bundled world, small sizes); errors that say what to pass instead."""

import json

import pytest

from videopure_core.cli import main
from videopure_core.io import BUNDLED_CLIPS, bundled_clip

av = pytest.importorskip("av")
from videopure_core.videoio import probe_video, read_video, write_video  # noqa: E402

SMALL = ["--frames", "4", "--size", "32", "--t-star", "2", "--no-progress", "--threads", "1"]


def test_purify_a_bundled_ucf101_clip_writes_videos_pictures_and_the_report(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["purify", str(BUNDLED_CLIPS / "17"), "--out", str(out), *SMALL]) == 0
    text = capsys.readouterr().out
    assert "winner" in text and "z_0^2" in text and "no defence:" in text
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == sorted(["input.mp4", "purified.mp4", "candidates.png", "flow.png", "report.json", "report.md"]
                           + [f"candidates/z0_t{t}.mp4" for t in (2, 1, 0)])
    for name in ("purified.mp4", "input.mp4", "candidates/z0_t2.mp4"):
        info = probe_video(out / name)  # decodes: what a player does
        assert (info["frames"], info["width"], info["height"], info["fps"]) == (4, 32, 32, 8.0)
    purified, _ = read_video(out / "purified.mp4")
    z0, _ = read_video(out / "candidates" / "z0_t0.mp4")
    assert float((purified - z0).abs().max()) == 0  # purified.mp4 is z_0^0 by default
    for png in ("flow.png", "candidates.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "report.json").read_text())
    assert [c["label"] for c in report["candidates"]] == [2, 1, 0]
    assert sum(report["votes"].values()) == 3 and report["winner"]["class"] in report["votes"]
    assert report["input"] == {"path": str(BUNDLED_CLIPS / "17"), "source": [4, 224, 224], "frames": 4,
                               "size": [32, 32], "fps": None}
    assert set(report["seconds"]) >= {"load", "encode", "flow", "invert", "denoise", "decode", "classify", "write"}
    assert set(report["memory"]["stages"]) == {"encode", "flow", "invert", "denoise", "decode", "classify"}
    assert report["memory"]["estimate"] is None  # CPU: only with --estimate
    assert report["config"] == {"t_star": 2, "lambda_reference": [32, 28, 28]}
    assert report["command"].startswith(f"videopure purify {BUNDLED_CLIPS / '17'} --out {out} --frames 4 --size 32")
    assert report["command"].endswith("--threads 1 --no-progress")
    md = (out / "report.md").read_text()
    assert "**Winner:" in md and "| z_0^0 |" in md and "purified.mp4" in md


def test_purify_a_video_file_keeps_its_frame_rate_and_picks_a_candidate(tmp_path):
    clip = write_video(bundled_clip("21", 6, 64), tmp_path / "clip.mp4", fps=25)
    out = tmp_path / "out"
    assert main(["purify", str(clip), "--out", str(out), *SMALL, "--candidate", "2", "--estimate"]) == 0
    info = probe_video(out / "purified.mp4")
    assert (info["frames"], info["fps"]) == (4, 25.0)
    purified, _ = read_video(out / "purified.mp4")
    assert float((purified - read_video(out / "candidates" / "z0_t2.mp4")[0]).abs().max()) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["purified_candidate"] == 2 and report["input"]["fps"] == 25.0
    estimate = report["memory"]["estimate"]
    assert set(estimate["stages"]) == set(report["memory"]["stages"]) and estimate["peak"] > 0


def test_estimate_only_prints_the_table_and_writes_nothing(tmp_path, capsys):
    assert main(["purify", str(BUNDLED_CLIPS / "17"), *SMALL, "--estimate-only"]) == 0
    text = capsys.readouterr().out
    assert "memory estimate for 1 x 4x32x32" in text and "| decode |" in text and "**peak**" in text


@pytest.mark.parametrize("args, message", [
    (["missing-folder", "--out", "o"], "No video at"),
    ([str(BUNDLED_CLIPS / "17")], "--out DIR is needed"),
    ([str(BUNDLED_CLIPS / "17"), "--out", "o", "--model", "some/folder"], "--model needs --raft"),
    ([str(BUNDLED_CLIPS / "17"), "--out", "o", "--size", "30"], "multiple of 8"),
    ([str(BUNDLED_CLIPS / "17"), "--out", "o", "--config", "t_star"], "not key=value"),
    ([str(BUNDLED_CLIPS / "17"), "--out", "o", "--config", "bogus=1"], "Unknown VideoPure option"),
    ([str(BUNDLED_CLIPS / "17"), "--out", "o", "--classifier", "w.pth", "--classifier-arch", "mvit_v2_s",
      "--frames", "8"], "takes exactly 16 frames"),
    ([str(BUNDLED_CLIPS / "17"), "--out", "o", "--model", "no/such/folder", "--config", "lambda_temp=0"],
     "No model folder at"),
])
def test_mistakes_get_one_line_that_says_what_to_do(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["purify", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("videopure purify: error:") and message in err
    assert not (tmp_path / "o").exists()
