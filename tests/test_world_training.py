"""`videopure train-world` and `videopure evaluate-world` end to end at a tiny scale (a few steps per stage).

The real run is the same code with the default TrainPlan (see the model card); here every stage takes a handful
of steps so that the whole path (data, four trainings, atomic writes, resume, loading, every measurement, the
model card) runs in well under a minute.
"""

import json

import pytest

from videopure_core.world.evaluate import evaluate_world
from videopure_core.world.models import load_world
from videopure_core.world.train import TrainPlan, train_world


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    plan = TrainPlan(pool_clips=12, vae_steps=3, classifier_steps=2, raft_steps=1, raft_batch=2, raft_iters=2,
                     unet_steps=2, unet_batch=2)
    train_world(out, plan, progress=False)
    return out, plan


@pytest.mark.slow
def test_training_writes_every_model_in_the_loadable_layout(tiny_world):
    out, plan = tiny_world
    for path in ("diffusion/vae/config.json", "diffusion/unet/config.json", "diffusion/scheduler/scheduler_config.json",
                 "diffusion/empty_prompt.safetensors", "classifier/model.safetensors", "raft_small.safetensors"):
        assert (out / path).is_file(), path
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written temporary folders left
    log = json.loads((out / "training_log.json").read_text())
    assert {"vae", "classifier", "raft", "unet"} <= set(log) and log["plan"]["vae_steps"] == plan.vae_steps
    assert all(log[stage]["threads"] >= 1 for stage in ("vae", "classifier", "raft", "unet"))  # the card reports them
    vae_config = json.loads((out / "diffusion/vae/config.json").read_text())
    assert vae_config["scaling_factor"] > 0 and vae_config["latent_channels"] == 4
    world = load_world(out)
    assert len(world.classes) == 12


def test_resume_skips_finished_stages(tiny_world):
    out, plan = tiny_world
    before = (out / "raft_small.safetensors").stat().st_mtime_ns
    train_world(out, plan, stages=("raft",), resume=True, progress=False)
    assert (out / "raft_small.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_evaluate_world_writes_metrics_and_a_model_card_with_every_target(tiny_world):
    out, _ = tiny_world
    metrics = evaluate_world(out, n_test=12, n_attack=1, progress=False)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert 0 <= metrics["classifier_clean_acc"] <= 1 and metrics["flow_epe_px"] >= 0
    assert len(metrics["reference_predictions_first12"]) == 12
    assert len(metrics["standard_acc_by_stage"]) == 3 and all(0 <= a <= 1 for a in metrics["standard_acc_by_stage"].values())
    card = (out / "MODEL_CARD.md").read_text()
    for target in (">= 95%", "<= 10%", "within 5 points", ">= 70%", "PSNR", "end-point error", "eps MSE", "torch threads: vae",
                   "plain DDIM inversion, no guidance"):
        assert target in card, target

