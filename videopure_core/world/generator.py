"""A seeded procedural video world: one textured shape moving over a slowly panning textured background.

This is the data source of the small "trained world" (a tiny VAE, video UNet, RAFT-small and classifier trained
on a CPU), so every clip is easy to model: all colours vary smoothly (low-frequency sinusoids), edges are
anti-aliased over ~1.5 px, and nothing is random per pixel.

The world
---------
A clip is `spec.frames` frames of `spec.size` x `spec.size` RGB. Pixel (row i, column j) samples the continuous
point (x=j, y=i): x grows to the right, y grows downwards, and frame t is rendered at time t (t = 0 .. F-1).

- Background: a base colour plus `spec.background_waves` planar sinusoids (random wavelength, orientation, phase
  and per-channel amplitude), a closed-form function of continuous (x, y). The whole pattern translates with a
  global velocity of random direction and magnitude <= `spec.max_background_speed` px/frame, so background
  motion says nothing about the class.
- Object: one shape (disk, square or plus), half-extent r px, an axis-aligned silhouette given by a signed
  distance function and anti-aliased by `mask = clamp(0.5 - sdf / spec.edge, 0, 1)`. Its colour is a random
  base colour at Euclidean RGB distance >= `spec.min_contrast` from the background's base colour, modulated by
  one smooth stripe pattern and a linear colour ramp along the stripes (so the texture varies in both directions
  and flow is observable inside the object), both fixed in object coordinates: they move rigidly with it.
  It moves at a constant velocity: `speed` px/frame in the class direction plus a perpendicular drift of at
  most `spec.max_drift` px/frame (at most ~14 degrees off axis with the defaults), and it starts where it
  stays fully inside the frame (soft edge included, plus `spec.margin` px) in every frame.
- Ground-truth forward flow: for frames t -> t+1, pixel (x, y) moves by the object velocity where the object
  covers it in frame t (mask >= 0.5, i.e. sdf <= 0) and by the background velocity elsewhere. Both layers
  translate exactly (they are closed-form functions of continuous coordinates), so the flow is exact away from
  the object's boundary and from the pixels it occludes or uncovers.

Classes
-------
12 classes = 3 shapes x 4 directions, `label = shape_index * 4 + direction_index` with

    SHAPES     = ("disk", "square", "plus")        shape_index 0..2
    DIRECTIONS = ("left", "right", "up", "down")   direction_index 0..3 (up = towards row 0)
    CLASSES    = ("disk-left", "disk-right", "disk-up", "disk-down", "square-left", ..., "plus-down")

so telling the classes apart needs both appearance (the silhouette) and motion (the direction).

Randomness
----------
Every clip is drawn from its own `torch.Generator().manual_seed(seed)` (never the global RNG) as a fixed
sequence of random scalars, then rendered in closed form, so the same (label, seed, spec) gives bit-identical
tensors in every call and process on CPU. The seed fixes the nuisance variables (colours, textures, size, speed,
drift, background motion, start position within the feasible range) and the label only picks the shape and the
direction: the same seed with two labels gives the same scene with a different object and motion.

Splits (`make_split`) use disjoint seed ranges: train = [0, 10**6), val = [10**6, 2*10**6),
test = [2*10**6, 3*10**6); clip i of a split has seed `SPLIT_SEEDS[name] + i` and label `i % 12`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

SHAPES: tuple[str, ...] = ("disk", "square", "plus")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
DIRECTION_VECTORS: tuple[tuple[float, float], ...] = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))  # (dx, dy)
CLASSES: tuple[str, ...] = tuple(f"{shape}-{direction}" for shape in SHAPES for direction in DIRECTIONS)

SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SPLIT_CAPACITY = 1_000_000  # seeds per split; a split of n clips uses SPLIT_SEEDS[name] + 0 .. n-1

_TAU = 2.0 * math.pi
_COLOUR_CANDIDATES = 16  # colour pairs drawn per clip; the first with enough contrast is used


@dataclass(frozen=True)
class WorldSpec:
    """Everything that defines the world; lengths in pixels, speeds in pixels per frame.

    The defaults give 16-frame 64x64 clips with objects 16-22 px across moving 15-37.5 px over the clip.
    `__post_init__` checks that every object fits in the frame for the fastest speed and largest size.
    """

    frames: int = 16  # F
    size: int = 64  # H = W
    radius: tuple[float, float] = (8.0, 11.0)  # object half-extent r (disk radius, half side of square and plus)
    plus_arm: float = 0.4  # half-width of the plus's arms as a fraction of r
    edge: float = 1.5  # width of the anti-aliasing ramp of the object's mask
    margin: float = 0.5  # gap kept between the object's soft edge and the frame border
    speed: tuple[float, float] = (1.0, 2.5)  # object speed along the class direction
    max_drift: float = 0.25  # largest |object speed| perpendicular to the class direction
    max_background_speed: float = 0.5  # largest |background velocity|, any direction
    background_waves: int = 3  # sinusoids summed into the background
    background_wavelength: tuple[float, float] = (24.0, 64.0)
    background_amplitude: float = 0.08  # largest per-channel amplitude of one background sinusoid
    stripe_wavelength: tuple[float, float] = (14.0, 24.0)  # object texture: one sinusoidal stripe pattern
    stripe_amplitude: float = 0.08  # largest per-channel amplitude of the stripes
    gradient_amplitude: float = 0.1  # object texture: a linear ramp along the stripes, largest change centre -> r
    colour_range: tuple[float, float] = (0.15, 0.85)  # base colours of object and background, per channel
    min_contrast: float = 0.45  # least Euclidean RGB distance between the object's and background's base colours

    def __post_init__(self):
        if self.frames < 2 or self.size < 8:
            raise ValueError(f"WorldSpec needs frames >= 2 and size >= 8, got {self.frames}, {self.size}.")
        if not (0 < self.radius[0] <= self.radius[1] and 0 < self.speed[0] <= self.speed[1]):
            raise ValueError(f"WorldSpec radius and speed ranges must be positive and ordered: {self}.")
        if not 0 <= self.max_drift < self.speed[0]:
            raise ValueError("max_drift must be below the slowest speed, or the direction becomes ambiguous.")
        if not 0 <= self.max_background_speed < self.speed[0]:
            raise ValueError("max_background_speed must be below the slowest object speed.")
        travel = (self.frames - 1) * self.speed[1]
        needed = 2 * (self.radius[1] + self.pad) + travel
        if needed > self.size - 1:
            raise ValueError(
                f"Objects up to r={self.radius[1]} moving {travel:g} px need {needed:g} px but frames span "
                f"{self.size - 1} px; lower radius[1] or speed[1], or raise size."
            )

    @property
    def pad(self) -> float:
        """Distance from the object's centre line beyond r that must stay inside the frame."""
        return self.edge / 2 + self.margin

    @property
    def num_classes(self) -> int:
        return len(CLASSES)


class Clip(NamedTuple):
    """One clip: video (F, H, W, 3) float32 in [0,1], flow (F-1, H, W, 2) float32 px as (dx, dy), label int."""

    video: Tensor
    flow: Tensor
    label: int


class Batch(NamedTuple):
    """Stacked clips: videos (N, F, H, W, 3) float32 in [0,1], flows (N, F-1, H, W, 2) float32, labels (N,) int64."""

    videos: Tensor
    flows: Tensor
    labels: Tensor


@dataclass(frozen=True)
class ClipParams:
    """The random scalars of one clip (all Python floats; positions and velocities in px, px/frame).

    The object's centre at frame t is `start + object_velocity * t`; the background pattern at frame t is the
    frame-0 pattern shifted by `background_velocity * t`.
    """

    label: int
    shape: str
    direction: str
    radius: float
    speed: float  # along the class direction (> 0)
    drift: float  # perpendicular to it (signed)
    object_velocity: tuple[float, float]  # (vx, vy)
    background_velocity: tuple[float, float]  # (ux, uy)
    start: tuple[float, float]  # object centre (x, y) at frame 0
    object_colour: tuple[float, float, float]
    background_colour: tuple[float, float, float]
    stripe: tuple[float, float, float]  # (wave number kx, wave number ky, phase) of the object's stripes, rad/px
    stripe_colour: tuple[float, float, float]  # per-channel amplitude of the stripes
    gradient_colour: tuple[float, float, float]  # per-channel colour change from the centre to r along the stripes
    waves: tuple[tuple[float, float, float], ...]  # background sinusoids: (kx, ky, phase) each
    wave_colours: tuple[tuple[float, float, float], ...]  # per-channel amplitude of each sinusoid


def class_name(label: int) -> str:
    """The class name of a label in 0..11, e.g. class_name(5) == "square-right"."""
    return CLASSES[label]


def split_label(label: int) -> tuple[int, int]:
    """label -> (shape_index in 0..2, direction_index in 0..3)."""
    if not 0 <= int(label) < len(CLASSES):
        raise ValueError(f"label must be in 0..{len(CLASSES) - 1}, got {label}.")
    return divmod(int(label), len(DIRECTIONS))


def _uniform(g: torch.Generator, low: float, high: float, n: int = 1) -> list[float]:
    """n floats uniform in [low, high) from g, in float64."""
    return (low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)).tolist()


def _amplitudes(g: torch.Generator, amplitude: float) -> tuple[float, float, float]:
    """Per-channel amplitudes of random sign and magnitude in [amplitude / 2, amplitude] (never near zero)."""
    return tuple(math.copysign(amplitude * (0.5 + abs(u) / 2), u) for u in _uniform(g, -1, 1, 3))


def _wave(g: torch.Generator, wavelength: tuple[float, float], amplitude: float):
    """A random planar sinusoid: ((kx, ky, phase) in rad/px and rad, per-channel amplitudes)."""
    length, angle, phase = _uniform(g, *wavelength)[0], _uniform(g, 0, _TAU)[0], _uniform(g, 0, _TAU)[0]
    k = _TAU / length
    return (k * math.cos(angle), k * math.sin(angle), phase), _amplitudes(g, amplitude)


def sample_params(label: int, seed: int, spec: WorldSpec = WorldSpec()) -> ClipParams:
    """Draw the scalars of clip (label, seed) from `torch.Generator().manual_seed(seed)`.

    The draws come in a fixed order and number whatever the label, so the label changes only the shape and the
    direction (and the start position, which must keep the object inside the frame along its path).
    """
    shape_index, direction_index = split_label(label)
    g = torch.Generator().manual_seed(int(seed))

    # Colours: the first of a fixed number of candidate pairs whose base colours are far enough apart.
    pairs = torch.rand(_COLOUR_CANDIDATES, 2, 3, generator=g, dtype=torch.float64)
    pairs = spec.colour_range[0] + (spec.colour_range[1] - spec.colour_range[0]) * pairs
    far = ((pairs[:, 0] - pairs[:, 1]).norm(dim=-1) >= spec.min_contrast).nonzero()
    if len(far):
        object_colour, background_colour = pairs[int(far[0])].tolist()
    else:  # practically never: move the object's colour half the range away, channel by channel
        background_colour = pairs[0, 1].tolist()
        object_colour = [c - 0.5 if c > 0.5 else c + 0.5 for c in background_colour]

    waves, wave_colours = [], []
    for _ in range(spec.background_waves):
        wave, colour = _wave(g, spec.background_wavelength, spec.background_amplitude)
        waves.append(wave)
        wave_colours.append(colour)
    stripe, stripe_colour = _wave(g, spec.stripe_wavelength, spec.stripe_amplitude)
    gradient_colour = _amplitudes(g, spec.gradient_amplitude)  # along the stripes, so the texture is 2-D

    radius = _uniform(g, *spec.radius)[0]
    speed = _uniform(g, *spec.speed)[0]
    drift = _uniform(g, -spec.max_drift, spec.max_drift)[0]
    bg_angle, bg_fraction = _uniform(g, 0, _TAU)[0], _uniform(g, 0, 1)[0]
    bg_speed = spec.max_background_speed * math.sqrt(bg_fraction)  # uniform over the disk of velocities
    background_velocity = (bg_speed * math.cos(bg_angle), bg_speed * math.sin(bg_angle))

    dx, dy = DIRECTION_VECTORS[direction_index]
    velocity = (speed * dx - drift * dy, speed * dy + drift * dx)  # along + perpendicular (rotated by 90 deg)

    # Start: uniform over the centres that keep [centre - r - pad, centre + r + pad] inside [0, size - 1] at t = 0
    # and at t = F - 1 (hence at every frame in between, the motion being linear).
    span = spec.frames - 1
    start = []
    for v, u in zip(velocity, _uniform(g, 0, 1, 2)):
        low = radius + spec.pad - min(0.0, v * span)
        high = spec.size - 1 - radius - spec.pad - max(0.0, v * span)
        start.append(low + (high - low) * u)

    return ClipParams(
        label=int(label),
        shape=SHAPES[shape_index],
        direction=DIRECTIONS[direction_index],
        radius=radius,
        speed=speed,
        drift=drift,
        object_velocity=velocity,
        background_velocity=background_velocity,
        start=(start[0], start[1]),
        object_colour=tuple(object_colour),
        background_colour=tuple(background_colour),
        stripe=stripe,
        stripe_colour=stripe_colour,
        gradient_colour=gradient_colour,
        waves=tuple(waves),
        wave_colours=tuple(wave_colours),
    )


def _box_sdf(px: Tensor, py: Tensor, hx: float, hy: float) -> Tensor:
    """Signed distance to an axis-aligned box of half-sizes (hx, hy) centred at 0 (negative inside)."""
    qx, qy = px.abs() - hx, py.abs() - hy
    outside = torch.hypot(qx.clamp(min=0), qy.clamp(min=0))
    inside = torch.maximum(qx, qy).clamp(max=0)
    return outside + inside


def shape_sdf(shape: str, px: Tensor, py: Tensor, radius: float, plus_arm: float = WorldSpec.plus_arm) -> Tensor:
    """Signed distance (px, negative inside) of a shape of half-extent `radius` centred at the origin.

    px, py: any (matching) shape, coordinates relative to the object's centre. Every shape lies within
    |px| <= radius and |py| <= radius, so its axis-aligned extent is the same for all three.
    """
    if shape == "disk":
        return torch.hypot(px, py) - radius
    if shape == "square":
        return _box_sdf(px, py, radius, radius)
    if shape == "plus":
        arm = plus_arm * radius
        return torch.minimum(_box_sdf(px, py, radius, arm), _box_sdf(px, py, arm, radius))
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


def _sinusoid(x: Tensor, y: Tensor, wave: tuple[float, float, float]) -> Tensor:
    kx, ky, phase = wave
    return torch.sin(kx * x + ky * y + phase)


def render(params: ClipParams, spec: WorldSpec = WorldSpec()) -> tuple[Tensor, Tensor, Tensor]:
    """Render a clip in closed form, vectorised over frames (computed in float64, returned as float32).

    Returns video (F, H, W, 3) in [0,1], flow (F-1, H, W, 2) in px as (dx, dy), and the object's coverage
    mask (F, H, W) in [0,1] (the anti-aliased alpha; >= 0.5 exactly where the signed distance is <= 0).
    """
    f64 = torch.float64
    t = torch.arange(spec.frames, dtype=f64).view(-1, 1, 1)  # (F, 1, 1)
    y = torch.arange(spec.size, dtype=f64).view(1, -1, 1)  # (1, H, 1)
    x = torch.arange(spec.size, dtype=f64).view(1, 1, -1)  # (1, 1, W)

    # Background: the frame-0 pattern evaluated at (x, y) - u t.
    ux, uy = params.background_velocity
    bx, by = x - ux * t, y - uy * t  # (F, 1, W), (F, H, 1)
    background = torch.tensor(params.background_colour, dtype=f64).expand(spec.frames, spec.size, spec.size, 3)
    for wave, colour in zip(params.waves, params.wave_colours):
        background = background + _sinusoid(bx, by, wave).unsqueeze(-1) * torch.tensor(colour, dtype=f64)

    # Object: coordinates relative to its centre at each frame.
    vx, vy = params.object_velocity
    px = (x - params.start[0] - vx * t).expand(spec.frames, spec.size, spec.size)  # (F, H, W)
    py = (y - params.start[1] - vy * t).expand(spec.frames, spec.size, spec.size)
    sdf = shape_sdf(params.shape, px, py, params.radius, spec.plus_arm)
    mask = (0.5 - sdf / spec.edge).clamp(0, 1)  # (F, H, W)
    kx, ky, _ = params.stripe
    along = (kx * py - ky * px) / (math.hypot(kx, ky) * params.radius)  # (F, H, W): -1 .. 1 across the object
    foreground = (
        torch.tensor(params.object_colour, dtype=f64)
        + _sinusoid(px, py, params.stripe).unsqueeze(-1) * torch.tensor(params.stripe_colour, dtype=f64)
        + along.unsqueeze(-1) * torch.tensor(params.gradient_colour, dtype=f64)
    )  # (F, H, W, 3)

    video = (background + mask.unsqueeze(-1) * (foreground - background)).clamp(0, 1)

    covered = (sdf[:-1] <= 0).unsqueeze(-1)  # (F-1, H, W, 1): mask >= 0.5 in frame t
    flow = torch.where(covered, torch.tensor([vx, vy], dtype=f64), torch.tensor([ux, uy], dtype=f64))
    return video.float(), flow.float(), mask.float()


def make_clip(label: int, seed: int, spec: WorldSpec = WorldSpec()) -> Clip:
    """Clip `seed` of class `label` (0..11): video (F, H, W, 3) float32 in [0,1], flow (F-1, H, W, 2) float32."""
    video, flow, _ = render(sample_params(label, seed, spec), spec)
    return Clip(video, flow, int(label))


def make_batch(labels: Sequence[int], seeds: Sequence[int], spec: WorldSpec = WorldSpec()) -> Batch:
    """Clips (labels[i], seeds[i]) stacked: videos (N, F, H, W, 3), flows (N, F-1, H, W, 2), labels (N,) int64."""
    labels, seeds = [int(v) for v in labels], [int(v) for v in seeds]
    if len(labels) != len(seeds):
        raise ValueError(f"make_batch got {len(labels)} labels but {len(seeds)} seeds.")
    n, f, s = len(labels), spec.frames, spec.size
    videos, flows = torch.empty(n, f, s, s, 3), torch.empty(n, f - 1, s, s, 2)  # filled in place: no stacking copy
    for i, (label, seed) in enumerate(zip(labels, seeds)):
        videos[i], flows[i], _ = make_clip(label, seed, spec)
    return Batch(videos, flows, torch.tensor(labels, dtype=torch.int64))


def split_seeds(name: str, n: int) -> tuple[list[int], list[int]]:
    """(labels, seeds) of the first n clips of split "train", "val" or "test": label i % 12, seed base + i."""
    if name not in SPLIT_SEEDS:
        raise ValueError(f"Unknown split {name!r}; expected one of {tuple(SPLIT_SEEDS)}.")
    if not 0 <= n <= SPLIT_CAPACITY:
        raise ValueError(f"A split holds at most {SPLIT_CAPACITY} clips, asked for {n}.")
    base = SPLIT_SEEDS[name]
    return [i % len(CLASSES) for i in range(n)], [base + i for i in range(n)]


def make_split(name: str, n: int, spec: WorldSpec = WorldSpec()) -> Batch:
    """The first n clips of a split: videos (n, F, H, W, 3), flows (n, F-1, H, W, 2), labels (n,) int64.

    Labels cycle 0, 1, ..., 11, 0, 1, ... (exactly n/12 per class when 12 divides n); seeds are
    SPLIT_SEEDS[name] + i, disjoint between "train", "val" and "test". Memory: about 1.3 MB per default clip
    (0.8 MB video + 0.5 MB flow).
    """
    return make_batch(*split_seeds(name, n), spec)


# --------------------------------------------------------------------------------------------------------------
# Frame PNGs (UCF-101 extraction style: 0.png, 1.png, ... sorted numerically).

_INTEGER_PNG = re.compile(r"^(\d+)\.png$", re.IGNORECASE)


def save_clip_pngs(video: Tensor, folder: str | os.PathLike) -> list[Path]:
    """Write video (F, H, W, 3) in [0,1] as folder/0.png ... folder/{F-1}.png (8-bit RGB, rounded); returns paths.

    Pillow writes each frame atomically (`io.save_png`); the folder is created if needed and existing files of the
    same names are overwritten.
    """
    from ..io import save_png

    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"save_clip_pngs expects (F, H, W, 3), got {tuple(video.shape)}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [save_png(frame, folder / f"{i}.png") for i, frame in enumerate(video)]


def load_clip_pngs(folder: str | os.PathLike) -> Tensor:
    """Read folder/<integer>.png frames in numeric order (0, 1, ..., 10; zero padding allowed) -> (F, H, W, 3).

    Returns float32 in [0,1] (multiples of 1/255), read with Pillow. Other files are ignored; raises
    FileNotFoundError if the folder has no integer-named PNG and ValueError if the frames differ in size.
    """
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    indexed = sorted(
        (int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else ()) if (m := _INTEGER_PNG.match(p.name))
    )
    if not indexed:
        raise FileNotFoundError(f"No integer-named frame PNGs (0.png, 1.png, ...) in {folder.resolve()}.")
    frames = []
    for _, p in indexed:
        with Image.open(p) as image:
            frames.append(np.asarray(image.convert("RGB")))  # (H, W, 3) uint8
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise ValueError(f"Frames in {folder.resolve()} differ in size: {sorted(sizes)}.")
    return torch.from_numpy(np.stack(frames)).float() / 255.0
