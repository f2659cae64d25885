"""The `fastlstm` command: a thin parser whose subcommands live with the code they drive.

Each subcommand module offers `register(subparsers)`, which adds its parser and sets `handler`
(called as `handler(args, command)`, where `command` is the command line as typed, for reports).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import List, Optional, Sequence


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return "unknown"
    try:
        return version("fastlstm")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from fastlstm.bench import cli as bench_cli
    from fastlstm.serve import cli as serve_cli

    parser = argparse.ArgumentParser(
        prog="fastlstm",
        description="fastlstm: fast CPU inference for PyTorch-trained LSTMs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    bench_cli.register(subparsers)
    serve_cli.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse argv (default: sys.argv[1:]) and run the chosen subcommand; return the exit status."""
    arguments: List[str] = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return int(args.handler(args, shlex.join(["fastlstm", *arguments])))


if __name__ == "__main__":
    sys.exit(main())
