"""The one key=value parser (videopure_core.options) and the one atomic-write helper (videopure_core.io)."""

import os

import pytest
import torch

from videopure_core.io import atomic_path, atomic_write, read_frames, write_frames
from videopure_core.options import parse_assignments, parse_value


@pytest.mark.parametrize("text, value", [
    ("true", True), (" False ", False), ("None", None), ("null", None), ("3", 3), ("-2", -2), ("0.5", 0.5),
    ("1e-3", 1e-3), ("32x28x28", (32, 28, 28)), ("log", "log"), ("32,28,28", "32,28,28"), ("4x", "4x"),
    ('"none"', "none"), ('"7"', "7"), ("[1, 2]", [1, 2]), ('{"a": 1}', {"a": 1}), ("[oops", "[oops"), ("", ""),
])
def test_parse_value(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_assignments_keeps_order_lets_the_last_win_and_names_bad_items():
    assert parse_assignments(["t_star=4", "guidance = false", "t_star=5", "ref=a=b"]) == \
        {"t_star": 5, "guidance": False, "ref": "a=b"}
    assert list(parse_assignments(["b=1", "a=2"])) == ["b", "a"]
    with pytest.raises(ValueError, match=r"--set 'index' is not key=value \(e.g. 2.index=7\)"):
        parse_assignments(["index"], "--set", "2.index=7")
    with pytest.raises(ValueError, match="is not key=value"):
        parse_assignments(["=3"])


def test_atomic_write_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sub" / "report.md"  # parent folders are made
    with atomic_write(target) as f:
        f.write("first ü\n")
        assert not target.exists()  # nothing at the final name while writing
    assert target.read_text(encoding="utf-8") == "first ü\n"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text(encoding="utf-8") == "first ü\n"
    with atomic_write(target, "wb") as f:
        f.write(b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"
    assert os.listdir(target.parent) == ["report.md"]  # no temporaries left either way


def test_atomic_path_for_writers_that_take_a_path_and_for_folders(tmp_path):
    with atomic_path(tmp_path / "a.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name != "a.bin"
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"x"
    with atomic_path(tmp_path / "a.bin") as one, atomic_path(tmp_path / "a.bin") as two:
        assert one != two  # concurrent writers get their own temporaries; the last to finish wins
        one.write_bytes(b"one")
        two.write_bytes(b"two")
    assert (tmp_path / "a.bin").read_bytes() == b"one"

    video = torch.rand(3, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    write_frames(video, tmp_path / "clip")
    write_frames(video[:2], tmp_path / "clip")  # replaces the folder: no frame of the old clip stays
    assert sorted(os.listdir(tmp_path / "clip")) == ["0.png", "1.png"]
    assert torch.allclose(read_frames(tmp_path / "clip"), video[:2], atol=0.5 / 255)
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "clip", directory=True) as tmp:
            (tmp / "0.png").write_bytes(b"")
            raise RuntimeError("interrupted")
    assert sorted(os.listdir(tmp_path / "clip")) == ["0.png", "1.png"]
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "clip"]


def test_command_line_writes_back_only_the_options_that_differ_from_their_defaults():
    import argparse

    from videopure_core.options import command_line

    def add_arguments(p):
        p.add_argument("--steps", type=int, default=10)
        p.add_argument("--out", default="out")
        p.add_argument("--fast", action="store_true")
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
        p.add_argument("--set", nargs="*", default=[])

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--steps", "10", "--out", "my dir", "--fast", "--no-progress", "--set", "a=1", "b=x y"])
    assert command_line(["videopure", "x"], args, add_arguments) == \
        "videopure x --out 'my dir' --fast --no-progress --set a=1 'b=x y'"  # --steps 10 is the default: left out
