"""``cgat-bench``: the benchmark's command line. Each subcommand is a parser plus a handler."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from benchmarks.summary import add_data_arguments, summarize

Handler = Callable[[argparse.Namespace], int]


def _run(args: argparse.Namespace) -> int:
    # For now ``run`` prepares the data (graphs built or loaded) and reports what it holds.
    if args.experiments is not None and not args.experiments.exists():
        print(f"note: {args.experiments} not found; only the data summary is produced")
    print(summarize(args.data, args.cache_dir, args.workers).text())
    return 0


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="prepare the data and run the experiments")
    run.add_argument("experiments", type=Path, nargs="?", default=None, help="experiments.yaml")
    run.add_argument("--profile", default=None, help="experiment profile (e.g. cpu)")
    add_data_arguments(run)
    run.set_defaults(handler=_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cgat-bench", description="CGAT transfer-learning benchmark")
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
