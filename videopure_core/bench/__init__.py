"""Benchmarks of VideoPure: time and peak memory per stage, a release-style naive path against the fast path,
FLOP floors counted on the meta device, and scaling with frames and t*. The CLI is `videopure bench`
(`videopure_core.bench.command`); docs/performance.md holds the measured numbers.

    measure  StageMeter (seconds + peak memory per stage, CPU or CUDA), matmul_rate, device description
    flops    count_flops / stage_flops (FlopCounterMode on the meta device)
    models   the model sets (trained world, full-size ModelScope with random weights, tiny) and input videos
    paths    the naive reference and the fast path, both from the core stage functions
    suite    the parts of a run (floors, comparison, scaling, ablation, memory bound) as plain dicts
    report   markdown tables and the scaling plot (plot: matplotlib panels)
"""
