"""Check the last line of a `videopure bench` run: exit 1 unless votes are equal and the speedup reaches a target.

    videopure bench --quick | tee bench.log; python benchmarks/check_line.py bench.log --min-speedup 1.5
"""

import argparse
import re
import sys

LINE = re.compile(r"^fast/naive speedup: (?P<ratio>\d+(\.\d+)?)x, votes equal: (?P<votes>yes|no)$")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="the captured output of videopure bench ('-' for stdin)")
    p.add_argument("--min-speedup", type=float, default=1.0)
    args = p.parse_args()
    text = sys.stdin.read() if args.log == "-" else open(args.log).read()
    lines = text.strip().splitlines()
    match = LINE.match(lines[-1]) if lines else None
    if not match:
        print(f"the last line is not the benchmark's summary: {lines[-1] if lines else '(empty)'!r}")
        return 1
    ratio, votes = float(match["ratio"]), match["votes"]
    ok = votes == "yes" and ratio >= args.min_speedup
    print(f"speedup {ratio}x (needs >= {args.min_speedup}), votes equal {votes}: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
