import math

import pytest
import torch

from videopure_core import MODELSCOPE_SCHEDULER_CONFIG, PurifyConfig, Runtime, make_schedule


def test_fifty_step_grid_and_purification_timesteps():
    from diffusers import DDIMScheduler

    s = DDIMScheduler.from_config(MODELSCOPE_SCHEDULER_CONFIG)
    s.set_timesteps(50)
    grid = [int(t) for t in s.timesteps]
    assert grid[0] == 981 and grid[-2:] == [21, 1] and len(grid) == 50
    assert all(a - b == 20 for a, b in zip(grid, grid[1:]))
    sched = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, 50, 6)
    assert sched.timesteps == (1, 21, 41, 61, 81, 101)
    assert sched.step == 20


def test_alpha_bar_prev_at_boundary_is_alpha_bar_zero():
    sched = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, 50, 6)
    assert sched.alpha_bar_prev(1) == pytest.approx(float(sched.alphas_cumprod[0]))
    assert sched.alpha_bar_prev(1) == pytest.approx(0.99915, abs=1e-5)
    assert sched.alpha_bar_prev(1) != 1.0
    assert sched.alpha_bar_prev(21) == pytest.approx(float(sched.alphas_cumprod[1]))
    assert sched.alpha_bar(101) == pytest.approx(0.89298, abs=1e-4)


@pytest.mark.parametrize(
    "t, expected", [(101, -3.89), (81, -4.05), (61, -4.25), (41, -4.61), (21, -6.46), (1, -7.76)]
)
def test_log_variance_weights_match_spec(t, expected):
    sched = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, 50, 6)
    assert sched.variance_weight(t, "log") == pytest.approx(expected, abs=0.011)
    assert sched.variance_weight(t, "linear") == pytest.approx(math.exp(sched.variance_weight(t, "log")))


def test_config_validation_and_ablation_labels():
    assert PurifyConfig().candidate_labels == (6, 5, 4, 3, 2, 1, 0)
    assert PurifyConfig(single_candidate=0).candidate_labels == (0,)
    with pytest.raises(ValueError, match="t_star"):
        PurifyConfig(t_star=0)
    with pytest.raises(ValueError, match="single_candidate"):
        PurifyConfig(single_candidate=7)
    with pytest.raises(ValueError, match="variance_weight"):
        PurifyConfig().with_options(variance_weight="sqrt")
    with pytest.raises(ValueError, match="dtype"):
        Runtime(dtype="float64")
    with pytest.raises(ValueError, match="Unknown VideoPure option 'dtype'.*belong to Runtime"):
        PurifyConfig().with_options(dtype="float16")
    with pytest.raises(ValueError, match="epsilon"):
        make_schedule({**MODELSCOPE_SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    assert torch.float16 == Runtime(dtype="float16").torch_dtype and Runtime().torch_dtype is None


def test_flat_options_round_trip_through_the_split_config():
    config = PurifyConfig().with_options(t_star=4, guidance=False, lambda_spa=0.0, lambda_reference=(32, 28, 28))
    assert config.t_star == 4 and not config.guidance.enabled and config.guidance.lambda_spa == 0.0
    assert config.guidance.lambda_reference == (32, 28, 28) and not config.needs_flow
    assert config.options() == {"t_star": 4, "guidance": False, "lambda_spa": 0.0, "lambda_reference": [32, 28, 28]}
    assert PurifyConfig().with_options(**{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in config.options().items()}) == config
    assert PurifyConfig().options() == {} and PurifyConfig(t_star=3).with_options() == PurifyConfig(t_star=3)
