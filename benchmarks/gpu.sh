#!/usr/bin/env bash
# The GPU benchmark (issue 7): full-size ModelScope architecture at 32x224x224, t*=6, random weights, plus the
# trained small world's votes check on the same GPU. Run from the repository root on a machine with one CUDA GPU:
#   bash benchmarks/gpu.sh            # eager, then with torch.compile
# Results: benchmarks/results/bench-cuda-modelscope*.{md,json}, scaling-cuda-modelscope*.png
set -euo pipefail
mkdir -p benchmarks/results
PY=${PY:-python}
export PYTHONPATH=${PYTHONPATH:-.}
# 1) eager fast path (bf16 weights + autocast) vs fp32 naive; the ablation also times channels_last and fp16, scaling 16..128 frames and t* 2/6/10 at 224 px
$PY -m videopure_core bench --full --device cuda --videos 3 --scaling-naive --ablation --tag cuda-modelscope \
    | tee benchmarks/results/gpu-eager.log
# 2) the same with torch.compile on the UNet and VAE (first video compiles; the warm-up absorbs it)
$PY -m videopure_core bench --full --device cuda --videos 3 --compile --warmup 2 --no-scaling --tag cuda-modelscope-compile \
    | tee benchmarks/results/gpu-compile.log
$PY benchmarks/check_line.py benchmarks/results/gpu-eager.log --min-speedup 3
