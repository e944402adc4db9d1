"""The procedural world: layout, determinism, motion, ground-truth flow and frame PNGs."""

import dataclasses
import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from videopure_core.world.generator import (
    CLASSES,
    DIRECTION_VECTORS,
    DIRECTIONS,
    SHAPES,
    SPLIT_CAPACITY,
    SPLIT_SEEDS,
    WorldSpec,
    load_clip_pngs,
    make_batch,
    make_clip,
    make_split,
    render,
    sample_params,
    save_clip_pngs,
    split_seeds,
)

GENERATOR_FILE = Path(__file__).resolve().parents[1] / "videopure_core" / "world" / "generator.py"


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def backward_warp(image, flow):
    """Sample image (H, W, C) at (x + dx, y + dy) for every pixel (x, y); flow (H, W, 2) -> (H, W, C)."""
    h, w, _ = image.shape
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    gx = 2 * (x + flow[..., 0]) / (w - 1) - 1
    gy = 2 * (y + flow[..., 1]) / (h - 1) - 1
    grid = torch.stack([gx, gy], dim=-1)[None]
    out = F.grid_sample(image.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0].permute(1, 2, 0)


def dilate(mask, px: int):
    """Binary dilation of (..., H, W) bool masks by a (2 px + 1)^2 square."""
    m = mask.float().reshape(-1, 1, *mask.shape[-2:])
    return (F.max_pool2d(m, 2 * px + 1, stride=1, padding=px) > 0).reshape(mask.shape)


def erode(mask, px: int):
    return ~dilate(~mask, px)


# ---------------------------------------------------------------------------------------------------------------


def test_class_layout():
    assert len(CLASSES) == 12 == len(SHAPES) * len(DIRECTIONS)
    assert len(set(CLASSES)) == 12
    for s, shape in enumerate(SHAPES):
        for d, direction in enumerate(DIRECTIONS):
            assert CLASSES[s * 4 + d] == f"{shape}-{direction}"
    assert CLASSES[:4] == ("disk-left", "disk-right", "disk-up", "disk-down")
    with pytest.raises(ValueError):
        make_clip(12, 0)


def test_shapes_dtypes_and_range():
    clip = make_clip(5, 3)
    assert clip.video.shape == (16, 64, 64, 3) and clip.video.dtype == torch.float32
    assert clip.flow.shape == (15, 64, 64, 2) and clip.flow.dtype == torch.float32
    assert clip.label == 5 and isinstance(clip.label, int)
    assert 0 <= float(clip.video.min()) and float(clip.video.max()) <= 1
    assert torch.isfinite(clip.flow).all()

    small = WorldSpec(frames=5, size=48)
    other = make_clip(0, 0, small)
    assert other.video.shape == (5, 48, 48, 3) and other.flow.shape == (4, 48, 48, 2)


def test_spec_is_frozen_and_checked():
    spec = WorldSpec()
    assert (spec.frames, spec.size) == (16, 64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.frames = 8
    with pytest.raises(ValueError, match="need"):
        WorldSpec(radius=(8.0, 20.0))  # 2 * 21.25 + 37.5 px do not fit in 63
    with pytest.raises(ValueError):
        WorldSpec(max_drift=1.5)  # drift as large as the speed would make the direction ambiguous


def test_deterministic_in_process():
    a, b = make_clip(7, 11), make_clip(7, 11)
    assert torch.equal(a.video, b.video) and torch.equal(a.flow, b.flow)
    assert not torch.equal(a.video, make_clip(7, 12).video)
    assert not torch.equal(a.video, make_clip(6, 11).video)
    videos, flows, labels = make_split("val", 3)
    again = make_split("val", 3)
    assert torch.equal(videos, again.videos) and torch.equal(flows, again.flows) and torch.equal(labels, again.labels)


def test_deterministic_across_processes():
    # Load generator.py on its own in a fresh interpreter (fast: torch only) and compare digests.
    script = (
        "import importlib.util, sys, hashlib\n"
        f"spec = importlib.util.spec_from_file_location('world_generator', {str(GENERATOR_FILE)!r})\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['world_generator'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "clip = mod.make_clip(9, 424242)\n"
        "h = hashlib.sha256()\n"
        "for t in (clip.video, clip.flow): h.update(t.contiguous().numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    clip = make_clip(9, 424242)
    assert out.stdout.strip() == digest(clip.video, clip.flow)


def test_seed_fixes_scene_label_fixes_object():
    a, b = sample_params(0, 99), sample_params(10, 99)
    assert (a.shape, a.direction, b.shape, b.direction) == ("disk", "left", "plus", "up")
    for field in ("radius", "speed", "drift", "background_velocity", "object_colour", "background_colour", "waves"):
        assert getattr(a, field) == getattr(b, field), field
    assert sample_params(0, 100).object_colour != a.object_colour


def test_batch_and_split():
    videos, flows, labels = make_batch([3, 8], [5, 6])
    assert videos.shape == (2, 16, 64, 64, 3) and flows.shape == (2, 15, 64, 64, 2)
    assert labels.tolist() == [3, 8] and labels.dtype == torch.int64
    assert torch.equal(videos[1], make_clip(8, 6).video) and torch.equal(flows[0], make_clip(3, 5).flow)
    with pytest.raises(ValueError):
        make_batch([1, 2], [3])

    videos, flows, labels = make_split("train", 24)
    assert videos.shape == (24, 16, 64, 64, 3) and flows.shape == (24, 15, 64, 64, 2)
    assert torch.bincount(labels, minlength=12).tolist() == [2] * 12
    assert torch.equal(videos[13], make_clip(1, SPLIT_SEEDS["train"] + 13).video)
    test_videos = make_split("test", 3).videos
    assert not any(torch.equal(videos[i], test_videos[i]) for i in range(3))


def test_split_seed_ranges_are_disjoint():
    ranges = {}
    for name in ("train", "val", "test"):
        labels, seeds = split_seeds(name, 36)
        assert seeds == list(range(SPLIT_SEEDS[name], SPLIT_SEEDS[name] + 36))
        assert labels == [i % 12 for i in range(36)]
        ranges[name] = range(SPLIT_SEEDS[name], SPLIT_SEEDS[name] + SPLIT_CAPACITY)
    names = list(ranges)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = ranges[a], ranges[b]
            assert ra.stop <= rb.start or rb.stop <= ra.start, (a, b)
    with pytest.raises(ValueError):
        split_seeds("holdout", 12)
    with pytest.raises(ValueError):
        split_seeds("train", SPLIT_CAPACITY + 1)


def test_parameters_respect_the_spec():
    spec = WorldSpec()
    span = spec.frames - 1
    for seed in range(300):
        label = seed % 12
        p = sample_params(label, seed, spec)
        dx, dy = DIRECTION_VECTORS[label % 4]
        vx, vy = p.object_velocity
        along, across = vx * dx + vy * dy, abs(vx * dy - vy * dx)
        assert spec.speed[0] <= along <= spec.speed[1] and across <= spec.max_drift
        assert math.hypot(*p.background_velocity) <= spec.max_background_speed
        assert spec.radius[0] <= p.radius <= spec.radius[1]
        assert math.dist(p.object_colour, p.background_colour) >= spec.min_contrast
        for c0, v in zip(p.start, p.object_velocity):  # soft edge + margin inside [0, size - 1] at both ends
            for c in (c0, c0 + v * span):
                assert c - p.radius - spec.pad >= -1e-9 and c + p.radius + spec.pad <= spec.size - 1 + 1e-9


def test_object_stays_inside_the_frame():
    for label in range(12):
        _, _, mask = render(sample_params(label, 1000 + label))
        border = torch.cat([mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1]])
        assert float(border.max()) == 0.0
        assert float(mask.amax(dim=(1, 2)).min()) == 1.0  # and fully present in every frame


def object_pixels(video, params):
    """(F, H, W) bool: pixels nearer the object's base colour than the background's (from the video alone)."""
    obj = torch.tensor(params.object_colour, dtype=torch.float32)
    bg = torch.tensor(params.background_colour, dtype=torch.float32)
    return (video - obj).norm(dim=-1) < (video - bg).norm(dim=-1)


@pytest.mark.parametrize("label", range(12))
def test_object_moves_in_the_labelled_direction(label):
    spec = WorldSpec()
    for seed in (label, 500 + label):
        params = sample_params(label, seed)
        clip = make_clip(label, seed)
        pixels = object_pixels(clip.video, params)
        area = pixels.sum(dim=(1, 2)).float()
        assert float(area.min()) > 100  # the object is visible in every frame
        y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        cx = (pixels * x).sum(dim=(1, 2)) / area
        cy = (pixels * y).sum(dim=(1, 2)) / area
        velocity = torch.stack([cx[-1] - cx[0], cy[-1] - cy[0]]) / (spec.frames - 1)  # px/frame from the pixels
        dx, dy = DIRECTION_VECTORS[label % 4]
        along = float(velocity[0] * dx + velocity[1] * dy)
        across = float(velocity[0] * dy - velocity[1] * dx)
        assert spec.speed[0] - 0.1 <= along <= spec.speed[1] + 0.1, (CLASSES[label], along)
        assert abs(across) <= spec.max_drift + 0.1, (CLASSES[label], across)

        # The ground-truth flow on the object agrees with the motion seen in the pixels.
        inner = erode(pixels[:-1], 2)
        flow_on_object = clip.flow[inner].mean(dim=0)
        assert torch.allclose(flow_on_object, velocity, atol=0.1)


def test_flow_is_object_velocity_on_the_object_and_background_velocity_elsewhere():
    params = sample_params(4, 77)
    video, flow, mask = render(params)
    covered = mask[:-1] >= 0.5
    obj = torch.tensor(params.object_velocity, dtype=torch.float32)
    bg = torch.tensor(params.background_velocity, dtype=torch.float32)
    assert covered.any() and (~covered).any()
    assert torch.equal(flow[covered], obj.expand(int(covered.sum()), 2))
    assert torch.equal(flow[~covered], bg.expand(int((~covered).sum()), 2))


@pytest.mark.parametrize("label, seed", [(0, 1), (5, 2), (10, 3), (3, 4)])
def test_backward_warp_with_ground_truth_flow_reproduces_the_previous_frame(label, seed):
    params = sample_params(label, seed)
    video, flow, mask = render(params)
    present = mask > 0
    near_object = dilate(present[:-1] | present[1:], 3)  # boundary, occluded and uncovered pixels, with slack
    inner = erode(mask[:-1] >= 1, 3)  # well inside the object in frame i (and so in frame i+1, moved)
    valid = inner | ~near_object
    valid[:, :2], valid[:, -2:], valid[:, :, :2], valid[:, :, -2:] = False, False, False, False
    assert inner.sum() > 100 and valid.sum() > 0.5 * valid.numel()

    def error(candidate, where=valid):
        warped = torch.stack([backward_warp(video[i + 1], candidate[i]) for i in range(len(candidate))])
        return float((warped - video[:-1]).abs().mean(dim=-1)[where].mean())

    good = error(flow)
    assert good < 0.003, good
    assert error(torch.zeros_like(flow)) > 10 * good
    assert error(-flow) > 10 * good
    # On the object, the background's velocity is wrong: the object's own velocity is needed.
    background_everywhere = torch.tensor(params.background_velocity).expand_as(flow)
    on_object = error(flow, inner)
    assert on_object < 0.003
    assert error(background_everywhere, inner) > 10 * on_object


def test_png_round_trip_is_exact_after_8_bit_quantisation(tmp_path):
    video = make_clip(11, 21).video  # 16 frames: 10.png must come after 9.png, not after 1.png
    paths = save_clip_pngs(video, tmp_path / "clip")
    assert [p.name for p in paths] == [f"{i}.png" for i in range(16)]
    (tmp_path / "clip" / "notes.txt").write_text("ignored")
    loaded = load_clip_pngs(tmp_path / "clip")
    assert loaded.shape == video.shape and loaded.dtype == torch.float32
    assert torch.equal(loaded, (video * 255).round() / 255)
    with pytest.raises(FileNotFoundError):
        load_clip_pngs(tmp_path / "missing")
