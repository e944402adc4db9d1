"""Defences behind one interface: video (B, 3, F, H, W) in [0,1] -> candidates (K, B, 3, F, H, W), majority vote.

    defence = build_defence("videopure", purifier)          # or "jpeg:quality=50", "videopure:guidance=false", ...
    result = defend_and_vote(defence, classifier, video)     # VoteResult, winner (B,)

Names (`DEFENCES`): none, videopure, ddim-inversion, diffpure-ddim, diffpure-ddpm, jpeg, wavelet, shuffle.
A spec is a name followed by `:key=value` options: VideoPure options for the diffusion defences (the flat names
of `PurifyConfig.with_options`, plus `flow_grad` and `checkpoint`), `quality` and `gradient` (bpda or surrogate)
for jpeg, `levels`/`sigma` for wavelet. Values are read by `videopure_core.options.parse_value`: true/false, none,
numbers, and tuples written with x (`lambda_reference=32x28x28`).
"""

from __future__ import annotations

import inspect

from ..config import DDIM_INVERSION
from ..options import parse_assignments
from .base import GRADIENTS, Defence, Gradient, defend_and_vote, one_candidate
from .diffpure_ddim import DiffPureDDIM, noise_latent
from .diffpure_ddpm import DiffPureDDPM, ddpm_step
from .jpeg import Jpeg, jpeg_frames, jpeg_surrogate, quant_table
from .none import NoDefence
from .shuffle import TemporalShuffle, shuffle_frames
from .videopure import VideoPureDefence, ddim_inversion_defence
from .wavelet import WaveletDenoise, haar2d, ihaar2d, wavelet_denoise

DIFFUSION_BUILDERS = {  # name -> builder(purifier, name=spec, **defence options)
    "videopure": VideoPureDefence,
    "ddim-inversion": ddim_inversion_defence,
    "diffpure-ddim": DiffPureDDIM,
    "diffpure-ddpm": DiffPureDDPM,
}
PIXEL_BUILDERS = {"none": NoDefence, "jpeg": Jpeg, "wavelet": WaveletDenoise, "shuffle": TemporalShuffle}
DEFENCES: tuple[str, ...] = ("none", "videopure", "ddim-inversion", "diffpure-ddim", "diffpure-ddpm", "jpeg", "wavelet", "shuffle")
DIFFUSION_DEFENCES: tuple[str, ...] = tuple(DIFFUSION_BUILDERS)


def parse_spec(spec: str) -> tuple[str, dict]:
    """'videopure:guidance=false:t_star=4' -> ('videopure', {'guidance': False, 't_star': 4})."""
    name, *options = spec.strip().split(":")
    return name.strip(), parse_assignments(options, f"Defence option in {spec!r}:", "'jpeg:quality=50'")


def build_defence(spec: str, purifier=None) -> Defence:
    """A Defence from a spec string; the diffusion defences need a Purifier (its models and base config).

    For a diffusion defence, options its builder takes (flow_grad, checkpoint) go to the builder and the rest are
    VideoPure options for the Purifier's config (`PurifyConfig.with_options`)."""
    name, options = parse_spec(spec)
    if name in DIFFUSION_BUILDERS:
        if purifier is None:
            raise ValueError(f"The {name} defence needs a Purifier (the diffusion model); pass purifier=...")
        builder = DIFFUSION_BUILDERS[name]
        accepted = set(inspect.signature(builder).parameters) - {"purifier", "name"}
        own = {k: options.pop(k) for k in list(options) if k in accepted}
        return builder(purifier.with_config(**options) if options else purifier, name=spec, **own)
    if name not in PIXEL_BUILDERS:
        raise ValueError(f"Unknown defence {name!r}; choose from {', '.join(DEFENCES)} (options as name:key=value).")
    try:
        defence = PIXEL_BUILDERS[name](**options)
    except TypeError as err:
        raise ValueError(f"Bad options for the {name} defence in {spec!r}: {err}.") from None
    defence.name = spec
    return defence


__all__ = [n for n in dir() if not n.startswith("_")]
