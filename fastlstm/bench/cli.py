"""`fastlstm bench`: compare fastlstm with torch and ONNX Runtime on the same weights and inputs.

This module owns the bench subcommand's arguments and its run; the top-level `fastlstm` parser in
`fastlstm.cli` only registers it. `main` is re-exported so `fastlstm.bench.cli:main` works as the
console entry point too.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from fastlstm.bench.configs import CONFIGS_BY_NAME, BenchConfig, select_configs
from fastlstm.bench.engines import ENGINE_LABELS, ENGINE_NAMES
from fastlstm.bench.suite import CaseResult, SuiteSettings, run_suite
from fastlstm.bench.timing import DEFAULT_PRIMING_SECONDS, DEFAULT_SECONDS_PER_CONFIG, measure_timer_floor_ns
from fastlstm.bench.weights import WeightSource, make_input, random_weights, weights_from_file

DEFAULT_OUT_DIR = Path("bench") / "results"
DEFAULT_MODEL_SEQ_LEN = 100
DEFAULT_MODEL_BATCH = 1
EXIT_MISMATCH = 1
EXIT_USAGE = 2

DESCRIPTION = """\
Time fastlstm, torch.nn.LSTM and ONNX Runtime side by side in one process, on the same weights and
inputs, calling the engines interleaved (one call each per round, rotating order). Reports median
and p90 microseconds per call and fastlstm's time ratios; writes results.md, results.json and
speedup.png into --out-dir. Every engine's output is checked against torch (1e-4) before timing;
a mismatch is printed loudly and makes the exit status 1.
"""

EPILOG = "standard configs:\n" + "\n".join(f"  {name:<18} {c.describe()}" for name, c in CONFIGS_BY_NAME.items())


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _engine_list(text: str) -> List[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENGINE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose engines from {','.join(ENGINE_NAMES)}, got {text!r}")
    return list(dict.fromkeys(names))


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configs",
        default="all",
        metavar="NAMES",
        help="comma-separated standard configs, or 'all' (default: all). Choices: " + ", ".join(CONFIGS_BY_NAME),
    )
    parser.add_argument(
        "--model",
        type=Path,
        metavar="PATH",
        help="benchmark your own weight file (.pt/.pth state_dict, .safetensors, .npz) instead of the "
        "standard configs; the input shape comes from --seq-len and --batch",
    )
    parser.add_argument(
        "--seq-len",
        type=_positive_int,
        metavar="T",
        help=f"with --model: sequence length (default {DEFAULT_MODEL_SEQ_LEN})",
    )
    parser.add_argument(
        "--batch", type=_positive_int, metavar="B", help=f"with --model: batch size (default {DEFAULT_MODEL_BATCH})"
    )
    parser.add_argument(
        "--engines",
        type=_engine_list,
        default=list(ENGINE_NAMES),
        metavar="LIST",
        help=f"comma-separated engines to time (default: {','.join(ENGINE_NAMES)}); torch still checks outputs",
    )
    parser.add_argument("--threads", type=_positive_int, default=1, metavar="N", help="threads per engine (default: 1)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--repeats", type=_positive_int, metavar="N", help="timed rounds per config (each engine called N times)"
    )
    budget.add_argument(
        "--seconds",
        type=_positive_float,
        default=DEFAULT_SECONDS_PER_CONFIG,
        metavar="S",
        help=f"time budget per config; rounds are chosen to fill it (default: {DEFAULT_SECONDS_PER_CONFIG:g})",
    )
    parser.add_argument(
        "--prime-ms",
        type=float,
        default=DEFAULT_PRIMING_SECONDS * 1e3,
        metavar="MS",
        help="before each timed call, the engine makes untimed calls (at least one) for MS milliseconds, "
        "so its weights are back in cache after the other engines evicted them (default: %(default)g; "
        "0 = strict one-call round-robin, which measures caches disturbed by other work)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        metavar="DIR",
        help=f"where results.md, results.json and speedup.png go (default: {DEFAULT_OUT_DIR})",
    )
    parser.add_argument("--no-chart", action="store_true", help="do not draw speedup.png")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")


def register(subparsers: Any) -> None:
    """Add the `bench` subcommand to the top-level `fastlstm` parser."""
    parser = subparsers.add_parser(
        "bench",
        help="compare fastlstm with torch and ONNX Runtime",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bench_arguments(parser)
    parser.set_defaults(handler=run_bench, parser=parser)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _case_progress(index: int, total: int, case: CaseResult) -> None:
    times = ", ".join(
        f"{ENGINE_LABELS[name]} {result.timing.median_us:.1f} us" for name, result in case.engines.items()
    )
    mismatch = f" MISMATCH: {', '.join(case.mismatched_engines)}" if case.mismatched_engines else ""
    _progress(f"[{index}/{total}] {case.config.name} ... done ({times or 'nothing ran'}){mismatch}")


def _check_argument_combinations(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.model is None and (args.seq_len is not None or args.batch is not None):
        parser.error("--seq-len and --batch apply to --model; standard configs fix their own input shape")
    if args.model is not None and args.configs != "all":
        parser.error("--configs and --model are alternatives; give one")
    if not args.prime_ms >= 0:
        parser.error("--prime-ms must be >= 0")


def _weight_sources(args: argparse.Namespace, parser: argparse.ArgumentParser) -> List[Callable[[], WeightSource]]:
    """One deferred weight source per case, so only one case's weights are alive at a time.

    A --model file is loaded right away, so a bad file fails before anything is timed.
    """
    if args.model is not None:
        seq_len = args.seq_len or DEFAULT_MODEL_SEQ_LEN
        batch = args.batch or DEFAULT_MODEL_BATCH
        model_source = weights_from_file(args.model, seq_len, batch)
        return [lambda: model_source]
    try:
        configs: List[BenchConfig] = select_configs(args.configs)
    except ValueError as error:
        parser.error(str(error))
    return [lambda config=config: random_weights(config, args.seed) for config in configs]


def _settings(args: argparse.Namespace) -> SuiteSettings:
    return SuiteSettings(
        engines=tuple(args.engines),
        threads=args.threads,
        rounds=args.repeats,
        seconds=args.seconds,
        priming_seconds=args.prime_ms / 1e3,
        seed=args.seed,
    )


def run_bench(args: argparse.Namespace, command: str) -> int:
    """Run the benchmark described by parsed arguments; return the process exit status."""
    parser: argparse.ArgumentParser = args.parser
    _check_argument_combinations(args, parser)
    try:
        sources = _weight_sources(args, parser)
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        print(f"fastlstm bench: error: cannot load {args.model}: {error}", file=sys.stderr)
        return EXIT_USAGE

    from fastlstm.bench import machine, report

    settings = _settings(args)
    budget = f"{args.repeats} rounds" if args.repeats else f"~{args.seconds:g} s"
    _progress(
        f"fastlstm bench: {len(sources)} config(s), engines {','.join(settings.engines)}, "
        f"{settings.threads} thread(s), {budget} each, priming {args.prime_ms:g} ms per turn"
    )
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    timer_floor_ns = measure_timer_floor_ns()
    cases = run_suite(sources, settings, make_input, progress=_case_progress)

    sgemm_peak = None
    if any(case.config.batch > 1 and case.engines for case in cases):
        _progress("measuring single-core sgemm peak ...")
        sgemm_peak = machine.measure_sgemm_peak_gflops()
    run = report.BenchRun(
        cases=cases,
        settings=settings,
        machine=machine.describe_machine(),
        command=command,
        date=date,
        timer_floor_ns=timer_floor_ns,
        sgemm_peak_gflops=sgemm_peak,
    )
    written = report.write_outputs(run, args.out_dir, chart=not args.no_chart)
    print(report.render_markdown(run))
    _progress("wrote " + ", ".join(str(path) for path in written))

    mismatches = [
        f"{case.config.name} ({', '.join(case.mismatched_engines)})" for case in cases if case.mismatched_engines
    ]
    if mismatches:
        _progress("!! output mismatch against torch in " + "; ".join(mismatches) + " (see Notes)")
        return EXIT_MISMATCH
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The top-level `fastlstm` command (argv excludes the program name, e.g. ['bench', '--help'])."""
    from fastlstm.cli import main as fastlstm_main

    return fastlstm_main(argv)
