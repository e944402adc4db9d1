"""`videopure train-world` and `videopure evaluate-world` end to end at a tiny scale (a few steps per stage).

The real run is the same code with the default TrainPlan (see the model card); here every stage takes a handful
of steps so that the whole path (data, four trainings, atomic writes, checkpoints and resume, loading, every
measurement, the model card) runs in about a minute.
"""

import json
from dataclasses import asdict

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from videopure_core import Purifier
from videopure_core.classifiers import classify
from videopure_core.config import TABLE_IV
from videopure_core.flow import RaftFlow
from videopure_core.world.evaluate import (
    PLAN_BEFORE_CHECKPOINTS,
    ROW_KEYS,
    WORLD_CONFIG,
    evaluate_world,
    model_card,
    table_iv,
)
from videopure_core.world.generator import make_split
from videopure_core.world.models import load_world
from videopure_core.world.train import StagePaused, TrainPlan, _video_noise, train_world

TINY = TrainPlan(pool_clips=12, vae_steps=3, classifier_steps=2, raft_steps=1, raft_batch=2, raft_iters=2,
                 unet_steps=4, unet_batch=2, checkpoint_every=2, vae_noise=8.0, vae_noise_fraction=0.5,
                 unet_noise_mix=(0.5, 0.25, 0.25), unet_ema=0.9)
# Tiny networks of the same classes (the real configs are in models.py): the path is what is tested here.
TINY_VAE = dict(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, norm_num_groups=1, latent_channels=4,
                sample_size=64)
TINY_UNET = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, cross_attention_dim=32,
                 attention_head_dim=4, sample_size=16,
                 down_block_types=("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"))
CONFIGS = dict(vae_config=TINY_VAE, unet_config=TINY_UNET)
WEIGHT_FILES = ("diffusion/vae/diffusion_pytorch_model.safetensors", "diffusion/unet/diffusion_pytorch_model.safetensors",
                "classifier/model.safetensors", "raft_small.safetensors")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    train_world(out, TINY, progress=False, **CONFIGS)
    return out, TINY


@pytest.mark.slow
def test_training_writes_every_model_in_the_loadable_layout(tiny_world):
    out, plan = tiny_world
    for path in ("diffusion/vae/config.json", "diffusion/unet/config.json", "diffusion/scheduler/scheduler_config.json",
                 "diffusion/empty_prompt.safetensors", "classifier/model.safetensors", "raft_small.safetensors"):
        assert (out / path).is_file(), path
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders or checkpoints left
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    log = json.loads((out / "training_log.json").read_text())
    assert {"vae", "classifier", "raft", "unet"} <= set(log) and log["plan"]["vae_steps"] == plan.vae_steps
    # the card reports the threads each stage ran with: here the tests' pinned count
    assert all(log[stage]["threads"] == torch.get_num_threads() for stage in ("vae", "classifier", "raft", "unet"))
    vae_config = json.loads((out / "diffusion/vae/config.json").read_text())
    # the fitted scaling factor (1 / std of the latents) is the one saved, not the constructor's default
    assert vae_config["latent_channels"] == 4 and vae_config["scaling_factor"] == log["vae"]["scaling_factor"]
    assert vae_config["scaling_factor"] != AutoencoderKL(**TINY_VAE).config.scaling_factor
    assert vae_config["block_out_channels"] == list(TINY_VAE["block_out_channels"])  # the config asked for: 4x down
    world = load_world(out)
    assert len(world.classes) == 12


def test_resume_skips_finished_stages(tiny_world):
    out, plan = tiny_world
    before = (out / "raft_small.safetensors").stat().st_mtime_ns
    train_world(out, plan, stages=("raft",), resume=True, progress=False, **CONFIGS)
    assert (out / "raft_small.safetensors").stat().st_mtime_ns == before


def test_a_stage_split_over_runs_ends_with_the_weights_of_an_uninterrupted_run(tiny_world, tmp_path):
    out, plan = tiny_world
    pauses = []
    while True:  # every stage stops after 3 steps and continues from its checkpoint in the next run
        try:
            train_world(tmp_path, plan, resume=True, progress=False, stop_after=3, **CONFIGS)
            break
        except StagePaused as paused:
            pauses.append(str(paused))
    assert pauses == ["unet paused at step 3 of 4; continue with --resume."]
    assert not (tmp_path / ".checkpoints").exists()
    for name in WEIGHT_FILES:
        a, b = load_file(out / name), load_file(tmp_path / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert [p[0] for p in log["unet"]["curve"]] == [p[0] for p in json.loads((out / "training_log.json").read_text())["unet"]["curve"]]


def test_a_checkpoint_from_another_plan_is_refused(tiny_world, tmp_path):
    _, plan = tiny_world
    with pytest.raises(StagePaused):
        train_world(tmp_path, plan, stages=("vae",), progress=False, stop_after=1, **CONFIGS)
    other = TrainPlan(**{**plan.__dict__, "vae_lr": 0.5})
    with pytest.raises(ValueError, match=r"another TrainPlan for the vae stage \(vae_lr 0.001 \(now 0.5\)\)"):
        train_world(tmp_path, other, stages=("vae",), resume=True, progress=False, **CONFIGS)


def test_a_checkpoint_resumes_under_a_plan_that_differs_only_in_other_stages(tiny_world, tmp_path):
    out, plan = tiny_world
    with pytest.raises(StagePaused):
        train_world(tmp_path, plan, stages=("vae",), progress=False, stop_after=1, **CONFIGS)
    other = TrainPlan(**{**plan.__dict__, "unet_lr": 0.5, "classifier_steps": 99, "checkpoint_every": 1})
    train_world(tmp_path, other, stages=("vae",), resume=True, progress=False, **CONFIGS)
    name = WEIGHT_FILES[0]
    a, b = load_file(out / name), load_file(tmp_path / name)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same VAE as the uninterrupted run of `plan`


def test_the_vae_trains_on_the_first_vae_pool_clips_of_the_pool(tmp_path):
    small = TrainPlan(**{**TINY.__dict__, "vae_steps": 2, "pool_clips": 12, "vae_pool_clips": 0})
    large = TrainPlan(**{**small.__dict__, "pool_clips": 24, "vae_pool_clips": 12})
    for name, p in (("small", small), ("large", large)):
        train_world(tmp_path / name, p, stages=("vae",), progress=False, **CONFIGS)
    a, b = (load_file(tmp_path / n / WEIGHT_FILES[0]) for n in ("small", "large"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert TrainPlan(pool_clips=1200, vae_pool_clips=600).scaled(0.1).vae_pool_clips == 60


def test_video_noise_is_standard_normal_with_independent_shared_and_blended_frames():
    g = torch.Generator().manual_seed(0)
    independent = _video_noise((64, 4, 8, 4, 4), (1.0, 0.0, 0.0), g)
    shared = _video_noise((64, 4, 8, 4, 4), (0.0, 1.0, 0.0), g)
    blend = _video_noise((2000, 1, 2, 1, 1), (0.0, 0.0, 1.0), g)
    assert (shared == shared[:, :, :1]).all() and not (independent == independent[:, :, :1]).all()
    for noise in (independent, shared, blend):
        assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05
    frame_correlation = float(torch.corrcoef(blend.flatten(1).T)[0, 1])  # E[r] = 1/2 for r ~ U(0, 1)
    assert 0.4 < frame_correlation < 0.6


@pytest.mark.slow
def test_evaluate_world_writes_metrics_and_a_model_card_with_every_target(tiny_world):
    out, _ = tiny_world
    metrics = evaluate_world(out, n_test=12, n_attack=1, progress=False, flow_clips=1)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    # the numbers describe the saved models: measured again here, from the files
    world = load_world(out)
    videos, flows, labels = make_split("test", 12)
    x = videos.permute(0, 4, 1, 2, 3)
    predictions = classify(world.classifier, x).argmax(-1)
    assert metrics["reference_predictions_first12"] == predictions.tolist()
    assert metrics["classifier_clean_acc"] == float((predictions == labels).float().mean())
    assert metrics["undefended_clean_acc"] == float(predictions[0] == labels[0])  # the one attack clip
    assert metrics["flow_pairs"] == 15  # the consecutive pairs of flow_clips=1 clip of 16 frames
    assert metrics["flow_epe_zero_flow_px"] == round(float(flows[:1].norm(dim=-1).mean()), 3)
    assert metrics["latent_shape"] == [4, 16, 16, 16] and metrics["vae_block_out_channels"] == [8, 16, 16]
    assert list(metrics["table_iv"]) == list(ROW_KEYS.values())
    name = "temporal inversion + voting"
    purifier = Purifier.from_pretrained(world.diffusion, config=WORLD_CONFIG.with_options(**TABLE_IV[name]))
    winner = int(purifier.predict(x[:1], world.classifier).winner)
    assert metrics["table_iv"][ROW_KEYS[name]]["standard_acc"] == float(winner == int(labels[0]))
    vp = metrics["table_iv"]["videopure"]
    assert metrics["videopure_motion_ratio"] == vp["motion_ratio"] > 0
    assert metrics["videopure_standard_acc"] == vp["standard_acc"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "${" not in card  # string.Template.substitute fills every placeholder or raises
    assert "4x down (blocks 8/16/16)" in card and "on the 4x16x16x16 latent" in card
    for target in (">= 98%", ">= 96%", ">= 34 dB", ">= clean - 5 points", ">= 85%", ">= 25 points below VideoPure",
                   "within 0.8..1.2", "<= 10%", "end-point error", "eps MSE", "torch threads: vae", "plain DDIM inversion"):
        assert target in card, target
    assert "the logged plan differs in pool_clips 12 (today 1200), checkpoint_every 2 (today 250)" in card
    assert "--stages unet --threads 1; wait" in card  # a 4x VAE: today's default, no --vae-down flag
    # a folder without a training log, and a log of the code before checkpoints, still make a card
    assert "${" not in model_card(metrics, {})
    before = {k: v for k, v in asdict(TrainPlan()).items() if k not in PLAN_BEFORE_CHECKPOINTS}  # the shipped log's
    old = model_card(metrics, {"plan": {**before, "vae_steps": 8000}})
    assert "vae_steps 8000 (today 3000)" in old and "the log predates the fields checkpoint_every" in old


@pytest.mark.slow
def test_table_iv_shares_runs_between_rows_and_still_votes_like_the_purifier(tiny_world):
    out, _ = tiny_world
    world = load_world(out)
    flow = RaftFlow(world.raft, iters=2)
    purifier = Purifier.from_pretrained(world.diffusion, flow=flow, config=WORLD_CONFIG.with_options(t_star=2))
    x = make_split("test", 2).videos.permute(0, 4, 1, 2, 3)
    rows = table_iv(purifier, x, world.classifier)
    assert list(rows) == list(TABLE_IV)
    for name, changes in TABLE_IV.items():
        result = purifier.with_config(**changes).predict(x, world.classifier)
        assert torch.equal(rows[name][0], result.winner), name
        candidates = purifier.with_config(**changes).purify(x)
        motion = (candidates.videos[:, :, :, 1:] - candidates.videos[:, :, :, :-1]).abs().flatten(2).mean(-1).mean(0)
        assert torch.allclose(rows[name][1], motion, atol=1e-6), name
