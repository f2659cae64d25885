"""`fastlstm bench`: compare fastlstm with torch and ONNX Runtime on the same weights and inputs.

This module owns the bench subcommand's arguments and its run, and registers the focused benchmarks
under it (`bench threads`, `bench concurrency`, `bench stream`, each in its own module); the
top-level `fastlstm` parser in `fastlstm.cli` only registers `bench`. `main` is re-exported so
`fastlstm.bench.cli:main` works as the console entry point too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from fastlstm.bench import concurrency, streaming, threads
from fastlstm.bench.configs import CONFIGS_BY_NAME, BenchConfig, select_configs
from fastlstm.bench.options import (
    add_budget_arguments,
    add_engines_argument,
    add_out_dir_argument,
    add_priming_argument,
    add_seed_argument,
    budget_text,
    case_progress_sampling,
    check_priming,
    mismatch_status,
    now_text,
    positive_int,
    progress,
    suite_settings,
)
from fastlstm.bench.suite import run_suite
from fastlstm.bench.timing import measure_timer_floor_ns
from fastlstm.bench.weights import WeightSource, make_input, random_weights, weights_from_file

SUBCOMMAND_MODULES = (threads, concurrency, streaming)
DEFAULT_MODEL_SEQ_LEN = 100
DEFAULT_MODEL_BATCH = 1
EXIT_USAGE = 2

DESCRIPTION = """\
Time fastlstm, torch.nn.LSTM and ONNX Runtime side by side in one process, on the same weights and
inputs, calling the engines interleaved (one call each per round, rotating order). Reports median
and p90 microseconds per call and fastlstm's time ratios; writes results.md, results.json and
speedup.png into --out-dir. Every engine's output is checked against torch (1e-4) before timing;
a mismatch is printed loudly and makes the exit status 1.

Focused benchmarks (`fastlstm bench SUBCOMMAND --help`; their options go after the name):
  threads      1 vs 2 threads per engine, and fastlstm's default thread policy
  concurrency  N client threads sending batch-1 requests: latency p50/p99 and throughput
  stream       one streaming step at batch 1: fastlstm step(out=) vs model() vs torch vs ORT
"""

EPILOG = "standard configs:\n" + "\n".join(f"  {name:<18} {c.describe()}" for name, c in CONFIGS_BY_NAME.items())


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
        type=positive_int,
        metavar="T",
        help=f"with --model: sequence length (default {DEFAULT_MODEL_SEQ_LEN})",
    )
    parser.add_argument(
        "--batch", type=positive_int, metavar="B", help=f"with --model: batch size (default {DEFAULT_MODEL_BATCH})"
    )
    add_engines_argument(parser, "; torch still checks outputs")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="N", help="threads per engine (default: 1)")
    add_budget_arguments(parser)
    add_priming_argument(parser)
    add_out_dir_argument(parser, "results.md, results.json and speedup.png")
    parser.add_argument("--no-chart", action="store_true", help="do not draw speedup.png")
    add_seed_argument(parser)


class _Subcommands(argparse._SubParsersAction):
    """The subcommand slot of `fastlstm bench`, refusing the comparison's options before it.

    argparse would accept `fastlstm bench --seconds 10 stream` and then let the subcommand's own
    defaults silently replace --seconds; this makes it an error that says where options go.
    An option not given still holds its very default object when the subcommand name is reached.
    """

    def __init__(self, *args: Any, bench_options: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bench_options = tuple(bench_options)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Any = None
    ) -> None:
        given = [dest for dest in self.bench_options if getattr(namespace, dest, None) is not parser.get_default(dest)]
        if given:
            options = ", ".join("--" + dest.replace("_", "-") for dest in given)
            parser.error(f"{options} given before '{values[0]}': options go after the subcommand name")
        super().__call__(parser, namespace, values, option_string)


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
    bench_options = list(vars(parser.parse_args([])))
    subparsers = parser.add_subparsers(
        title="focused benchmarks",
        dest="bench_command",
        metavar="SUBCOMMAND",
        action=_Subcommands,
        bench_options=[dest for dest in bench_options if dest not in ("handler", "parser")],
    )
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)


def _check_argument_combinations(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.model is None and (args.seq_len is not None or args.batch is not None):
        parser.error("--seq-len and --batch apply to --model; standard configs fix their own input shape")
    if args.model is not None and args.configs != "all":
        parser.error("--configs and --model are alternatives; give one")
    check_priming(args, parser)


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

    settings = suite_settings(args, args.engines, args.threads)
    progress(
        f"fastlstm bench: {len(sources)} config(s), engines {','.join(settings.engines)}, "
        f"{settings.threads} thread(s), {budget_text(args)} each, priming {args.prime_ms:g} ms per turn"
    )
    date = now_text()
    timer_floor_ns = measure_timer_floor_ns()
    sgemm_peak = machine.SgemmPeak()
    cases = run_suite(sources, settings, make_input, progress=case_progress_sampling(sgemm_peak))
    if any(case.engines for case in cases):
        progress("measuring cache read rates ...")
    floors_us, whh_read_us = machine.measure_batch1_floors(cases, sgemm_peak.best)
    empty_call_us = machine.measure_empty_call_us() if floors_us and "fastlstm" in settings.engines else None
    run = report.BenchRun(
        cases=cases,
        settings=settings,
        machine=machine.describe_machine(),
        command=command,
        date=date,
        timer_floor_ns=timer_floor_ns,
        sgemm_peak_gflops=sgemm_peak.best,
        sgemm_peak_samples=sgemm_peak.samples,
        floors_us=floors_us,
        whh_read_us=whh_read_us,
        empty_call_us=empty_call_us,
    )
    written = report.write_outputs(run, args.out_dir, chart=not args.no_chart)
    print(report.render_markdown(run))
    progress("wrote " + ", ".join(str(path) for path in written))

    return mismatch_status(cases)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The top-level `fastlstm` command (argv excludes the program name, e.g. ['bench', '--help'])."""
    from fastlstm.cli import main as fastlstm_main

    return fastlstm_main(argv)
