#!/usr/bin/env python3
"""The benchmark lab: research benchmarks run from a checkout, built on the package's `fastlstm bench`.

    python bench/lab.py floors        # the comparison plus floors, W_hh rates, GFLOP/s vs the sgemm peak
    python bench/lab.py threads       # 1 vs N threads per engine, and fastlstm's default thread policy
    python bench/lab.py streaming     # one streaming step at batch 1, four ways
    python bench/lab.py concurrency   # N client threads sending batch-1 requests
    python bench/lab.py batching      # N clients sending single sequences: direct calls vs fastlstm.Batcher
    python bench/lab.py http          # HTTP load: fastlstm serve vs torch served on the same framework
    python bench/lab.py COMMAND --help

Each writes its report into --out DIR (default ./fastlstm-bench/); --reference writes into
bench/results/ instead, replacing the repository's reference results. The other tools in bench/ run
on their own: kernel_probe.sh, memory_check.py, leak_check.sh, fit_exp_polynomial.py (bench/README.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def use_checkout() -> None:
    """Import bench/'s modules, and the checkout's fastlstm when it is built in place (else the installed one)."""
    if any((REPO / "fastlstm").glob("_core*.so")) and str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))


def build_parser() -> argparse.ArgumentParser:
    import batching
    import concurrency
    import floors
    import http_load
    import streaming
    import thread_scaling

    parser = argparse.ArgumentParser(prog="python bench/lab.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for module in (floors, thread_scaling, streaming, concurrency, batching, http_load):
        module.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    use_checkout()
    arguments: List[str] = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    return int(args.handler(args, shlex.join(["python", "bench/lab.py", *arguments])))


if __name__ == "__main__":
    sys.exit(main())
