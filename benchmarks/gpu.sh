#!/usr/bin/env bash
# The GPU checks (issues 7 and 14), for the first machine with one CUDA GPU. Run from the repository root:
#   bash benchmarks/gpu.sh                 # ~30-40 min on one H100-class GPU
#   bash benchmarks/gpu.sh --cpu-dry-run   # every step at tiny sizes on the CPU, to check the script (~15 min)
# Steps:
#   1. the full-size ModelScope folder with random weights, saved as users download it (fp16 variant files), then
#      `videopure purify` on a bundled UCF-101 clip at 32x224x224 in float16, bfloat16 and float32: the memory
#      estimate printed before each run, CUDA peak memory per stage measured, seconds per stage
#      (results/gpu-purify-<dtype>/report.{json,md}, summary in results/gpu-full-size.md)
#   2. the trained world's votes in float16 and bfloat16 against float32, clean and under PGD (fails if any differs)
#   3. `videopure bench --full`: naive (release-style) vs fast path at 32x224x224, eager then torch.compile, the
#      ablation and scaling tables, the world's naive-vs-fast votes; fails unless the fast path is >= 3x with equal votes
set -euo pipefail
PY=${PY:-python}
export PYTHONPATH=${PYTHONPATH:-.}
OUT=${OUT:-benchmarks/results}
ROOT=${ROOT:-${TMPDIR:-/tmp}/videopure-full-size}   # 3.5 GB of random full-size weights
mkdir -p "$OUT"

if [ "${1:-}" = "--cpu-dry-run" ]; then
    DEVICE=cpu; FRAMES=4; SIZE=64; TINY=True; DTYPES="float32 bfloat16"; CLIPS=2; OUT="$OUT/dry-run"
    BENCH=(--arch tiny --device cpu --frames 4 --size 32 --videos 1 --warmup 0 --no-scaling --no-ablation)
    BENCH_COMPILE=("${BENCH[@]}"); MIN_SPEEDUP=0; ROOT="$ROOT-tiny"; ARCH=tiny; mkdir -p "$OUT"
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --cpu-dry-run')"
    nvidia-smi || true
    DEVICE=cuda; FRAMES=32; SIZE=224; TINY=False; DTYPES="float16 bfloat16 float32"; CLIPS=24
    BENCH=(--full --device cuda --videos 3 --scaling-naive --ablation)
    BENCH_COMPILE=(--full --device cuda --videos 3 --compile --warmup 2 --no-scaling); MIN_SPEEDUP=3; ARCH=modelscope
fi

# 1) full size, as users run it
if [ ! -f "$ROOT/text-to-video-ms-1.7b/unet/config.json" ]; then
    "$PY" -c "from videopure_core.modelscope import save_modelscope_folder; save_modelscope_folder('$ROOT', tiny=$TINY)"
fi
for dtype in $DTYPES; do
    "$PY" -m videopure_core purify videopure_core/data/ucf101/17 --model "$ROOT/text-to-video-ms-1.7b" \
        --raft "$ROOT/raft_large_C_T_V1-22a6c225.pth" --classifier "$ROOT/r3d_18-b3b3357e.pth" --classifier-arch r3d_18 \
        --frames "$FRAMES" --size "$SIZE" --device "$DEVICE" --dtype "$dtype" --estimate --no-progress \
        --out "$OUT/gpu-purify-$dtype" | tee "$OUT/gpu-purify-$dtype.log"
done
"$PY" benchmarks/gpu_summary.py "$OUT" $DTYPES | tee "$OUT/gpu-full-size.md"

# 2) same votes as float32 in half precision, on the trained world
"$PY" benchmarks/dtype_votes.py --device "$DEVICE" --clips "$CLIPS" --out "$OUT" | tee "$OUT/gpu-dtype-votes.log"

# 3) naive vs fast at full size, eager then compiled
"$PY" -m videopure_core bench "${BENCH[@]}" --out "$OUT" --tag "$DEVICE-$ARCH" | tee "$OUT/gpu-eager.log"
"$PY" -m videopure_core bench "${BENCH_COMPILE[@]}" --out "$OUT" --tag "$DEVICE-$ARCH-compile" \
    | tee "$OUT/gpu-compile.log"
"$PY" benchmarks/check_line.py "$OUT/gpu-eager.log" --min-speedup "$MIN_SPEEDUP"
