"""encode_video / decode_latents against the raw diffusers AutoencoderKL calls (issue 15, item 3).

SPEC: encode = `2x-1`, per frame, posterior **mean**, times `scaling_factor`; decode = divide by it, VAE decode,
`x*0.5+0.5`, clamp to [0,1]. Checked against `vae.encode(...).latent_dist.mean` and `vae.decode(...).sample`
called directly on one frame at a time, not against the project's own code (a pair of mistakes that cancel, e.g.
no scaling on either side, passes a round trip through the project's own functions).
"""

import pytest
import torch

from videopure_core import FrameVAE
from videopure_core.tiny import tiny_vae
from videopure_core.vae import decode_latents, encode_video

SCALING = 0.37  # not ModelScope's 0.18215: the functions must read the VAE's own config, not a constant


@pytest.fixture(scope="module")
def vae():
    model = tiny_vae(1)
    model.register_to_config(scaling_factor=SCALING)
    return model


@pytest.fixture(scope="module")
def video():
    """B=2 videos of F=3 frames, 16x24 (non-square, so H and W cannot be swapped unnoticed), in [0,1]."""
    return torch.rand(2, 3, 3, 16, 24, generator=torch.Generator().manual_seed(0))


def raw_encode(vae, video):
    """The SPEC's encoder from diffusers calls, one frame at a time: (B, 3, F, H, W) -> (B, 4, F, H/8, W/8)."""
    b, _, f = video.shape[:3]
    with torch.no_grad():
        return torch.stack([
            torch.stack([vae.encode(video[i, :, j][None] * 2 - 1).latent_dist.mean[0] for j in range(f)], dim=1)
            for i in range(b)
        ]) * vae.config.scaling_factor


def raw_decode(vae, latents):
    """The SPEC's decoder from diffusers calls, one frame at a time: (N, 4, F, h, w) -> (N, 3, F, 8h, 8w) in [0,1]."""
    n, _, f = latents.shape[:3]
    with torch.no_grad():
        frames = torch.stack([
            torch.stack([vae.decode(latents[i, :, j][None] / vae.config.scaling_factor).sample[0] for j in range(f)],
                        dim=1)
            for i in range(n)
        ])
    return (frames * 0.5 + 0.5).clamp(0, 1)


def test_encode_video_is_the_scaled_posterior_mean_of_each_frame(vae, video):
    z = encode_video(vae, video, chunk=2)  # chunks of 2 frames: one chunk holds frames of both videos
    assert z.shape == (2, 4, 3, 2, 3) and z.dtype == torch.float32
    expected = raw_encode(vae, video)
    # float32 convolutions over a batch of frames vs one frame: equal up to summation order
    assert torch.allclose(z, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(encode_video(FrameVAE(vae), video), expected, rtol=1e-5, atol=1e-6)  # the adapter too
    # the mean, not a sample: the posterior has a spread, so a sample would differ
    with torch.no_grad():
        std = vae.encode(video[0, :, 0][None] * 2 - 1).latent_dist.std
    assert float(std.min()) * SCALING > 1e-3


def test_decode_latents_divides_by_the_scaling_factor_and_maps_to_0_1(vae):
    latents = torch.randn(3, 4, 2, 2, 3, generator=torch.Generator().manual_seed(1)) * 2.0  # N=3 (e.g. K x B)
    x = decode_latents(vae, latents, chunk=4)
    assert x.shape == (3, 3, 2, 16, 24)
    assert torch.allclose(x, raw_decode(vae, latents), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the clamp is exercised: the raw decoder's output leaves [-1, 1] somewhere
        raw = vae.decode(latents[0, :, 0][None] / SCALING).sample
    assert float(raw.abs().max()) > 1.0 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_decode_of_encode_is_the_raw_autoencoder_round_trip(vae, video):
    """decode(encode(x)) is the VAE's own reconstruction D(mean E(2x-1)) mapped to [0,1]: the scaling factor
    cancels exactly, as in diffusers, whatever the factor is."""
    with torch.no_grad():
        frames = video.permute(0, 2, 1, 3, 4).flatten(0, 1) * 2 - 1  # (B*F, 3, H, W)
        recon = vae.decode(vae.encode(frames).latent_dist.mean).sample
    expected = (recon * 0.5 + 0.5).clamp(0, 1).unflatten(0, (2, 3)).permute(0, 2, 1, 3, 4)
    assert torch.allclose(decode_latents(vae, encode_video(vae, video)), expected, rtol=1e-5, atol=1e-5)
