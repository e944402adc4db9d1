"""The stages of VideoPure (paper Algorithm 1) as composable nodes, each a thin adapter over videopure_core.

    VAE Encode -> Temporal DDIM Inversion -> Guided Denoise Step x t_star (or Guided Denoise) -> Candidate Decode
                  RAFT Flow (on the input frames) -----^

Chaining t_star Guided Denoise Steps after the inversion reproduces Purifier.purify candidate for candidate: each
step makes the candidate z_0^t of its timestep, and the last one (timestep 1) also makes z_0^0.
"""

from __future__ import annotations

import dataclasses

import torch

from videopure_core import pipeline
from videopure_core.config import Guidance, PurifyConfig
from videopure_core.denoise import denoise_steps
from videopure_core.flow import LatentFlow
from videopure_core.pipeline import Candidates
from videopure_core.schedule import make_schedule
from videopure_core.vae import decode_latents

from . import bridge
from .types import (
    CANDIDATE_LATENTS,
    CANDIDATES,
    FINISHED,
    FLOW,
    LATENT,
    MODEL,
    RAFT_INPUT,
    FlowState,
    LatentState,
    as_flow_model,
)

CHUNK = ("INT", {"default": 16, "min": 1, "max": 4096,
                 "tooltip": "Frames per network call: lower it if a long video runs out of memory."})

# Sockets, with the tooltips the frontend shows on them.
MODEL_IN = (MODEL, {"tooltip": "The diffusion model from VideoPure Diffusion Model Loader."})
IMAGES_IN = ("IMAGE", {"tooltip": "The video's frames, one image per frame: at least 2, height and width multiples "
                                  "of 8 (VideoPure Fit Video makes them so)."})
LATENT_IN = (LATENT, {"tooltip": "A VideoPure latent: from VAE Encode, Temporal DDIM Inversion or the previous "
                                 "Guided Denoise Step."})
RAFT_IN = (RAFT_INPUT, {"tooltip": "RAFT from VideoPure RAFT Loader, or ComfyUI's Load Optical Flow Model "
                                   "(OPTICAL_FLOW, raft_large)."})
FLOW_IN = (FLOW, {"tooltip": "From RAFT Flow; needed unless lambda_temp is 0 or guidance is off."})

# Guidance widgets shared by Guided Denoise Step, Guided Denoise and the one-node Purify (same names, same order).
GUIDANCE_INPUTS = {
    "guidance": ("BOOLEAN", {"default": True, "tooltip": "Spatial-temporal optimisation (Eqs. 12-16); off: the "
                                                          "candidates are the plain DDIM predictions x0_hat."}),
    "alpha_s": ("FLOAT", {"default": -4.0, "min": -1000.0, "max": 1000.0, "step": 0.1,
                          "tooltip": "Guidance scale of Eq. 16 (paper: -4)."}),
    "lambda_temp": ("FLOAT", {"default": 5.0, "min": -1e6, "max": 1e6, "step": 0.1,
                              "tooltip": "Weight of the flow-warp loss L_temp (Eq. 13; paper: 5). 0 needs no flow."}),
    "lambda_spa": ("FLOAT", {"default": 800.0, "min": -1e7, "max": 1e7, "step": 1.0,
                             "tooltip": "Weight of L_spa = -MSE(x0_hat, input latent) (Eq. 12; paper: 800)."}),
    "guidance_reference": ("STRING", {"default": "", "tooltip": "Empty: the lambdas as they are (release). "
                                      "'frames,h,w' of the latent the lambdas were tuned at (e.g. 32,28,28 for the "
                                      "paper's 32x224x224) rescales them to this video's latent size."}),
}
GUIDANCE_OPTIONS = {
    "variance_weight": (["log", "linear"], {"default": "log", "tooltip": "w_t of Eq. 16: log of the DDPM "
                                            "posterior variance (release) or the variance itself."}),
    "guide_trajectory": ("BOOLEAN", {"default": False, "tooltip": "Feed the optimised latent back into the DDIM "
                                     "trajectory (Table VIII's 'Ours*'); release: off."}),
    "final_candidate": (["release", "clean"], {"default": "release", "tooltip": "How z_0^0 is made from the "
                        "final latent (Algorithm 1 l. 12-14): release = tau=1's coefficients, clean = as x0."}),
    "warp_grad": ("BOOLEAN", {"default": False, "tooltip": "Let the gradient of L_temp through the warped frame "
                              "(release: off)."}),
}


def parse_reference(text: str):
    """'' -> None; '32,28,28' -> (32, 28, 28)."""
    text = (text or "").strip()
    if not text or text.lower() == "none":
        return None
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"guidance_reference {text!r}: expected 'frames,h,w' of a latent, e.g. 32,28,28, or empty.")
    return values


def guidance_config(guidance, alpha_s, lambda_temp, lambda_spa, guidance_reference, variance_weight="log",
                    guide_trajectory=False, final_candidate="release", warp_grad=False, flow=None, **base):
    """The PurifyConfig of the guidance widgets; the bidirectional loss is on when the flow has backward flow."""
    bidirectional = flow is not None and flow.flow.backward is not None
    return PurifyConfig(
        guidance=Guidance(enabled=guidance, alpha_s=alpha_s, lambda_temp=lambda_temp, lambda_spa=lambda_spa,
                          lambda_reference=parse_reference(guidance_reference), variance_weight=variance_weight,
                          warp_grad=warp_grad, bidirectional=bidirectional),
        guide_trajectory=guide_trajectory, final_candidate=final_candidate, **base,
    )


def flow_for(flow, state: LatentState, config: PurifyConfig, device):
    """The LatentFlow on `device` when the temporal loss needs it, after checking it belongs to this video."""
    if not config.needs_flow:
        return None
    if flow is None:
        raise ValueError(
            f"The temporal loss (lambda_temp={config.guidance.lambda_temp:g}) needs optical flow: connect a VideoPure "
            f"RAFT Flow node to the 'flow' input, or set lambda_temp to 0."
        )
    check_same_video(flow, state)
    return LatentFlow(*(None if t is None else t.to(device) for t in flow.flow))


def check_same_video(flow: FlowState, state: LatentState) -> None:
    h, w = state.z.shape[-2:]
    fh, fw = flow.flow.forward.shape[-2:]
    if flow.frames != state.frames or (fh, fw) != (h, w):
        raise ValueError(
            f"The flow belongs to a different video: {flow.frames} frames at {flow.image_size[0]}x"
            f"{flow.image_size[1]}, but the latent has {state.frames} frames at {state.image_size[0]}x"
            f"{state.image_size[1]}. Feed RAFT Flow the same frames (and latent) as VAE Encode."
        )


def check_candidate(candidate: int, labels) -> None:
    """Raise the error Candidates.pick would, before any work is done."""
    if candidate != -1 and candidate not in labels:
        raise ValueError(f"candidate={candidate} is not among the candidates z_0^t with t in {list(labels)}: pick "
                         f"one of those, or -1 for the last one made.")


def _cpu(t):
    return t.detach().to(bridge.output_device())


class VideoPureVAEEncode:
    DESCRIPTION = "Encode video frames (an IMAGE batch, one image per frame) to latents z0 with the VAE (Eq. 4)."
    CATEGORY = "VideoPure/stages"
    FUNCTION = "encode"
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The clean latent z0 (4 channels, frames, height/8, width/8) for Temporal DDIM Inversion "
                       "and RAFT Flow.",)
    SEARCH_ALIASES = ["encode video", "videopure encode", "vae encode video"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": MODEL_IN, "images": IMAGES_IN, "chunk": CHUNK}}

    def encode(self, model, images, chunk):
        video = bridge.image_to_video(images)
        with model.on_device() as device:
            z0 = pipeline.encode(model.pipeline_networks(chunk), video.to(device), bridge.hooks())
        z0 = _cpu(z0)
        return (LatentState(z=z0, z0=z0, t=0, image_size=tuple(video.shape[-2:])),)


class VideoPureTemporalInversion:
    DESCRIPTION = ("Temporal DDIM inversion (Eqs. 10-11): t_star DDIM steps up from z0, with one frame's "
                   "predicted noise replicated to every frame.")
    CATEGORY = "VideoPure/stages"
    FUNCTION = "invert"
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The noised latent z_t* at the top of the trajectory: chain t_star Guided Denoise Steps (or "
                       "one Guided Denoise) after it.",)
    SEARCH_ALIASES = ["ddim inversion", "invert", "add noise", "videopure inversion"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_IN,
                "latent": (LATENT, {"tooltip": "The clean latent from VideoPure VAE Encode."}),
                "t_star": ("INT", {"default": 6, "min": 1, "max": 1000, "tooltip": "Inversion steps (paper t*=6); "
                                   "chain this many Guided Denoise Steps after it."}),
                "ddim_steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "DDIM grid over the "
                                       "training steps (50: timesteps 1, 21, ..., 981)."}),
                "temporal": ("BOOLEAN", {"default": True, "tooltip": "Replicate one frame's noise (Eq. 11); "
                                         "off: plain DDIM inversion."}),
                "noise_frame": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": "The frame whose noise is "
                                        "replicated (paper: the first)."}),
            }
        }

    def invert(self, model, latent, t_star, ddim_steps, temporal, noise_frame):
        if latent.schedule is not None:
            raise ValueError(f"This latent is {latent.describe()}, already inverted: connect the output of "
                             f"VideoPure VAE Encode to Temporal DDIM Inversion.")
        config = PurifyConfig(t_star=t_star, ddim_steps=ddim_steps, temporal=temporal, noise_frame=noise_frame)
        schedule = make_schedule(model.models.scheduler_config, config.ddim_steps, config.t_star)
        with model.on_device() as device:
            z = pipeline.invert(model.pipeline_networks(), latent.z0.to(device), schedule, config, bridge.hooks())
        return (dataclasses.replace(latent, z=_cpu(z), t=schedule.timesteps[-1], schedule=schedule,
                                    ddim_steps=ddim_steps),)


class VideoPureRAFTFlow:
    DESCRIPTION = ("Optical flow of the input frames (consecutive pairs, full resolution) with RAFT, resized to the "
                   "latent grid for the temporal loss (Eq. 13). Computed once, shared by every step.")
    CATEGORY = "VideoPure/stages"
    FUNCTION = "flow"
    RETURN_TYPES = (FLOW,)
    RETURN_NAMES = ("flow",)
    OUTPUT_TOOLTIPS = ("Optical flow of the input on the latent grid, for every Guided Denoise Step (and Flow to "
                       "Image).",)
    SEARCH_ALIASES = ["optical flow", "raft", "motion", "videopure flow"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "raft": RAFT_IN,
                "images": (IMAGES_IN[0], {"tooltip": "The same frames as VAE Encode got."}),
                "latent": (LATENT, {"tooltip": "The latent VAE Encode made from these frames (for the grid size)."}),
                "iters": ("INT", {"default": 10, "min": 1, "max": 100, "tooltip": "RAFT refinement iterations."}),
                "input_range": (["-1,1", "0,1"], {"default": "-1,1", "tooltip": "What RAFT is fed: -1,1 is "
                                "correct; 0,1 reproduces the authors' release."}),
                "bidirectional": ("BOOLEAN", {"default": False, "tooltip": "Also estimate backward flow: the "
                                  "temporal loss then uses both directions."}),
                "occlusion_mask": ("BOOLEAN", {"default": False, "tooltip": "Weight the temporal loss by a "
                                   "forward-backward consistency mask."}),
                "chunk": CHUNK,
            }
        }

    def flow(self, raft, images, latent, iters, input_range, bidirectional, occlusion_mask, chunk):
        video = bridge.image_to_video(images)
        frames, size = video.shape[2], tuple(video.shape[-2:])
        if frames != latent.frames or size != tuple(latent.image_size):
            raise ValueError(
                f"RAFT Flow got {frames} frames at {size[0]}x{size[1]} but the latent was encoded from "
                f"{latent.frames} frames at {latent.image_size[0]}x{latent.image_size[1]}: connect the same "
                f"IMAGE batch to VAE Encode and RAFT Flow."
            )
        guidance = Guidance(bidirectional=bidirectional, occlusion_mask=occlusion_mask)
        raft = as_flow_model(raft)
        with raft.on_device() as device:
            nets = pipeline.Networks(flow=raft.flow_fn(iters, input_range), chunk=chunk)
            lf = pipeline.flow(nets, video.to(device), tuple(latent.z.shape[-2:]), guidance, bridge.hooks())
        return (FlowState(LatentFlow(*(None if t is None else _cpu(t) for t in lf)), size),)


def _step_inputs():
    latent = (LATENT, {"tooltip": "The inverted latent (from Temporal DDIM Inversion, or the previous Guided "
                                  "Denoise Step)."})
    return {"required": {"model": MODEL_IN, "latent": latent, **GUIDANCE_INPUTS, **GUIDANCE_OPTIONS},
            "optional": {"flow": FLOW_IN}}


def _preview(nets):
    """A preview maker for the node's progress bar: the middle frame of a candidate, decoded with the VAE."""
    return bridge.candidate_preview(lambda z: decode_latents(nets.vae, z, 1))


def _check_trajectory(state: LatentState, node: str) -> None:
    if state.schedule is None:
        raise ValueError(f"{node} needs an inverted latent, got {state.describe()}: put VideoPure Temporal DDIM "
                         f"Inversion between VAE Encode and {node}.")
    if state.t == FINISHED:
        n = len(state.schedule.timesteps)
        raise ValueError(f"{node} got {state.describe()}: with t_star={n} chain exactly {n} Guided Denoise Steps, "
                         f"then Candidate Decode.")


def _append(previous: Candidates | None, new: torch.Tensor, labels: tuple[int, ...]) -> Candidates:
    """The candidates so far (latents only) with `new` (K, B, 4, F, h, w) appended."""
    new = _cpu(new)
    if previous is None:
        return Candidates(None, new, labels)
    return Candidates(None, torch.cat([previous.latents, new]), previous.labels + labels)


class VideoPureGuidedDenoiseStep:
    DESCRIPTION = ("One step of Algorithm 1: a DDIM step down from the latent's timestep and the guided candidate "
                   "z_0^t (Eqs. 12-16). Chain t_star of them after the inversion; the last (timestep 1) also makes "
                   "z_0^0. 'candidates' holds every candidate so far.")
    CATEGORY = "VideoPure/stages"
    FUNCTION = "step"
    RETURN_TYPES = (LATENT, CANDIDATE_LATENTS)
    RETURN_NAMES = ("latent", "candidates")
    OUTPUT_TOOLTIPS = ("The latent one DDIM step further down, for the next Guided Denoise Step.",
                       "Every candidate made so far (latents), for Candidate Decode.")
    SEARCH_ALIASES = ["denoise step", "guided step", "spatial temporal optimisation", "videopure step"]

    @classmethod
    def INPUT_TYPES(cls):
        return _step_inputs()

    def step(self, model, latent, guidance, alpha_s, lambda_temp, lambda_spa, guidance_reference, variance_weight,
             guide_trajectory, final_candidate, warp_grad, flow=None):
        _check_trajectory(latent, "Guided Denoise Step")
        schedule, t = latent.schedule, latent.t
        config = guidance_config(guidance, alpha_s, lambda_temp, lambda_spa, guidance_reference, variance_weight,
                                 guide_trajectory, final_candidate, warp_grad, flow,
                                 t_star=len(schedule.timesteps), ddim_steps=latent.ddim_steps)
        index = schedule.timesteps.index(t)
        last = index == 0  # the step from timestep 1 also makes the final candidate z_0^0
        count = 2 if last else 1
        progress = bridge.Progress({"denoise": count})
        with model.on_device() as device:
            lf = flow_for(flow, latent, config, device)
            nets = model.pipeline_networks()
            preview = _preview(nets) if bridge.previews_enabled() else None
            steps = denoise_steps(nets.eps, latent.z.to(device), latent.z0.to(device), lf, schedule, config,
                                  start=t)
            made = []
            for i in range(count):
                made.append(next(steps))
                if preview is not None:
                    progress.preview(preview(made[-1].candidate))
                progress("denoise", i + 1, count)
        candidates = _append(latent.candidates, torch.stack([s.candidate for s in made]), tuple(s.label for s in made))
        next_t = FINISHED if last else schedule.timesteps[index - 1]
        state = dataclasses.replace(latent, z=_cpu(made[0].z), t=next_t, candidates=candidates)
        return (state, candidates)


class VideoPureGuidedDenoise:
    DESCRIPTION = ("All t_star guided denoising steps of Algorithm 1 in one node, right after the inversion: the "
                   "t_star + 1 voting candidates z_0^t*, ..., z_0^0.")
    CATEGORY = "VideoPure/stages"
    FUNCTION = "denoise"
    RETURN_TYPES = (CANDIDATE_LATENTS,)
    RETURN_NAMES = ("candidates",)
    OUTPUT_TOOLTIPS = ("The t_star + 1 candidates z_0^t* ... z_0^0 (latents), for Candidate Decode.",)
    SEARCH_ALIASES = ["guided denoising", "denoise all", "videopure denoise"]

    @classmethod
    def INPUT_TYPES(cls):
        return _step_inputs()

    def denoise(self, model, latent, guidance, alpha_s, lambda_temp, lambda_spa, guidance_reference,
                variance_weight, guide_trajectory, final_candidate, warp_grad, flow=None):
        _check_trajectory(latent, "Guided Denoise")
        schedule = latent.schedule
        if latent.t != schedule.timesteps[-1]:
            raise ValueError(f"Guided Denoise runs every step from the top; this latent is {latent.describe()}. "
                             f"Connect it straight to Temporal DDIM Inversion, or finish with Guided Denoise Steps.")
        t_star = len(schedule.timesteps)
        config = guidance_config(guidance, alpha_s, lambda_temp, lambda_spa, guidance_reference, variance_weight,
                                 guide_trajectory, final_candidate, warp_grad, flow,
                                 t_star=t_star, ddim_steps=latent.ddim_steps)
        with model.on_device() as device:
            lf = flow_for(flow, latent, config, device)
            nets = model.pipeline_networks()
            latents = pipeline.denoise(nets, latent.z.to(device), latent.z0.to(device), lf, schedule, config,
                                       bridge.hooks(preview=_preview(nets)))
        return (Candidates(None, _cpu(latents), config.candidate_labels),)


class VideoPureCandidateDecode:
    DESCRIPTION = ("Decode the candidates' latents to frames with the VAE (chunked). frames: one candidate "
                   "(-1: the last, z_0^0 after a full chain); all_frames: every candidate, one after the other.")
    CATEGORY = "VideoPure/stages"
    FUNCTION = "decode"
    RETURN_TYPES = (CANDIDATES, "IMAGE", "IMAGE")
    RETURN_NAMES = ("candidates", "frames", "all_frames")
    OUTPUT_TOOLTIPS = ("The decoded candidates, for Classifier Vote and Select Candidate.",
                       "The frames of one candidate (the 'candidate' widget).",
                       "The frames of every candidate, one candidate after the other.")
    SEARCH_ALIASES = ["decode candidates", "vae decode video", "videopure decode"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_IN,
                "candidates": (CANDIDATE_LATENTS, {"tooltip": "The candidates of the last Guided Denoise Step, or "
                                                              "of Guided Denoise."}),
                "candidate": ("INT", {"default": -1, "min": -1, "max": 1000, "tooltip": "Which candidate z_0^t "
                                      "'frames' shows: its t, or -1 for the last one made."}),
                "chunk": CHUNK,
            }
        }

    def decode(self, model, candidates, candidate, chunk):
        check_candidate(candidate, candidates.labels)  # before the decoding, not after it
        with model.on_device() as device:
            pixels = pipeline.decode(model.pipeline_networks(chunk), candidates.latents.to(device), bridge.hooks())
        decoded = Candidates(_cpu(pixels), candidates.latents, tuple(candidates.labels))
        return (decoded, bridge.video_to_image(decoded.pick(candidate)), bridge.video_to_image(decoded.videos))


NODE_CLASS_MAPPINGS = {
    "VideoPureVAEEncode": VideoPureVAEEncode,
    "VideoPureTemporalInversion": VideoPureTemporalInversion,
    "VideoPureRAFTFlow": VideoPureRAFTFlow,
    "VideoPureGuidedDenoiseStep": VideoPureGuidedDenoiseStep,
    "VideoPureGuidedDenoise": VideoPureGuidedDenoise,
    "VideoPureCandidateDecode": VideoPureCandidateDecode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VideoPureVAEEncode": "VideoPure VAE Encode",
    "VideoPureTemporalInversion": "VideoPure Temporal DDIM Inversion",
    "VideoPureRAFTFlow": "VideoPure RAFT Flow",
    "VideoPureGuidedDenoiseStep": "VideoPure Guided Denoise Step",
    "VideoPureGuidedDenoise": "VideoPure Guided Denoise (all steps)",
    "VideoPureCandidateDecode": "VideoPure Candidate Decode",
}
