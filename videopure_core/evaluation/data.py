"""Clips to evaluate on: the generated small world, folders of frame PNGs, or video files.

`load_dataset(spec)` takes
- "world" or "world:<split>" (default split "test"): the generator's clips, labels and class names
  (`videopure_core.world.generator.make_split`);
- a folder laid out like a UCF-101 extraction, one folder per label:
      root/<label>/0.png, 1.png, ...            one clip per label folder (like videopure_core/data/ucf101)
      root/<label>/<clip>/0.png, ...            several clips per label
      root/<label>/<clip>.mp4 (.avi .mkv .webm .mov .mpg)   video files, decoded with PyAV (`pip install av`)
  where <label> is a class index ("17") or a class name found in the class list.
Clips are read lazily, cut to their first `frames` frames and resized to `size` (both optional).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..io import fit_video, frame_files, read_frames
from ..video import from_frames

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Clip:
    """One labelled clip; `load()` returns the video (3, F, H, W) float32 in [0,1]."""

    id: str
    label: int
    load: Callable[[], Tensor]


@dataclass(frozen=True)
class Dataset:
    clips: tuple[Clip, ...]
    classes: Optional[tuple[str, ...]]
    name: str

    def __len__(self) -> int:
        return len(self.clips)


def read_video_file(path: str | os.PathLike, max_frames: int | None = None) -> Tensor:
    """A video file -> (F, H, W, 3) float32 in [0,1], decoded with PyAV (an optional dependency)."""
    try:
        import av
    except ImportError:
        raise ImportError(
            f"Reading {path} needs PyAV: `pip install av` (or `pip install videopure[video]`), or extract the frames "
            f"to PNGs (0.png, 1.png, ...) and pass the folder."
        ) from None
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"No video frames could be decoded from {Path(path).resolve()}.")
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def _prepare(video: Tensor, frames: int | None, size: int | None, clip_id: str) -> Tensor:
    """Frames (F, H, W, 3) -> the clip's video (3, F, H, W): cut to `frames`, resized to `size`."""
    if frames is not None:
        if video.shape[0] < frames:
            raise ValueError(f"Clip {clip_id} has {video.shape[0]} frames, fewer than --frames {frames}; pass fewer frames.")
        video = video[:frames]
    return from_frames(fit_video(video, size), name=f"clip {clip_id}")[0]


def world_dataset(n: int, split: str = "test", frames: int | None = None, size: int | None = None) -> Dataset:
    """The first n clips of a generator split (labels cycle through the 12 classes)."""
    from ..world.generator import CLASSES, make_split

    if n < 1:
        raise ValueError(f"Need at least one clip, got --clips {n}.")
    videos, _, labels = make_split(split, n)
    clips = tuple(
        Clip(f"world-{split}-{i:05d}", int(labels[i]), (lambda v=videos[i], i=i: _prepare(v, frames, size, f"world-{split}-{i:05d}")))
        for i in range(n)
    )
    return Dataset(clips, CLASSES, f"world:{split}")


def _label_of(name: str, classes: Optional[Sequence[str]], where: Path) -> int:
    if name.isdigit():
        return int(name)
    if classes and name in classes:
        return list(classes).index(name)
    raise ValueError(
        f"Cannot tell the label of {where}: its folder name {name!r} is neither a class index nor one of the "
        f"classes{' (' + ', '.join(list(classes)[:5]) + ', ...)' if classes else ''}. Name label folders by index, or "
        f"pass --classes with one class name per line."
    )


def _has_pngs(folder: Path) -> bool:
    return any(p.suffix.lower() == ".png" for p in folder.iterdir())


def folder_dataset(
    root: str | os.PathLike, classes: Optional[Sequence[str]] = None, frames: int | None = None, size: int | None = None
) -> Dataset:
    """Clips under root/<label>/ (module docstring), in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No data folder at {root.resolve()}; pass a folder of label folders or 'world'.")
    clips = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label = _label_of(label_dir.name, classes, label_dir)
        if _has_pngs(label_dir):
            clips.append(Clip(label_dir.name, label, _png_loader(label_dir, frames, size, label_dir.name)))
            continue
        for item in sorted(label_dir.iterdir()):
            clip_id = f"{label_dir.name}/{item.name}"
            if item.is_dir() and _has_pngs(item):
                clips.append(Clip(clip_id, label, _png_loader(item, frames, size, clip_id)))
            elif item.is_file() and item.suffix.lower() in VIDEO_SUFFIXES:
                clips.append(Clip(clip_id, label, _file_loader(item, frames, size, clip_id)))
    if not clips:
        raise ValueError(
            f"Found no clips under {root.resolve()}: expected <label>/ folders of frame PNGs, <label>/<clip>/ folders "
            f"or <label>/<clip>.mp4 video files."
        )
    return Dataset(tuple(clips), tuple(classes) if classes else None, str(root))


def _png_loader(folder: Path, frames, size, clip_id):
    frame_files(folder)  # fail early on empty folders
    return lambda: _prepare(read_frames(folder, frames), frames, size, clip_id)


def _file_loader(path: Path, frames, size, clip_id):
    return lambda: _prepare(read_video_file(path, frames), frames, size, clip_id)


def read_classes(path: str | os.PathLike) -> tuple[str, ...]:
    """A class list file: one class name per line (blank lines ignored)."""
    return tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())


def load_dataset(
    spec: str, clips: int | None = None, frames: int | None = None, size: int | None = None,
    classes: Optional[Sequence[str]] = None,
) -> Dataset:
    """'world[:split]' or a folder path -> Dataset of at most `clips` clips."""
    if spec == "world" or spec.startswith("world:"):
        split = spec.split(":", 1)[1] if ":" in spec else "test"
        return world_dataset(clips or 12, split, frames, size)
    data = folder_dataset(spec, classes, frames, size)
    if clips is not None:
        data = Dataset(data.clips[:clips], data.classes, data.name)
    return data
