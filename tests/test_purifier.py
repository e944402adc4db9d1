import pytest
import torch

from videopure_core.config import DDIM_INVERSION
from videopure_core import (
    ClassifierOutputError,
    Purifier,
    PurifyConfig,
    Runtime,
    VideoInputError,
    check_video,
    from_frames,
    to_frames,
)


class MeanColourClassifier(torch.nn.Module):
    """(B, 3, F, H, W) -> logits from the mean colour: deterministic, differentiable."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 4)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [-2.0, -2.0, -2.0]]))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(x.mean(dim=(2, 3, 4)))


def test_purify_shapes_labels_and_timings(tiny_purifier, video):
    c = tiny_purifier().purify(video)
    assert c.videos.shape == (7, 1, 3, 6, 32, 32)
    assert c.latents.shape == (7, 1, 4, 6, 4, 4)
    assert c.labels == (6, 5, 4, 3, 2, 1, 0)
    assert 0.0 <= float(c.videos.min()) and float(c.videos.max()) <= 1.0
    assert set(c.timings) == {"encode", "flow", "invert", "denoise", "decode"}


def test_same_input_gives_bit_identical_candidates(tiny_purifier, video):
    p = tiny_purifier()
    a, b = p.purify(video), p.purify(video)
    assert torch.equal(a.videos, b.videos) and torch.equal(a.latents, b.latents)


def test_batch_equals_one_by_one_and_videos_never_mix(tiny_purifier, video):
    p = tiny_purifier()
    other = torch.flip(video, dims=[2]).roll(5, dims=3)
    together = p.purify(torch.cat([video, other])).latents
    alone_a = p.purify(video).latents
    alone_b = p.purify(other).latents
    assert torch.allclose(together[:, 0], alone_a[:, 0], atol=1e-4)
    assert torch.allclose(together[:, 1], alone_b[:, 0], atol=1e-4)


def test_runs_inside_inference_mode_like_a_comfyui_node(tiny_purifier, video):
    p = tiny_purifier()
    expected = p.purify(video).latents
    with torch.inference_mode():
        got = p.purify(video.clone()).latents
    assert torch.equal(got, expected)


def test_unet_is_never_differentiated(tiny_purifier, video, tiny_models):
    unet = tiny_models[0]
    records = []
    hook = unet.register_forward_pre_hook(lambda m, args: records.append((torch.is_grad_enabled(), args[0].requires_grad)))
    try:
        tiny_purifier().purify(video)
    finally:
        hook.remove()
    assert len(records) == 12  # 6 inversion + 6 denoising calls: one UNet call per step, no CFG duplicate
    assert all(not grad and not req for grad, req in records)


def test_predict_votes_over_all_candidates(tiny_purifier, video):
    res = tiny_purifier().predict(video, MeanColourClassifier())
    assert res.logits.shape == (7, 1, 4) and res.predictions.shape == (7, 1)
    assert int(res.counts.sum()) == 7 and "classify" in res.timings
    assert res.winner.item() in range(4)


def test_table_iv_ablations_are_expressible_by_config(tiny_purifier, video):
    full = tiny_purifier().purify(video)
    single = tiny_purifier(PurifyConfig(single_candidate=0)).purify(video)
    assert single.labels == (0,) and torch.equal(single.latents[0], full.latents[-1])
    third = tiny_purifier(PurifyConfig(single_candidate=3)).purify(video)
    assert torch.equal(third.latents[0], full.latents[3])
    no_opt = tiny_purifier(PurifyConfig().with_options(guidance=False), flow=None).purify(video)
    assert no_opt.latents.shape[0] == 7 and not torch.allclose(no_opt.latents, full.latents)
    plain = tiny_purifier(PurifyConfig().with_options(**DDIM_INVERSION), flow=None).purify(video)
    assert not torch.allclose(plain.latents[0], no_opt.latents[-1])


def test_chunk_sizes_do_not_change_the_result(tiny_purifier, video):
    a = tiny_purifier().purify(video).videos
    b = tiny_purifier(runtime=Runtime(chunk=1)).purify(video).videos
    c = tiny_purifier(runtime=Runtime(chunk=5)).purify(video).videos
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(3, 6, 32), "expected \\(B, 3, F, H, W\\)"),
        (torch.rand(1, 1, 3, 6, 32, 32), "expected \\(B, 3, F, H, W\\)"),
        (torch.rand(1, 4, 6, 32, 32), "expected 3 \\(RGB\\)"),
        (torch.rand(1, 6, 32, 32, 3), "looks channels-last.*from_frames"),
        (torch.rand(1, 3, 1, 32, 32), "at least 2"),
        (torch.rand(1, 3, 6, 30, 32), "divisible by 8"),
        (torch.rand(1, 3, 6, 32, 36), "divisible by 8"),
        (torch.rand(1, 3, 6, 32, 32) * 255, "expected \\[0,1\\]"),
        (torch.rand(1, 3, 6, 32, 32) - 0.5, "expected \\[0,1\\]"),
        (torch.full((1, 3, 6, 32, 32), float("nan")), "NaN or Inf"),
        (torch.full((1, 3, 6, 32, 32), float("inf")), "NaN or Inf"),
        ((torch.rand(1, 3, 6, 32, 32) * 255).to(torch.uint8), "divide uint8 by 255"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_videos_get_errors_that_name_the_fix(tiny_purifier, bad, message):
    with pytest.raises(VideoInputError, match=message):
        tiny_purifier().purify(bad)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(6, 32, 32), "expected \\(F, H, W, 3\\)"),
        (torch.rand(6, 32, 32, 4), "expected 3 \\(RGB\\)"),
        (torch.rand(1, 3, 6, 32, 32), "looks channels-first"),
        (torch.rand(1, 30, 32, 3), "at least 2"),
        (torch.rand(6, 30, 32, 3), "divisible by 8.*24x32"),
    ],
)
def test_frames_at_the_edges_get_the_same_checks(bad, message):
    with pytest.raises(VideoInputError, match=message):
        from_frames(bad)


def test_classifier_with_wrong_output_shape_is_reported(tiny_purifier, video):
    class Tuple(torch.nn.Module):
        def forward(self, x):
            return (x.mean(dim=(2, 3, 4)),)

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.mean()

    p = tiny_purifier()
    with pytest.raises(ClassifierOutputError, match="returned tuple"):
        p.predict(video, Tuple())
    with pytest.raises(ClassifierOutputError, match=r"expected \(7, num_classes\)"):
        p.predict(video, Flat())


def test_missing_flow_model_is_reported(tiny_purifier, video):
    with pytest.raises(ValueError, match="optical-flow model"):
        tiny_purifier(flow=None).purify(video)


def test_check_video_accepts_batches_and_single_videos(video):
    assert check_video(video[0]).shape == (1, 3, 6, 32, 32)
    assert check_video(torch.cat([video, video])).shape == (2, 3, 6, 32, 32)
    frames = to_frames(video)
    assert frames.shape == (1, 6, 32, 32, 3) and torch.equal(from_frames(frames[0]), video)
    assert torch.equal(frames[0, 2, 5, 7], video[0, :, 2, 5, 7])  # frame 2, pixel (5, 7): its RGB


def test_with_config_shares_models(tiny_purifier):
    p = tiny_purifier()
    q = p.with_config(t_star=3)
    assert q.models is p.models and q.schedule.timesteps == (1, 21, 41) and q.config.t_star == 3
    assert isinstance(q, Purifier)
