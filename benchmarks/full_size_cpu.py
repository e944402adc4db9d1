"""The paper's pipeline at full size on the CPU: ModelScope 1.7B (random weights, saved as users download it: diffusers
layout, fp16 variant files, tokenizer, model_index.json), RAFT-large and r3d_18, run end to end at a small size through
every entry point users have.

    PYTHONPATH=. python benchmarks/full_size_cpu.py --root /tmp/videopure-full           # all phases, ~30-60 min
    PYTHONPATH=. python benchmarks/full_size_cpu.py --root /tmp/videopure-full --phases purify,cli
    VIDEOPURE_FULL_SIZE=1 python -m pytest tests/test_full_size.py                        # the same as a slow test

Phases, each in a fresh Python process (so each has its own peak resident set, VmHWM):
    build      save_modelscope_folder: every network built in fp16 with random weights, saved, freed
    embedding  the first load_diffusion: the CLIP text encoder is loaded (once ever) to cache the empty-prompt embedding
    load-fp16  load_diffusion in float16: no text encoder, no float32 copy on the host (peak vs the fp16 weights)
    purify     Purifier.from_pretrained (float32, CPU) + predict on a bundled UCF-101 clip: seconds per stage and
               per UNet call, peak RSS, working set per stage against videopure_core.memory's estimate
    demo       `videopure demo --model ... --raft ... --classifier-weights ...` (PGD, then purify clean and adversarial)
    cli        `videopure purify CLIP --model ... --raft ... --classifier ... --estimate --out ...`
    comfyui    the bundled paper-pipeline workflow (workflows/api) in a real ComfyUI with its three loaders switched to
               the full-size files (the server's peak RSS read from /proc before it stops)
Writes <out>/full-size-cpu.json and .md (default benchmarks/results). The size is set by --frames/--size/--t-star
(default 4 frames at 64x64, t*=2). Memory: the float32 purify phases peak at about 9 GiB of resident memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PHASES = ("build", "embedding", "load-fp16", "purify", "demo", "cli", "comfyui")
MODEL = "text-to-video-ms-1.7b"
RAFT, CLASSIFIER = "raft_large_C_T_V1-22a6c225.pth", "r3d_18-b3b3357e.pth"  # modelscope.RAFT_LARGE_FILE, R3D_18_FILE


def _kib(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    return int(m.group(1)) * 1024 if m else 0


def _reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _kib("VmRSS")


def _clip(args):
    from videopure_core.io import BUNDLED_CLIPS

    return str(BUNDLED_CLIPS / args.clip)


# --- phases (each runs in its own process and returns a dict) -----------------------------------------------------


def phase_build(args) -> dict:
    from videopure_core.modelscope import save_modelscope_folder

    start = time.perf_counter()
    out = save_modelscope_folder(args.root, log=lambda s: print(s, file=sys.stderr, flush=True))
    files = sorted(str(p.relative_to(args.root)) for p in Path(args.root).rglob("*") if p.is_file())
    return {**out, "total_seconds": round(time.perf_counter() - start, 1), "files": files, "peak_rss": _kib("VmHWM")}


def _count_text_encoder_loads():
    from transformers import CLIPTextModel

    calls = []
    original = CLIPTextModel.from_pretrained.__func__

    def spy(cls, *a, **kw):
        calls.append(1)
        return original(cls, *a, **kw)

    CLIPTextModel.from_pretrained = classmethod(spy)
    return calls


def _load_phase(args, dtype_name: str) -> dict:
    import torch
    from diffusers import AutoencoderKL

    import videopure_core.loading as loading

    model = Path(args.root) / MODEL
    calls = _count_text_encoder_loads()
    dtype = getattr(torch, dtype_name)
    loading._load_component(AutoencoderKL, model, "vae", dtype)  # imports and lazy modules before the baseline
    before = _reset_peak()
    start = time.perf_counter()
    m = loading.load_diffusion(model, dtype)
    seconds = time.perf_counter() - start
    for p in m.unet.parameters():  # read every weight once: resident as in use
        p.sum()
    peak = _kib("VmHWM")
    fp16_bytes = 2 * sum(p.numel() for p in m.unet.parameters()) + 2 * sum(p.numel() for p in m.vae.parameters())
    return {"dtype": dtype_name, "seconds": round(seconds, 1), "peak_above_start": peak - before,
            "fp16_weights": fp16_bytes, "ratio_to_fp16_weights": round((peak - before) / fp16_bytes, 2),
            "text_encoder_loads": len(calls),
            "embedding_cached": (model / loading.EMBEDDING_FILE).is_file(),
            "unet_dtypes": sorted({str(p.dtype) for p in m.unet.parameters()})}


def phase_embedding(args) -> dict:
    return _load_phase(args, "float16")


def phase_load_fp16(args) -> dict:
    return _load_phase(args, "float16")


def phase_purify(args) -> dict:
    import torch

    from videopure_core import Purifier, PurifyConfig, Runtime, from_frames, load_raft, load_video_classifier, pipeline
    from videopure_core.bench.measure import StageMeter
    from videopure_core.io import bundled_clip
    from videopure_core.memory import estimate_memory, meta_models_of

    root = Path(args.root)
    start_rss = _kib("VmRSS")
    t0 = time.perf_counter()
    raft = load_raft("raft_large", root / RAFT)
    purifier = Purifier.from_pretrained(root / MODEL, raft, PurifyConfig(t_star=args.t_star), Runtime(device="cpu"))
    classifier = load_video_classifier("r3d_18", root / CLASSIFIER)
    load_seconds = time.perf_counter() - t0
    load_peak = _kib("VmHWM")
    after_load = _reset_peak()

    video = from_frames(bundled_clip(args.clip, args.frames, args.size))
    nets = purifier.networks()
    calls = []
    inner = nets.eps

    def timed_eps(z, t):
        s = time.perf_counter()
        out = inner(z, t)
        calls.append(time.perf_counter() - s)
        return out

    nets.eps = timed_eps
    meter = StageMeter("cpu")
    t0 = time.perf_counter()
    candidates = pipeline.purify(nets, purifier.prepare(video), purifier.schedule, purifier.config, meter)
    result = purifier.vote(candidates, classifier, 1, meter)
    run_seconds = time.perf_counter() - t0
    estimate = estimate_memory(meta_models_of(purifier, classifier), tuple(video.shape), purifier.config,
                               purifier.runtime, batch_size=1)
    return {
        "threads": torch.get_num_threads(), "video": list(video.shape),
        "load_seconds": round(load_seconds, 1), "rss_before_load": start_rss, "peak_rss_load": load_peak,
        "rss_after_load": after_load, "peak_rss_run": _kib("VmHWM"),
        "run_seconds": round(run_seconds, 1), "unet_calls": [round(s, 2) for s in calls],
        "seconds_per_unet_call": round(sum(calls) / len(calls), 2),
        "stages": {k: {"seconds": round(s.seconds, 2), "working": s.extra_bytes, "peak": s.peak_bytes,
                       "estimated_working": estimate.stages[k].working}
                   for k, s in meter.stages.items()},
        "estimate": estimate.to_dict(),
        "candidates_finite": bool(torch.isfinite(candidates.videos).all()),
        "candidate_labels": list(candidates.labels),
        "predictions": result.predictions[:, 0].tolist(), "winner": int(result.winner[0]),
    }


def _cli(argv: list[str]) -> dict:
    import contextlib
    import io

    from videopure_core.cli import main

    before = _reset_peak()
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    text = out.getvalue()
    print(text, file=sys.stderr)
    return {"argv": argv, "exit_code": code, "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss": _kib("VmHWM"), "rss_before": before, "stdout_tail": text[-3000:]}


def phase_demo(args) -> dict:
    root = Path(args.root)
    return _cli(["demo", "--model", str(root / MODEL), "--raft", str(root / RAFT),
                 "--classifier-arch", "r3d_18", "--classifier-weights", str(root / CLASSIFIER),
                 "--video", _clip(args), "--frames", str(args.frames), "--size", str(args.size),
                 "--t-star", str(args.t_star), "--device", "cpu", "--out", str(root / "demo.png")])


def phase_cli(args) -> dict:
    root = Path(args.root)
    out = root / "purify-out"
    result = _cli(["purify", _clip(args), "--model", str(root / MODEL),
                   "--raft", str(root / RAFT), "--classifier",
                   str(root / CLASSIFIER), "--frames", str(args.frames), "--size", str(args.size),
                   "--t-star", str(args.t_star), "--device", "cpu", "--estimate", "--no-progress", "--out", str(out)])
    from videopure_core.videoio import probe_video

    result["purified"] = probe_video(out / "purified.mp4") if (out / "purified.mp4").is_file() else None
    result["files"] = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    return result


def full_size_workflow(t_star: int, frames: int, model: str, raft: str, classifier: str) -> dict:
    """The bundled paper-pipeline API workflow with its loaders switched to the full-size files, the world clip cut to
    `frames` and the chain of guided denoise steps cut to `t_star` (Candidate Decode fed by the last kept step)."""
    from videopure_core.comfy_client import load_workflow

    wf = load_workflow(REPO / "workflows" / "api" / "videopure_paper_pipeline.json")
    by_type = {}
    for key, node in wf.items():
        by_type.setdefault(node["class_type"], []).append(key)
    (d,), (r,), (c,) = (by_type[f"VideoPure{kind}Loader"] for kind in ("Diffusion", "RAFT", "Classifier"))
    wf[d]["inputs"]["model"] = model
    wf[r]["inputs"].update(weights=raft, arch="raft_large")
    wf[c]["inputs"].update(weights=classifier, arch="r3d_18", num_classes=400)
    for key in by_type["VideoPureWorldClip"]:
        wf[key]["inputs"]["frames"] = frames
    for key in by_type["VideoPureTemporalInversion"]:
        wf[key]["inputs"]["t_star"] = t_star
    steps, inv = [], by_type["VideoPureTemporalInversion"][0]
    nxt = inv
    while True:  # follow the chain of steps from the inversion
        following = [k for k in by_type["VideoPureGuidedDenoiseStep"] if wf[k]["inputs"]["latent"][0] == nxt]
        if not following:
            break
        nxt = following[0]
        steps.append(nxt)
    keep, drop = steps[:t_star], steps[t_star:]
    for key in drop:
        del wf[key]
    for node in wf.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value and value[0] in drop:
                node["inputs"][name] = [keep[-1], value[1]]
    return wf


def phase_comfyui(args) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_tools import ComfyUIServer

    from videopure_core.comfy_client import run_workflow

    cache = Path(os.environ.get("VIDEOPURE_COMFY_CACHE", "~/.cache/videopure-ci")).expanduser()
    venv = cache / f"venv-py{sys.version_info[0]}.{sys.version_info[1]}"
    python = os.environ.get("VIDEOPURE_COMFY_PYTHON") or str(venv / "bin" / "python")
    if not (cache / "ComfyUI" / "main.py").is_file() or not os.path.exists(python):
        raise RuntimeError(f"No ComfyUI in {cache}: run the ComfyUI test group once (python -m pytest tests/comfyui), "
                           f"which installs ComfyUI 0.3.75 there.")
    root = Path(args.root)
    base = root / "comfy-base"
    for sub, name in (("videopure", MODEL), ("videopure_raft", RAFT), ("videopure_classifiers", CLASSIFIER)):
        link = base / "models" / sub / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(root / name)
    nodes = base / "custom_nodes" / "videopure"
    nodes.parent.mkdir(parents=True, exist_ok=True)
    if not nodes.exists():
        nodes.symlink_to(REPO, target_is_directory=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    workflow = full_size_workflow(args.t_star, args.frames, MODEL, RAFT,
                                  CLASSIFIER)
    t0 = time.perf_counter()
    server = ComfyUIServer.start(cache / "ComfyUI", python=python, base_directory=base, log_path=root / "comfyui.log",
                                 timeout=300, env=env)
    start_seconds = time.perf_counter() - t0
    try:
        version = server.system_stats()["system"]["comfyui_version"]
        result = run_workflow(server, workflow, timeout=3600)
        peak = _kib("VmHWM", str(server.process.pid))
        texts = [t for texts in result.texts.values() for t in texts]
    finally:
        server.stop()
    return {"comfyui_version": version, "server_start_seconds": round(start_seconds, 1),
            "workflow_seconds": round(result.seconds, 1), "server_peak_rss": peak,
            "nodes": sorted({n["class_type"] for n in workflow.values()}),
            "vote_text": sorted({t for t in texts if "winner" in t}),
            "images": len(result.images), "log": str(root / "comfyui.log")}


RUNNERS = {"build": phase_build, "embedding": phase_embedding, "load-fp16": phase_load_fp16, "purify": phase_purify,
           "demo": phase_demo, "cli": phase_cli, "comfyui": phase_comfyui}


def run_phase(phase: str, root: str | os.PathLike, frames: int = 4, size: int = 64, t_star: int = 2, clip: str = "17",
              threads: int | None = None, timeout: float = 7200) -> dict:
    """One phase in a fresh Python process; returns its dict (with the process's own wall seconds)."""
    cmd = [sys.executable, __file__, "--child", phase, "--root", str(root), "--frames", str(frames), "--size",
           str(size), "--t-star", str(t_star), "--clip", clip] + (["--threads", str(threads)] if threads else [])
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"phase {phase} failed (exit {out.returncode}):\n{out.stderr[-6000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _gib(n) -> str:
    return f"{n / 2**30:.2f} GiB"


def markdown(results: dict) -> str:
    r = results
    lines = [f"# Full-size pipeline on the CPU ({r['date']})", "",
             f"{r['machine']}; load average at the start {r['load_average']}; other processes: "
             f"{r['other_load'] or 'none'}.", "",
             f"Input: bundled UCF-101 clip {r['clip']}, {r['frames']} frames at {r['size']}x{r['size']}, "
             f"t*={r['t_star']}.",
             ""]
    p = r["phases"]
    if "build" in p:
        b = p["build"]
        lines += ["## Build (random weights, fp16 variant files)", "",
                  f"{b['total_seconds']} s, peak RSS {_gib(b['peak_rss'])}; "
                  + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in b["bytes"].items()),
                  "", "Files: " + ", ".join(f"`{f}`" for f in b["files"]), ""]
    for name in ("embedding", "load-fp16"):
        if name in p:
            e = p[name]
            lines += [f"## load_diffusion in {e['dtype']} ({name})", "",
                      f"{e['seconds']} s, peak RSS above the start {_gib(e['peak_above_start'])} = "
                      f"{e['ratio_to_fp16_weights']}x the fp16 weights of UNet + VAE ({_gib(e['fp16_weights'])}); "
                      f"text encoder loaded {e['text_encoder_loads']} time(s); embedding cached: "
                      f"{e['embedding_cached']}; UNet dtypes {e['unet_dtypes']}.", ""]
    if "purify" in p:
        q = p["purify"]
        lines += ["## Purifier.from_pretrained + predict (float32, CPU)", "",
                  f"{q['threads']} torch threads. Load {q['load_seconds']} s (peak RSS {_gib(q['peak_rss_load'])}), "
                  f"run {q['run_seconds']} s, peak RSS during the run {_gib(q['peak_rss_run'])}. "
                  f"UNet calls: {q['unet_calls']} s, **{q['seconds_per_unet_call']} s per call**. "
                  f"Candidates finite: {q['candidates_finite']}.", "",
                  "| stage | seconds | working set (RSS) | estimated working set |", "| --- | --- | --- | --- |"]
        for k, s in q["stages"].items():
            lines.append(f"| {k} | {s['seconds']} | {s['working'] / 2**20:.0f} MiB | "
                         f"{s['estimated_working'] / 2**20:.0f} MiB |")
        lines += ["", f"Estimated peak (tensors, weights included): {_gib(q['estimate']['peak'])}.", ""]
    for name in ("demo", "cli"):
        if name in p:
            c = p[name]
            lines += [f"## videopure {c['argv'][0]}", "", f"`videopure {' '.join(c['argv'])}`", "",
                      f"exit {c['exit_code']}, {c['seconds']} s, peak RSS {_gib(c['peak_rss'])}.", ""]
            if name == "cli" and c.get("purified"):
                lines += [f"purified.mp4: {c['purified']}; files: " +
                          ", ".join(f"{k} ({v} B)" for k, v in c["files"].items()), ""]
    if "comfyui" in p:
        c = p["comfyui"]
        lines += ["## ComfyUI: the paper-pipeline workflow on the full-size files", "",
                  f"ComfyUI {c['comfyui_version']}: server start {c['server_start_seconds']} s, workflow "
                  f"{c['workflow_seconds']} s, server peak RSS {_gib(c['server_peak_rss'])}, {c['images']} images.", ""]
        lines += ["```", *sorted(set(c["vote_text"])), "```", ""]
    if r.get("errors"):
        lines += ["## Failures", ""] + [f"- {k}: {v.splitlines()[-1] if v else ''}" for k, v in r["errors"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="folder for the full-size files (about 3.5 GB)")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--t-star", type=int, default=2)
    p.add_argument("--clip", default="17")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(RUNNERS[args.child](args), default=str))
        return
    from videopure_core.bench.measure import describe_device, other_load

    results = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": describe_device("cpu"),
               "load_average": open("/proc/loadavg").read().split()[:3], "other_load": other_load(),
               "frames": args.frames, "size": args.size, "t_star": args.t_star, "clip": args.clip, "phases": {},
               "errors": {}}
    for phase in args.phases.split(","):
        print(f"== {phase}", flush=True)
        try:
            results["phases"][phase] = run_phase(phase, args.root, args.frames, args.size, args.t_star, args.clip,
                                                 args.threads)
            print(json.dumps(results["phases"][phase], indent=1, default=str)[:3000], flush=True)
        except Exception as err:  # noqa: BLE001  (record and go on with the next phase)
            results["errors"][phase] = str(err)
            print(f"phase {phase} failed: {err}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "full-size-cpu.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "full-size-cpu.md").write_text(markdown(results))
    print(markdown(results))
    sys.exit(1 if results["errors"] else 0)


if __name__ == "__main__":
    main()
