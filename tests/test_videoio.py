"""Video files in and out (videopure_core/videoio.py): mp4 written atomically, read back, probed; clear errors."""

import pytest
import torch

from videopure_core.io import BUNDLED_CLIPS, bundled_clip
from videopure_core.video import VideoInputError

av = pytest.importorskip("av")
from videopure_core.videoio import probe_video, read_video, video_codec, write_video  # noqa: E402


def test_write_then_read_an_mp4_gives_the_same_frames_and_leaves_no_temporary_files(tmp_path):
    clip = bundled_clip("17", 8, 64)
    path = write_video(clip, tmp_path / "out" / "clip.mp4", fps=8)
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.mp4"]
    info = probe_video(path)
    assert info["codec"] == ("h264" if video_codec() == "libx264" else "mpeg4")
    assert (info["frames"], info["width"], info["height"], info["fps"], info["seconds"]) == (8, 64, 64, 8.0, 1.0)
    frames, fps = read_video(path)
    assert frames.shape == clip.shape and fps == 8.0 and frames.dtype == torch.float32
    assert float((frames - clip).abs().mean()) < 0.02  # lossy but visually the same (crf 18)
    assert read_video(path, max_frames=3)[0].shape[0] == 3


def test_mpeg4_codec_and_frame_folders(tmp_path):
    clip = bundled_clip("21", 4, 32)
    assert probe_video(write_video(clip, tmp_path / "m.mp4", fps=25, codec="mpeg4"))["codec"] == "mpeg4"
    frames, fps = read_video(BUNDLED_CLIPS / "21", max_frames=5)
    assert frames.shape == (5, 224, 224, 3) and fps is None


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="No video at"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoInputError, match="Cannot decode"):
        read_video(tmp_path / "junk.mp4")
    with pytest.raises(VideoInputError, match="even frame sizes"):
        write_video(torch.rand(2, 33, 32, 3), tmp_path / "odd.mp4")
    with pytest.raises(VideoInputError, match=r"\(F, H, W, 3\)"):
        write_video(torch.rand(2, 3, 32, 32), tmp_path / "layout.mp4")
    assert not (tmp_path / "odd.mp4").exists() and not (tmp_path / "layout.mp4").exists()
