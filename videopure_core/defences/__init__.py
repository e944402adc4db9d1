"""Defences behind one interface: video (B, 3, F, H, W) in [0,1] -> candidates (K, B, 3, F, H, W), majority vote.

    defence = build_defence("videopure", purifier)          # or "jpeg:quality=50", "videopure:guidance=false", ...
    result = defend_and_vote(defence, classifier, video)     # VoteResult, winner (B,)

Names (`DEFENCES`): none, videopure, ddim-inversion, diffpure-ddim, diffpure-ddpm, jpeg, wavelet, shuffle.
A spec is a name followed by `:key=value` options: PurifyConfig fields for the diffusion defences (plus
`flow_grad` for videopure), `quality` and `gradient` (bpda or surrogate) for jpeg, `levels`/`sigma` for wavelet. Values are read by
`videopure_core.options.parse_value`: true/false, none, numbers, and tuples written with x (`guidance_reference=32x28x28`).
"""

from __future__ import annotations

from typing import Optional

from ..options import parse_assignments
from .base import GRADIENTS, Defence, DefenceOutput, Gradient, Timer, defend_and_vote, defended_vote
from .diffpure_ddim import DiffPureDDIM, noise_latent
from .diffpure_ddpm import DiffPureDDPM, ddpm_step
from .jpeg import Jpeg, jpeg_frames, jpeg_surrogate, quant_table
from .none import NoDefence
from .shuffle import TemporalShuffle, shuffle_frames
from .videopure import DDIM_INVERSION, VideoPureDefence, ddim_inversion_defence
from .wavelet import WaveletDenoise, haar2d, ihaar2d, wavelet_denoise

DEFENCES: tuple[str, ...] = ("none", "videopure", "ddim-inversion", "diffpure-ddim", "diffpure-ddpm", "jpeg", "wavelet", "shuffle")
DIFFUSION_DEFENCES: tuple[str, ...] = ("videopure", "ddim-inversion", "diffpure-ddim", "diffpure-ddpm")


def parse_spec(spec: str) -> tuple[str, dict]:
    """'videopure:guidance=false:t_star=4' -> ('videopure', {'guidance': False, 't_star': 4})."""
    name, *options = spec.strip().split(":")
    return name.strip(), parse_assignments(options, f"Defence option in {spec!r}:", "'jpeg:quality=50'")


def build_defence(spec: str, purifier=None) -> Defence:
    """A Defence from a spec string; the diffusion defences need a Purifier (its models and base config)."""
    name, options = parse_spec(spec)
    if name not in DEFENCES:
        raise ValueError(f"Unknown defence {name!r}; choose from {', '.join(DEFENCES)} (options as name:key=value).")
    if name in DIFFUSION_DEFENCES:
        if purifier is None:
            raise ValueError(f"The {name} defence needs a Purifier (the diffusion model); pass purifier=...")
        flow_grad = bool(options.pop("flow_grad", False))
        checkpoint = bool(options.pop("checkpoint", True))
        p = purifier.with_config(**options) if options else purifier
        if name == "videopure":
            return VideoPureDefence(p, spec, flow_grad=flow_grad, checkpoint=checkpoint)
        if name == "ddim-inversion":
            return VideoPureDefence(p.with_config(**DDIM_INVERSION), spec, checkpoint=checkpoint)
        cls = DiffPureDDIM if name == "diffpure-ddim" else DiffPureDDPM
        return cls(p, spec, checkpoint=checkpoint)
    classes = {"none": NoDefence, "jpeg": Jpeg, "wavelet": WaveletDenoise, "shuffle": TemporalShuffle}
    try:
        defence = classes[name](**options)
    except TypeError as err:
        raise ValueError(f"Bad options for the {name} defence in {spec!r}: {err}.") from None
    defence.name = spec
    return defence


__all__ = [n for n in dir() if not n.startswith("_")]
