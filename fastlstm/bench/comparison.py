"""What `fastlstm bench` reports: each engine's time per call on each case and fastlstm's time ratios,
as a table (results.md), numbers (results.json) and a chart of fastlstm's speedups (speedup.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from fastlstm.bench import report
from fastlstm.bench.engines import ENGINE_LABELS
from fastlstm.bench.suite import CaseResult, SuiteSettings

COMPARED_ENGINES = ("torch", "ort", "openvino-fp32")  # what fastlstm is held against, where they ran
LOG_SCALE_SPREAD = 10.0  # the chart's axis turns logarithmic once the largest speedup is 10x the smallest


def results_table(cases: Sequence[CaseResult], engines: Sequence[str]) -> str:
    """A column per engine that ran (those that could not are in the notes), then fastlstm's ratios."""
    engines = [name for name in engines if any(name in case.engines for case in cases)]
    baselines = [name for name in COMPARED_ENGINES if name in engines and "fastlstm" in engines]
    header = ["config", "shape"] + [f"{ENGINE_LABELS[name]} us (median / p90)" for name in engines]
    rows = [[case.config.name, case.config.describe()] + [report.time_cell(case, name) for name in engines]
            + [report.format_ratio(report.time_ratio(case, "fastlstm", name)) for name in baselines] for case in cases]
    return report.markdown_table(header + [f"fastlstm/{ENGINE_LABELS[name]}" for name in baselines], rows)


def comparison_report(cases: List[CaseResult], settings: SuiteSettings, run: Dict[str, Any],
                      extra_header: Sequence[str] = ()) -> report.Report:
    """The report of a comparison (run: cli.run_info's); the lab adds header lines, sections and data to it."""
    header = report.header_lines(run["machine"], run["date"], run["command"])
    header += report.timing_lines(settings, run["timer_floor_ns"]) + list(extra_header) + report.engine_lines(cases)
    table = results_table(cases, settings.engines)
    ratios = [{f"fastlstm_time_over_{name}": report.time_ratio(case, "fastlstm", name) for name in COMPARED_ENGINES}
              for case in cases]
    return report.Report(
        "fastlstm benchmark", header,
        [("Time per call (microseconds, median / p90)",
          f"fastlstm/X is fastlstm's median time over X's: below 1 means fastlstm is faster.\n\n{table}")],
        report.merged_notes(cases),
        {**run, "settings": report.settings_json(settings),
         "cases": [{**report.case_json(case), **ratio} for case, ratio in zip(cases, ratios)]},
    )


def plot_speedups(cases: Sequence[CaseResult], title: str, path: Path) -> Optional[str]:
    """Grouped bars of fastlstm's speedup (the other engine's time over fastlstm's: taller is better, as
    people read charts) per config; returns why the chart was skipped, or None."""
    speedups = {name: [1 / r if (r := report.time_ratio(case, "fastlstm", name)) else 0.0 for case in cases]
                for name in COMPARED_ENGINES}
    speedups = {name: values for name, values in speedups.items() if any(values)}
    if not speedups:
        return "speedup chart skipped: no case has fastlstm and another engine to compare"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return "speedup chart skipped: matplotlib is not installed"
    names = [case.config.name for case in cases]
    width = 0.8 / len(speedups)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.5))
    for offset, (baseline, values) in enumerate(speedups.items()):
        positions = [i + (offset - (len(speedups) - 1) / 2) * width for i in range(len(names))]
        bars = axes.bar(positions, values, width, label=f"vs {ENGINE_LABELS[baseline]}")
        axes.bar_label(bars, labels=[(f"{s:.1f}x" if s >= 2 else f"{s:.2f}x") if s else "" for s in values], fontsize=7)
    drawn = [s for values in speedups.values() for s in values if s]
    if max(drawn) / min(drawn) > LOG_SCALE_SPREAD:
        axes.set_yscale("log")  # a 50x bar must not flatten the 0.8x ones into invisibility
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}x"))
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel("speedup (other engine time / fastlstm time)")
    axes.set_title(title, fontsize=10)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return None
