import math

import torch

from videopure_core import MODELSCOPE_SCHEDULER_CONFIG, PurifyConfig, ddim_invert, guided_denoise, make_schedule
from videopure_core.inversion import replicate_frame_noise


def smooth_eps(z, t):
    """A UNet stand-in: smooth in z and t, different per frame."""
    frames = torch.arange(z.shape[2], dtype=z.dtype).view(1, 1, -1, 1, 1)
    return 0.5 * torch.tanh(z) + 0.1 * torch.sin(frames + t / 100.0)


def test_plain_inversion_round_trip_recovers_z0_in_float64():
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    config = PurifyConfig(ddim_steps=1000, t_star=500).with_options(temporal=False, guidance=False)
    sched = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, config.ddim_steps, config.t_star)
    z_t = ddim_invert(smooth_eps, z0, sched, temporal=False)
    assert (z_t - z0).abs().max() > 0.5  # it really moved
    z_back = guided_denoise(smooth_eps, z_t, z0, None, sched, config)[-1]
    assert z_back.dtype == torch.float64
    assert (z_back - z0).abs().max() < 5e-4


def test_round_trip_error_shrinks_with_more_steps():
    z0 = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errors = []
    for steps, t_star in [(50, 5), (500, 50)]:  # both reach timestep ~100
        config = PurifyConfig(ddim_steps=steps, t_star=t_star).with_options(temporal=False, guidance=False)
        sched = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, steps, t_star)
        z_t = ddim_invert(smooth_eps, z0, sched, temporal=False)
        errors.append(float((guided_denoise(smooth_eps, z_t, z0, None, sched, config)[-1] - z0).abs().max()))
    assert errors[1] < errors[0] / 5


def test_temporal_inversion_applies_first_frame_eps_to_every_frame():
    sched = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, 50, 1)  # one step: 0 -> 1
    z0 = torch.randn(2, 4, 5, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    seen = []

    def spy(z, t):
        eps = smooth_eps(z, t)
        seen.append(eps)
        return eps

    z1 = ddim_invert(spy, z0, sched, temporal=True)
    eps = seen[0]
    a_s, a_t = sched.alpha_bar_prev(1), sched.alpha_bar(1)
    # z1 = sqrt(a_t / a_s) z0 + (sqrt(1 - a_t) - sqrt(a_t / a_s) sqrt(1 - a_s)) eps_used; solve for eps_used
    coef = math.sqrt(1 - a_t) - math.sqrt(a_t / a_s) * math.sqrt(1 - a_s)
    eps_used = (z1 - math.sqrt(a_t / a_s) * z0) / coef
    for f in range(5):
        assert torch.allclose(eps_used[:, :, f], eps[:, :, 0], atol=1e-9)
    assert not torch.allclose(eps[:, :, 1], eps[:, :, 0])  # the stub really is frame-dependent
    plain = ddim_invert(smooth_eps, z0, sched, temporal=False)
    assert not torch.allclose(plain, z1)


def test_replicate_frame_noise_is_exact_copy_and_noise_frame_option():
    eps = torch.randn(2, 4, 6, 3, 3)
    out = replicate_frame_noise(eps, 0)
    assert all(torch.equal(out[:, :, f], eps[:, :, 0]) for f in range(6))
    out3 = replicate_frame_noise(eps, 3)
    assert all(torch.equal(out3[:, :, f], eps[:, :, 3]) for f in range(6))


def test_inversion_is_deterministic_and_labels_destination_timestep():
    sched = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, 50, 6)
    ts = []
    z0 = torch.randn(1, 4, 3, 2, 2)
    a = ddim_invert(lambda z, t: ts.append(t) or smooth_eps(z, t), z0, sched)
    b = ddim_invert(smooth_eps, z0, sched)
    assert ts == [1, 21, 41, 61, 81, 101]
    assert torch.equal(a, b)
