import torch

from videopure_core import (
    MODELSCOPE_SCHEDULER_CONFIG,
    LatentFlow,
    PurifyConfig,
    ddim_step,
    denoise_steps,
    final_candidate,
    guidance_gradient,
    guided_denoise,
    make_schedule,
    predict_x0,
)

SCHED = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, 50, 6)


def make_inputs(seed=0, b=2, f=4, h=6, w=6):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 4, f, h, w, generator=g)
    z0 = torch.randn(b, 4, f, h, w, generator=g)
    flow = torch.zeros(b, f - 1, 2, h, w)
    flow[:, :, 0] = 1.0
    return z, z0, LatentFlow(flow)


def recording_eps():
    seen = []

    def eps_fn(z, t):
        seen.append((t, z.clone()))
        return 0.3 * torch.tanh(z) + 0.01 * t / 100

    return eps_fn, seen


def test_unguided_trajectory_is_exactly_the_plain_ddim_trajectory():
    z, z0, flow = make_inputs()
    fn_a, guided_seen = recording_eps()
    fn_b, plain_seen = recording_eps()
    cands = guided_denoise(fn_a, z, z0, flow, SCHED, PurifyConfig())
    plain = guided_denoise(fn_b, z, z0, flow, SCHED, PurifyConfig().with_options(guidance=False))
    assert [t for t, _ in guided_seen] == [101, 81, 61, 41, 21, 1]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(guided_seen, plain_seen))
    assert cands.shape == (7, *z.shape)
    assert not torch.allclose(cands[0], plain[0])  # the candidates themselves are optimised


def test_guide_trajectory_feeds_the_optimised_latent_back():
    z, z0, flow = make_inputs(1)
    fn_a, guided_seen = recording_eps()
    fn_b, plain_seen = recording_eps()
    guided_denoise(fn_a, z, z0, flow, SCHED, PurifyConfig(guide_trajectory=True))
    guided_denoise(fn_b, z, z0, flow, SCHED, PurifyConfig())
    assert torch.equal(guided_seen[0][1], plain_seen[0][1])
    assert not torch.allclose(guided_seen[1][1], plain_seen[1][1])


def test_unguided_candidates_are_x0_predictions_along_the_trajectory():
    z, z0, _ = make_inputs(2)
    fn, seen = recording_eps()
    cands = guided_denoise(fn, z, z0, None, SCHED, PurifyConfig().with_options(guidance=False))
    for k, (t, z_t) in enumerate(seen):
        eps = 0.3 * torch.tanh(z_t) + 0.01 * t / 100
        assert torch.allclose(cands[k], predict_x0(z_t, eps, SCHED.alpha_bar(t)), atol=1e-6)
    t, z_1 = seen[-1]
    eps = 0.3 * torch.tanh(z_1) + 0.01 * t / 100
    z_final = ddim_step(predict_x0(z_1, eps, SCHED.alpha_bar(1)), eps, SCHED.alpha_bar_prev(1))
    assert torch.allclose(cands[-1], z_final, atol=1e-6)  # without guidance z_0^0 is the final latent


def test_final_candidate_release_and_clean_readings():
    z, z0, flow = make_inputs(3)
    eps = torch.randn_like(z)
    config = PurifyConfig()
    w = SCHED.variance_weight(1)
    a = SCHED.alpha_bar(1)
    release = final_candidate(z, eps, 1, z0, flow, SCHED, config)
    g = config.guidance
    grad = guidance_gradient(predict_x0(z, eps, a), z0, flow, g)
    assert torch.allclose(release, z - g.alpha_s * w * grad / a**0.5, atol=1e-6)  # the updated latent itself
    clean = final_candidate(z, eps, 1, z0, flow, SCHED, config.with_options(final_candidate="clean"))
    grad = guidance_gradient(z, z0, flow, g)
    assert torch.allclose(clean, z - g.alpha_s * w * grad, atol=1e-6)
    assert torch.equal(final_candidate(z, eps, 1, z0, flow, SCHED, config.with_options(guidance=False)), z)


def test_callback_reports_every_step_and_can_interrupt():
    z, z0, flow = make_inputs(4)
    calls = []
    guided_denoise(lambda z, t: torch.zeros_like(z), z, z0, flow, SCHED, PurifyConfig(), callback=lambda *a: calls.append(a))
    assert calls == [("denoise", i, 7) for i in range(1, 8)]

    class Stop(Exception):
        pass

    def stop(stage, step, total):
        if step == 2:
            raise Stop

    try:
        guided_denoise(lambda z, t: torch.zeros_like(z), z, z0, flow, SCHED, PurifyConfig(), callback=stop)
    except Stop:
        pass
    else:
        raise AssertionError("the callback could not interrupt the loop")


def test_step_generator_is_lazy_and_resumes_from_any_timestep():
    z, z0, flow = make_inputs(5)
    fn, seen = recording_eps()
    steps = denoise_steps(fn, z, z0, flow, SCHED, PurifyConfig())
    assert seen == []  # nothing runs before the first candidate is asked for
    first = next(steps)
    assert (first.label, first.timestep, [t for t, _ in seen]) == (6, 101, [101])
    rest = list(steps)
    assert [s.label for s in rest] == [5, 4, 3, 2, 1, 0] and [s.timestep for s in rest] == [81, 61, 41, 21, 1, 1]
    full = guided_denoise(recording_eps()[0], z, z0, flow, SCHED, PurifyConfig())
    assert torch.equal(torch.stack([first.candidate] + [s.candidate for s in rest]), full)
    # resuming at timestep 41 from the trajectory latent reproduces the tail exactly
    resumed = list(denoise_steps(recording_eps()[0], rest[1].z, z0, flow, SCHED, PurifyConfig(), start=41))
    assert [s.label for s in resumed] == [3, 2, 1, 0]
    assert all(torch.equal(a.candidate, b.candidate) for a, b in zip(resumed, rest[2:]))
