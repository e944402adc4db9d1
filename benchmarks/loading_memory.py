"""Peak host memory of `load_diffusion` on a folder saved as the fp16 variant only, as ModelScope is downloaded.

    PYTHONPATH=. python benchmarks/loading_memory.py                          # a 127M-parameter UNet3D (254 MB fp16)
    PYTHONPATH=. python benchmarks/loading_memory.py --widths 128 256 512 512 # 224M parameters
    PYTHONPATH=. python benchmarks/loading_memory.py --child FOLDER --dtype float16 [--no-accelerate] [--cast-after]

Each load runs in a fresh process that first loads the VAE alone (imports, lazy modules), then resets its peak
resident set (VmHWM through /proc/self/clear_refs, Linux) and reports `peak - RSS before the load`, in bytes and as a
multiple of the UNet's fp16 weights, after reading every weight once (so lazily mapped file pages count as they do
in use). `--no-accelerate` passes low_cpu_mem_usage=False (what from_pretrained does without accelerate installed);
`--cast-after` loads in float32 and casts to `--dtype` afterwards, the float32 copy `load_diffusion` avoids. The random
weights are never initialised: only their size matters here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE).group(1))


def save_fp16_folder(folder: Path, widths=(96, 192, 384, 384)) -> int:
    """A diffusion folder with only `*.fp16.safetensors` weights (UNet3D of `widths`, tiny VAE) and a cached embedding;
    returns the UNet's parameter count."""
    from diffusers import UNet3DConditionModel
    from diffusers.models.modeling_utils import no_init_weights

    from videopure_core import MODELSCOPE_SCHEDULER_CONFIG
    from videopure_core.loading import EMBEDDING_FILE, save_embedding
    from videopure_core.tiny import tiny_vae

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with no_init_weights():
            unet = UNet3DConditionModel(
                block_out_channels=tuple(widths), layers_per_block=2, norm_num_groups=32, cross_attention_dim=256,
                attention_head_dim=16,
            )
    finally:
        torch.set_default_dtype(default)
    unet.save_pretrained(folder / "unet", variant="fp16")
    tiny_vae(1).half().save_pretrained(folder / "vae", variant="fp16")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(MODELSCOPE_SCHEDULER_CONFIG))
    save_embedding(torch.zeros(1, 77, 256), folder / EMBEDDING_FILE)
    return sum(p.numel() for p in unet.parameters())


def child(folder: Path, dtype: str, accelerate: bool, cast_after: bool = False) -> dict:
    """One load in this process: peak RSS above the RSS before it, in bytes."""
    from diffusers import AutoencoderKL

    import videopure_core.loading as loading

    if not accelerate:
        loading._accelerate_available = lambda: False
    torch_dtype = getattr(torch, dtype)
    loading._load_component(AutoencoderKL, folder, "vae", torch_dtype)  # warm-up: imports and lazy modules
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS") * 1024
    start = time.perf_counter()
    m = loading.load_diffusion(folder, dtype=torch.float32 if cast_after else torch_dtype)
    if cast_after:
        m.unet.to(torch_dtype), m.vae.to(torch_dtype)
    seconds = time.perf_counter() - start
    for p in m.unet.parameters():  # read every weight once: resident as in use
        p.sum()
    peak = _status_kib("VmHWM") * 1024
    dtypes = sorted({str(p.dtype) for p in m.unet.parameters()})
    return {"dtype": dtype, "accelerate": accelerate, "cast_after": cast_after, "rss_before": before,
            "peak_above": peak - before, "seconds": round(seconds, 2), "unet_dtypes": dtypes}


def run_child(folder: Path, dtype: str, accelerate: bool = True, cast_after: bool = False) -> dict:
    """`child` in a fresh Python process (so one load's memory does not hide another's)."""
    cmd = [sys.executable, __file__, "--child", str(folder), "--dtype", dtype]
    cmd += ([] if accelerate else ["--no-accelerate"]) + (["--cast-after"] if cast_after else [])
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs=4, default=[96, 192, 384, 384])
    p.add_argument("--child", type=Path)
    p.add_argument("--dtype", default="float16")
    p.add_argument("--no-accelerate", action="store_true")
    p.add_argument("--cast-after", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dtype, not args.no_accelerate, args.cast_after)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        n = save_fp16_folder(folder, args.widths)
        fp16_bytes = 2 * n
        print(f"UNet3D {tuple(args.widths)}: {n / 1e6:.1f}M parameters, fp16 weights {fp16_bytes / 2**20:.0f} MiB")
        print("| load | UNet dtype | peak RSS above start | / fp16 weights | seconds |")
        print("| --- | --- | --- | --- | --- |")
        runs = [("float16", True, False), ("float16", False, False), ("float16", True, True), ("float32", True, False),
                ("float32", False, False)]
        for dtype, accelerate, cast_after in runs:
            r = run_child(folder, dtype, accelerate, cast_after)
            how = "low_cpu_mem_usage (accelerate)" if accelerate else "low_cpu_mem_usage=False"
            how += ", loaded float32 then cast" if cast_after else ""
            print(f"| {dtype}, {how} | {', '.join(r['unet_dtypes'])} | {r['peak_above'] / 2**20:.0f} MiB | "
                  f"{r['peak_above'] / fp16_bytes:.2f} | {r['seconds']} |")


if __name__ == "__main__":
    main()
