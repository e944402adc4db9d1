"""Print the counted FLOP floors of the full-size ModelScope pipeline (meta device: no weights, no memory).

    PYTHONPATH=. python benchmarks/flops.py                       # 32x224x224, t*=6
    PYTHONPATH=. python benchmarks/flops.py --frames 128 --t-star 10
"""

import argparse

from videopure_core.bench.report import floors_table, params_line
from videopure_core.bench.suite import flop_floors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="modelscope", choices=["modelscope", "world", "tiny"])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--t-star", type=int, default=6)
    p.add_argument("--rate", type=float, default=800.0, help="reference rate in TFLOP/s for the floor times")
    args = p.parse_args()
    floors = flop_floors(args.arch, args.frames, args.size, args.t_star)
    print(f"{args.arch} {args.frames}x{args.size}x{args.size}, t*={args.t_star}, RAFT {floors['raft_iters']} iterations")
    print(floors_table(floors, args.rate * 1e12))
    print(params_line(floors))


if __name__ == "__main__":
    main()
