"""Turns benchmark results into results.md (tables), results.json (raw numbers) and speedup.png.

The pieces every bench report shares (header lines, markdown tables, number formats, per-engine JSON,
writing files) are public here and reused by the `bench threads/concurrency/stream` reports.

Times are per call, median / p90 in microseconds. Ratios are fastlstm time over the other engine's
time (below 1 means fastlstm is faster); the chart shows the inverse, the speedup, since taller
bars reading as better is what people expect from a chart.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from fastlstm.bench import metrics
from fastlstm.bench.engines import ENGINE_LABELS
from fastlstm.bench.suite import CaseResult, EngineResult, SuiteSettings
from fastlstm.bench.timing import TimingSummary

MISSING = "-"
COMPARED_ENGINES = ("torch", "ort")  # what fastlstm is compared against
LOG_SCALE_SPREAD = 10.0  # chart speedups on a log axis once the largest is 10x the smallest


@dataclasses.dataclass
class BenchRun:
    """Everything one `fastlstm bench` invocation produced, as the report needs it."""

    cases: List[CaseResult]
    settings: SuiteSettings
    machine: Dict[str, Any]
    command: str
    date: str
    timer_floor_ns: float
    sgemm_peak_gflops: Optional[float] = None
    sgemm_peak_samples: int = 1  # the peak is the best of this many measurements, one after each config
    notes: List[str] = dataclasses.field(default_factory=list)
    # Batch-1 configs: microseconds per call no exact fp32 implementation can beat here (see
    # metrics.batch1_floor_microseconds), and the measured read time of one W_hh behind it.
    floors_us: Dict[str, float] = dataclasses.field(default_factory=dict)
    whh_read_us: Dict[str, float] = dataclasses.field(default_factory=dict)
    # fastlstm's smallest call (machine.measure_empty_call_us): no call beats its floor plus this.
    empty_call_us: Optional[float] = None


def time_ratio(case: CaseResult, engine: str, baseline: str) -> Optional[float]:
    """engine's median time / baseline's median time, or None if either did not run."""
    if engine not in case.engines or baseline not in case.engines:
        return None
    return case.engines[engine].timing.median_us / case.engines[baseline].timing.median_us


def format_us(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ratio(ratio: Optional[float]) -> str:
    if ratio is None:
        return MISSING
    if ratio <= 1:
        return f"{ratio:.2f} ({1 / ratio:.1f}x faster)"
    return f"{ratio:.2f} ({ratio:.1f}x slower)"


def format_bytes(count: int) -> str:
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def time_cell(case: CaseResult, engine: str, with_p90: bool = True) -> str:
    """'median / p90' (or just the median) of one engine or variant, flagged if its output was wrong."""
    result = case.engines.get(engine)
    if result is None:
        return MISSING
    cell = format_us(result.timing.median_us)
    if with_p90:
        cell += f" / {format_us(result.timing.p90_us)}"
    return cell + (" MISMATCH" if result.matches_reference is False else "")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(run: BenchRun) -> str:
    """The headline table: per-call time of each requested engine, and fastlstm's ratios."""
    engines = list(run.settings.engines)
    ratio_baselines = [name for name in COMPARED_ENGINES if name in engines and "fastlstm" in engines]
    header = ["config", "shape"] + [f"{ENGINE_LABELS[name]} us (median / p90)" for name in engines]
    header += [f"fastlstm/{ENGINE_LABELS[name]}" for name in ratio_baselines]
    rows = []
    for case in run.cases:
        row = [case.config.name, case.config.describe()] + [time_cell(case, name) for name in engines]
        row += [format_ratio(time_ratio(case, "fastlstm", name)) for name in ratio_baselines]
        rows.append(row)
    return markdown_table(header, rows)


def streaming_table(run: BenchRun) -> Optional[str]:
    """Batch-1 cases: time per step and the rate W_hh would have to stream at to explain it."""
    rows = []
    for case in run.cases:
        if case.config.batch != 1:
            continue
        step_bytes = metrics.recurrent_weight_bytes_per_step(case.config)
        for name, result in case.engines.items():
            seconds = result.timing.median_us / 1e6
            rows.append(
                [
                    case.config.name,
                    ENGINE_LABELS[name],
                    format_us(metrics.per_step_microseconds(case.config, result.timing.median_us)),
                    format_bytes(step_bytes),
                    f"{metrics.recurrent_weight_gbytes_per_second(case.config, seconds):.1f}",
                ]
            )
    if not rows:
        return None
    return markdown_table(["config", "engine", "per-step us", "W_hh bytes/step", "W_hh GB/s"], rows)


def floor_table(run: BenchRun) -> Optional[str]:
    """Batch-1 cases against the floor: how close each engine is, and the best ratio to ORT and torch
    that any exact implementation could reach on this machine."""
    rows = []
    for case in run.cases:
        floor = run.floors_us.get(case.config.name)
        if floor is None or not case.engines:
            continue
        row = [
            case.config.name,
            format_bytes(metrics.recurrent_matrix_bytes(case.config)),
            format_us(run.whh_read_us[case.config.name]),
            format_us(floor),
        ]
        for name in ("fastlstm", "torch", "ort"):
            result = case.engines.get(name)
            row.append(f"{result.timing.median_us / floor:.2f}" if result else MISSING)
        for name in COMPARED_ENGINES:
            result = case.engines.get(name)
            row.append(f"{floor / result.timing.median_us:.2f}" if result else MISSING)
        if run.empty_call_us is not None:
            ort = case.engines.get("ort")
            row.append(format_us(floor + run.empty_call_us))
            row.append(f"{(floor + run.empty_call_us) / ort.timing.median_us:.2f}" if ort else MISSING)
        rows.append(row)
    if not rows:
        return None
    header = ["config", "one W_hh", "read one W_hh (us)", "floor per call (us)", "fastlstm/floor", "torch/floor"]
    header += ["ORT/floor", "floor/torch (best fastlstm/torch)", "floor/ORT (best fastlstm/ORT)"]
    if run.empty_call_us is not None:
        header += ["floor + empty call (us)", "(floor + empty call)/ORT"]
    return markdown_table(header, rows)


def empty_call_text(run: BenchRun) -> str:
    if run.empty_call_us is None:
        return ""
    return (
        f" fastlstm's empty call (LSTM(1, 1), one step of batch 1, timed the same way) took "
        f"{format_us(run.empty_call_us)} us: Python, the argument checks and the output arrays. A fastlstm call "
        "pays that on top of its floor, so (floor + empty call)/ORT is the lowest fastlstm/ORT ratio it can "
        "reach with that overhead."
    )


def gemm_table(run: BenchRun) -> Optional[str]:
    """Batched cases: achieved GFLOP/s against this machine's single-core sgemm peak."""
    rows = []
    for case in run.cases:
        if case.config.batch == 1:
            continue
        flops = metrics.lstm_forward_flops(case.config)
        for name, result in case.engines.items():
            rate = metrics.gflops_per_second(case.config, result.timing.median_us / 1e6)
            peak = run.sgemm_peak_gflops
            share = f"{100 * rate / peak:.0f}%" if peak else MISSING
            rows.append([case.config.name, ENGINE_LABELS[name], f"{flops / 1e9:.3g}", f"{rate:.1f}", share])
    if not rows:
        return None
    return markdown_table(["config", "engine", "GFLOP/call", "GFLOP/s", "% of sgemm peak"], rows)


def machine_line(machine: Mapping[str, Any]) -> str:
    line = f"{machine['cpu']}, {machine['logical_cpus']} logical CPUs, CPU ISA {machine['isa']}"
    kernel_info = machine.get("fastlstm_cpu_info")
    if kernel_info:
        shown = {key: value for key, value in kernel_info.items() if key != "cpu"}  # cpu is already named
        line += ", fastlstm cpu_info: " + ", ".join(f"{key}={value}" for key, value in shown.items())
    return line


def merged_notes(run_notes: Sequence[str], cases: Sequence[CaseResult]) -> List[str]:
    """Run-wide notes followed by each case's, de-duplicated, in order."""
    notes: List[str] = list(run_notes)
    for case in cases:
        notes += case.notes
    return list(dict.fromkeys(notes))


def all_notes(run: BenchRun) -> List[str]:
    return merged_notes(run.notes, run.cases)


def engine_details(cases: Sequence[CaseResult]) -> Dict[str, str]:
    """What each engine (or variant) actually ran, by its table label, from the first case it ran in."""
    details: Dict[str, str] = {}
    for case in cases:
        for result in case.engines.values():
            details.setdefault(result.display_label, result.detail)
    return details


def header_lines(machine: Mapping[str, Any], date: str, command: str) -> List[str]:
    """The bullet lines every report starts with: where, when, how it was invoked, with what software."""
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    return [
        f"- machine: {machine_line(machine)}",
        f"- date: {date}",
        f"- command: `{command}`",
        f"- software: {versions}",
    ]


def notes_section(notes: Sequence[str]) -> List[str]:
    return ["", "## Notes", ""] + [f"- {note}" for note in notes] if notes else []


def timing_budget_text(settings: SuiteSettings) -> str:
    return f"{settings.rounds} rounds" if settings.rounds else f"~{settings.seconds:g} s per config"


def priming_text(priming_seconds: float) -> str:
    if priming_seconds == 0:
        return "no priming: each timed call directly follows the other engines' calls (caches disturbed)"
    return (
        f"each engine's turn: untimed priming calls (at least one, for {priming_seconds * 1e3:g} ms), then "
        "the timed call, so its weights are back in cache after the other engines ran"
    )


def render_markdown(run: BenchRun) -> str:
    settings = run.settings
    peak = "not measured"
    if run.sgemm_peak_gflops:
        samples = run.sgemm_peak_samples
        when = f"best of {samples} measurements, one after each config" if samples > 1 else "measured after the config"
        peak = f"{run.sgemm_peak_gflops:.1f} GFLOP/s ({when}; each the best of 7 calls)"
    lines = [
        "# fastlstm benchmark",
        "",
        *header_lines(run.machine, run.date, run.command),
        f"- threads per engine: {settings.threads}; timing: one process, engines interleaved round-robin "
        f"(rotating order), {timing_budget_text(settings)}, per-call perf_counter_ns; "
        f"harness floor {run.timer_floor_ns:.0f} ns/call",
        f"- {priming_text(settings.priming_seconds)}",
        f"- single-core sgemm peak (numpy 1024x1024 fp32, 1 BLAS thread): {peak}",
    ]
    for label, detail in engine_details(run.cases).items():
        lines.append(f"- {label}: {detail}")
    lines += [
        "",
        "## Time per call (microseconds, median / p90)",
        "",
        "fastlstm/X is fastlstm's median time over X's: below 1 means fastlstm is faster.",
        "",
        results_table(run),
    ]
    streaming = streaming_table(run)
    if streaming:
        lines += [
            "",
            "## Batch 1: time per step and W_hh streaming rate",
            "",
            "W_hh bytes over all layers and directions per time step, divided by (call time / T). The call "
            "also includes the input projection and call overhead, so this understates the recurrence's rate.",
            "",
            streaming,
        ]
    floors = floor_table(run)
    if floors:
        lines += [
            "",
            "## Batch 1: against the floor",
            "",
            "The floor of a call is T x layers x directions x the measured time to read one W_hh from cache "
            "(this core, fastlstm's widest loads, alternating direction as the fused step does, the faster of "
            "one stream and the fused step's four streams per weight block), plus the "
            "input projection's FLOPs at the sgemm peak (or one read of each W_ih, if that takes longer). Any exact fp32 implementation reads all of W_hh "
            "every step, so no engine can go below it without overlapping the two (the recurrent FLOPs, "
            "gate math and call overhead are not even counted). floor/X is the lowest fastlstm/X ratio "
            "reachable on this machine." + empty_call_text(run),
            "",
            floors,
        ]
    gemm = gemm_table(run)
    if gemm:
        lines += ["", "## Batched: achieved GFLOP/s", "", gemm]
    lines += notes_section(all_notes(run))
    return "\n".join(lines) + "\n"


def _finite_or_text(value: Optional[float]) -> Any:
    """JSON has no infinity; keep the information as text."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def timing_json(timing: TimingSummary) -> Dict[str, Any]:
    return dataclasses.asdict(timing)


def engine_result_json(config: Any, result: EngineResult) -> Dict[str, Any]:
    """One engine's (or variant's) numbers on one case: timing, accuracy, and derived rates."""
    seconds = result.timing.median_us / 1e6
    return {
        "label": result.display_label,
        "engine": result.engine,
        "detail": result.detail,
        **timing_json(result.timing),
        "max_abs_error": _finite_or_text(result.max_abs_error),
        "matches_reference": result.matches_reference,
        "per_step_us": metrics.per_step_microseconds(config, result.timing.median_us),
        "whh_gbytes_per_s": metrics.recurrent_weight_gbytes_per_second(config, seconds),
        "gflops_per_s": metrics.gflops_per_second(config, seconds),
    }


def case_json(case: CaseResult) -> Dict[str, Any]:
    config = case.config
    engines = {name: engine_result_json(config, result) for name, result in case.engines.items()}
    return {
        "config": config.to_dict(),
        "shape": config.describe(),
        "flops_per_call": metrics.lstm_forward_flops(config),
        "whh_bytes_per_step": metrics.recurrent_weight_bytes_per_step(config),
        "rounds": case.rounds,
        "warmup_rounds": case.warmup_rounds,
        "engines": engines,
        "fastlstm_time_over_torch": time_ratio(case, "fastlstm", "torch"),
        "fastlstm_time_over_ort": time_ratio(case, "fastlstm", "ort"),
        "notes": case.notes,
    }


def settings_json(settings: SuiteSettings) -> Dict[str, Any]:
    return {**dataclasses.asdict(settings), "engines": list(settings.engines)}


def render_json(run: BenchRun) -> str:
    document = {
        "command": run.command,
        "date": run.date,
        "machine": run.machine,
        "settings": settings_json(run.settings),
        "sgemm_peak_gflops": run.sgemm_peak_gflops,
        "sgemm_peak_samples": run.sgemm_peak_samples,
        "batch1_floor_us": run.floors_us,
        "whh_read_us": run.whh_read_us,
        "empty_call_us": run.empty_call_us,
        "timer_floor_ns": run.timer_floor_ns,
        "cases": [case_json(case) for case in run.cases],
        "notes": all_notes(run),
    }
    return to_json(document)


def _speedup_label(speedup: float) -> str:
    if not speedup:
        return ""
    return f"{speedup:.1f}x" if speedup >= 2 else f"{speedup:.2f}x"


def plot_speedups(run: BenchRun, path: Path) -> Optional[str]:
    """Grouped bars of fastlstm's speedup over torch and ORT per config; returns a note if skipped."""
    baselines = [name for name in COMPARED_ENGINES if any(time_ratio(c, "fastlstm", name) for c in run.cases)]
    if not baselines:
        return "speedup chart skipped: no case has fastlstm and another engine to compare"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return "speedup chart skipped: matplotlib is not installed"

    names = [case.config.name for case in run.cases]
    width = 0.8 / len(baselines)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.5))
    for offset, baseline in enumerate(baselines):
        speedups = []
        for case in run.cases:
            ratio = time_ratio(case, "fastlstm", baseline)
            speedups.append(1 / ratio if ratio else 0.0)
        positions = [i + (offset - (len(baselines) - 1) / 2) * width for i in range(len(names))]
        bars = axes.bar(positions, speedups, width, label=f"vs {ENGINE_LABELS[baseline]}")
        axes.bar_label(bars, labels=[_speedup_label(s) for s in speedups], fontsize=7, padding=2)
    drawn = [1 / r for case in run.cases for b in baselines if (r := time_ratio(case, "fastlstm", b))]
    if max(drawn) / min(drawn) > LOG_SCALE_SPREAD:
        axes.set_yscale("log")  # a 50x bar must not flatten the 0.8x ones into invisibility
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}x"))
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel("speedup (other engine time / fastlstm time)")
    axes.set_title(f"fastlstm speedup, {run.settings.threads} thread(s), {run.machine['cpu']}", fontsize=10)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return None


def write_documents(out_dir: Path, documents: Mapping[str, str]) -> List[Path]:
    """Write {file name: text} into out_dir (created if needed); return the paths in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in documents.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def to_json(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"


def write_outputs(run: BenchRun, out_dir: Path, chart: bool) -> List[Path]:
    """Write results.md, results.json and (unless disabled or impossible) speedup.png; return paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if chart:
        chart_path = out_dir / "speedup.png"
        skipped = plot_speedups(run, chart_path)
        if skipped:
            run.notes.append(skipped)
        else:
            written.append(chart_path)
    written += write_documents(out_dir, {"results.md": render_markdown(run), "results.json": render_json(run)})
    return written
