"""`fastlstm bench threads`: how each engine does with 1 and 2 threads, and whether fastlstm's default
thread policy ever costs time.

Per standard config, five variants are checked against torch and timed interleaved in one process
(the standard suite's check-then-interleave path): fastlstm with `num_threads=1` and `num_threads=N`
per call, fastlstm with no num_threads at all (the library's default policy: up to the CPUs this
process may use, small work kept on the calling thread), torch with `torch.set_num_threads(N)`, and
ORT with `intra_op_num_threads=N` (N = --threads, default 2). The default-policy check: its median must
be within 5% of the 1-thread median on every config, since a default that splits work too small to
gain would make every untuned user slower.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

from fastlstm.bench import report
from fastlstm.bench.configs import CONFIGS_BY_NAME, select_configs
from fastlstm.bench.core_capacity import CoreCapacity
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
    progress,
    publish,
    suite_settings,
)
from fastlstm.bench.suite import CaseResult, SuiteSettings, Variant, engine_variant, run_suite
from fastlstm.bench.timing import measure_timer_floor_ns
from fastlstm.bench.weights import make_input, random_weights

DEFAULT_THREADS = 2
# Multi-threaded engines leave their workers spinning after each call, on the very cores the next
# engine's threads need: measured here, ORT's intra-op worker spins for ~40 ms after its last Run,
# torch's OpenMP worker for ~10 ms. Priming each turn for longer than that measures every engine as
# a service running it alone would see it.
DEFAULT_PRIMING_MS = 60.0
# The default policy may be at most this much slower than 1 thread (median over median).
DEFAULT_POLICY_TOLERANCE = 0.05
OUTPUT_STEM = "threads"


# Variant keys in results and JSON: fastlstm_1t, fastlstm_2t, fastlstm_default, torch_2t, ort_2t.
KEY_1T = "fastlstm_1t"
KEY_DEFAULT = "fastlstm_default"


def key_nt(engine: str, threads: int) -> str:
    return f"{engine}_{threads}t"


def thread_variants(threads: int, default_threads: int, engines: Sequence[str]) -> List[Variant]:
    """fastlstm 1T, NT and default policy, then torch and ORT at N threads (those in `engines`)."""
    variants = [
        engine_variant("fastlstm", 1, key=KEY_1T, label="fastlstm 1T"),
        engine_variant("fastlstm", threads, key=key_nt("fastlstm", threads), label=f"fastlstm {threads}T"),
        engine_variant("fastlstm", None, key=KEY_DEFAULT, label=f"fastlstm default ({default_threads}T)"),
    ]
    for engine, label in (("torch", "torch"), ("ort", "ORT")):
        if engine in engines:
            variants.append(engine_variant(engine, threads, key=key_nt(engine, threads), label=f"{label} {threads}T"))
    return variants


def default_over_1t(case: CaseResult) -> Optional[float]:
    return report.time_ratio(case, KEY_DEFAULT, KEY_1T)


def default_policy_ok(case: CaseResult) -> Optional[bool]:
    ratio = default_over_1t(case)
    return None if ratio is None else ratio <= 1 + DEFAULT_POLICY_TOLERANCE


def speedup_nt_over_1t(case: CaseResult, threads: int) -> Optional[float]:
    """fastlstm's 1-thread median over its N-thread median (above 1: the threads help)."""
    ratio = report.time_ratio(case, key_nt("fastlstm", threads), KEY_1T)
    return None if ratio is None else 1 / ratio


def _speedup_text(speedup: Optional[float]) -> str:
    return report.MISSING if speedup is None else f"{speedup:.2f}x"


def _policy_cell(case: CaseResult) -> str:
    ratio = default_over_1t(case)
    if ratio is None:
        return report.MISSING
    verdict = "ok" if ratio <= 1 + DEFAULT_POLICY_TOLERANCE else f"SLOWER (+{100 * (ratio - 1):.0f}%)"
    return f"{ratio:.2f} {verdict}"


def threads_table(
    cases: Sequence[CaseResult],
    threads: int,
    variants: Sequence[Variant],
    floors_us: Optional[Mapping[str, float]] = None,
    capacity: Optional[Mapping[str, float]] = None,
) -> str:
    nt = key_nt("fastlstm", threads)
    baselines = [(key_nt(engine, threads), label) for engine, label in (("ort", "ORT"), ("torch", "torch"))]
    baselines = [(key, label) for key, label in baselines if any(v.key == key for v in variants)]
    floors_us = floors_us or {}
    header = ["config", "shape"] + [variant.label for variant in variants]
    header += [f"fastlstm {threads}T/1T speedup"]
    if capacity:
        header += [f"{threads} CPUs' capacity"]
    header += [f"fastlstm/{label} ({threads}T)" for _key, label in baselines]
    header += ["default/1T (<= 1.05)"]
    if floors_us:
        header += [f"floor {threads}T (us)"] + [f"floor/{label} ({threads}T)" for _key, label in baselines]
    rows = []
    for case in cases:
        row = [case.config.name, case.config.describe()]
        row += [report.time_cell(case, variant.key, with_p90=False) for variant in variants]
        row.append(_speedup_text(speedup_nt_over_1t(case, threads)))
        if capacity:
            row.append(_speedup_text(capacity.get(case.config.name)))
        row += [report.format_ratio(report.time_ratio(case, nt, key)) for key, _label in baselines]
        row.append(_policy_cell(case))
        if floors_us:
            floor = floors_us.get(case.config.name)
            row.append(report.format_us(floor) if floor is not None else report.MISSING)
            for key, _label in baselines:
                result = case.engines.get(key)
                row.append(f"{floor / result.timing.median_us:.2f}" if floor is not None and result else report.MISSING)
        rows.append(row)
    return report.markdown_table(header, rows)


def policy_summary(cases: Sequence[CaseResult]) -> Optional[bool]:
    """True if the default policy was within tolerance of 1 thread on every config that ran both."""
    verdicts = [ok for ok in (default_policy_ok(case) for case in cases) if ok is not None]
    return all(verdicts) if verdicts else None


@dataclasses.dataclass
class ThreadsRun:
    """Everything one `fastlstm bench threads` invocation produced, as its reports need it."""

    cases: Sequence[CaseResult]
    settings: SuiteSettings
    variants: Sequence[Variant]
    machine: Dict[str, Any]
    command: str
    date: str
    timer_floor_ns: float
    default_threads: int
    notes: Sequence[str]
    floors_us: Mapping[str, float] = dataclasses.field(default_factory=dict)  # N-thread batch-1 floors
    capacity: Optional[CoreCapacity] = None  # what the N CPUs delivered together, after each config


def render_markdown(run: ThreadsRun) -> str:
    cases, settings = run.cases, run.settings
    threads = settings.threads
    capacity = run.capacity.by_config if run.capacity is not None else None
    slower = [case.config.name for case in cases if default_policy_ok(case) is False]
    verdict = policy_summary(cases)
    verdict_text = {
        True: "PASS: on every config the default policy's median is within "
        f"{DEFAULT_POLICY_TOLERANCE:.0%} of 1 thread's",
        False: f"FAIL: more than {DEFAULT_POLICY_TOLERANCE:.0%} slower than 1 thread on {', '.join(slower)}",
        None: "not checked (fastlstm did not run)",
    }[verdict]
    lines = [
        f"# fastlstm thread scaling: 1 vs {threads} threads",
        "",
        *report.header_lines(run.machine, run.date, run.command),
        f"- timing: one process, all variants interleaved round-robin (rotating order), "
        f"{report.timing_budget_text(settings)}, per-call perf_counter_ns; harness floor {run.timer_floor_ns:.0f} ns/call",
        f"- {report.priming_text(settings.priming_seconds)}",
        f"- fastlstm nT: `model(x, num_threads=n)`; fastlstm default: `model(x)`, i.e. the library's own policy "
        f"(`fastlstm.get_num_threads()` = {run.default_threads}, the CPUs this process may run on; work too small "
        "to gain from a split stays on the calling thread)",
        f"- torch: `torch.set_num_threads({threads})`; ORT: `intra_op_num_threads={threads}`, inter-op 1, sequential",
    ]
    if run.capacity is not None:
        lines.append(f"- {threads} CPUs' capacity: {run.capacity.summary_text()}")
    for label, detail in report.engine_details(cases).items():
        lines.append(f"- {label}: {detail}")
    lines += [
        "",
        "## Median time per call (microseconds)",
        "",
        f"Speedup is fastlstm 1T time over {threads}T time. fastlstm/X is fastlstm {threads}T's median over X's at "
        f"{threads} threads: below 1 means fastlstm is faster. default/1T is the default policy's median over "
        "1 thread's. At batch 1, the floor is what no exact fp32 engine can beat on this machine: each of "
        f"{threads} cores reads its 1/{threads} share of every W_hh each step (at the measured rate of reading "
        f"that many cached bytes on one core) and does 1/{threads} of the input projection at the single-core "
        "sgemm peak; floor/X is the lowest fastlstm/X ratio reachable."
        + (
            f" The CPUs' capacity, measured right after each config, is what {threads} CPUs computing at once "
            f"delivered against one alone: below {threads}.00x, the threads did not have {threads} whole cores."
            if capacity
            else ""
        ),
        "",
        threads_table(cases, threads, run.variants, run.floors_us, capacity),
        "",
        "## Default thread policy check",
        "",
        f"Default policy never more than {DEFAULT_POLICY_TOLERANCE:.0%} slower than 1 thread: {verdict_text}.",
    ]
    lines += report.notes_section(run.notes)
    return "\n".join(lines) + "\n"


def case_json(case: CaseResult, threads: int, capacity: Optional[CoreCapacity] = None) -> Dict[str, Any]:
    nt = key_nt("fastlstm", threads)
    return {
        "config": case.config.to_dict(),
        "shape": case.config.describe(),
        "rounds": case.rounds,
        "warmup_rounds": case.warmup_rounds,
        "variants": {key: report.engine_result_json(case.config, result) for key, result in case.engines.items()},
        "fastlstm_speedup_nt_over_1t": speedup_nt_over_1t(case, threads),
        "fastlstm_nt_time_over_ort_nt": report.time_ratio(case, nt, key_nt("ort", threads)),
        "fastlstm_nt_time_over_torch_nt": report.time_ratio(case, nt, key_nt("torch", threads)),
        "fastlstm_default_time_over_1t": default_over_1t(case),
        "default_policy_ok": default_policy_ok(case),
        "cpu_capacity_after": capacity.by_config.get(case.config.name) if capacity is not None else None,
        "notes": case.notes,
    }


def render_json(run: ThreadsRun) -> str:
    cases, settings = run.cases, run.settings
    return report.to_json(
        {
            "command": run.command,
            "date": run.date,
            "machine": run.machine,
            "settings": {
                **report.settings_json(settings),
                "fastlstm_default_threads": run.default_threads,
                "default_policy_tolerance": DEFAULT_POLICY_TOLERANCE,
            },
            "timer_floor_ns": run.timer_floor_ns,
            "default_policy_ok": policy_summary(cases),
            "batch1_floor_us": dict(run.floors_us),
            "cpu_capacity_cpus": run.capacity.cpus if run.capacity is not None else None,
            "cases": [case_json(case, settings.threads, run.capacity) for case in cases],
            "notes": list(run.notes),
        }
    )


# ----------------------------------------------------------------------------------------- CLI
DESCRIPTION = __doc__.split("\n\n", 1)[1] + """
Writes threads.md and threads.json into --out-dir. Exit status 1 if any variant's output differs from
torch's; a failed default-policy check is reported (table, summary, stderr) but, being a timing
verdict on a noisy machine, does not change the exit status.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "threads",
        help="1 vs 2 threads for fastlstm, torch and ORT, and fastlstm's default thread policy",
        description=DESCRIPTION,
        epilog="standard configs:\n" + "\n".join(f"  {n:<18} {c.describe()}" for n, c in CONFIGS_BY_NAME.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--configs",
        default="all",
        metavar="NAMES",
        help="comma-separated standard configs, or 'all' (default: all)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"the multi-thread count compared with 1 thread (default: {DEFAULT_THREADS}; at least 2)",
    )
    add_engines_argument(parser, "; fastlstm is required")
    add_budget_arguments(parser)
    add_priming_argument(parser, DEFAULT_PRIMING_MS, ", long enough for the other engines' spinning threads to sleep")
    add_out_dir_argument(parser, f"{OUTPUT_STEM}.md and {OUTPUT_STEM}.json")
    add_seed_argument(parser)
    parser.set_defaults(handler=run, parser=parser)


def run(args: argparse.Namespace, command: str) -> int:
    parser: argparse.ArgumentParser = args.parser
    check_priming(args, parser)
    if args.threads < 2:
        parser.error("--threads must be at least 2 (it is compared with 1 thread)")
    if "fastlstm" not in args.engines:
        parser.error("--engines must include fastlstm")
    try:
        configs = select_configs(args.configs)
    except ValueError as error:
        parser.error(str(error))

    import fastlstm

    from fastlstm.bench import machine

    settings = suite_settings(args, args.engines, args.threads)
    notes: List[str] = []
    # The default policy is measured as the library ships it, whatever this process set before.
    default_threads = machine.available_cpus()
    previous_threads = fastlstm.get_num_threads()
    if previous_threads != default_threads:
        notes.append(
            f"fastlstm's thread count had been set to {previous_threads} in this process; the run used the "
            f"default ({default_threads}) and restored it afterwards"
        )
    variants = thread_variants(args.threads, default_threads, args.engines)
    progress(
        f"fastlstm bench threads: {len(configs)} config(s), variants {', '.join(v.label for v in variants)}, "
        f"{budget_text(args)} each, priming {args.prime_ms:g} ms per turn"
    )
    date = now_text()
    timer_floor_ns = measure_timer_floor_ns()
    fastlstm.set_num_threads(default_threads)
    sgemm_peak = machine.SgemmPeak()
    capacity = CoreCapacity(args.threads)
    sample_peak = case_progress_sampling(sgemm_peak)

    def after_case(index: int, total: int, case: CaseResult) -> None:
        sample_peak(index, total, case)
        if case.engines:
            capacity.sample(case.config.name)

    try:
        sources = [lambda config=config: random_weights(config, args.seed) for config in configs]
        cases = run_suite(sources, settings, make_input, progress=after_case, variants=variants)
    finally:
        fastlstm.set_num_threads(previous_threads)

    notes = report.merged_notes(notes, cases)
    progress("measuring cache read rates ...")
    floors_us, _ = machine.measure_batch1_floors(cases, sgemm_peak.best, args.threads)
    run = ThreadsRun(
        cases=cases,
        settings=settings,
        variants=variants,
        machine=machine.describe_machine(),
        command=command,
        date=date,
        timer_floor_ns=timer_floor_ns,
        default_threads=default_threads,
        notes=notes,
        floors_us=floors_us,
        capacity=capacity,
    )
    markdown = render_markdown(run)
    json_text = render_json(run)
    publish(args.out_dir, {f"{OUTPUT_STEM}.md": markdown, f"{OUTPUT_STEM}.json": json_text}, markdown)

    slower = [case.config.name for case in cases if default_policy_ok(case) is False]
    if slower:
        progress(
            f"!! fastlstm's default thread policy was more than {DEFAULT_POLICY_TOLERANCE:.0%} slower than "
            f"1 thread on: {', '.join(slower)}"
        )
    return mismatch_status(cases)
