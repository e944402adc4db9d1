import pytest

from videopure_core.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_the_picture(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--frames", "4", "--size", "32", "--t-star", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "winner" in text and "z_0^2" in text and "seconds per stage" in text
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
