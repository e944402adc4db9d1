"""The whole of VideoPure in one node: Purifier.purify (and the vote, when a classifier is connected)."""

from __future__ import annotations

import contextlib

from videopure_core.config import Guidance, PurifyConfig, Runtime
from videopure_core.pipeline import Candidates
from videopure_core.purifier import Purifier

from . import bridge
from .outputs import vote_candidates
from .stages import CHUNK, GUIDANCE_INPUTS, parse_reference
from .types import CANDIDATES, CLASSIFIER, MODEL, RAFT


class VideoPurePurify:
    DESCRIPTION = ("VideoPure in one node (paper Algorithm 1): encode, temporal DDIM inversion, RAFT flow, guided "
                   "denoising, decode; with a classifier also the multi-step vote. The composable stage nodes give "
                   "the same result step by step.")
    CATEGORY = "VideoPure"
    FUNCTION = "purify"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING", "INT", CANDIDATES)
    RETURN_NAMES = ("purified", "all_candidates", "vote_table", "winner", "candidates")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL,),
                "images": ("IMAGE",),
                "t_star": ("INT", {"default": 6, "min": 1, "max": 1000, "tooltip": "Inversion steps (paper t*=6)."}),
                "temporal": ("BOOLEAN", {"default": True, "tooltip": "Temporal DDIM inversion (Eq. 11)."}),
                **GUIDANCE_INPUTS,
                "raft_iters": ("INT", {"default": 10, "min": 1, "max": 100}),
                "raft_input_range": (["-1,1", "0,1"], {"default": "-1,1"}),
                "candidate": ("INT", {"default": 0, "min": -1, "max": 1000, "tooltip": "Which candidate z_0^t "
                              "'purified' shows (-1: the last)."}),
                "chunk": CHUNK,
            },
            "optional": {
                "raft": (RAFT, {"tooltip": "Needed unless guidance is off or lambda_temp is 0."}),
                "classifier": (CLASSIFIER, {"tooltip": "Connect one to classify every candidate and vote."}),
            },
        }

    def purify(self, model, images, t_star, temporal, guidance, alpha_s, lambda_temp, lambda_spa, guidance_reference,
               raft_iters, raft_input_range, candidate, chunk, raft=None, classifier=None):
        video = bridge.image_to_video(images)
        config = PurifyConfig(t_star=t_star, temporal=temporal, guidance=Guidance(
            enabled=guidance, alpha_s=alpha_s, lambda_temp=lambda_temp, lambda_spa=lambda_spa,
            lambda_reference=parse_reference(guidance_reference)))
        if config.needs_flow and raft is None:
            raise ValueError(f"The temporal loss (lambda_temp={lambda_temp:g}) needs optical flow: connect a "
                             f"VideoPure RAFT Loader to the 'raft' input, or set lambda_temp to 0.")
        stages = {"encode": 1, "flow": 1 if config.needs_flow else 0, "invert": t_star, "denoise": t_star + 1,
                  "decode": 1, "classify": 1 if classifier is not None else 0}
        progress = bridge.Progress({k: v for k, v in stages.items() if v})
        with contextlib.ExitStack() as stack:
            stack.enter_context(model.on_device())
            flow_fn = None
            if config.needs_flow:
                stack.enter_context(raft.on_device())
                flow_fn = raft.flow_fn(raft_iters, raft_input_range)
            purifier = Purifier(model.models, flow_fn, config, Runtime(chunk=chunk))
            result = purifier.purify(video, progress)
        out = bridge.output_device()
        candidates = Candidates(result.videos.to(out), result.latents.to(out), result.labels, result.timings)
        shown = candidates.pick(candidate)
        table, winner = "", -1
        if classifier is not None:
            voted = vote_candidates(classifier, candidates, 8, progress)
            table, winner = voted.table(classifier.classes), int(voted.winner[0])
        ui = {"text": [table]} if table else {}
        return {"ui": ui, "result": (bridge.video_to_image(shown), bridge.video_to_image(candidates.videos), table, winner,
                                     candidates)}


NODE_CLASS_MAPPINGS = {"VideoPurePurify": VideoPurePurify}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoPurePurify": "VideoPure Purify (all in one)"}
