#!/usr/bin/env bash
# The CPU benchmark (issue 7) on the trained small world. Run from the repository root.
#   bash benchmarks/cpu.sh          # quick (< 5 min on 2 cores), then the long run (~30 min on 2 cores)
set -euo pipefail
PY=${PY:-python}
export PYTHONPATH=${PYTHONPATH:-.}
mkdir -p benchmarks/results
$PY -m videopure_core bench --quick | tee benchmarks/results/cpu-quick.log
$PY benchmarks/check_line.py benchmarks/results/cpu-quick.log
$PY -m videopure_core bench | tee benchmarks/results/cpu.log
