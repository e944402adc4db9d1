"""The benchmark: FLOP counting, the naive and fast paths, the meter, the plot and the CLI (tiny models)."""

import json
import re

import pytest
import torch
from PIL import Image

from videopure_core import PurifyConfig, Runtime, unet_eps_fn
from videopure_core.bench.flops import count_flops
from videopure_core.bench.measure import StageMeter
from videopure_core.bench.models import bench_videos, extend_frames, tiny_models
from videopure_core.bench.paths import cfg_eps_fn, compare, fast_logits, fast_options, fast_purifier
from videopure_core.bench.plot import Panel, panels_png
from videopure_core.bench.suite import flop_floors
from videopure_core.cli import main

LAST_LINE = re.compile(r"^fast/naive speedup: \d+\.\d+x, votes equal: (yes|no)$")


@pytest.fixture(scope="module")
def models():
    return tiny_models()


def test_flops_are_counted_on_the_meta_device_with_two_per_multiply_add():
    layer = torch.nn.Linear(64, 32, device="meta")
    assert count_flops(lambda: layer(torch.empty(10, 64, device="meta"))) == 2 * 10 * 64 * 32


@pytest.mark.slow
def test_full_size_modelscope_floors_match_the_counted_figures():
    floors = flop_floors("modelscope", 32, 224, 6)  # cached: the CLI test below reuses the count
    fast, naive = floors["fast"], floors["naive"]
    assert fast["invert"] == fast["denoise"] == pytest.approx(6 * 7.596e12, rel=2e-3)  # 12 UNet calls: 91 TFLOP
    assert naive["invert"] == 2 * fast["invert"]  # CFG with two identical prompts doubles the UNet work
    assert fast["decode"] == pytest.approx(106.62e12, rel=1e-3)  # 7 candidates x 32 frames
    assert fast["encode"] == pytest.approx(6.669e12, rel=1e-3)
    assert fast["flow"] == pytest.approx(2.160e12, rel=1e-3)  # RAFT-large, 31 pairs, 10 iterations
    assert sum(fast.values()) == pytest.approx(211e12, rel=5e-3)
    assert floors["params"]["unet"] == pytest.approx(1.411e9, rel=1e-3)


def test_cfg_with_two_empty_prompts_is_the_single_call_at_twice_the_work(models):
    z = torch.randn(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    batches = []
    d = models.diffusion
    hook = d.unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        naive = cfg_eps_fn(d.unet, d.embedding)(z, 21)
        fast = unet_eps_fn(d.unet, d.embedding)(z, 21)
    finally:
        hook.remove()
    assert batches == [2, 1]
    assert torch.allclose(naive, fast, atol=1e-5)


def test_naive_and_fast_paths_agree_and_differ_only_in_how_they_call_the_networks(models):
    config = PurifyConfig(t_star=2)
    purifier = fast_purifier(models, config, Runtime())
    videos, _ = bench_videos("tiny", 2, 4, 32)
    unet_batches, vae_frames = [], []
    h1 = models.diffusion.unet.register_forward_pre_hook(lambda m, args: unet_batches.append(args[0].shape[0]))
    h2 = models.diffusion.vae.decoder.register_forward_pre_hook(lambda m, args: vae_frames.append(args[0].shape[0]))
    try:
        naive, fast = compare(models, config, purifier, videos)
    finally:
        h1.remove(), h2.remove()
    # per video: naive 2 t* UNet calls on a batch of 2 and (t*+1) F one-frame decodes; fast batch 1, one chunk of 12
    assert sorted(unet_batches) == [1] * 8 + [2] * 8
    assert sorted(vae_frames) == [1] * 24 + [12] * 2
    assert torch.equal(naive.result.winner, fast.result.winner)
    assert torch.allclose(naive.result.logits, fast.result.logits, atol=1e-4)
    assert set(fast.meter.stages) == {"encode", "flow", "invert", "denoise", "decode", "classify"}
    assert len(fast.video_seconds) == len(naive.video_seconds) == 2 and all(s > 0 for s in fast.video_seconds)


def test_fast_path_is_the_purifier_as_users_run_it(models):
    purifier = fast_purifier(models, PurifyConfig(t_star=2), Runtime())
    video = bench_videos("tiny", 1, 4, 32)[0][0]
    logits = fast_logits(purifier, models.classifier, video, StageMeter("cpu"))
    assert torch.equal(logits, purifier.predict(video, models.classifier).logits)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_fast_options_per_device(monkeypatch, native_bf16):
    """The decision on every machine: the CPU's bf16 capability is set here, not read from this CPU."""
    import videopure_core.bench.paths as paths

    monkeypatch.setattr(paths, "cpu_has_native_bf16", lambda: native_bf16)
    assert fast_options("cuda") == {"dtype": "bfloat16", "autocast": "bfloat16", "compile": False}
    assert fast_options("cuda", compile=True)["compile"] is True
    threshold = paths.UNET_AUTOCAST_MIN_FLOPS  # the UNet joins autocast from this many FLOPs per call on
    small, large = fast_options("cpu", unet_flops=threshold * 0.99), fast_options("cpu", unet_flops=threshold)
    if native_bf16:
        assert small == {"autocast": "bfloat16", "autocast_networks": ("vae", "flow"), "channels_last": True,
                         "compile": False}
        assert large == {**small, "autocast_networks": ("unet", "vae", "flow")}
        assert fast_options("cpu")["autocast_networks"] == ("vae", "flow")  # FLOPs unknown: the UNet stays fp32
    else:  # no autocast at all: emulated bf16 is slower than float32
        assert small == large == {"channels_last": True, "compile": False}
    Runtime(**small), Runtime(**large)  # valid runtimes


def test_stage_meter_sees_the_memory_a_stage_allocates():
    meter = StageMeter("cpu")
    with meter.stage("allocate"):
        block = torch.ones(24 * 2**20)  # 96 MiB, written so that it is resident
    del block
    stats = meter.stages["allocate"]
    assert stats.seconds > 0 and stats.calls == 1
    if not meter.resettable:  # said out loud, not passed silently; the bookkeeping is tested below either way
        pytest.skip("this kernel refuses to reset the peak RSS (/proc/self/clear_refs): no per-stage CPU peak here")
    assert 80 * 2**20 <= stats.extra_bytes <= 400 * 2**20


@pytest.mark.parametrize("resettable", [True, False])
def test_stage_meter_keeps_the_highest_peak_of_a_stage_with_the_memory_it_started_from(monkeypatch, resettable):
    """With the memory readings faked: per stage, seconds and calls add up and the peak is the highest of its calls,
    paired with the memory at that call's start (extra_bytes = the call's own working set); `resettable` reports
    whether the kernel reset the peak before every stage."""
    import videopure_core.bench.measure as measure

    readings = iter([(100, 250), (200, 260), (50, 90)])  # (memory at the start, peak) of each stage call
    now = {}

    def start():
        now["start"], now["peak"] = next(readings)
        return now["start"]

    monkeypatch.setattr(measure, "reset_peak_rss", lambda: resettable)
    monkeypatch.setattr(measure, "rss_bytes", start)
    monkeypatch.setattr(measure, "peak_rss_bytes", lambda: now["peak"])
    meter = StageMeter("cpu")
    for name in ("decode", "decode", "encode"):
        with meter.stage(name):
            pass
    decode, encode = meter.stages["decode"], meter.stages["encode"]
    assert (decode.calls, decode.peak_bytes, decode.start_bytes, decode.extra_bytes) == (2, 260, 200, 60)
    assert (encode.calls, encode.peak_bytes, encode.extra_bytes) == (1, 90, 40)
    assert meter.peak_bytes == 260 and meter.resettable is resettable
    assert meter.seconds == {"decode": decode.seconds, "encode": encode.seconds}


def test_extend_frames_plays_the_clip_back_and_forth():
    clip = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 8, 8, 3)
    assert extend_frames(clip, 10)[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert extend_frames(clip, 3).shape[0] == 3


def test_scaling_plot_is_a_png_with_one_panel_per_chart_and_both_series(tmp_path):
    panels = [Panel("time", [16, 32, 64], {"fast": [1, 2, 4], "naive": [2, 4, 8]}, log2_x=True),
              Panel("t*", [2, 6, 10], {"fast": [1, 2, 3]})]
    path = panels_png(panels, tmp_path / "plot.png")
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # written atomically, no temporary left
    image = Image.open(path).convert("RGB")
    assert image.size == (2 * 460, 360)
    colours = {c for _, c in image.getcolors(1 << 20)}
    assert (31, 119, 180) in colours and (214, 39, 40) in colours  # fast and naive lines are drawn
    assert len(colours) > 50  # axes, ticks and text: not a blank page
    left, right = (image.crop((x, 0, x + 460, 360)) for x in (0, 460))
    assert (214, 39, 40) in {c for _, c in left.getcolors(1 << 20)}  # naive only in the first panel
    assert (214, 39, 40) not in {c for _, c in right.getcolors(1 << 20)}


@pytest.mark.slow
def test_bench_cli_on_tiny_models_writes_the_report_and_ends_with_the_speedup_line(tmp_path, capsys):
    args = ["bench", "--arch", "tiny", "--quick", "--frames", "4", "--size", "32", "--t-star", "1", "--videos", "1",
            "--warmup", "0", "--scaling-frames", "4,8", "--scaling-t-star", "1", "--threads", "1", "--ablation",
            "--out", str(tmp_path)]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert LAST_LINE.match(lines[-1]), lines[-1]
    results = json.loads((tmp_path / "bench-cpu-tiny-quick.json").read_text())
    head = results["headline"]
    assert head["fast"]["stages"].keys() == head["naive"]["stages"].keys()
    assert results["floors"]["naive"]["invert"] == 2 * results["floors"]["fast"]["invert"]
    assert [p["frames"] for p in results["scaling"]["frames"]] == [4, 8]
    assert (tmp_path / "scaling-cpu-tiny-quick.png").is_file()
    variants = [row["variant"] for row in results["ablation"]]
    assert len(variants) == len(set(variants)) >= 5
    # every variant is compared with the same naive run: speedup x seconds per video is the naive path's s/video
    naive_seconds = [row["speedup"] * row["seconds_per_video"] for row in results["ablation"]]
    assert naive_seconds == pytest.approx([naive_seconds[0]] * len(naive_seconds), rel=1e-9)
    text = (tmp_path / "bench-cpu-tiny-quick.md").read_text()
    assert "| decode |" in text and "full-size ModelScope" in text
