"""Video files in and out: read a video file (PyAV) or a folder of frame PNGs, write H.264 mp4 files.

    frames, fps = read_video("clip.mp4")                  # (F, H, W, 3) float32 in [0,1]; fps from the file
    frames, fps = read_video("clip_folder/", max_frames=16)   # frame PNGs (io.read_frames); fps None
    write_video(frames, "purified.mp4", fps=8)            # atomically: a temporary file, then a rename

PyAV (`pip install av`, or `videopure[video]`) is needed for video files only; its wheels bundle FFmpeg with
libx264, so mp4 files are H.264 (yuv420p, the format every player takes), or MPEG-4 part 2 where a PyAV build lacks
libx264. Frames are (F, H, W, 3) at the edges, as in io.py.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .io import atomic_path, read_frames
from .video import VideoInputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
CODECS = ("libx264", "mpeg4")  # the first this PyAV build can encode is used


def _import_av(path: str | os.PathLike):
    try:
        import av
    except ImportError:
        raise ImportError(
            f"{path} is a video file, which needs PyAV: `pip install av` (or `pip install videopure[video]`); or "
            f"extract its frames to PNGs (0.png, 1.png, ...) and pass the folder."
        ) from None
    return av


def read_video(path: str | os.PathLike, max_frames: Optional[int] = None) -> tuple[Tensor, Optional[float]]:
    """A video file or a folder of frame PNGs -> (frames (F, H, W, 3) float32 in [0,1], frames per second or None).

    Raises FileNotFoundError for a missing path and VideoInputError for a file that holds no decodable video."""
    path = Path(path)
    if path.is_dir():
        return read_frames(path, max_frames), None
    if not path.exists():
        raise FileNotFoundError(f"No video at {path.resolve()}: pass a video file (.mp4, .avi, ...) or a folder of "
                                f"frame PNGs (0.png, 1.png, ...).")
    av = _import_av(path)
    frames, fps = [], None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoInputError(f"{path.resolve()} holds no video stream.")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as err:
        raise VideoInputError(f"Cannot decode {path.resolve()} as a video ({err}). Pass a video file PyAV/FFmpeg "
                              f"reads (mp4, avi, mov, mkv, webm) or a folder of frame PNGs.") from err
    if not frames:
        raise VideoInputError(f"No video frames could be decoded from {path.resolve()}.")
    return torch.from_numpy(np.stack(frames)).float() / 255.0, fps


def video_codec() -> str:
    """The codec write_video uses: libx264 (H.264) when this PyAV build has it, else mpeg4."""
    av = _import_av("an mp4 file")
    for name in CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001  (PyAV raises UnknownCodecError / ValueError by version)
            continue
    raise RuntimeError(f"This PyAV build can encode none of {', '.join(CODECS)}; reinstall av from PyPI.")


def write_video(frames: Tensor, path: str | os.PathLike, fps: float = 8.0, codec: Optional[str] = None,
                crf: int = 18) -> Path:
    """Frames (F, H, W, 3) in [0,1] -> an mp4 file (H.264 yuv420p, constant quality `crf`; 18 is visually
    lossless), written to a temporary file and renamed into place. H and W must be even (yuv420p)."""
    av = _import_av(path)
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise VideoInputError(f"write_video takes frames (F, H, W, 3), got shape {tuple(frames.shape)}.")
    f, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise VideoInputError(f"mp4 (yuv420p) needs even frame sizes, got {h}x{w}.")
    codec = codec or video_codec()
    pixels = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "medium"}
            else:
                stream.bit_rate = max(200_000, int(w * h * float(rate) * 0.5))
            for image in pixels:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return Path(path)


def probe_video(path: str | os.PathLike) -> dict:
    """What a player sees in a video file: codec, frames decoded, size, frames per second, duration in seconds."""
    av = _import_av(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec, w, h = stream.codec_context.name, stream.codec_context.width, stream.codec_context.height
        fps = float(stream.average_rate) if stream.average_rate else None
        frames = sum(1 for _ in container.decode(stream))
    return {"codec": codec, "frames": frames, "width": w, "height": h, "fps": fps,
            "seconds": round(frames / fps, 3) if fps else None}
