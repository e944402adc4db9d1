"""The shipped small world: its weights load through the real loaders and reproduce the model card's numbers.

The reference predictions come from `videopure evaluate-world`, which wrote them into weights/metrics.json next
to the weights; a changed generator, loader or weight file makes these tests fail.
"""

import json

import pytest
import torch

from videopure_core.classifiers import classify
from videopure_core.world.evaluate import WORLD_CONFIG
from videopure_core.world.generator import make_split
from videopure_core.world.models import WEIGHTS, load_world

@pytest.fixture(scope="module")
def world():
    return load_world()


@pytest.fixture(scope="module")
def metrics():
    return json.loads((WEIGHTS / "metrics.json").read_text())


def test_weights_are_safetensors_and_small():
    files = [p for p in WEIGHTS.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}]
    assert weights and all(p.suffix == ".safetensors" for p in weights), weights
    assert sum(p.stat().st_size for p in files) < 25 * 2**20


def test_classifier_predicts_the_first_test_clips_as_the_model_card_says(world, metrics):
    videos, _, labels = make_split("test", 12)
    predictions = classify(world.classifier, videos.permute(0, 4, 1, 2, 3)).argmax(-1)
    assert predictions.tolist() == metrics["reference_predictions_first12"]
    assert (predictions == labels).float().mean() >= 0.75  # the card's clean accuracy, on a handful of clips


@pytest.mark.slow
def test_videopure_votes_on_two_test_clips_match_the_model_card(world, metrics):
    from videopure_core.purifier import Purifier
    from videopure_core.video import from_frames

    videos, _, _ = make_split("test", 2)
    purifier = Purifier.from_pretrained(world.diffusion, flow=world.raft, config=WORLD_CONFIG)
    winners = [int(purifier.predict(from_frames(v), world.classifier).winner) for v in videos]
    assert winners == metrics["reference_videopure_winners_first2"]


def test_world_classes_are_the_generators(world):
    from videopure_core.world.generator import CLASSES

    assert world.classes == tuple(CLASSES)
    assert world.classifier(torch.zeros(1, 3, 16, 64, 64)).shape == (1, len(CLASSES))
