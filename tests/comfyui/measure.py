"""Measure, on a running ComfyUI with the pack, how fast Cancel takes effect in each stage and how the progress bar
ticks on a long video (by hand, for docs/comfyui.md; pytest does not collect this file).

    python tests/comfyui/measure.py http://127.0.0.1:8188 cancel [--index 40]
    python tests/comfyui/measure.py http://127.0.0.1:8188 ticks [--frames 200]

Everything runs on the bundled small world (64x64), on clips made long by repeating a test clip, so that single
network calls last long enough to be interrupted in the middle (chunk sizes larger than the clip: one call).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parent)]

import comfy_setup  # noqa: E402
from comfy_tools import interrupt_latency  # noqa: E402
from videopure_core.comfy_client import ComfyClient, prompt_messages  # noqa: E402

GUIDED = {"guidance": True, "alpha_s": -4.0, "lambda_temp": 0.0, "lambda_spa": 800.0, "guidance_reference": "32,28,28",
          "variance_weight": "log", "guide_trajectory": False, "final_candidate": "release", "warp_grad": False}


def node_seconds(client: ComfyClient, workflow: dict) -> dict[str, float]:
    """Run a workflow to the end; seconds each node ran (from its "executing" message to the next one)."""
    client_id = uuid.uuid4().hex
    ws = client.websocket(client_id)
    seconds, current, since = {}, None, None
    try:
        prompt_id = client.queue_prompt(workflow, client_id)
        for msg in prompt_messages(ws, prompt_id, time.monotonic() + 3600):
            if msg["type"] in ("executing", "execution_success", "execution_interrupted", "execution_error"):
                now = time.monotonic()
                if current is not None:
                    seconds[current] = now - since
                current, since = (msg.get("data") or {}).get("node"), now
    finally:
        ws.close()
    return seconds


def pipeline(index: int, repeat: int = 8, **changes) -> dict:
    """Encode (one VAE call), inversion, guided denoising (spatial loss), decode (one VAE call) of a long clip."""
    workflow = comfy_setup.inversion_workflow(index, repeat)
    workflow["5"]["inputs"]["chunk"] = 4096
    workflow["10"]["inputs"].update(GUIDED)
    workflow["11"]["inputs"]["chunk"] = 4096
    for key, value in changes.items():
        node, name = key.split("_", 1)
        workflow[node]["inputs"][name] = value
    return workflow


def pgd(index: int, repeat: int = 8) -> dict:
    return {"3": {"class_type": "VideoPureWorldClip", "inputs": {"split": "test", "index": index, "frames": 16}},
            "4": {"class_type": "RepeatImageBatch", "inputs": {"image": ["3", 0], "amount": repeat}},
            "13": {"class_type": "VideoPureClassifierLoader", "inputs": {"weights": comfy_setup.BUNDLED,
                                                                         "arch": "r3d_18", "num_classes": 400,
                                                                         "keep_loaded": False}},
            "14": {"class_type": "VideoPurePGDAttack", "inputs": {
                "classifier": ["13", 0], "images": ["4", 0], "label": -1, "epsilon": 4.0, "step_size": 1.0,
                "steps": 1000, "norm": "linf", "random_start": True, "start_seed": 0}},
            "15": {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}}}


def cancel(client: ComfyClient, index: int) -> None:
    full = node_seconds(client, pipeline(index))
    print("uninterrupted, seconds per node (one network call each for encode and decode):",
          {k: round(v, 1) for k, v in full.items() if k in ("5", "9", "10", "11")})
    cases = [
        ("encode (VAE, one call)", pipeline(index + 1), "5", 0.3),
        ("flow (RAFT, one call)", comfy_setup.flow_workflow(index), "6", 1.0),
        ("inversion (UNet)", pipeline(index, **{"9_noise_frame": 1}), "9", 1.0),
        ("guided denoising (UNet + gradient)", pipeline(index, **{"10_alpha_s": -3.9}), "10", 1.0),
        ("decode (VAE, one call)", pipeline(index, **{"11_chunk": 4095}), "11", 0.5),
        ("PGD attack", pgd(index), "14", 1.0),
    ]
    for name, workflow, node, wait in cases:
        latency, interrupted, ran = interrupt_latency(client, workflow, node, wait)
        where = "in the node" if interrupted == node else f"NOT in the node (interrupted {interrupted})"
        print(f"{name:38s} Cancel after {ran:4.1f} s: {latency * 1000:6.0f} ms, {where}")


def ticks(client: ComfyClient, frames: int, index: int) -> None:
    workflow = {**comfy_setup.long_clip(index, repeat=-(-frames // 16))}
    del workflow["5"]
    workflow["5"] = {"class_type": "VideoPureFitVideo", "inputs": {"images": ["4", 0], "size": 0,
                                                                   "max_frames": frames}}
    workflow["6"] = {"class_type": "VideoPurePurify", "inputs": {
        "model": ["1", 0], "images": ["5", 0], "t_star": 6, "temporal": True, "guidance": True, "alpha_s": -4.0,
        "lambda_temp": 5.0, "lambda_spa": 800.0, "guidance_reference": "32,28,28", "raft_iters": 10,
        "raft_input_range": "-1,1", "candidate": 0, "chunk": 16, "raft": ["2", 0]}}
    workflow["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    client_id = uuid.uuid4().hex
    ws = client.websocket(client_id)
    seen, start = [], None
    try:
        prompt_id = client.queue_prompt(workflow, client_id)
        for msg in prompt_messages(ws, prompt_id, time.monotonic() + 7200):
            data = msg.get("data") or {}
            if msg["type"] == "executing" and data.get("node") == "6":
                start = time.monotonic()
            elif msg["type"] == "progress" and data.get("node") == "6":
                seen.append((time.monotonic() - start, data["value"], data["max"]))
    finally:
        ws.close()
    gaps = [b[0] - a[0] for a, b in zip([(0.0, 0, 0)] + seen, seen)]
    print(f"{frames} frames: {len(seen)} ticks (bar max {seen[-1][2]}) in {seen[-1][0]:.0f} s; longest wait for a "
          f"tick {max(gaps):.1f} s (before tick {gaps.index(max(gaps)) + 1})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("what", choices=["cancel", "ticks"])
    p.add_argument("--index", type=int, default=40, help="test clip (use one not run before: nothing cached)")
    p.add_argument("--frames", type=int, default=200)
    args = p.parse_args()
    client = ComfyClient(args.url)
    cancel(client, args.index) if args.what == "cancel" else ticks(client, args.frames, args.index)


if __name__ == "__main__":
    main()
