"""Options every lab command shares: where its report goes, and how long each turn primes.

A lab command writes into --out DIR (default ./fastlstm-bench/, as `fastlstm bench`); only
--reference writes into bench/results/, refreshing the repository's reference results on purpose.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastlstm.bench.cli import DEFAULT_OUT_DIR
from fastlstm.bench.timing import DEFAULT_PRIMING_SECONDS

REFERENCE_DIR = Path(__file__).resolve().parent / "results"


def add_output_arguments(parser: argparse.ArgumentParser, files: str) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, metavar="DIR",
                       help=f"where {files} go (default: ./{DEFAULT_OUT_DIR}/)")
    where.add_argument("--reference", action="store_true",
                       help=f"write into {REFERENCE_DIR}, replacing the repository's reference results")


def output_dir(args: argparse.Namespace) -> Path:
    return REFERENCE_DIR if args.reference else args.out


def add_priming_argument(parser: argparse.ArgumentParser, default_ms: float = DEFAULT_PRIMING_SECONDS * 1e3,
                         why: str = "") -> None:
    parser.add_argument(
        "--prime-ms", type=float, default=default_ms, metavar="MS",
        help="before each timed call, untimed calls (at least one) for MS milliseconds, so the engine's weights "
        f"are back in cache after the others evicted them (default: %(default)g{why}; 0 = strict one-call "
        "round-robin, which measures caches disturbed by other work)",
    )


def priming_seconds(args: argparse.Namespace, parser: argparse.ArgumentParser) -> float:
    if not args.prime_ms >= 0:
        parser.error("--prime-ms must be >= 0")
    return args.prime_ms / 1e3
