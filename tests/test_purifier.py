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
    vote,
)
from videopure_core.pipeline import Candidates


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
    p, classifier = tiny_purifier(), MeanColourClassifier()
    res = p.predict(video, classifier)
    assert res.logits.shape == (7, 1, 4) and res.predictions.shape == (7, 1)
    assert int(res.counts.sum()) == 7 and "classify" in res.timings
    with torch.no_grad():  # the classifier on each of the 7 candidates (purification is deterministic)
        expected = classifier(p.purify(video).videos[:, 0])
    assert torch.allclose(res.logits[:, 0], expected, atol=1e-6)
    assert torch.equal(res.predictions[:, 0], expected.argmax(-1))
    counts = torch.bincount(expected.argmax(-1), minlength=4)
    assert torch.equal(res.counts[0], counts)
    assert int(res.winner) == int((counts == counts.max()).nonzero()[0])  # the majority, ties to the smallest class


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


# --- issue 15, item 2: votes over a batch of different videos (B >= 2) and several candidates (K >= 2) ---------------


def _coloured_candidates(table, frames=2, size=8):
    """Candidates whose video (k, b) is one flat colour that MeanColourClassifier gives class table[k][b]; every
    (k, b) gets its own brightness, so no two candidates have the same logits."""
    k, b = len(table), len(table[0])
    videos = torch.full((k, b, 3, frames, size, size), 0.05)
    for i in range(k):
        for j in range(b):
            videos[i, j, table[i][j]] = 0.5 + 0.1 * (i * b + j)
    return Candidates(videos, None, tuple(range(k - 1, -1, -1)))


def test_vote_over_a_batch_classifies_candidate_k_of_video_b_and_votes_per_video(tiny_purifier):
    """logits[k, b] is the classifier on candidate k of video b, and each video's vote is its own: the batch result
    equals voting each video alone. K=3 candidates x B=2 videos with batch_size=4 (a classifier call spans both
    videos); every (k, b) has its own logits, and the votes are chosen so that reading the (K, B) predictions in
    the wrong order (e.g. reshaped instead of transposed) changes the counts."""
    table = [[0, 2], [0, 2], [1, 1]]  # video 0 votes 0, 0, 1 -> 0; video 1 votes 2, 2, 1 -> 2
    candidates, classifier = _coloured_candidates(table), MeanColourClassifier()
    res = tiny_purifier().vote(candidates, classifier, batch_size=4)
    assert res.logits.shape == (3, 2, 4)
    for k in range(3):
        for b in range(2):
            with torch.no_grad():
                alone = classifier(candidates.videos[k, b : b + 1])[0]
            assert torch.allclose(res.logits[k, b], alone, atol=1e-6), (k, b)
    assert res.predictions.tolist() == table
    assert res.counts.tolist() == [[2, 1, 0, 0], [0, 1, 2, 0]] and res.winner.tolist() == [0, 2]
    for b in range(2):  # one video at a time: its own candidates, its own vote
        one = tiny_purifier().vote(Candidates(candidates.videos[:, b : b + 1], None, candidates.labels), classifier)
        assert torch.equal(one.logits[:, 0], res.logits[:, b])
        assert torch.equal(one.counts[0], res.counts[b]) and int(one.winner) == int(res.winner[b])
        assert torch.equal(vote(res.logits[:, b : b + 1], candidates.labels).winner, one.winner)
    rows = res.table(["a", "b", "c", "d"], video=1).splitlines()  # the table of video 1 is video 1's
    assert [r.split()[1] for r in rows[1:4]] == ["c", "c", "b"] and rows[4].split()[1:] == ["b:", "1,", "c:", "2"]
    assert rows[5].split() == ["winner", "c"]


def test_predict_on_a_batch_equals_predict_on_each_video_alone(tiny_purifier, video):
    """B=2 different videos through purify + vote: candidate k of video b, its logits and each video's vote are those
    of purifying and voting video b alone (up to the UNet's batched numerics, 1e-4, as in the batch test above)."""
    p = tiny_purifier()
    other = torch.flip(video, dims=[2]).roll(5, dims=3)
    classifier = MeanColourClassifier()
    batch = torch.cat([video, other])
    together = p.predict(batch, classifier, batch_size=3)  # 14 candidate videos, 3 per classifier call
    together_candidates = p.purify(batch)  # the same candidates (purification is deterministic)
    assert together.logits.shape == (7, 2, 4)
    with torch.no_grad():  # logits[k, b] is the classifier on the batch's own candidate (k, b)
        direct = classifier(together_candidates.videos.flatten(0, 1)).view(7, 2, 4)
    assert torch.allclose(together.logits, direct, atol=1e-6)
    for b, single in enumerate((video, other)):
        alone_candidates = p.purify(single)
        alone = p.vote(alone_candidates, classifier)
        assert torch.allclose(together_candidates.videos[:, b], alone_candidates.videos[:, 0], atol=1e-4)
        assert torch.allclose(together.logits[:, b], alone.logits[:, 0], atol=1e-4)
        assert torch.equal(together.predictions[:, b], alone.predictions[:, 0])
        assert torch.equal(together.counts[b], alone.counts[0]) and int(together.winner[b]) == int(alone.winner)
    # the comparison can tell candidates and videos apart: any two (k, b) differ far beyond the 1e-4 tolerance
    flat = together.logits.flatten(0, 1)
    gaps = (flat[:, None] - flat[None]).abs().amax(-1) + torch.eye(len(flat)) * 1e9
    assert float(gaps.min()) > 1e-3
    pixel_gaps = (together_candidates.videos.flatten(0, 1)[:, None] - together_candidates.videos.flatten(0, 1)[None])
    assert float((pixel_gaps.abs().flatten(2).amax(-1) + torch.eye(14) * 1e9).min()) > 1e-3
