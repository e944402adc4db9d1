"""Runtime options of the core (device, dtype, autocast, channels_last, compile, unet_batch, chunk): they change how
the networks run, not what the stages compute, and the defaults are a plain float32 call."""

import copy

import pytest
import torch

from videopure_core import MODELSCOPE_SCHEDULER_CONFIG, DiffusionModels, Purifier, PurifyConfig, Runtime, unet_eps_fn

from conftest import constant_flow_fn


def _purifier(tiny_models, **runtime):
    """A Purifier on private copies of the tiny models, t*=2 to keep the tests short."""
    unet, vae, emb = (copy.deepcopy(m) if isinstance(m, torch.nn.Module) else m for m in tiny_models)
    models = DiffusionModels(unet, vae, MODELSCOPE_SCHEDULER_CONFIG, emb)
    return Purifier(models, constant_flow_fn(1.0, 0.0), PurifyConfig(t_star=2), Runtime(**runtime))


@pytest.fixture(scope="module")
def clip():
    return torch.rand(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(tiny_models, clip):
    return _purifier(tiny_models).purify(clip)


def test_default_eps_fn_is_exactly_a_plain_unet_call(tiny_models):
    unet, _, emb = tiny_models
    z = torch.randn(2, 4, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = unet(z, 41, encoder_hidden_states=emb.expand(2, -1, -1)).sample
    assert torch.equal(unet_eps_fn(unet, emb)(z, 41), expected)


def test_unet_batch_splits_the_videos_and_keeps_their_eps(tiny_models):
    unet, _, emb = tiny_models
    z = torch.randn(3, 4, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    batches = []
    hook = unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        whole = unet_eps_fn(unet, emb)(z, 21)
        split = unet_eps_fn(unet, emb, batch=2)(z, 21)
    finally:
        hook.remove()
    assert batches == [3, 2, 1]
    assert torch.allclose(split, whole, atol=1e-5)


def _conv_output_dtypes(module):
    seen = []
    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    return seen, conv.register_forward_hook(lambda m, i, out: seen.append(out.dtype))


def test_autocast_runs_the_chosen_networks_in_bf16_and_keeps_latents_fp32(tiny_models, clip, reference):
    for networks, unet_dtype in ((("unet", "vae", "flow"), torch.bfloat16), (("vae", "flow"), torch.float32)):
        p = _purifier(tiny_models, autocast="bfloat16", autocast_networks=networks)
        unet_seen, h1 = _conv_output_dtypes(p.models.unet)
        vae_seen, h2 = _conv_output_dtypes(p.models.vae.decoder)
        try:
            out = p.purify(clip)
        finally:
            h1.remove(), h2.remove()
        assert set(unet_seen) == {unet_dtype} and set(vae_seen) == {torch.bfloat16}
        assert out.latents.dtype == torch.float32 and out.videos.dtype == torch.float32
        # bf16 rounding moves pixels a little on average (single elements more: the L1 guidance step is
        # sign-based, so a rounding flip moves an element by a whole step)
        pixel_diff = float((out.videos - reference.videos).abs().mean())
        latent_diff = float((out.latents - reference.latents).abs().mean())
        assert 0 < pixel_diff < 0.03
        assert latent_diff < 0.1 * float(reference.latents.abs().mean())


def test_channels_last_converts_the_2d_convolutions_only_and_keeps_numerics(tiny_models, clip, reference):
    p = _purifier(tiny_models, channels_last=True)
    m = p.models
    conv2d = [w.weight for w in list(m.vae.modules()) + list(m.unet.modules()) if isinstance(w, torch.nn.Conv2d)]
    conv3d = [w.weight for w in m.unet.modules() if isinstance(w, torch.nn.Conv3d)]
    assert conv2d and all(w.is_contiguous(memory_format=torch.channels_last) for w in conv2d)
    assert conv3d and all(w.is_contiguous() for w in conv3d)
    out = p.purify(clip)
    assert torch.allclose(out.latents, reference.latents, atol=1e-4)
    assert torch.allclose(out.videos, reference.videos, atol=1e-4)


def test_compile_option_compiles_unet_and_vae_once_and_keeps_results(tiny_models, clip, reference, monkeypatch):
    compiled = []

    def fake_compile(fn, mode=None):  # records what would be compiled; runs it eagerly
        compiled.append(getattr(fn, "__name__", type(fn).__name__))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    p = _purifier(tiny_models, compile=True)
    nets = p.networks()  # the VAE adapter compiles encode and decode when the networks are made
    assert sorted(compiled) == ["UNet3DConditionModel", "decode", "encode"]
    assert torch.equal(p.purify(clip).latents, reference.latents)
    p.networks(grad=True)
    assert len(compiled) == 3 and not nets.grad  # differentiable networks run eagerly: nothing more compiled


def test_runtime_device_and_dtype_are_honoured(tiny_models, clip, reference):
    p = _purifier(tiny_models, dtype="bfloat16", device="cpu")
    assert {w.dtype for w in p.models.unet.parameters()} == {torch.bfloat16}
    assert {w.dtype for w in p.models.vae.parameters()} == {torch.bfloat16} and p.device == torch.device("cpu")
    out = p.purify(clip)
    assert out.latents.dtype == torch.float32  # latent arithmetic stays float32
    assert 0 < float((out.videos - reference.videos).abs().mean()) < 0.05
    with pytest.raises(ValueError, match="not a torch device"):
        Runtime(device="gpu0")


@pytest.mark.parametrize(
    "changes, message",
    [({"autocast": "int8"}, "autocast"), ({"unet_batch": 0}, "unet_batch"),
     ({"autocast_networks": ("classifier",)}, "autocast_networks"), ({"chunk": 0}, "chunk"),
     ({"dtype": "float64"}, "dtype")],
)
def test_bad_execution_options_are_rejected_with_the_field_named(changes, message):
    with pytest.raises(ValueError, match=message):
        Runtime(**changes)
