"""Command-line pieces every `fastlstm bench` subcommand shares: argument types, the timing-budget,
priming, output-directory and seed options, and progress lines on stderr.

One definition each, so `bench`, `bench threads`, `bench concurrency` and `bench stream` spell and
document the same option the same way.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from fastlstm.bench import machine, report
from fastlstm.bench.engines import ENGINE_NAMES
from fastlstm.bench.suite import CaseResult, SuiteSettings
from fastlstm.bench.timing import DEFAULT_PRIMING_SECONDS, DEFAULT_SECONDS_PER_CONFIG

DEFAULT_OUT_DIR = Path("bench") / "results"
EXIT_MISMATCH = 1


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def positive_int_list(text: str) -> List[int]:
    """'1,2,4,8' -> [1, 2, 4, 8], duplicates dropped, order kept."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def engine_list(text: str) -> List[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENGINE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose engines from {','.join(ENGINE_NAMES)}, got {text!r}")
    return list(dict.fromkeys(names))


def add_engines_argument(parser: argparse.ArgumentParser, extra_help: str = "") -> None:
    parser.add_argument(
        "--engines",
        type=engine_list,
        default=list(ENGINE_NAMES),
        metavar="LIST",
        help=f"comma-separated engines to time (default: {','.join(ENGINE_NAMES)}){extra_help}",
    )


def add_budget_arguments(parser: argparse.ArgumentParser, what: str = "config") -> None:
    """--repeats N (exact timed rounds) or --seconds S (a time budget), per `what`."""
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--repeats", type=positive_int, metavar="N", help=f"timed rounds per {what} (each engine called N times)"
    )
    budget.add_argument(
        "--seconds",
        type=positive_float,
        default=DEFAULT_SECONDS_PER_CONFIG,
        metavar="S",
        help=f"time budget per {what}; rounds are chosen to fill it (default: {DEFAULT_SECONDS_PER_CONFIG:g})",
    )


def add_priming_argument(parser: argparse.ArgumentParser, default_ms: float = DEFAULT_PRIMING_SECONDS * 1e3, why: str = "") -> None:
    parser.add_argument(
        "--prime-ms",
        type=float,
        default=default_ms,
        metavar="MS",
        help="before each timed call, the engine makes untimed calls (at least one) for MS milliseconds, "
        "so its weights are back in cache after the other engines evicted them (default: %(default)g"
        f"{why}; 0 = strict one-call round-robin, which measures caches disturbed by other work)",
    )


def add_out_dir_argument(parser: argparse.ArgumentParser, files: str) -> None:
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        metavar="DIR",
        help=f"where {files} go (default: {DEFAULT_OUT_DIR})",
    )


def add_seed_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")


def check_priming(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not args.prime_ms >= 0:
        parser.error("--prime-ms must be >= 0")


def suite_settings(args: argparse.Namespace, engines: Sequence[str], threads: int = 1) -> SuiteSettings:
    """Timing settings from the shared budget, priming and seed options."""
    return SuiteSettings(
        engines=tuple(engines),
        threads=threads,
        rounds=args.repeats,
        seconds=args.seconds,
        priming_seconds=args.prime_ms / 1e3,
        seed=args.seed,
    )


def budget_text(args: argparse.Namespace) -> str:
    return f"{args.repeats} rounds" if args.repeats else f"~{args.seconds:g} s"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def case_progress(index: int, total: int, case: CaseResult) -> None:
    """One stderr line per finished case: its median per engine (or variant) and any mismatch."""
    times = ", ".join(f"{result.display_label} {result.timing.median_us:.1f} us" for result in case.engines.values())
    mismatch = f" MISMATCH: {', '.join(case.mismatched_engines)}" if case.mismatched_engines else ""
    progress(f"[{index}/{total}] {case.config.name} ... done ({times or 'nothing ran'}){mismatch}")


def case_progress_sampling(sgemm_peak: machine.SgemmPeak) -> Callable[[int, int, CaseResult], None]:
    """case_progress, then one sgemm peak sample after every case that timed something."""

    def after_case(index: int, total: int, case: CaseResult) -> None:
        case_progress(index, total, case)
        if case.engines:
            sgemm_peak.sample()

    return after_case


def publish(out_dir: Path, documents: Dict[str, str], markdown: str) -> None:
    """Write the report files, print the markdown (the tables) on stdout, say where the files went."""
    written = report.write_documents(out_dir, documents)
    print(markdown)
    progress("wrote " + ", ".join(str(path) for path in written))


def mismatch_status(cases: Sequence[CaseResult]) -> int:
    """EXIT_MISMATCH (with a summary on stderr) if any engine's output differed from torch's, else 0."""
    mismatched = [
        f"{case.config.name} ({', '.join(case.mismatched_engines)})" for case in cases if case.mismatched_engines
    ]
    if not mismatched:
        return 0
    progress("!! output mismatch against torch in " + "; ".join(mismatched) + " (see Notes)")
    return EXIT_MISMATCH


def now_text() -> str:
    """The run's date as the reports print it: local time with offset, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
