"""The `videopure` command line. Each subcommand lives in its own module with `add_arguments` and `run`."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module providing HELP, add_arguments(parser) and run(args) -> int
COMMANDS = {
    "demo": "videopure_core.demo",
    "purify": "videopure_core.purify_cli",
    "bench": "videopure_core.bench.command",
    "train-world": "videopure_core.world.train",
    "evaluate-world": "videopure_core.world.evaluate",
    "eval": "videopure_core.evaluation.cli",
    "comfy-run": "videopure_core.comfy_client",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="videopure", description="VideoPure: diffusion purification for video models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
