"""`fastlstm bench`: its arguments and its run, and the command-line pieces that the lab in the
repository's bench/ folder reuses (argument types, timing options, progress lines, publishing a report)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from fastlstm.bench.configs import CONFIGS_BY_NAME, select_configs
from fastlstm.bench.engines import ENGINE_LABELS, ENGINE_NAMES
from fastlstm.bench.precision import precision_table, precision_variants, weights_list
from fastlstm.bench.report import Report, render_markdown, write_report
from fastlstm.bench.suite import CaseResult, SuiteSettings, run_suite
from fastlstm.bench.timing import DEFAULT_SECONDS_PER_CONFIG, measure_call_ns
from fastlstm.bench.weights import WeightSource, random_weights, weights_from_file

DEFAULT_OUT_DIR = Path("fastlstm-bench")
DEFAULT_MODEL_SEQ_LEN, DEFAULT_MODEL_BATCH = 100, 1
EXIT_MISMATCH, EXIT_USAGE = 1, 2
DESCRIPTION = """\
Time fastlstm, torch.nn.LSTM and ONNX Runtime (those installed) side by side in one process, on the
same weights and inputs, calling the engines interleaved (one call each per round, rotating order).
Every engine's output is first checked against torch's (1e-4); a mismatch is reported and makes the
exit status 1. Prints a markdown table of median / p90 microseconds per call and fastlstm's time
ratios, and writes results.md, results.json and speedup.png into --out.
"""
EPILOG = "standard configs:\n" + "\n".join(f"  {name:<18} {c.describe()}" for name, c in CONFIGS_BY_NAME.items())


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: the text as `kind`, which must be above 0."""

    def parse(text: str) -> Any:
        if not kind(text) > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return kind(text)

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value: 'x'"
    return parse


positive_int, positive_float = positive(int), positive(float)


def engine_list(text: str) -> List[str]:
    names = list(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    if not names or any(name not in ENGINE_NAMES for name in names):
        raise argparse.ArgumentTypeError(f"choose engines from {','.join(ENGINE_NAMES)}, got {text!r}")
    return names


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """--engines, the budget per config (--repeats N exact rounds, or --seconds S), and --seed."""
    parser.add_argument("--engines", type=engine_list, default=list(ENGINE_NAMES), metavar="LIST",
                        help=f"comma-separated engines to time (default: {','.join(ENGINE_NAMES)})")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--repeats", type=positive_int, metavar="N", help="timed rounds per config (N calls per engine)")
    budget.add_argument("--seconds", type=positive_float, default=DEFAULT_SECONDS_PER_CONFIG, metavar="S",
                        help=f"time budget per config, filled with rounds (default: {DEFAULT_SECONDS_PER_CONFIG:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")


def settings_from(args: argparse.Namespace, threads: int, **overrides: Any) -> SuiteSettings:
    return SuiteSettings(tuple(args.engines), threads, args.repeats, args.seconds, seed=args.seed, **overrides)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def case_progress(index: int, total: int, case: CaseResult) -> None:
    """One stderr line per finished case: each variant's median, and any mismatch."""
    times = ", ".join(f"{r.label} {r.timing.median_us:.1f} us" for r in case.engines.values()) or "nothing ran"
    progress(f"[{index}/{total}] {case.config.name} ... done ({times})"
             + (f" MISMATCH: {', '.join(case.mismatched)}" if case.mismatched else ""))


def run_info(command: str) -> Dict[str, Any]:
    """What every report records about its run: the command, the date (local, to the second), the machine,
    and the harness's own floor (the median time it adds to one timed call: clock reads, an empty call)."""
    from fastlstm.bench.machine import describe_machine

    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return {"command": command, "date": date, "machine": describe_machine(), "timer_floor_ns": measure_call_ns(lambda: None)}


def mismatch_status(cases: Sequence[CaseResult]) -> int:
    """EXIT_MISMATCH (said on stderr) if any output differed from torch's, else 0."""
    mismatched = [f"{case.config.name} ({', '.join(case.mismatched)})" for case in cases if case.mismatched]
    if mismatched:
        progress("!! output mismatch against torch in " + "; ".join(mismatched) + " (see Notes)")
    return EXIT_MISMATCH if mismatched else 0


def publish(report: Report, out_dir: Path, name: str, chart: Optional[Callable[[Path], Optional[str]]] = None) -> None:
    """Draw the chart (speedup.png, or NAME_speedup.png for other names; given its path, it returns why it was
    skipped, or None), write NAME.md and NAME.json,
    print the markdown on stdout and say on stderr where the files went."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = []
    if chart is not None:
        path = out_dir / ("speedup.png" if name == "results" else f"{name}_speedup.png")
        skipped = chart(path)
        if skipped:
            report.notes.append(skipped)
        else:
            charts.append(path)
    written = write_report(report, out_dir, name) + charts
    print(render_markdown(report), end="")
    progress(f"wrote {', '.join(path.name for path in written)} into {out_dir.resolve()}")


def register(subparsers: Any) -> None:
    """Add `bench` to the top-level `fastlstm` parser."""
    parser = subparsers.add_parser("bench", help="compare fastlstm with torch and ONNX Runtime", description=DESCRIPTION,
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="all", metavar="NAMES",
                        help="comma-separated standard configs (listed below), or 'all' (the default)")
    parser.add_argument("--model", type=Path, metavar="FILE", help="time your own weights instead: any file "
                        "fastlstm.load reads (.pt/.pth state_dict, .safetensors, .npz), on --seq-len x --batch inputs")
    parser.add_argument("--whole-models", nargs="?", const="all", metavar="NAMES",
                        help="time whole models instead (convert vs torch vs ORT on the whole exported module): "
                             "'all' (if no NAMES) or a comma-separated list of forecaster, tagger, speaker; each at "
                             "batch 1 and 32, plus the converted model against its LSTM alone")
    parser.add_argument("--seq-len", type=positive_int, metavar="T", help=f"with --model (default {DEFAULT_MODEL_SEQ_LEN})")
    parser.add_argument("--batch", type=positive_int, metavar="B", help=f"with --model (default {DEFAULT_MODEL_BATCH})")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="N", help="threads per engine (default: 1)")
    parser.add_argument("--weights", type=weights_list, default=["fp32"], metavar="LIST",
                        help="fastlstm weight formats, out of fp32,bf16,int8 (default: fp32); bf16 adds OpenVINO at its "
                             "default precision, int8 torch's dynamic int8 LSTM, as peers")
    add_timing_arguments(parser)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, metavar="DIR",
                        help=f"where results.md, results.json and speedup.png go (default: ./{DEFAULT_OUT_DIR}/)")
    parser.add_argument("--no-chart", action="store_true", help="do not draw speedup.png")
    parser.set_defaults(handler=run_bench, parser=parser)


def weight_sources(args: argparse.Namespace, parser: argparse.ArgumentParser) -> List[Callable[[], WeightSource]]:
    """One deferred weight source per case; a --model file is loaded at once, so a bad file fails early."""
    if args.model is None:
        if args.seq_len is not None or args.batch is not None:
            parser.error("--seq-len and --batch apply to --model; standard configs fix their own input shape")
        try:
            configs = select_configs(args.configs)
        except ValueError as error:
            parser.error(str(error))
        return [lambda config=config: random_weights(config, args.seed) for config in configs]
    if args.configs != "all":
        parser.error("--configs and --model are alternatives; give one")
    source = weights_from_file(args.model, args.seq_len or DEFAULT_MODEL_SEQ_LEN, args.batch or DEFAULT_MODEL_BATCH)
    return [lambda: source]


def run_bench(args: argparse.Namespace, command: str) -> int:
    """Run `fastlstm bench` from parsed arguments; return the exit status."""
    from fastlstm._program_file import is_program_file
    from fastlstm.bench.comparison import comparison_report, plot_speedups

    if args.whole_models is not None or (args.model is not None and is_program_file(args.model)):
        return run_whole_model_bench(args, command)
    try:
        sources = weight_sources(args, args.parser)
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        progress(f"fastlstm bench: error: cannot load {args.model}: {error}")
        return EXIT_USAGE
    variants = precision_variants(args.weights, args.engines, args.threads) if args.weights != ["fp32"] else None
    settings = settings_from(args, args.threads)
    if variants is not None:
        settings = dataclasses.replace(settings, engines=tuple(variant.key for variant in variants))
    budget = f"{args.repeats} rounds" if args.repeats else f"~{args.seconds:g} s"
    engines = ", ".join(ENGINE_LABELS[name] for name in settings.engines)
    progress(f"fastlstm bench: {len(sources)} config(s), engines {engines}, {settings.threads} thread(s), {budget} each")
    run = run_info(command)
    cases = run_suite(sources, settings, case_progress, variants)
    title = f"fastlstm speedup, {settings.threads} thread(s), {run['machine']['cpu']}"
    chart = None if args.no_chart else lambda path: plot_speedups(cases, title, path)
    result = comparison_report(cases, settings, run)
    if variants is not None:
        result.sections.append(("Reduced-precision weights (time ratios, medians; max abs error vs torch float32)",
                                precision_table(cases, args.weights)))
    publish(result, args.out, "results", chart)
    return mismatch_status(cases)


def run_whole_model_bench(args: argparse.Namespace, command: str) -> int:
    """`--whole-models` (the standard whole models) or `--model` on a file written by fastlstm.convert."""
    from fastlstm.bench import whole_models
    from fastlstm.bench.comparison import comparison_report, plot_speedups

    parser = args.parser
    if args.whole_models is not None and (args.model is not None or args.configs != "all"):
        parser.error("--whole-models, --model and --configs are alternatives; give one")
    if args.whole_models is not None and (args.seq_len is not None or args.batch is not None):
        parser.error("--seq-len and --batch apply to --model; the whole models fix their own input shape")
    if args.model is not None and args.configs != "all":
        parser.error("--configs and --model are alternatives; give one")
    settings = settings_from(args, args.threads)
    run = run_info(command)
    budget = f"{args.repeats} rounds" if args.repeats else f"~{args.seconds:g} s"
    if args.model is not None:
        progress(f"fastlstm bench: converted model {args.model}, fastlstm only, {settings.threads} thread(s), {budget}")
        try:
            case = whole_models.run_converted_file(args.model, args.seq_len or DEFAULT_MODEL_SEQ_LEN,
                                                   args.batch or DEFAULT_MODEL_BATCH, settings)
        except (OSError, ValueError, TypeError, KeyError) as error:
            progress(f"fastlstm bench: error: cannot run {args.model}: {error}")
            return EXIT_USAGE
        case_progress(1, 1, case)
        publish(comparison_report([case], settings, run), args.out, "results")
        return 0
    try:
        names = whole_models.select_models(args.whole_models)
    except ValueError as error:
        parser.error(str(error))
    engines = ", ".join(ENGINE_LABELS[name] for name in settings.engines)
    progress(f"fastlstm bench: whole models {', '.join(names)} at batch 1 and 32, engines {engines}, "
             f"{settings.threads} thread(s), {budget} each (twice: engines, then model vs bare LSTM)")
    cases, overheads = whole_models.run_whole_models(names, settings, case_progress, args.weights)
    columns = [key for key, _ in whole_models.whole_model_engines(settings.engines, args.weights)]
    result = comparison_report(cases, dataclasses.replace(settings, engines=tuple(columns)), run)
    result.title = "fastlstm whole-model benchmark"
    if args.weights != ["fp32"]:
        result.sections.append(("Reduced-precision weights (time ratios, medians; max abs error vs torch float32)",
                                precision_table(cases, args.weights)))
    result.sections.append(whole_models.overhead_section(overheads))
    if "ort" in settings.engines and not whole_models.openvino_installed():
        result.notes.append("OpenVINO skipped: not installed")
    result.data["overhead"] = overheads
    title = f"fastlstm whole-model speedup, {settings.threads} thread(s), {run['machine']['cpu']}"
    chart = None if args.no_chart else lambda path: plot_speedups(cases, title, path)
    publish(result, args.out, "results", chart)
    return mismatch_status(cases)
