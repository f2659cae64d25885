"""`lab.py threads`: how each engine does with 1 and N threads, and whether fastlstm's default thread
policy ever costs time.

Per standard config, five variants are checked against torch and timed interleaved in one process
(the package's check-then-interleave path): fastlstm with `num_threads=1` and `num_threads=N` per call,
fastlstm with no num_threads at all (the library's default policy: up to the CPUs this process may
use, small work kept on the calling thread), torch with `torch.set_num_threads(N)`, and ORT with
`intra_op_num_threads=N` (N = --threads, default 2). The default policy's median must be within 5% of
the 1-thread median on every config: a default that splits work too small to gain would make every
untuned user slower. After each config, the N CPUs' capacity is measured (core_capacity.py), and the
batch-1 floors are given for N threads (each core reads its 1/N share of every W_hh).

Writes threads.md and threads.json. Exit status 1 if any variant's output differs from torch's; a
failed default-policy check is reported but, being a timing verdict on a noisy machine, does not
change the exit status.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Mapping, Optional, Sequence

import lab_options
from core_capacity import CoreCapacity
from fastlstm.bench import report
from fastlstm.bench.cli import (
    add_timing_arguments,
    case_progress,
    mismatch_status,
    progress,
    publish,
    run_info,
    settings_from,
)
from fastlstm.bench.configs import select_configs
from fastlstm.bench.machine import available_cpus
from fastlstm.bench.suite import CaseResult, Variant, engine_variant, run_suite
from fastlstm.bench.weights import random_weights
from machine_rates import SgemmPeak, measure_batch1_floors

DEFAULT_THREADS = 2
# Multi-threaded engines leave their workers spinning after each call, on the very cores the next
# engine's threads need (ORT's intra-op worker for ~40 ms after its last run, torch's OpenMP worker for
# ~10 ms). Priming each turn for longer measures every engine as a service running it alone sees it.
DEFAULT_PRIMING_MS = 60.0
DEFAULT_POLICY_TOLERANCE = 0.05  # the default policy may be at most this much slower than 1 thread
KEY_1T, KEY_DEFAULT = "fastlstm_1t", "fastlstm_default"


def key_nt(engine: str, threads: int) -> str:
    return f"{engine}_{threads}t"


def thread_variants(threads: int, default_threads: int, engines: Sequence[str]) -> List[Variant]:
    """fastlstm 1T, NT and default policy, then torch and ORT at N threads (those in `engines`)."""
    variants = [
        engine_variant("fastlstm", 1, KEY_1T, "fastlstm 1T"),
        engine_variant("fastlstm", threads, key_nt("fastlstm", threads), f"fastlstm {threads}T"),
        engine_variant("fastlstm", None, KEY_DEFAULT, f"fastlstm default ({default_threads}T)"),
    ]
    others = [("torch", "torch"), ("ort", "ORT")]
    return variants + [engine_variant(e, threads, key_nt(e, threads), f"{label} {threads}T") for e, label in others if e in engines]


def default_policy_ok(case: CaseResult) -> Optional[bool]:
    ratio = report.time_ratio(case, KEY_DEFAULT, KEY_1T)
    return None if ratio is None else ratio <= 1 + DEFAULT_POLICY_TOLERANCE


def speedup_nt_over_1t(case: CaseResult, threads: int) -> Optional[float]:
    """fastlstm's 1-thread median over its N-thread median (above 1: the threads help)."""
    ratio = report.time_ratio(case, key_nt("fastlstm", threads), KEY_1T)
    return None if ratio is None else 1 / ratio


def _times(value: Optional[float]) -> str:
    return report.MISSING if value is None else f"{value:.2f}x"


def _policy_cell(case: CaseResult) -> str:
    ratio = report.time_ratio(case, KEY_DEFAULT, KEY_1T)
    if ratio is None:
        return report.MISSING
    return f"{ratio:.2f} " + ("ok" if ratio <= 1 + DEFAULT_POLICY_TOLERANCE else f"SLOWER (+{100 * (ratio - 1):.0f}%)")


def threads_table(cases: Sequence[CaseResult], threads: int, variants: Sequence[Variant],
                  floors_us: Mapping[str, float], capacity: Mapping[str, float]) -> str:
    nt = key_nt("fastlstm", threads)
    baselines = [(key_nt(e, threads), label) for e, label in (("ort", "ORT"), ("torch", "torch"))]
    baselines = [(key, label) for key, label in baselines if any(v.key == key for v in variants)]
    header = ["config", "shape"] + [v.label for v in variants] + [f"fastlstm {threads}T/1T speedup"]
    header += [f"{threads} CPUs' capacity"] if capacity else []
    header += [f"fastlstm/{label} ({threads}T)" for _, label in baselines] + ["default/1T (<= 1.05)"]
    if floors_us:
        header += [f"floor {threads}T (us)"] + [f"floor/{label} ({threads}T)" for _, label in baselines]
    rows = []
    for case in cases:
        row = [case.config.name, case.config.describe()] + [report.time_cell(case, v.key, with_p90=False) for v in variants]
        row.append(_times(speedup_nt_over_1t(case, threads)))
        row += [_times(capacity.get(case.config.name))] if capacity else []
        row += [report.format_ratio(report.time_ratio(case, nt, key)) for key, _ in baselines] + [_policy_cell(case)]
        if floors_us:
            floor = floors_us.get(case.config.name)
            row.append(report.MISSING if floor is None else report.format_us(floor))
            for key, _ in baselines:
                result = case.engines.get(key)
                row.append(f"{floor / result.timing.median_us:.2f}" if floor is not None and result else report.MISSING)
        rows.append(row)
    return report.markdown_table(header, rows)


def threads_report(cases: List[CaseResult], settings: Any, variants: Sequence[Variant], default_threads: int,
                   floors_us: Dict[str, float], capacity: CoreCapacity, notes: List[str], run: Dict[str, Any]) -> report.Report:
    """The report; run is cli.run_info's."""
    threads = settings.threads
    verdicts = [ok for ok in map(default_policy_ok, cases) if ok is not None]
    slower = [case.config.name for case in cases if default_policy_ok(case) is False]
    verdict = ("not checked (fastlstm did not run)" if not verdicts else
               f"PASS: on every config the default policy's median is within {DEFAULT_POLICY_TOLERANCE:.0%} of 1 thread's"
               if all(verdicts) else f"FAIL: more than {DEFAULT_POLICY_TOLERANCE:.0%} slower than 1 thread on {', '.join(slower)}")
    header = report.header_lines(run["machine"], run["date"], run["command"])
    header += report.timing_lines(settings, run["timer_floor_ns"], what="variants") + [
        f"fastlstm nT: `model(x, num_threads=n)`; fastlstm default: `model(x)`, the library's own policy "
        f"(`fastlstm.get_num_threads()` = {default_threads}, the CPUs this process may run on; work too small to gain "
        "from a split stays on the calling thread)",
        f"torch: `torch.set_num_threads({threads})`; ORT: `intra_op_num_threads={threads}`, inter-op 1, sequential",
        f"{threads} CPUs' capacity: {capacity.summary_text()}",
    ] + report.engine_lines(cases)
    explanation = (
        f"Speedup is fastlstm 1T time over {threads}T time. fastlstm/X is fastlstm {threads}T's median over X's at {threads} "
        "threads: below 1 means fastlstm is faster. default/1T is the default policy's median over 1 thread's. At batch 1, "
        f"the floor is what no exact fp32 engine can beat here: each of {threads} cores reads its 1/{threads} share of every "
        f"W_hh each step and does 1/{threads} of the input projection at the single-core sgemm peak; floor/X is the lowest "
        f"fastlstm/X ratio reachable. The CPUs' capacity, measured right after each config, is what {threads} CPUs computing "
        f"at once delivered against one alone: below {threads}.00x, the threads did not have {threads} whole cores."
    )
    cases_json = []
    for case in cases:
        nt = key_nt("fastlstm", threads)
        cases_json.append({
            **report.case_json(case),
            "fastlstm_speedup_nt_over_1t": speedup_nt_over_1t(case, threads),
            "fastlstm_nt_time_over_ort_nt": report.time_ratio(case, nt, key_nt("ort", threads)),
            "fastlstm_nt_time_over_torch_nt": report.time_ratio(case, nt, key_nt("torch", threads)),
            "fastlstm_default_time_over_1t": report.time_ratio(case, KEY_DEFAULT, KEY_1T),
            "default_policy_ok": default_policy_ok(case),
            "cpu_capacity_after": capacity.by_config.get(case.config.name),
        })
    return report.Report(
        title=f"fastlstm thread scaling: 1 vs {threads} threads",
        header=header,
        sections=[
            ("Median time per call (microseconds)", explanation + "\n\n" + threads_table(cases, threads, variants, floors_us, capacity.by_config)),
            ("Default thread policy check", f"Default policy never more than {DEFAULT_POLICY_TOLERANCE:.0%} slower than 1 thread: {verdict}."),
        ],
        notes=notes,
        data={
            **run,
            "settings": {**report.settings_json(settings), "fastlstm_default_threads": default_threads,
                         "default_policy_tolerance": DEFAULT_POLICY_TOLERANCE},
            "default_policy_ok": all(verdicts) if verdicts else None,
            "batch1_floor_us": floors_us,
            "cpu_capacity_cpus": capacity.cpus,
            "cases": cases_json,
        },
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("threads", help="1 vs N threads per engine, and fastlstm's default thread policy",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="all", metavar="NAMES", help="comma-separated standard configs, or 'all'")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, metavar="N",
                        help=f"the thread count compared with 1 (default: {DEFAULT_THREADS}; at least 2)")
    add_timing_arguments(parser)
    lab_options.add_priming_argument(parser, DEFAULT_PRIMING_MS, ", long enough for other engines' spinning threads to sleep")
    lab_options.add_output_arguments(parser, "threads.md and threads.json")
    parser.set_defaults(handler=run, parser=parser)


def run(args: argparse.Namespace, command: str) -> int:
    import fastlstm

    parser: argparse.ArgumentParser = args.parser
    if args.threads < 2:
        parser.error("--threads must be at least 2 (it is compared with 1 thread)")
    if "fastlstm" not in args.engines:
        parser.error("--engines must include fastlstm")
    try:
        configs = select_configs(args.configs)
    except ValueError as error:
        parser.error(str(error))
    settings = settings_from(args, args.threads, priming_seconds=lab_options.priming_seconds(args, parser))
    # The default policy is measured as the library ships it, whatever this process had set before.
    default_threads, previous_threads = available_cpus(), fastlstm.get_num_threads()
    notes = []
    if previous_threads != default_threads:
        notes.append(f"fastlstm's thread count had been set to {previous_threads} in this process; the run used the "
                     f"default ({default_threads}) and restored it afterwards")
    variants = thread_variants(args.threads, default_threads, args.engines)
    progress(f"lab threads: {len(configs)} config(s), variants {', '.join(v.label for v in variants)}")
    run, peak, capacity = run_info(command), SgemmPeak(), CoreCapacity(args.threads)

    def after_case(index: int, total: int, case: CaseResult) -> None:
        case_progress(index, total, case)
        if case.engines:
            peak.sample()
            capacity.sample(case.config.name)

    fastlstm.set_num_threads(default_threads)
    try:
        sources = [lambda config=config: random_weights(config, args.seed) for config in configs]
        cases = run_suite(sources, settings, after_case, variants)
    finally:
        fastlstm.set_num_threads(previous_threads)
    progress("measuring cache read rates ...")
    floors_us, _ = measure_batch1_floors(cases, peak.best, args.threads)
    notes = report.merged_notes(cases, notes)
    document = threads_report(cases, settings, variants, default_threads, floors_us, capacity, notes, run)
    publish(document, lab_options.output_dir(args), "threads")
    slower = [case.config.name for case in cases if default_policy_ok(case) is False]
    if slower:
        progress(f"!! fastlstm's default thread policy was more than {DEFAULT_POLICY_TOLERANCE:.0%} slower than 1 thread on: "
                 + ", ".join(slower))
    return mismatch_status(cases)
