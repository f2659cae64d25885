"""`lab.py floors`: `fastlstm bench`'s comparison, held against what this machine allows.

The comparison itself (same engines, checks, interleaved timing, table and chart) is the package's.
On top of it, with the single-core sgemm peak sampled after every config:
- batch-1 configs: time per step and the W_hh streaming rate it implies, and the floor per call (T x
  layers x directions x the measured time to read one W_hh from cache, plus the input projection at
  the sgemm peak, or one read of each W_ih if that is longer; lstm_metrics.batch1_floor_microseconds).
  Every exact fp32 engine reads all of W_hh each step, so floor/X is the lowest fastlstm/X ratio
  reachable here. fastlstm's empty call is added to it: the fixed cost every fastlstm call pays.
- batched configs: GFLOP/s against the sgemm peak.
`--whole-models` does the same for the standard whole models, against the floor of the LSTM inside.
Writes results.md, results.json and speedup.png (the reference results' names).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, List, Optional

import lab_options
import lstm_metrics
from fastlstm.bench import report, whole_models
from fastlstm.bench.cli import (
    add_timing_arguments,
    case_progress,
    mismatch_status,
    positive_int,
    progress,
    publish,
    run_info,
    settings_from,
)
from fastlstm.bench.comparison import COMPARED_ENGINES, comparison_report, plot_speedups
from fastlstm.bench.configs import select_configs
from fastlstm.bench.engines import ENGINE_LABELS
from fastlstm.bench.suite import CaseResult, SuiteSettings, run_suite
from fastlstm.bench.weights import random_weights
from machine_rates import SgemmPeak, measure_batch1_floors, measure_empty_call_us


def format_bytes(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.1f} KiB"


def streaming_table(cases: List[CaseResult]) -> Optional[str]:
    """Batch-1 cases: time per step and the rate W_hh would have to stream at to explain it."""
    rows = []
    for case in (case for case in cases if case.config.batch == 1):
        for result in case.engines.values():
            seconds = result.timing.median_us / 1e6
            rows.append([
                case.config.name,
                result.label,
                report.format_us(lstm_metrics.per_step_microseconds(case.config, result.timing.median_us)),
                format_bytes(lstm_metrics.recurrent_weight_bytes_per_step(case.config)),
                f"{lstm_metrics.recurrent_weight_gbytes_per_second(case.config, seconds):.1f}",
            ])
    return report.markdown_table(["config", "engine", "per-step us", "W_hh bytes/step", "W_hh GB/s"], rows) if rows else None


def floor_table(cases: List[CaseResult], floors_us: Dict[str, float], whh_read_us: Dict[str, float], empty_call_us: float) -> Optional[str]:
    """Batch-1 cases against the floor, and the best ratio to torch and ORT any exact engine could reach."""
    rows = []
    for case in cases:
        floor = floors_us.get(case.config.name)
        if floor is None:
            continue
        medians = {key: result.timing.median_us for key, result in case.engines.items()}
        row = [
            case.config.name,
            format_bytes(lstm_metrics.recurrent_matrix_bytes(case.config)),
            report.format_us(whh_read_us[case.config.name]),
            report.format_us(floor),
        ]
        row += [f"{medians[name] / floor:.2f}" if name in medians else report.MISSING for name in ("fastlstm", *COMPARED_ENGINES)]
        row += [f"{floor / medians[name]:.2f}" if name in medians else report.MISSING for name in COMPARED_ENGINES]
        row.append(report.format_us(floor + empty_call_us))
        row.append(f"{(floor + empty_call_us) / medians['ort']:.2f}" if "ort" in medians else report.MISSING)
        rows.append(row)
    header = ["config", "one W_hh", "read one W_hh (us)", "floor per call (us)"]
    header += [f"{ENGINE_LABELS[name]}/floor" for name in ("fastlstm", *COMPARED_ENGINES)]
    header += [f"floor/{ENGINE_LABELS[name]} (best fastlstm/{ENGINE_LABELS[name]})" for name in COMPARED_ENGINES]
    header += ["floor + empty call (us)", "(floor + empty call)/ORT"]
    return report.markdown_table(header, rows) if rows else None


def gemm_table(cases: List[CaseResult], sgemm_peak: Optional[float]) -> Optional[str]:
    """Batched cases: achieved GFLOP/s against the single-core sgemm peak."""
    rows = []
    for case in (case for case in cases if case.config.batch > 1):
        for result in case.engines.values():
            rate = lstm_metrics.gflops_per_second(case.config, result.timing.median_us / 1e6)
            share = f"{100 * rate / sgemm_peak:.0f}%" if sgemm_peak else report.MISSING
            flops = lstm_metrics.lstm_forward_flops(case.config) / 1e9
            rows.append([case.config.name, result.label, f"{flops:.3g}", f"{rate:.1f}", share])
    return report.markdown_table(["config", "engine", "GFLOP/call", "GFLOP/s", "% of sgemm peak"], rows) if rows else None


def floors_report(cases: List[CaseResult], settings: SuiteSettings, run: Dict[str, Any], peak: SgemmPeak,
                  floors_us: Dict[str, float], whh_read_us: Dict[str, float], empty_call_us: float) -> report.Report:
    """The comparison's report with the efficiency sections and numbers added."""
    peak_line = f"single-core sgemm peak (numpy 1024x1024 fp32, 1 BLAS thread): {peak.describe()}"
    document = comparison_report(cases, settings, run, [peak_line])
    steps = streaming_table(cases)
    if steps:
        document.sections.append(("Batch 1: time per step and W_hh streaming rate", (
            "W_hh bytes over all layers and directions per time step, divided by (call time / T). The call also "
            "includes the input projection and call overhead, so this understates the recurrence's rate.\n\n" + steps)))
    floors = floor_table(cases, floors_us, whh_read_us, empty_call_us)
    if floors:
        document.sections.append(("Batch 1: against the floor", (
            "The floor of a call is T x layers x directions x the measured time to read one W_hh from cache (this "
            "core, fastlstm's widest loads, alternating direction as the fused step does, the faster of one stream and "
            "the fused step's four streams per weight block), plus the input projection's FLOPs at the sgemm peak (or "
            "one read of each W_ih, if that takes longer). Any exact fp32 implementation reads all of W_hh every step, "
            "so no engine can go below it without overlapping the two. floor/X is the lowest fastlstm/X ratio "
            f"reachable on this machine. fastlstm's empty call (LSTM(1, 1), one step of batch 1) took "
            f"{report.format_us(empty_call_us)} us: Python, the argument checks and the output arrays, which every "
            "fastlstm call pays on top of its floor.\n\n" + floors)))
    gemm = gemm_table(cases, peak.best)
    if gemm:
        document.sections.append(("Batched: achieved GFLOP/s", gemm))
    for case_document, case in zip(document.data["cases"], cases):
        case_document["flops_per_call"] = lstm_metrics.lstm_forward_flops(case.config)
        case_document["whh_bytes_per_step"] = lstm_metrics.recurrent_weight_bytes_per_step(case.config)
        for key, result in case.engines.items():
            seconds = result.timing.median_us / 1e6
            case_document["engines"][key].update(
                per_step_us=lstm_metrics.per_step_microseconds(case.config, result.timing.median_us),
                whh_gbytes_per_s=lstm_metrics.recurrent_weight_gbytes_per_second(case.config, seconds),
                gflops_per_s=lstm_metrics.gflops_per_second(case.config, seconds),
            )
    document.data.update(sgemm_peak_gflops=peak.best, sgemm_peak_samples=peak.samples, batch1_floor_us=floors_us,
                         whh_read_us=whh_read_us, empty_call_us=empty_call_us)
    return document


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("floors", help="fastlstm bench, plus floors, W_hh rates and GFLOP/s against this machine",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="all", metavar="NAMES", help="comma-separated standard configs, or 'all'")
    parser.add_argument("--whole-models", nargs="?", const="all", metavar="NAMES",
                        help="the standard whole models instead (fastlstm bench --whole-models), each held against "
                             "the floor of the LSTM inside: 'all' (if no NAMES) or forecaster, tagger, speaker")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="N", help="threads per engine (default: 1)")
    add_timing_arguments(parser)
    lab_options.add_priming_argument(parser)
    parser.add_argument("--no-chart", action="store_true", help="do not draw speedup.png")
    lab_options.add_output_arguments(parser, "results.md, results.json and speedup.png")
    parser.set_defaults(handler=run, parser=parser)


def run(args: argparse.Namespace, command: str) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.whole_models is not None and args.configs != "all":
        parser.error("--configs and --whole-models are alternatives; give one")
    try:
        configs = select_configs(args.configs) if args.whole_models is None else []
        models = whole_models.select_models(args.whole_models) if args.whole_models is not None else []
    except ValueError as error:
        parser.error(str(error))
    settings = settings_from(args, args.threads, priming_seconds=lab_options.priming_seconds(args, parser))
    what = f"whole models {', '.join(models)}" if models else f"{len(configs)} config(s)"
    progress(f"lab floors: {what}, engines {', '.join(ENGINE_LABELS[e] for e in settings.engines)}")
    run, peak = run_info(command), SgemmPeak()

    def after_case(index: int, total: int, case: CaseResult) -> None:
        case_progress(index, total, case)
        if case.engines:
            peak.sample()

    if models:
        # The floor of a whole model is its LSTM's: the embedding and heads only add to any engine's time.
        cases, _ = whole_models.run_whole_models(models, settings, after_case)
        columns = [key for key, _ in whole_models.whole_model_engines(settings.engines)]
        settings = dataclasses.replace(settings, engines=tuple(columns))
    else:
        sources = [lambda config=config: random_weights(config, args.seed) for config in configs]
        cases = run_suite(sources, settings, after_case)
    progress("measuring cache read rates (the first use compiles bench/read_probe) ...")
    floors_us, whh_read_us = measure_batch1_floors(cases, peak.best, args.threads)
    document = floors_report(cases, settings, run, peak, floors_us, whh_read_us, measure_empty_call_us())
    title = f"fastlstm speedup, {settings.threads} thread(s), {run['machine']['cpu']}"
    chart = None if args.no_chart else (lambda path: plot_speedups(cases, title, path))
    # The whole models have their own reference files beside the standard configs' results.
    publish(document, lab_options.output_dir(args), "whole_models" if models else "results", chart)
    return mismatch_status(cases)
