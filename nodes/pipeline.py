"""The whole of VideoPure in one node (Purifier.purify, and the vote when a classifier is connected), and picking
one candidate from its output as a cheap step of its own."""

from __future__ import annotations

import contextlib

import torch

from videopure_core.config import Guidance, PurifyConfig, Runtime
from videopure_core.pipeline import Candidates, progress_steps
from videopure_core.vae import decode_latents

from . import bridge
from .outputs import vote_candidates
from .stages import CHUNK, GUIDANCE_INPUTS, IMAGES_IN, MODEL_IN, RAFT_IN, check_candidate, parse_reference
from .types import CANDIDATES, CLASSIFIER, as_flow_model

DDIM_STEPS = PurifyConfig().ddim_steps  # Purify's DDIM grid (Temporal DDIM Inversion has a widget for it)
CANDIDATE_TOOLTIP = ("Which candidate z_0^t 'purified' shows: its t (0 ... t_star), or -1 for the last one made. "
                     "Changing it does not purify again; VideoPure Select Candidate after 'candidates' does the same.")


class VideoPurePurify:
    DESCRIPTION = ("VideoPure in one node (paper Algorithm 1): encode, temporal DDIM inversion, RAFT flow, guided "
                   "denoising, decode; with a classifier also the multi-step vote. The composable stage nodes give "
                   "the same result step by step.")
    CATEGORY = "VideoPure"
    FUNCTION = "purify"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING", "INT", CANDIDATES)
    RETURN_NAMES = ("purified", "all_candidates", "vote_table", "winner", "candidates")
    OUTPUT_TOOLTIPS = (
        "The frames of the candidate chosen by 'candidate' (default z_0^0, the last one).",
        "The frames of every candidate z_0^t* ... z_0^0, one candidate after the other.",
        "The vote: each candidate's prediction and the winner (empty without a classifier).",
        "The winning class index (-1 without a classifier).",
        "Every candidate, for Select Candidate or Classifier Vote.",
    )
    SEARCH_ALIASES = ["videopure", "purify video", "adversarial purification", "defend video", "diffusion defence"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_IN,
                "images": IMAGES_IN,
                "t_star": ("INT", {"default": 6, "min": 1, "max": DDIM_STEPS, "tooltip": "Inversion steps (paper "
                                   f"t*=6); at most {DDIM_STEPS}, the steps of Purify's DDIM grid."}),
                "temporal": ("BOOLEAN", {"default": True, "tooltip": "Temporal DDIM inversion (Eq. 11): one frame's "
                                         "noise for every frame; off: plain DDIM inversion."}),
                **GUIDANCE_INPUTS,
                "raft_iters": ("INT", {"default": 10, "min": 1, "max": 100, "tooltip": "RAFT refinement "
                                       "iterations."}),
                "raft_input_range": (["-1,1", "0,1"], {"default": "-1,1", "tooltip": "What RAFT is fed: -1,1 is "
                                     "correct; 0,1 reproduces the authors' release."}),
                "candidate": ("INT", {"default": 0, "min": -1, "max": 1000, "tooltip": CANDIDATE_TOOLTIP}),
                "chunk": CHUNK,
            },
            "optional": {
                "raft": (RAFT_IN[0], {"tooltip": RAFT_IN[1]["tooltip"] + " Needed unless guidance is off or "
                                                                         "lambda_temp is 0."}),
                "classifier": (CLASSIFIER, {"tooltip": "Connect one to classify every candidate and vote."}),
            },
        }

    def __init__(self):
        self._last = None  # (inputs, candidates) of the last purification: changing `candidate` reuses it

    def purify(self, model, images, t_star, temporal, guidance, alpha_s, lambda_temp, lambda_spa, guidance_reference,
               raft_iters, raft_input_range, candidate, chunk, raft=None, classifier=None):
        video = bridge.image_to_video(images)
        config = PurifyConfig(t_star=t_star, temporal=temporal, guidance=Guidance(
            enabled=guidance, alpha_s=alpha_s, lambda_temp=lambda_temp, lambda_spa=lambda_spa,
            lambda_reference=parse_reference(guidance_reference)))
        check_candidate(candidate, config.candidate_labels)
        if config.needs_flow and raft is None:
            raise ValueError(f"The temporal loss (lambda_temp={lambda_temp:g}) needs optical flow: connect a "
                             f"VideoPure RAFT Loader to the 'raft' input, or set lambda_temp to 0.")
        if classifier is not None:
            classifier.check_frames(video.shape[2])
        inputs = (model, images, config, raft if config.needs_flow else None, raft_iters, raft_input_range, chunk)
        stages = progress_steps(tuple(video.shape), config, chunk, classify_batch=8 if classifier else None)
        progress = bridge.Progress(stages)
        candidates = self._reuse(inputs)
        if candidates is None:
            candidates = self._purify(model, video, config, raft, raft_iters, raft_input_range, chunk, progress)
            self._last = (inputs, candidates)
        table, winner = "", -1
        if classifier is not None:
            voted = vote_candidates(classifier, candidates, 8, progress)
            table, winner = voted.table(classifier.classes), int(voted.winner[0])
        ui = {"text": [table]} if table else {}
        shown = candidates.pick(candidate)
        return {"ui": ui, "result": (bridge.video_to_image(shown), bridge.video_to_image(candidates.videos), table,
                                     winner, candidates)}

    def _purify(self, model, video, config, raft, raft_iters, raft_input_range, chunk, progress) -> Candidates:
        with contextlib.ExitStack() as stack:
            stack.enter_context(model.on_device())
            flow_fn = None
            if config.needs_flow:
                flow = as_flow_model(raft)
                stack.enter_context(flow.on_device())
                flow_fn = flow.flow_fn(raft_iters, raft_input_range)
            purifier = model.purifier(config, flow_fn, Runtime(chunk=chunk))
            nets = purifier.networks()
            preview = bridge.candidate_preview(lambda z: decode_latents(nets.vae, z, 1))
            hooks = bridge.ComfyHooks(progress, preview if bridge.previews_enabled() else None)
            result = purifier.purify(video, hooks)
        out = bridge.output_device()
        return Candidates(result.videos.to(out), result.latents.to(out), result.labels, result.timings)

    def _reuse(self, inputs):
        """The last purification's candidates when every input but `candidate` (and the classifier) is the same."""
        if self._last is None:
            return None
        (model, images, config, raft, iters, input_range, chunk), candidates = self._last
        now_model, now_images, now_config, now_raft, now_iters, now_range, now_chunk = inputs
        same = (model is now_model and raft is now_raft and config == now_config and (iters, input_range, chunk) ==
                (now_iters, now_range, now_chunk) and images.shape == now_images.shape
                and torch.equal(images, now_images))
        return candidates if same else None


class VideoPureSelectCandidate:
    DESCRIPTION = ("Pick one purified candidate z_0^t from a Purify or Candidate Decode output, as frames: a cheap "
                   "step after the purification, so trying another candidate does not purify again.")
    CATEGORY = "VideoPure"
    FUNCTION = "select"
    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("frames", "t")
    OUTPUT_TOOLTIPS = ("The frames of the chosen candidate, one image per frame.",
                       "The t of the chosen candidate z_0^t.")
    SEARCH_ALIASES = ["pick candidate", "choose candidate", "candidate frames", "videopure select"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "candidates": (CANDIDATES, {"tooltip": "The candidates from Purify or Candidate Decode."}),
                "candidate": ("INT", {"default": -1, "min": -1, "max": 1000, "tooltip": "Which candidate z_0^t: its "
                              "t, or -1 for the last one made (z_0^0 after a whole purification)."}),
            }
        }

    def select(self, candidates, candidate):
        check_candidate(candidate, candidates.labels)
        label = candidates.labels[-1] if candidate == -1 else candidate
        return (bridge.video_to_image(candidates.pick(candidate)), label)


NODE_CLASS_MAPPINGS = {"VideoPurePurify": VideoPurePurify, "VideoPureSelectCandidate": VideoPureSelectCandidate}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoPurePurify": "VideoPure Purify (all in one)",
                              "VideoPureSelectCandidate": "VideoPure Select Candidate"}
