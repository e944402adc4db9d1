import dataclasses
import math

import pytest
import torch

from videopure_core import (
    MODELSCOPE_SCHEDULER_CONFIG,
    LatentFlow,
    Guidance,
    backward_warp,
    guidance_gradient,
    guided_latent,
    make_schedule,
    predict_x0,
    spatial_loss,
    temporal_loss,
)

SCHED = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, 50, 6)


def shifted_flow(b, f, h, w, dx=1.0, dy=0.0):
    flow = torch.zeros(b, f - 1, 2, h, w)
    flow[:, :, 0], flow[:, :, 1] = dx, dy
    return LatentFlow(flow)


def setup(seed=0, b=2, f=4, h=4, w=4):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 4, f, h, w, generator=g)
    eps = torch.randn(b, 4, f, h, w, generator=g)
    z0_input = torch.randn(b, 4, f, h, w, generator=g)
    return z, eps, z0_input


@pytest.mark.parametrize("t", [101, 1])
def test_spatial_step_amplifies_distance_to_input_by_closed_form(t):
    z, eps, z0_input = setup()
    config = Guidance(lambda_temp=0.0)
    a, w = SCHED.alpha_bar(t), SCHED.variance_weight(t)
    c = config.alpha_s * w
    assert c > 0
    x0 = predict_x0(z, eps, a)
    candidate = predict_x0(guided_latent(z, eps, a, w, z0_input, None, config), eps, a)
    n = x0[0].numel()
    factor = 1 + 2 * config.lambda_spa * c / (a * n)
    assert torch.allclose(candidate - z0_input, factor * (x0 - z0_input), atol=1e-4)
    # the MSE to the input grows (L_spa = -MSE decreases)
    assert (spatial_loss(candidate, z0_input) < spatial_loss(x0, z0_input)).all()


def test_spatial_amplification_for_a_paper_sized_latent_matches_spec():
    n = 32 * 28 * 28 * 4
    for t, expected in [(101, 1.28), (1, 1.50)]:
        c = -4.0 * SCHED.variance_weight(t)
        assert 1 + 2 * 800 * c / (SCHED.alpha_bar(t) * n) == pytest.approx(expected, abs=0.01)


def test_temporal_step_moves_each_frame_by_sign_of_its_warp_residual():
    z, eps, z0_input = setup(1, f=4, h=28, w=28)
    b, _, f, h, w = z.shape
    t = 61
    config = Guidance(lambda_spa=0.0)
    flow = shifted_flow(b, f, h, w)
    a, wt = SCHED.alpha_bar(t), SCHED.variance_weight(t)
    c = config.alpha_s * wt
    x0 = predict_x0(z, eps, a)
    candidate = predict_x0(guided_latent(z, eps, a, wt, z0_input, flow, config), eps, a)
    n = 4 * h * w
    for i in range(f - 1):
        warped = backward_warp(x0[:, :, i + 1], flow.forward[:, i])
        expected = -(config.lambda_temp * c / (a * n)) * torch.sign(x0[:, :, i] - warped)
        assert torch.allclose(candidate[:, :, i] - x0[:, :, i], expected, atol=1e-5)
    assert torch.equal(candidate[:, :, -1], x0[:, :, -1])  # release: the last frame does not move
    assert (temporal_loss(candidate, flow) < temporal_loss(x0, flow)).all()


def test_full_loss_step_lowers_temporal_loss_and_raises_mse():
    z, eps, z0_input = setup(2, b=1, f=32, h=28, w=28)  # the paper's latent size
    b, _, f, h, w = z.shape
    flow = shifted_flow(b, f, h, w, 0.5, -0.25)
    a, wt = SCHED.alpha_bar(21), SCHED.variance_weight(21)
    x0 = predict_x0(z, eps, a)
    z0_input = x0 + 0.05 * z0_input  # as in purification: the candidate is close to the input latent
    candidate = predict_x0(guided_latent(z, eps, a, wt, z0_input, flow, Guidance()), eps, a)
    assert (temporal_loss(candidate, flow) < temporal_loss(x0, flow)).all()
    assert ((candidate - z0_input).pow(2).mean() > (x0 - z0_input).pow(2).mean())


def test_guidance_reference_makes_a_small_latent_step_like_the_reference_size():
    z, eps, z0_input = setup(8, f=4, h=4, w=4)
    t = 101
    a, w = SCHED.alpha_bar(t), SCHED.variance_weight(t)
    config = Guidance(lambda_temp=0.0, lambda_reference=(32, 28, 28))
    c = config.alpha_s * w
    x0 = predict_x0(z, eps, a)
    candidate = predict_x0(guided_latent(z, eps, a, w, z0_input, None, config), eps, a)
    factor = 1 + 2 * config.lambda_spa * c / (a * 32 * 28 * 28 * 4)
    assert factor == pytest.approx(1.28, abs=0.01)
    assert torch.allclose(candidate - z0_input, factor * (x0 - z0_input), atol=1e-5)
    flow = shifted_flow(*z.shape[:1], 4, 4, 4)
    tconf = Guidance(lambda_spa=0.0, lambda_reference=(32, 28, 28))
    moved = predict_x0(guided_latent(z, eps, a, w, z0_input, flow, tconf), eps, a) - x0
    step = tconf.lambda_temp * c / (a * 4 * 28 * 28)
    assert torch.allclose(moved[:, :, :-1].abs(), torch.full_like(moved[:, :, :-1], step), atol=1e-5)


def test_gradient_directions_of_each_loss():
    z, _, z0_input = setup(3)
    b, _, f, h, w = z.shape
    x0 = z.clone()
    spa = guidance_gradient(x0, z0_input, None, Guidance(lambda_temp=0.0, lambda_spa=1.0))
    n = x0[0].numel()
    assert torch.allclose(spa, -2.0 * (x0 - z0_input) / n, atol=1e-6)  # ascent of MSE = descent of L_spa
    flow = shifted_flow(b, f, h, w)
    tmp = guidance_gradient(x0, z0_input, flow, Guidance(lambda_temp=1.0, lambda_spa=0.0))
    warped = backward_warp(x0[:, :, 1], flow.forward[:, 0])
    assert torch.allclose(tmp[:, :, 0], torch.sign(x0[:, :, 0] - warped) / (4 * h * w), atol=1e-7)


def test_warp_grad_bidirectional_and_masks_change_the_gradient_as_documented():
    z, _, z0_input = setup(4)
    b, _, f, h, w = z.shape
    fwd = shifted_flow(b, f, h, w).forward
    base = Guidance(lambda_spa=0.0, lambda_temp=1.0)
    plain = guidance_gradient(z, z0_input, LatentFlow(fwd), base)
    assert plain[:, :, -1].abs().max() == 0
    through = guidance_gradient(z, z0_input, LatentFlow(fwd), dataclasses.replace(base, warp_grad=True))
    assert through[:, :, -1].abs().max() > 0
    both = guidance_gradient(z, z0_input, LatentFlow(fwd, -fwd), dataclasses.replace(base, bidirectional=True))
    assert both[:, :, -1].abs().max() > 0  # the backward term moves the last frame
    masked = LatentFlow(fwd, forward_mask=torch.zeros(b, f - 1, 1, h, w))
    assert guidance_gradient(z, z0_input, masked, base).abs().max() == 0
    with pytest.raises(ValueError, match="backward flow"):
        guidance_gradient(z, z0_input, LatentFlow(fwd), dataclasses.replace(base, bidirectional=True))
    with pytest.raises(ValueError, match="optical flow"):
        guidance_gradient(z, z0_input, None, base)


def test_losses_are_per_video_so_batch_members_do_not_interact():
    z, _, z0_input = setup(5)
    b, _, f, h, w = z.shape
    flow = shifted_flow(b, f, h, w)
    config = Guidance()
    together = guidance_gradient(z, z0_input, flow, config)
    alone = guidance_gradient(z[:1], z0_input[:1], LatentFlow(flow.forward[:1]), config)
    assert torch.allclose(together[:1], alone, atol=1e-7)


def test_linear_variance_weight_reverses_the_direction():
    z, eps, z0_input = setup(6)
    config = Guidance(lambda_temp=0.0, variance_weight="linear")
    a, wt = SCHED.alpha_bar(101), SCHED.variance_weight(101, "linear")
    assert wt > 0
    x0 = predict_x0(z, eps, a)
    candidate = predict_x0(guided_latent(z, eps, a, wt, z0_input, None, config), eps, a)
    assert (candidate - z0_input).pow(2).mean() < (x0 - z0_input).pow(2).mean()


def test_guidance_works_inside_inference_mode_and_matches_outside():
    z, eps, z0_input = setup(7)
    b, _, f, h, w = z.shape
    flow = shifted_flow(b, f, h, w)
    outside = guidance_gradient(z, z0_input, flow, Guidance(warp_grad=True))
    with torch.inference_mode():
        zi, z0i = z.clone(), z0_input.clone()
        fi = LatentFlow(flow.forward.clone())
        inside = guidance_gradient(zi, z0i, fi, Guidance(warp_grad=True))
    assert torch.equal(inside, outside)
    assert math.isfinite(float(inside.abs().sum()))
