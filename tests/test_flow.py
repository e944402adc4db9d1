import torch

from videopure_core import LatentFlow, RaftFlow, backward_warp, latent_flow, resize_flow, video_flow
from videopure_core.flow import consistency_mask
from videopure_core.io import bundled_clip


def smooth_image(h=24, w=32, c=3):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    chans = [torch.sin(xs / 3.0 + k) * torch.cos(ys / 4.0 - k) for k in range(c)]
    return torch.stack(chans).unsqueeze(0)


def test_zero_flow_is_identity():
    img = torch.randn(2, 4, 8, 8)
    out = backward_warp(img, torch.zeros(2, 2, 8, 8))
    assert torch.allclose(out, img, atol=1e-5)


def test_warp_reproduces_known_integer_translation_away_from_borders():
    frame_i = smooth_image()
    dx, dy = 3, -2
    # frame i+1: content moved by (dx, dy): pixel p of frame i appears at p + (dx, dy)
    frame_next = torch.roll(frame_i, shifts=(dy, dx), dims=(2, 3))
    flow = torch.zeros(1, 2, 24, 32)
    flow[:, 0], flow[:, 1] = dx, dy
    warped = backward_warp(frame_next, flow)
    inner = (slice(None), slice(None), slice(3, -3), slice(4, -4))
    assert torch.allclose(warped[inner], frame_i[inner], atol=1e-5)
    wrong = backward_warp(frame_next, -flow)
    assert (wrong[inner] - frame_i[inner]).abs().mean() > 0.1


def test_warp_pads_with_zeros_outside_the_frame():
    img = torch.ones(1, 1, 8, 8)
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = 100.0
    assert backward_warp(img, flow).abs().max() == 0


def test_resize_flow_scales_vectors_to_the_latent_grid():
    flow = torch.zeros(1, 3, 2, 64, 48)
    flow[:, :, 0], flow[:, :, 1] = 8.0, -4.0
    out = resize_flow(flow, (8, 6))
    assert out.shape == (1, 3, 2, 8, 6)
    assert torch.allclose(out[:, :, 0], torch.full_like(out[:, :, 0], 1.0))
    assert torch.allclose(out[:, :, 1], torch.full_like(out[:, :, 1], -0.5))


def test_video_flow_pairs_consecutive_frames_of_the_same_video_only():
    b, f = 2, 4
    video = torch.zeros(b, 3, f, 8, 8)
    for i in range(b):
        for j in range(f):
            video[i, 0, j] = i  # channel 0: which video
            video[i, 1, j] = j  # channel 1: which frame
    pairs = []

    def spy(a, c):
        pairs.extend(zip(a[:, 0, 0, 0].tolist(), a[:, 1, 0, 0].tolist(), c[:, 0, 0, 0].tolist(), c[:, 1, 0, 0].tolist()))
        return torch.zeros(a.shape[0], 2, 8, 8)

    fwd, bwd = video_flow(spy, video, chunk=2, backward=True)
    assert fwd.shape == (b, f - 1, 2, 8, 8) and bwd.shape == fwd.shape
    forward_pairs = pairs[: b * (f - 1)]
    assert all(v1 == v2 and j2 == j1 + 1 for v1, j1, v2, j2 in forward_pairs)
    assert sorted((v, j) for v, j, _, _ in forward_pairs) == [(v, j) for v in range(b) for j in range(f - 1)]


class _RecordingRaft(torch.nn.Module):
    """Stands in for torchvision RAFT: records what it is fed, returns flow (4, 0) at its input resolution."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, a, b, num_flow_updates=12):
        self.seen.append((tuple(a.shape), float(a.min()), float(a.max()), num_flow_updates))
        flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        flow[:, 0] = 4.0
        return [flow]


def test_raft_adapter_upsamples_small_frames_and_rescales_flow():
    raft = _RecordingRaft()
    fn = RaftFlow(raft, iters=7, input_range="-1,1")
    a, b = torch.rand(3, 3, 64, 48), torch.rand(3, 3, 64, 48)
    flow = fn(a, b)
    shape, lo, hi, iters = raft.seen[0]
    assert shape == (3, 3, 192, 144)  # scale ceil(128 / 48) = 3
    assert lo < -0.9 and hi > 0.9 and iters == 7
    assert flow.shape == (3, 2, 64, 48)
    assert torch.allclose(flow[:, 0], torch.full((3, 64, 48), 4.0 / 3))
    RaftFlow(raft, input_range="0,1")(a, b)
    assert raft.seen[-1][1] >= 0.0


def test_real_raft_small_on_a_small_real_clip_is_torchvisions_raft_resized():
    """The latent flow of a real clip through a real torchvision RAFT equals the raw calls: frames upsampled 2x to
    RAFT's 128 px minimum, mapped to [-1,1], the last of RAFT's refinements, brought back (resized, /2), then
    resized to the 8x8 latent grid with vectors /8."""
    import torch.nn.functional as F

    from videopure_core import load_raft

    torch.manual_seed(0)
    raft = load_raft("raft_small", None)
    clip = bundled_clip("17", frames=3, size=64)
    video = clip.permute(3, 0, 1, 2).unsqueeze(0)
    lf = latent_flow(RaftFlow(raft, iters=2), video, (8, 8))
    assert lf.forward.shape == (1, 2, 2, 8, 8)
    frames = F.interpolate(video[0].transpose(0, 1), size=(128, 128), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        predictions = raft(frames[:-1], frames[1:], num_flow_updates=2)
    assert len(predictions) == 2 and not torch.allclose(predictions[0], predictions[1])  # the last one is used
    pixels = F.interpolate(predictions[-1], size=(64, 64), mode="bilinear", align_corners=False) / 2
    expected = F.interpolate(pixels, size=(8, 8), mode="bilinear", align_corners=False) / 8
    assert float(expected.abs().max()) > 0.05  # a flow worth comparing (RAFT's initial weights, not trained)
    assert torch.allclose(lf.forward[0], expected, atol=1e-5)


def test_consistency_mask_keeps_consistent_and_drops_inconsistent_flow():
    fwd = torch.zeros(1, 2, 16, 16)
    fwd[:, 0] = 2.0
    bwd = -fwd
    assert consistency_mask(fwd, bwd)[..., :, :12].min() == 1.0
    assert consistency_mask(fwd, fwd).max() == 0.0  # going +2 then +2 again is inconsistent


def test_latent_flow_builds_backward_flow_and_masks_on_request():
    video = torch.rand(2, 3, 3, 32, 32)

    def shift(a, b):
        return torch.ones(a.shape[0], 2, 32, 32)

    lf = latent_flow(shift, video, (4, 4), backward=True, masks=True)
    assert isinstance(lf, LatentFlow)
    assert lf.forward.shape == lf.backward.shape == (2, 2, 2, 4, 4)
    assert lf.forward_mask.shape == lf.backward_mask.shape == (2, 2, 1, 4, 4)
    assert torch.allclose(lf.forward, torch.full_like(lf.forward, 1 / 8))
    plain = latent_flow(shift, video, (4, 4))
    assert plain.backward is None and plain.forward_mask is None


def test_resize_flow_scales_each_axis_by_its_own_factor():
    """(64, 48) -> (8, 12): rows shrink 8x, columns 4x, so a flow of (dx, dy) = (8, 8) pixels becomes (2, 1) on the new
    grid (issue 15, item 1: equal factors, as in the test above, cannot tell the axes apart)."""
    flow = torch.full((1, 2, 2, 64, 48), 8.0)
    out = resize_flow(flow, (8, 12))
    assert out.shape == (1, 2, 2, 8, 12)
    assert torch.equal(out[:, :, 0], torch.full((1, 2, 8, 12), 2.0))  # dx * 12 / 48
    assert torch.equal(out[:, :, 1], torch.full((1, 2, 8, 12), 1.0))  # dy * 8 / 64
    # a flow that varies along one axis: bilinear resizing (align_corners False) keeps a linear ramp linear, so
    # sampling a ramp dx = x (in input pixels) at output column j (centre at input x = (j + 0.5) * 4 - 0.5) and
    # scaling by 1/4 gives ((j + 0.5) * 4 - 0.5) / 4 away from the borders (which clamp)
    ramp = torch.zeros(1, 1, 2, 64, 48)
    ramp[:, :, 0] = torch.arange(48.0)
    ramp[:, :, 1] = torch.arange(64.0).view(64, 1)
    out = resize_flow(ramp, (8, 12))
    j, i = torch.arange(1, 11.0), torch.arange(1, 7.0)
    assert torch.allclose(out[0, 0, 0, 3, 1:11], ((j + 0.5) * 4 - 0.5) / 4, atol=1e-5)
    assert torch.allclose(out[0, 0, 1, 1:7, 5], ((i + 0.5) * 8 - 0.5) / 8, atol=1e-5)
