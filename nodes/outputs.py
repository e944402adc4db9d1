"""Nodes that produce what people look at: the vote, a plain classification, the flow as colour, and the
PGD attack that makes the adversarial input of a clean / attacked / purified comparison."""

from __future__ import annotations

import torch

from videopure_core import pipeline
from videopure_core.attacks import classifier_grad_fn, pgd
from videopure_core.classifiers import classify
from videopure_core.flow import resize_flow
from videopure_core.visualize import flow_to_rgb

from . import bridge
from .types import CANDIDATES, CLASSIFIER, FLOW

BATCH = ("INT", {"default": 8, "min": 1, "max": 1024, "tooltip": "Videos per classifier call (memory vs speed; "
                                                                  "the result is the same)."})
CLASSIFIER_IN = (CLASSIFIER, {"tooltip": "The classifier from VideoPure Video Classifier Loader."})
VIDEO_IN = ("IMAGE", {"tooltip": "One video's frames, one image per frame (any size the classifier takes)."})


def vote_candidates(classifier, candidates, batch_size: int, progress=None):
    """The pipeline's vote on the classifier handle's device: every candidate (K x B videos) -> VoteResult."""
    classifier.check_frames(candidates.videos.shape[3])
    with classifier.on_device():
        return pipeline.vote_candidates(classifier.model, candidates, batch_size, progress)


class VideoPureClassifierVote:
    DESCRIPTION = ("Multi-step voting (Algorithm 1 l. 15-19): classify every purified candidate and take the "
                   "majority (ties to the smallest class). Shows the per-candidate table.")
    CATEGORY = "VideoPure/outputs"
    FUNCTION = "vote"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "INT", "STRING")
    RETURN_NAMES = ("table", "winner", "winner_name")
    OUTPUT_TOOLTIPS = ("Each candidate's prediction and the winner, as a table.", "The winning class index.",
                       "The winning class name.")
    SEARCH_ALIASES = ["vote", "majority vote", "multi-step voting", "videopure vote"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"classifier": CLASSIFIER_IN,
                             "candidates": (CANDIDATES, {"tooltip": "The decoded candidates (Candidate Decode or "
                                                                    "Purify)."}),
                             "batch_size": BATCH}}

    def vote(self, classifier, candidates, batch_size):
        result = vote_candidates(classifier, candidates, batch_size, bridge.Progress())
        winner = int(result.winner[0])
        table = result.table(classifier.classes)
        return {"ui": {"text": [table]}, "result": (table, winner, classifier.class_name(winner))}


class VideoPureClassify:
    DESCRIPTION = "Classify one video (an IMAGE batch of its frames) without any defence: the top classes."
    CATEGORY = "VideoPure/outputs"
    FUNCTION = "classify"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "INT", "STRING")
    RETURN_NAMES = ("table", "class_index", "class_name")
    OUTPUT_TOOLTIPS = ("The top classes with their probabilities, as a table.", "The most likely class index.",
                       "The most likely class name.")
    SEARCH_ALIASES = ["classify video", "action recognition", "predict class", "no defence"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "classifier": CLASSIFIER_IN,
                "images": VIDEO_IN,
                "top_k": ("INT", {"default": 3, "min": 1, "max": 1000, "tooltip": "Classes listed in the table."}),
            }
        }

    def classify(self, classifier, images, top_k):
        video = bridge.image_to_video(images, purify=False)
        classifier.check_frames(video.shape[2])
        with classifier.on_device() as device:
            logits = classify(classifier.model, video.to(device))[0].cpu()
        probs = logits.softmax(-1)
        top = probs.topk(min(top_k, probs.numel()))
        lines = [f"{'class':<24} {'p':>6}"]
        lines += [f"{classifier.class_name(int(c)):<24} {float(p):6.3f}" for p, c in zip(top.values, top.indices)]
        best = int(top.indices[0])
        table = "\n".join(lines)
        return {"ui": {"text": [table]}, "result": (table, best, classifier.class_name(best))}


class VideoPureFlowImage:
    DESCRIPTION = ("The optical flow the temporal loss uses, as colour (hue = direction, saturation = speed), "
                   "one image per frame pair, at the size of the input frames.")
    CATEGORY = "VideoPure/outputs"
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("flow_image",)
    OUTPUT_TOOLTIPS = ("One colour picture per frame pair (hue = direction, saturation = speed).",)
    SEARCH_ALIASES = ["flow visualisation", "optical flow image", "flow colour"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"flow": (FLOW, {"tooltip": "From VideoPure RAFT Flow."})}}

    def render(self, flow):
        forward = flow.flow.forward[:1]  # (1, F-1, 2, h, w), the first video
        pixels = resize_flow(forward.float(), tuple(flow.image_size))[0]  # back to pixel units and size
        return (bridge.frames_to_image(flow_to_rgb(pixels)),)


class VideoPurePGDAttack:
    DESCRIPTION = ("Projected gradient descent on the bare classifier (gray-box, paper Eqs. 1-2): the adversarial "
                   "video, the perturbation (amplified, grey = 0) and a report of the loss and predictions.")
    CATEGORY = "VideoPure/attack"
    FUNCTION = "attack"
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("adversarial", "perturbation", "report")
    OUTPUT_TOOLTIPS = ("The attacked frames (within epsilon of the input).",
                       "The perturbation, amplified to the full range (grey = 0).",
                       "The attack's loss and the clean and attacked predictions.")
    SEARCH_ALIASES = ["adversarial attack", "pgd", "projected gradient descent", "attack video"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "classifier": CLASSIFIER_IN,
                "images": VIDEO_IN,
                "label": ("INT", {"default": -1, "min": -1, "max": 100000, "tooltip": "True class to attack away "
                                  "from; -1: the classifier's own prediction on the clean video."}),
                "epsilon": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 10000.0, "step": 0.5, "tooltip": "Budget "
                                      "in 1/255 pixel units (L_inf: per pixel; L2: norm of the whole video)."}),
                "step_size": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 10000.0, "step": 0.25,
                                        "tooltip": "Step in the same units as epsilon."}),
                "steps": ("INT", {"default": 10, "min": 1, "max": 10000, "tooltip": "PGD iterations (gradient steps)."}),
                "norm": (["linf", "l2"], {"default": "linf", "tooltip": "The ball: linf bounds every pixel, l2 "
                                          "the norm of the whole video."}),
                "random_start": ("BOOLEAN", {"default": True, "tooltip": "Start at a random point of the ball."}),
                "start_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "tooltip": "Seed of the random "
                                       "start (the attack is deterministic given it)."}),
            }
        }

    def attack(self, classifier, images, label, epsilon, step_size, steps, norm, random_start, start_seed):
        video = bridge.image_to_video(images, purify=False)
        classifier.check_frames(video.shape[2])
        num_classes = None
        with classifier.on_device() as device:
            x = video.to(device)
            clean = classify(classifier.model, x)
            num_classes = clean.shape[-1]
            if label >= num_classes:
                raise ValueError(f"label={label} but the classifier has {num_classes} classes (0..{num_classes - 1});"
                                 f" use -1 to attack its own prediction.")
            y = clean.argmax(-1) if label < 0 else torch.tensor([label], device=device)
            adv, losses = pgd(classifier_grad_fn(classifier.model), x, y, eps=epsilon / 255, step=step_size / 255,
                              steps=steps, norm=norm, random_start=random_start,
                              generator=torch.Generator().manual_seed(int(start_seed)), callback=bridge.Progress())
            attacked = classify(classifier.model, adv)
        delta = (adv - x)[0].cpu()
        scale = 2 * max(epsilon, 1e-6) / 255
        perturbation = (delta / scale + 0.5).clamp(0, 1)
        report = self._report(classifier, int(y[0]), clean[0].cpu(), attacked[0].cpu(), losses.cpu(), epsilon,
                              norm, steps, delta)
        return (bridge.video_to_image(adv[0]), bridge.video_to_image(perturbation), report)

    @staticmethod
    def _report(classifier, target, clean, attacked, losses, epsilon, norm, steps, delta) -> str:
        def pred(logits):
            p = logits.softmax(-1)
            c = int(p.argmax())
            return f"{classifier.class_name(c)} (p={float(p[c]):.3f})"

        size = float(delta.abs().max()) * 255 if norm == "linf" else float(delta.norm()) * 255
        first = f"{float(losses[0, 0]):.4f}" if losses.numel() else "-"
        last = f"{float(losses[-1, 0]):.4f}" if losses.numel() else "-"
        return "\n".join([
            f"PGD {norm} epsilon {epsilon:g}/255, {steps} steps, attacking class {classifier.class_name(target)}",
            f"loss at the first / last step: {first} / {last}",
            f"perturbation size: {size:.3f}/255 ({norm})",
            f"clean prediction:    {pred(clean)}",
            f"attacked prediction: {pred(attacked)}",
        ])


NODE_CLASS_MAPPINGS = {
    "VideoPureClassifierVote": VideoPureClassifierVote,
    "VideoPureClassify": VideoPureClassify,
    "VideoPureFlowImage": VideoPureFlowImage,
    "VideoPurePGDAttack": VideoPurePGDAttack,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VideoPureClassifierVote": "VideoPure Classifier Vote",
    "VideoPureClassify": "VideoPure Classify (no defence)",
    "VideoPureFlowImage": "VideoPure Flow to Image",
    "VideoPurePGDAttack": "VideoPure PGD Attack",
}
