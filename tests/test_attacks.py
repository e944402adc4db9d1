"""Attacks on tiny models: PGD, BPDA, EOT, TT, exact/surrogate dispatch, the full gradient, sanity checks."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from videopure_core import PurifyConfig
from videopure_core.attacks import (
    SanityWarning,
    ZeroGradientCheck,
    bpda_grad_fn,
    check_eot,
    classifier_grad_fn,
    defence_grad_fn,
    eot_grad_fn,
    full_gradient_grad_fn,
    pgd,
    random_start_point,
    tt_grad_fn,
    tt_weights,
)
from videopure_core.defences import Defence, NoDefence, TemporalShuffle, VideoPureDefence, WaveletDenoise, one_candidate
from videopure_core.pipeline import Candidates


def smooth_classifier(seed: int = 0, classes: int = 5) -> nn.Module:
    """A small smooth (tanh) video classifier, (B, 3, F, H, W) -> (B, classes); smooth so finite differences work."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, classes)
    ).eval().requires_grad_(False)


@pytest.fixture
def clips():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 4, 16, 16, generator=g), torch.tensor([1, 3])


class Candidates3(Defence):
    """Deterministic toy defence with three different candidates."""

    name = "three"
    gradient = "bpda"

    def _candidates(self, video, generator, grad, hooks):
        return Candidates(torch.stack([video, 1 - video, video.flip(-1)]), None, (2, 1, 0))


class NoisyDefence(Defence):
    """Stochastic toy defence: adds generator noise; a surrogate squares the input."""

    name = "noisy"
    gradient = "surrogate"
    stochastic = True

    def _candidates(self, video, generator, grad, hooks):
        noise = torch.randn(video.shape, generator=generator) * 0.05
        return one_candidate((video + noise).clamp(0, 1))

    def surrogate(self, video, generator=None):
        return (video * video).unsqueeze(0)


def ce(classifier, x, y):
    return F.cross_entropy(classifier(x), y, reduction="none")


@pytest.mark.parametrize("norm,eps,step", [("linf", 4 / 255, 2 / 255), ("l2", 0.5, 0.2)])
def test_pgd_raises_loss_and_stays_in_ball_and_range(clips, norm, eps, step):
    x, y = clips
    x[0, :, 0, :2, :2] = 0.0  # pixels at the range bounds must stay inside [0,1]
    x[1, :, 1, :2, :2] = 1.0
    classifier = smooth_classifier()
    g = torch.Generator().manual_seed(0)
    x_adv, losses = pgd(classifier_grad_fn(classifier), x, y, eps, step, steps=4, norm=norm, generator=g)
    clean, attacked = ce(classifier, x, y), ce(classifier, x_adv, y)
    assert losses.shape == (4, 2)
    assert (attacked > clean + 1e-4).all(), (clean, attacked)
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert float(delta.abs().max()) <= eps + 1e-6
        assert float(delta.abs().max()) > eps * 0.9  # sign steps reach the boundary
    else:
        assert (delta.norm(dim=1) <= eps + 1e-5).all()
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_pgd_init_replaces_random_start(clips):
    x, y = clips
    start = random_start_point(x, 4 / 255, "linf", torch.Generator().manual_seed(3))
    a, _ = pgd(classifier_grad_fn(smooth_classifier()), x, y, steps=1, init=start)
    b, _ = pgd(classifier_grad_fn(smooth_classifier()), x, y, steps=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)  # the same draw, either way


def test_bpda_identity_defence_equals_classifier_gradient(clips):
    x, y = clips
    classifier = smooth_classifier()
    loss_b, grad_b = bpda_grad_fn(classifier, NoDefence())(x, y)
    loss_c, grad_c = classifier_grad_fn(classifier)(x, y)
    assert torch.allclose(loss_b, loss_c) and torch.allclose(grad_b, grad_c)
    assert float(grad_c.abs().sum()) > 0


def test_bpda_is_classifier_gradient_at_purified_input(clips):
    """BPDA through a nontrivial defence: the classifier's gradient at the purified video, passed straight through."""
    x, y = clips
    classifier, defence = smooth_classifier(), WaveletDenoise(levels=2)
    purified = defence.candidates(x).videos[0]
    assert not torch.allclose(purified, x)
    _, grad_b = bpda_grad_fn(classifier, defence)(x, y)
    _, grad_c = classifier_grad_fn(classifier)(purified, y)
    assert torch.allclose(grad_b, grad_c)


def test_bpda_averages_over_candidates(clips):
    x, y = clips
    classifier, cg = smooth_classifier(), classifier_grad_fn(smooth_classifier())
    loss, grad = bpda_grad_fn(classifier, Candidates3())(x, y)
    parts = [cg(c, y) for c in (x, 1 - x, x.flip(-1))]
    assert torch.allclose(loss, torch.stack([p[0] for p in parts]).mean(0))
    assert torch.allclose(grad, torch.stack([p[1] for p in parts]).mean(0), atol=1e-7)


def test_eot_averages_draws_of_a_random_defence(clips):
    x, y = clips
    classifier, defence = smooth_classifier(), NoisyDefence()
    loss, grad = eot_grad_fn(bpda_grad_fn(classifier, defence, torch.Generator().manual_seed(5)), reps=3)(x, y)
    g = torch.Generator().manual_seed(5)
    single = bpda_grad_fn(classifier, defence, g)
    draws = [single(x, y) for _ in range(3)]
    assert not torch.allclose(draws[0][1], draws[1][1])  # the draws really differ
    assert torch.allclose(loss, torch.stack([d[0] for d in draws]).mean(0))
    assert torch.allclose(grad, torch.stack([d[1] for d in draws]).mean(0), atol=1e-7)


def test_tt_weights():
    w = tt_weights(7)
    assert [s for s, _ in w] == list(range(-7, 8))
    assert abs(sum(v for _, v in w) - 1) < 1e-12
    assert w[7][1] == max(v for _, v in w) and abs(w[0][1] - w[14][1]) < 1e-15
    assert [v for _, v in tt_weights(2, "uniform")] == [0.2] * 5
    assert tt_weights(0) == [(0, 1.0)]


def test_tt_is_gradient_of_translated_loss(clips):
    """TT's gradient equals autograd of sum_s w_s CE(roll(x, s)) (each copy's gradient translated back)."""
    x, y = clips
    classifier = smooth_classifier()
    loss, grad = tt_grad_fn(classifier_grad_fn(classifier), shift=2, kernel="linear")(x, y)
    xr = x.clone().requires_grad_(True)
    total = sum(w * ce(classifier, torch.roll(xr, s, dims=2), y) for s, w in tt_weights(2, "linear"))
    expected = torch.autograd.grad(total.sum(), xr)[0]
    assert torch.allclose(loss, total.detach(), atol=1e-6)
    assert torch.allclose(grad, expected, atol=1e-7)
    plain = classifier_grad_fn(classifier)(x, y)[1]
    assert not torch.allclose(grad, plain, atol=1e-6)


def test_dispatch_exact_and_surrogate(clips):
    x, y = clips
    classifier = smooth_classifier()
    # exact: autograd through the wavelet denoiser itself
    _, grad = defence_grad_fn(classifier, WaveletDenoise(levels=2))(x, y)
    xr = x.clone().requires_grad_(True)
    expected = torch.autograd.grad(ce(classifier, WaveletDenoise(levels=2).candidates(xr, grad=True).videos[0], y).sum(), xr)[0]
    assert torch.allclose(grad, expected, atol=1e-7)
    # surrogate: autograd through x**2
    _, grad = defence_grad_fn(classifier, NoisyDefence())(x, y)
    xr = x.clone().requires_grad_(True)
    expected = torch.autograd.grad(ce(classifier, xr * xr, y).sum(), xr)[0]
    assert torch.allclose(grad, expected, atol=1e-7)
    # the declaration can be overridden
    _, grad_bpda = defence_grad_fn(classifier, WaveletDenoise(levels=2), gradient="bpda")(x, y)
    assert not torch.allclose(grad_bpda, grad)
    # shuffle is exact for the drawn permutation: the classifier's gradient at the shuffled video, un-permuted
    _, grad = defence_grad_fn(classifier, TemporalShuffle(), torch.Generator().manual_seed(2))(x, y)
    g = torch.Generator().manual_seed(2)
    perms = [torch.randperm(x.shape[2], generator=g) for _ in range(x.shape[0])]
    shuffled = torch.stack([x[b][:, perm] for b, perm in enumerate(perms)])
    _, at_shuffled = classifier_grad_fn(classifier)(shuffled, y)
    for b, perm in enumerate(perms):
        assert torch.allclose(grad[b][:, perm], at_shuffled[b], atol=1e-7)
    with pytest.raises(ValueError, match="exact"):
        defence_grad_fn(classifier, NoDefence(), gradient="magic")


def _fd_check(defence, classifier, x, y, hs=(3e-2, 1e-2)):
    loss, grad = full_gradient_grad_fn(classifier, defence)(x, y)

    def total(v):
        with torch.no_grad():
            videos = defence.candidates(v, grad=True).videos
            k = videos.shape[0]
            return float(F.cross_entropy(classifier(videos.flatten(0, 1)), y.repeat(k), reduction="none").view(k, -1).mean(0).sum())

    assert abs(total(x) - float(loss.sum())) < 1e-5
    unit = grad / grad.norm()
    mixed = unit + torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) / x.numel() ** 0.5
    for direction in (unit, mixed / mixed.norm()):
        analytic = float((grad * direction).sum())
        for h in hs:
            fd = (total(x + h * direction) - total(x - h * direction)) / (2 * h)
            assert abs(fd - analytic) <= 0.02 * abs(analytic), (h, fd, analytic)
    return grad


@pytest.mark.slow
def test_full_gradient_matches_finite_differences(tiny_purifier):
    """Encode, temporal inversion, guided denoising (create_graph), decode and classifier, differentiated exactly.

    lambda_temp=0 keeps the guided loss smooth (the L1 warp term has kinks) so finite differences are meaningful.
    """
    purifier = tiny_purifier(PurifyConfig(t_star=2).with_options(lambda_temp=0.0))
    classifier = smooth_classifier(classes=12)
    x = torch.rand(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    y = torch.tensor([3])
    defence = VideoPureDefence(purifier)
    grad = _fd_check(defence, classifier, x, y)
    # checkpointing changes memory, not the gradient
    _, plain = full_gradient_grad_fn(classifier, VideoPureDefence(purifier, checkpoint=False))(x, y)
    assert torch.allclose(grad, plain, rtol=1e-4, atol=1e-9)
    # and the guided step matters: without guidance the gradient is a different one
    _, unguided = full_gradient_grad_fn(classifier, VideoPureDefence(purifier.with_config(guidance=False)))(x, y)
    assert not torch.allclose(grad, unguided, rtol=1e-2)


@pytest.mark.slow
def test_full_gradient_through_flow(tiny_purifier):
    """flow_grad=True adds the path through the flow estimator (held fixed by default)."""

    def torch_flow(a, b):  # a differentiable toy flow estimator
        return (b - a).mean(1, keepdim=True).repeat(1, 2, 1, 1) * 3.0

    purifier = tiny_purifier(PurifyConfig(t_star=1).with_options(lambda_temp=50.0, warp_grad=True), flow=torch_flow)
    classifier = smooth_classifier(classes=12)
    x = torch.rand(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([2])
    _, fixed = full_gradient_grad_fn(classifier, VideoPureDefence(purifier))(x, y)
    _, through = full_gradient_grad_fn(classifier, VideoPureDefence(purifier, flow_grad=True))(x, y)
    assert torch.isfinite(through).all() and float(through.abs().sum()) > 0
    assert not torch.allclose(fixed, through, rtol=1e-3, atol=1e-9)


def test_differentiable_raft_flow():
    from videopure_core import RaftFlow, load_raft

    torch.manual_seed(0)
    plain = RaftFlow(load_raft("raft_small", None), iters=2)
    flow_fn = plain.replace(grad=True)
    a = torch.rand(1, 3, 16, 16, requires_grad=True)
    b = torch.rand(1, 3, 16, 16)
    with torch.no_grad():  # differentiable even inside no_grad, as in a no-grad stage of the pipeline
        flow = flow_fn(a, b)
    assert flow.shape == (1, 2, 16, 16) and flow.requires_grad
    (g,) = torch.autograd.grad(flow.sum(), a)
    assert float(g.abs().sum()) > 0
    same = plain(a, b)  # the plain RaftFlow computes the same flow, without a graph
    assert torch.allclose(same, flow, atol=1e-5) and not same.requires_grad


def test_full_gradient_refuses_non_differentiable():
    from videopure_core.defences import Jpeg

    with pytest.raises(ValueError, match="not differentiable"):
        full_gradient_grad_fn(smooth_classifier(), Jpeg())


def test_sanity_zero_gradient_and_eot_warnings(clips):
    x, y = clips
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 16 * 16, 5)).eval()
    with torch.no_grad():
        flat[1].weight.zero_()
    check = ZeroGradientCheck(classifier_grad_fn(flat), "test")
    with pytest.warns(SanityWarning, match="exactly zero for 2 of 2"):
        pgd(check, x, y, steps=2)
    assert check.zero_calls.tolist() == [2, 2] and check.flagged == [0, 1]
    live = ZeroGradientCheck(classifier_grad_fn(smooth_classifier()), "test")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pgd(live, x, y, steps=2)
        assert check_eot(NoDefence(), 1) is None and check_eot(NoisyDefence(), 20) is None
    assert live.flagged == []
    with pytest.warns(SanityWarning, match="stochastic"):
        assert "EOT" in check_eot(NoisyDefence(), 1)


# --- batching, iterates, momentum, DiffAttack-style, flow attack, AutoAttack (issue 12) --------------------------


class PerVideoNoise(Defence):
    """Stochastic toy defence whose noise is drawn per video (so a batch of R copies is R independent draws)."""

    name = "per-video-noise"
    gradient = "bpda"
    stochastic = True

    def _candidates(self, video, generator, grad, hooks):
        noise = torch.randn(video.shape, generator=generator) * 0.05
        return Candidates(torch.stack([(video + noise).clamp(0, 1), (video * 0.9 + noise).clamp(0, 1)]), None, (1, 0))


def test_batched_eot_and_tt_equal_one_call_per_draw_or_shift(clips):
    from videopure_core.attacks.eot import expanded_calls

    x, y = clips
    classifier = smooth_classifier()
    # deterministic inner GradFn: batched EOT/TT equal the one-call-per-draw/shift loops
    inner = bpda_grad_fn(classifier, Candidates3())
    for wrap in (lambda f, **kw: eot_grad_fn(f, 3, **kw), lambda f, **kw: tt_grad_fn(f, 2, "linear", **kw)):
        loss_b, grad_b = wrap(inner)(x, y)
        loss_s, grad_s = wrap(inner, batched=False)(x, y)
        loss_c, grad_c = wrap(inner, max_batch=3)(x, y)  # chunked: one copy (2 videos) per call
        assert torch.allclose(loss_b, loss_s, atol=1e-6) and torch.allclose(grad_b, grad_s, atol=1e-7)
        assert torch.allclose(loss_c, loss_s, atol=1e-6) and torch.allclose(grad_c, grad_s, atol=1e-7)
    # stochastic: the batched draws are the rows of one call on the repeated batch
    defence = PerVideoNoise()
    loss, grad = eot_grad_fn(bpda_grad_fn(classifier, defence, torch.Generator().manual_seed(4)), 3)(x, y)
    single = bpda_grad_fn(classifier, defence, torch.Generator().manual_seed(4))
    losses, grads = expanded_calls(single, [x] * 3, y, None)
    assert torch.allclose(loss, torch.stack(losses).mean(0)) and torch.allclose(grad, torch.stack(grads).mean(0))
    assert not torch.allclose(grads[0], grads[1])  # three different draws
    calls = []
    counting = lambda xx, yy: (calls.append(xx.shape[0]), single(xx, yy))[1]  # noqa: E731
    eot_grad_fn(counting, 5, max_batch=4)(x, y)
    assert calls == [4, 4, 2]  # 5 draws of 2 videos, at most 4 videos per call


def test_bpda_one_classifier_call_for_all_candidates(clips):
    x, y = clips
    classifier = smooth_classifier()
    seen = []
    counting = nn.Sequential()
    counting.forward = lambda v: (seen.append(v.shape[0]), classifier(v))[1]
    loss, grad = bpda_grad_fn(counting, Candidates3())(x, y)
    assert seen == [6]  # K=3 candidates x B=2 videos in one call
    seen.clear()
    loss2, grad2 = bpda_grad_fn(counting, Candidates3(), max_batch=4)(x, y)
    assert seen == [4, 2] and torch.allclose(loss, loss2) and torch.allclose(grad, grad2, atol=1e-7)


def test_iterate_predictions_are_the_defended_votes_at_each_iterate(clips):
    from videopure_core.attacks import IteratePredictions
    from videopure_core.defences import defend_and_vote

    x, y = clips
    classifier, defence = smooth_classifier(), Candidates3()
    for wrap in (lambda f: f, lambda f: tt_grad_fn(f, 1), lambda f: eot_grad_fn(f, 2)):
        probe, kept = IteratePredictions(), {}
        pgd(wrap(bpda_grad_fn(classifier, defence, probe=probe)), x, y, 8 / 255, 4 / 255, steps=3, probe=probe,
            keep=(0, 1, 2), iterates=kept, generator=torch.Generator().manual_seed(0))
        assert probe.predictions.shape == (3, 2)
        for i in range(3):
            assert torch.equal(probe.predictions[i], defend_and_vote(defence, classifier, kept[i]).winner)
    # a GradFn that never runs the defence leaves no predictions
    probe = IteratePredictions()
    pgd(classifier_grad_fn(classifier), x, y, steps=2, probe=probe)
    assert probe.predictions is None


def test_mi_fgsm_momentum_accumulates_l1_normalised_gradients(clips):
    x, y = clips
    grads = [torch.randn(x.shape, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    calls = iter(grads)
    grad_fn = lambda xx, yy: (torch.zeros(xx.shape[0]), next(calls))  # noqa: E731
    x_adv, _ = pgd(grad_fn, x, y, eps=1.0, step=0.01, steps=3, random_start=False, momentum=1.0)
    velocity = None
    expected = x.clone()
    for g in grads:
        unit = g / g.flatten(1).abs().sum(1).view(-1, 1, 1, 1, 1)
        velocity = unit if velocity is None else velocity + unit
        expected = (expected + 0.01 * velocity.sign()).clamp(0, 1)
    assert torch.allclose(x_adv, expected)


def test_diffattack_loss_is_ce_plus_deviation(tiny_purifier):
    from videopure_core.attacks import deviation_loss, diffattack_grad_fn, reconstruction_trajectory

    purifier = tiny_purifier(PurifyConfig(t_star=2).with_options(lambda_temp=0.0))
    defence = VideoPureDefence(purifier)
    classifier = smooth_classifier(classes=12)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 4, 32, 32, generator=g) * 0.8 + 0.1
    x_adv = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    y = torch.tensor([3])
    reference = reconstruction_trajectory(defence, x)
    assert len(reference) == 3 and reference[0].shape == (1, 4, 4, 4, 4)  # t*+1 reconstructions
    assert float(deviation_loss(reference, reference)) == 0.0
    ce_loss, ce_grad = full_gradient_grad_fn(classifier, defence)(x_adv, y)
    loss, grad = diffattack_grad_fn(classifier, defence, reference, dev_weight=2.0)(x_adv, y)
    deviation = deviation_loss(reconstruction_trajectory(defence, x_adv), reference)
    assert float(deviation) > 0
    assert torch.allclose(loss, ce_loss + 2.0 * deviation, atol=1e-5)
    assert not torch.allclose(grad, ce_grad, rtol=1e-3)
    # the deviation term's gradient is the autograd gradient of that term
    _, zero_weight = diffattack_grad_fn(classifier, defence, reference, dev_weight=0.0)(x_adv, y)
    assert torch.allclose(zero_weight, ce_grad, atol=1e-8)


def test_ddpm_reconstructions_reach_the_diffattack_loss(tiny_purifier):
    import dataclasses

    from videopure_core.attacks import reconstruction_trajectory
    from videopure_core.defences import DiffPureDDPM

    purifier = tiny_purifier(PurifyConfig())
    networks = purifier.networks
    purifier.networks = lambda **kw: dataclasses.replace(networks(**kw), eps=lambda z, t: torch.zeros_like(z))
    trajectory = reconstruction_trajectory(DiffPureDDPM(purifier), torch.rand(1, 3, 2, 16, 16),
                                           torch.Generator().manual_seed(0))
    assert len(trajectory) == 101  # one x0_hat per ancestral step


def test_flow_deviation_gradient(clips):
    from videopure_core.attacks import flow_deviation_grad_fn, reference_flow, sum_grad_fns

    x, y = clips

    def flow_fn(a, b):  # differentiable toy flow
        return torch.cat([(b - a).mean(1, keepdim=True), (a * b).mean(1, keepdim=True)], 1) * 4.0

    ref = reference_flow(flow_fn, x)
    loss0, _ = flow_deviation_grad_fn(flow_fn, ref)(x, y)
    assert float(loss0.abs().max()) < 1e-5  # no deviation at the clean video
    x2 = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    loss, grad = flow_deviation_grad_fn(flow_fn, ref, flow_weight=0.5)(x2, y)
    xr = x2.clone().requires_grad_(True)
    from videopure_core.flow import video_flow

    epe = (video_flow(flow_fn, xr)[0] - ref).pow(2).sum(2).add(1e-12).sqrt().flatten(1).mean(1) * 0.5
    assert torch.allclose(loss, epe.detach(), atol=1e-6)
    assert torch.allclose(grad, torch.autograd.grad(epe.sum(), xr)[0], atol=1e-7)
    both_loss, both_grad = sum_grad_fns(classifier_grad_fn(smooth_classifier()), flow_deviation_grad_fn(flow_fn, ref))(x2, y)
    c_loss, c_grad = classifier_grad_fn(smooth_classifier())(x2, y)
    assert torch.allclose(both_loss, c_loss + 2 * loss, atol=1e-5)


def test_defended_model_for_art_is_bpda_straight_through(clips):
    from videopure_core.attacks import DefendedModel

    x, y = clips
    classifier = smooth_classifier()
    model = DefendedModel(classifier, Candidates3())
    xr = x.clone().requires_grad_(True)
    out = model(xr)
    cands = torch.stack([x, 1 - x, x.flip(-1)])
    expected = classifier(cands.flatten(0, 1)).log_softmax(-1).view(3, 2, -1).mean(0)
    assert torch.allclose(out, expected, atol=1e-6)
    (g,) = torch.autograd.grad(out[:, 1].sum(), xr)
    cr = cands.clone().requires_grad_(True)
    (gc,) = torch.autograd.grad(classifier(cr.flatten(0, 1)).log_softmax(-1).view(3, 2, -1).mean(0)[:, 1].sum(), cr)
    assert torch.allclose(g, gc.sum(0), atol=1e-7)  # identity backward through every candidate


def test_autoattack_with_art_stays_in_the_ball(clips):
    pytest.importorskip("art")
    pytest.importorskip("multiprocess")
    from videopure_core.attacks import autoattack

    x, y = clips
    classifier = smooth_classifier()
    adv = autoattack(classifier, Candidates3(), x, y, eps=8 / 255, steps=3, eot_reps=1)
    assert adv.shape == x.shape and float((adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
