"""Defences: one interface, shapes and ranges, their algorithms against references, specs and declarations."""

import dataclasses
import math

import pytest
import torch

from videopure_core import MODELSCOPE_SCHEDULER_CONFIG, PurifyConfig
from videopure_core.defences import (
    DEFENCES,
    DiffPureDDIM,
    DiffPureDDPM,
    Jpeg,
    TemporalShuffle,
    VideoPureDefence,
    WaveletDenoise,
    build_defence,
    ddpm_step,
    defend_and_vote,
    haar2d,
    ihaar2d,
    jpeg_frames,
    noise_latent,
    parse_spec,
    wavelet_denoise,
)
from videopure_core.options import parse_value


@pytest.fixture
def batch(video):
    """Two different (B=2) videos (2, 3, 6, 32, 32) in [0,1]."""
    return torch.cat([video, video.flip(2)])


def without_unet(purifier):
    """The purifier with eps = 0 instead of the UNet (DiffPure-DDPM's 101 steps in no time)."""
    networks = purifier.networks
    purifier.networks = lambda **kw: dataclasses.replace(networks(**kw), eps=lambda z, t: torch.zeros_like(z))
    return purifier


def smooth_image(n: int = 32) -> torch.Tensor:
    s = torch.linspace(0, 1, n)
    return torch.stack([s[None, :] * s[:, None], 0.5 + 0.4 * torch.sin(6 * s)[None, :].expand(n, n), s[:, None].expand(n, n)])


@pytest.mark.slow
def test_every_defence_has_the_interface(tiny_purifier, batch):
    purifier = tiny_purifier(PurifyConfig(t_star=2))
    for name in DEFENCES:
        defence = build_defence(name, without_unet(tiny_purifier(PurifyConfig(t_star=2))) if name == "diffpure-ddpm"
                                else purifier)
        out = defence.candidates(batch, torch.Generator().manual_seed(0))
        k = 3 if name == "videopure" else 1
        assert out.videos.shape == (k, *batch.shape), name
        assert len(out.labels) == k and not out.videos.requires_grad
        assert float(out.videos.min()) >= 0 and float(out.videos.max()) <= 1, name
        assert defence.gradient in ("exact", "bpda", "surrogate")
        result = defend_and_vote(defence, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4)), batch)
        assert result.counts.sum(1).tolist() == [k, k]
    stochastic = {n for n in DEFENCES if build_defence(n, purifier).stochastic}
    assert stochastic == {"diffpure-ddim", "diffpure-ddpm", "shuffle"}


@pytest.mark.slow
def test_videopure_defence_is_the_purifier(tiny_purifier, batch):
    purifier = tiny_purifier(PurifyConfig(t_star=2))
    out = VideoPureDefence(purifier).candidates(batch)
    reference = purifier.purify(batch)
    assert out.labels == (2, 1, 0)
    assert torch.equal(out.videos, reference.videos) and torch.equal(out.latents, reference.latents)
    assert {"encode", "flow", "invert", "denoise", "decode"} <= set(out.timings)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["videopure", "ddim-inversion", "diffpure-ddim"])
def test_differentiable_forward_equals_plain_forward(tiny_purifier, batch, name):
    """grad=True (checkpointed, create_graph) computes the same candidates as the no-grad forward."""
    defence = build_defence(name, tiny_purifier(PurifyConfig(t_star=2)))
    plain = defence.candidates(batch, torch.Generator().manual_seed(1)).videos
    x = batch.clone().requires_grad_(True)
    graph = defence.candidates(x, torch.Generator().manual_seed(1), grad=True).videos
    assert graph.requires_grad
    assert torch.allclose(plain, graph.detach(), atol=2e-5)


@pytest.mark.slow
def test_ddim_inversion_baseline_is_the_plain_config(tiny_purifier, batch):
    purifier = tiny_purifier(PurifyConfig(t_star=2))
    out = build_defence("ddim-inversion", purifier).candidates(batch)
    plain = purifier.with_config(temporal=False, guidance=False).purify(batch)
    assert out.videos.shape[0] == 1
    assert torch.allclose(out.videos[0], plain.videos[-1], atol=1e-5)  # z_0^0: the final latent
    vp = build_defence("videopure", purifier).candidates(batch).videos[-1]
    assert not torch.allclose(out.videos[0], vp, atol=1e-4)


def test_diffpure_ddim_noise_and_seeds(tiny_purifier, batch):
    z0 = torch.randn(2, 4, 3, 4, 4)
    z = noise_latent(z0, 0.81, torch.Generator().manual_seed(3))
    n = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(z, 0.9 * z0 + math.sqrt(0.19) * n)
    defence = DiffPureDDIM(tiny_purifier(PurifyConfig(t_star=2)))
    a = defence.candidates(batch, torch.Generator().manual_seed(0)).videos
    b = defence.candidates(batch, torch.Generator().manual_seed(0)).videos
    c = defence.candidates(batch, torch.Generator().manual_seed(1)).videos
    assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-4)


def test_ddpm_step_matches_diffusers():
    """One ancestral step equals diffusers' DDPMScheduler.step (fixed_small variance, no clipping)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config({**MODELSCOPE_SCHEDULER_CONFIG, "clip_sample": False, "variance_type": "fixed_small"})
    sched.set_timesteps(1000)
    a = sched.alphas_cumprod.double()
    z, eps = torch.randn(1, 4, 3, 4, 4), torch.randn(1, 4, 3, 4, 4)
    for t in (101, 50, 2):
        expected = sched.step(eps, t, z, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(t))
        ours = ddpm_step(z, eps, float(a[t]), float(a[t - 1]), noise)
        assert torch.allclose(ours, expected, atol=1e-5), t
        std = math.sqrt((1 - a[t - 1]) / (1 - a[t]) * (1 - a[t] / a[t - 1]))
        assert torch.allclose(ddpm_step(z, eps, float(a[t]), float(a[t - 1]), None), ours - std * noise, atol=1e-5)


def test_diffpure_ddpm_walks_the_training_grid(tiny_purifier, batch):
    purifier = tiny_purifier(PurifyConfig())
    seen = []

    def eps_fn(z, t):
        seen.append(t)
        return torch.zeros_like(z)

    networks = purifier.networks
    purifier.networks = lambda **kw: dataclasses.replace(networks(**kw), eps=eps_fn)
    defence = DiffPureDDPM(purifier)
    a = defence.candidates(batch, torch.Generator().manual_seed(0)).videos
    assert seen == list(range(101, 0, -1))  # 101 ancestral steps from t = 101
    b = defence.candidates(batch, torch.Generator().manual_seed(1)).videos
    assert not torch.allclose(a, b, atol=1e-4)


def test_jpeg(batch):
    frames = torch.stack([smooth_image().permute(1, 2, 0)] * 2)
    high, low = jpeg_frames(frames, 95), jpeg_frames(frames, 10)
    err_high, err_low = float((high - frames).abs().mean()), float((low - frames).abs().mean())
    assert 0 < err_high < 0.01 < err_low < 0.1
    defence = Jpeg(quality=50)
    out = defence.candidates(batch).videos
    assert out.shape == (1, *batch.shape) and not torch.equal(out[0], batch)
    assert defence.gradient == "bpda" and not defence.differentiable
    with pytest.raises(NotImplementedError, match="BPDA"):
        defence.candidates(batch, grad=True)
    with pytest.raises(ValueError, match="between 1 and 95"):
        Jpeg(quality=0)


def test_jpeg_surrogate_approximates_pillow_and_has_a_gradient():
    from videopure_core.attacks import defence_grad_fn
    from videopure_core.defences import jpeg_surrogate, quant_table

    assert quant_table(50)[0, 0] == 16 and quant_table(75)[0, 0] == 8 and quant_table(75, chroma=True)[7, 7] == 50
    image = smooth_image()[None]
    real = jpeg_frames(image.permute(0, 2, 3, 1), 75).permute(0, 3, 1, 2)
    approx = jpeg_surrogate(image, 75)
    assert float((approx - real).abs().mean()) < 0.5 * float((real - image).abs().mean())  # closer to JPEG than x is
    defence = build_defence("jpeg:gradient=surrogate")
    assert defence.gradient == "surrogate" and defence.surrogate(torch.rand(1, 3, 2, 16, 16)).shape == (1, 1, 3, 2, 16, 16)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 32 * 32, 4))
    x = image[:, :, None].repeat(1, 1, 2, 1, 1)
    _, grad = defence_grad_fn(classifier, defence)(x, torch.tensor([1]))
    _, bpda = defence_grad_fn(classifier, Jpeg())(x, torch.tensor([1]))
    assert float(grad.abs().sum()) > 0 and not torch.allclose(grad, bpda)
    with pytest.raises(ValueError, match="'bpda' or 'surrogate'"):
        Jpeg(gradient="exact")


def test_haar_is_orthonormal_and_invertible():
    x = torch.randn(2, 3, 16, 8, dtype=torch.float64)
    bands = haar2d(x)
    assert torch.allclose(ihaar2d(*bands), x)
    assert torch.allclose(sum(b.pow(2).sum() for b in bands), x.pow(2).sum())  # energy preserved


def test_wavelet_denoise_removes_noise():
    image = smooth_image()[None]
    noisy = (image + 0.05 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    denoised = wavelet_denoise(noisy, levels=3)
    rmse = lambda a: float((a - image).pow(2).mean().sqrt())  # noqa: E731
    assert rmse(denoised) < 0.7 * rmse(noisy)
    assert torch.allclose(wavelet_denoise(noisy, sigma=0.0), noisy, atol=1e-6)  # no noise, no threshold
    assert torch.equal(wavelet_denoise(noisy[..., :5, :5]), noisy[..., :5, :5])  # odd sizes: no level possible
    assert WaveletDenoise().gradient == "exact"


def test_shuffle_permutes_frames_per_video(batch):
    out = TemporalShuffle().candidates(batch, torch.Generator().manual_seed(0)).videos[0]
    perms = []
    for b in range(2):
        matches = [[torch.equal(out[b, :, i], batch[b, :, j]) for j in range(6)] for i in range(6)]
        perm = [row.index(True) for row in matches]
        assert sorted(perm) == list(range(6))
        perms.append(perm)
    assert perms[0] != list(range(6)) or perms[1] != list(range(6))
    again = TemporalShuffle().candidates(batch, torch.Generator().manual_seed(0)).videos[0]
    other = TemporalShuffle().candidates(batch, torch.Generator().manual_seed(9)).videos[0]
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_specs_and_errors(tiny_purifier):
    assert parse_value("true") is True and parse_value("None") is None and parse_value("3") == 3
    assert parse_value("0.5") == 0.5 and parse_value("32x28x28") == (32, 28, 28) and parse_value("log") == "log"
    assert parse_spec("videopure:guidance=false:t_star=4") == ("videopure", {"guidance": False, "t_star": 4})
    purifier = tiny_purifier(PurifyConfig())
    d = build_defence("videopure:guidance=false:single_candidate=0", purifier)
    assert d.name == "videopure:guidance=false:single_candidate=0"
    assert d.config.guidance.enabled is False and d.config.candidate_labels == (0,)
    assert purifier.config.guidance.enabled is True  # the base purifier is untouched
    assert build_defence("videopure:flow_grad=true:lambda_reference=32x28x28", purifier).flow_grad
    assert build_defence("ddim-inversion:checkpoint=false", purifier).config.guidance.enabled is False
    with pytest.raises(ValueError, match="Unknown VideoPure option 'flow_grad'"):
        build_defence("diffpure-ddim:flow_grad=true", purifier)
    assert build_defence("jpeg:quality=30", purifier).quality == 30
    assert build_defence("wavelet:levels=2", None).levels == 2
    with pytest.raises(ValueError, match="Unknown defence 'median'"):
        build_defence("median", purifier)
    with pytest.raises(ValueError, match="Bad options for the jpeg"):
        build_defence("jpeg:strength=3", purifier)
    with pytest.raises(ValueError, match="needs a Purifier"):
        build_defence("diffpure-ddim", None)
    with pytest.raises(ValueError, match="key=value"):
        build_defence("jpeg:50", None)
    with pytest.raises(ValueError, match=r"\(B, 3, F, H, W\)"):
        build_defence("none").candidates(torch.rand(3, 4, 8, 8))


def test_ddpm_last_step_noise_option(tiny_purifier, batch):
    """Default: noise on the step t=1 -> 0 too (the release's DDPMScheduler adds it whenever t > 0); the option
    gives the noiseless last step. With eps = 0 the two differ only by that last draw."""
    seen = []

    def eps_fn(z, t):
        seen.append(t)
        return torch.zeros_like(z)

    purifier = tiny_purifier(PurifyConfig())
    networks = purifier.networks
    purifier.networks = lambda **kw: dataclasses.replace(networks(**kw), eps=eps_fn)
    noisy = build_defence("diffpure-ddpm", purifier)
    plain = build_defence("diffpure-ddpm:last_step_noise=false", purifier)
    assert noisy.last_step_noise and not plain.last_step_noise
    a = noisy.candidates(batch, torch.Generator().manual_seed(0)).latents[0]
    b = plain.candidates(batch, torch.Generator().manual_seed(0)).latents[0]
    assert not torch.allclose(a, b, atol=1e-6)
    # the first 100 steps draw the same noise; the last step's std is sigma_1
    alphas = purifier.schedule.alphas_cumprod
    sigma_1 = math.sqrt((1 - alphas[0]) / (1 - alphas[1]) * (1 - alphas[1] / alphas[0]))
    assert 0.5 * sigma_1 < float((a - b).std()) < 1.5 * sigma_1


def test_unique_flow_runs_raft_once_per_distinct_pair():
    from videopure_core.defences.videopure import UniqueFlow

    calls = []

    def flow_fn(a, b):
        calls.append(a.shape[0])
        return torch.cat([(b - a).mean(1, keepdim=True), (a + b).mean(1, keepdim=True)], 1)

    g = torch.Generator().manual_seed(0)
    frames = torch.rand(5, 3, 8, 8, generator=g)
    first, second = frames[[0, 1, 2, 0, 1, 3, 0]], frames[[1, 2, 3, 1, 2, 4, 1]]  # 4 distinct pairs of 7
    out = UniqueFlow(flow_fn, chunk=3)(first, second)
    assert torch.allclose(out, flow_fn(first, second), atol=1e-6)
    assert calls[:2] == [3, 1]  # 4 distinct pairs in chunks of 3


def test_videopure_batched_shifts_equal_one_video_at_a_time(tiny_purifier, batch):
    """TT's shifted copies as one batch (distinct flow pairs once) give the candidates of each copy alone."""
    from conftest import constant_flow_fn

    calls = []
    inner = constant_flow_fn(1.0, 0.0)

    def flow_fn(a, b):
        calls.append(a.shape[0])
        return inner(a, b)

    defence = VideoPureDefence(tiny_purifier(PurifyConfig(t_star=2), flow=flow_fn))
    copies = [torch.roll(batch[:1], s, dims=2) for s in (0, 1, -1, 2)]
    together = defence.candidates(torch.cat(copies)).videos
    assert sum(calls) == 6  # the 6 cyclic pairs of the one video, not 4 x 5 pairs
    for i, c in enumerate(copies):
        alone = defence.candidates(c).videos[:, 0]
        assert torch.allclose(together[:, i], alone, atol=1e-5)
