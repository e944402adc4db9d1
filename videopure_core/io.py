"""Reading and writing videos as folders of frame PNGs (UCF-101 extraction style), and fitting them to size.

Frames are named by their integer index (`0.png`, `1.png`, ... or zero-padded); they are sorted numerically.
Videos are (F, H, W, 3) float32 in [0,1]. PNGs go through Pillow (a dependency of torchvision; torchvision's own
image codecs are deprecated since 0.29).

`atomic_path` / `atomic_write` are how the package writes files in place (a temporary name, then a rename).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .video import VideoInputError

_INDEX = re.compile(r"(\d+)")
BUNDLED_CLIPS = Path(__file__).parent / "data" / "ucf101"


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The PNG frames of a clip folder in numeric order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No clip folder at {folder.resolve()}.")
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".png"]
    if not files:
        raise VideoInputError(f"{folder.resolve()} holds no .png frames (expected 0.png, 1.png, ...).")

    def index(p: Path) -> tuple[int, str]:
        m = _INDEX.findall(p.stem)
        return (int(m[-1]) if m else -1, p.name)

    return sorted(files, key=index)


def read_frames(folder: str | os.PathLike, max_frames: int | None = None) -> Tensor:
    """A folder of frame PNGs -> (F, H, W, 3) float32 in [0,1]."""
    files = frame_files(folder)[:max_frames]
    frames = []
    for p in files:
        with Image.open(p) as im:
            frames.append(np.asarray(im.convert("RGB")))
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise VideoInputError(f"Frames in {Path(folder).resolve()} differ in size: {sorted(sizes)}.")
    return torch.from_numpy(np.stack(frames)).float() / 255.0


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path` to write to (an empty folder when `directory`); when the block ends
    without an error it is renamed to `path`, replacing what was there, otherwise it is removed. So readers see
    the old file or the new one, never a half-written one (a folder being replaced is missing for an instant).

        with atomic_path("model.safetensors") as tmp:
            save_file(tensors, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # unique: concurrent writers never collide
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if directory and path.is_dir():
            old = path.with_name(tmp.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """open(path, mode) for writing, atomically (atomic_path): the data is flushed to disk and renamed into place
    when the block ends without an error.

        with atomic_write(out / "report.md") as f:
            f.write(text)
    """
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def save_image_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """A PIL image -> a PNG file, written atomically (atomic_path)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def save_png(image: Tensor, path: str | os.PathLike) -> Path:
    """(H, W, 3) in [0,1] -> a PNG file, written atomically (save_image_png)."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return save_image_png(Image.fromarray(pixels), path)


def write_frames(video: Tensor, folder: str | os.PathLike) -> Path:
    """(F, H, W, 3) in [0,1] -> folder/0.png ... (F-1).png, written to a temporary folder and renamed into place."""
    with atomic_path(folder, directory=True) as tmp:
        for i, frame in enumerate(video):
            save_png(frame, tmp / f"{i}.png")
    return Path(folder)


def fit_video(video: Tensor, size: int | tuple[int, int] | None = None, multiple: int = 8) -> Tensor:
    """Resize (F, H, W, 3) so both sides are divisible by `multiple` (to `size` if given), antialiased bilinear."""
    f, h, w, _ = video.shape
    if size is None:
        size = (max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple))
    elif isinstance(size, int):
        size = (size, size)
    if tuple(size) == (h, w):
        return video
    x = video.permute(0, 3, 1, 2)
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def bundled_clip(name: str = "17", frames: int | None = None, size: int | None = None) -> Tensor:
    """One of the real UCF-101 clips shipped with the package (see data/ucf101/README.md): (F, H, W, 3)."""
    video = read_frames(BUNDLED_CLIPS / name, frames)
    return fit_video(video, size) if size else video
