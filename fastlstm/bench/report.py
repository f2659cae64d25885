"""The one writer of benchmark reports, NAME.md for people and NAME.json for programs, from one `Report`;
and the formats and header lines every report shares (`fastlstm bench`'s and the lab's).

Times are per call, in microseconds. A ratio X/Y is X's median time over Y's: below 1, X is faster.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from fastlstm.bench.suite import CaseResult, EngineResult, SuiteSettings

MISSING = "-"


@dataclasses.dataclass
class Report:
    """A title, header bullets, (heading, markdown) sections, notes, and the JSON document's data."""

    title: str
    header: List[str]
    sections: List[Tuple[str, str]]
    notes: List[str]
    data: Dict[str, Any]


def render_markdown(report: Report) -> str:
    lines = [f"# {report.title}", ""] + [f"- {line}" for line in report.header]
    for heading, body in report.sections:
        lines += ["", f"## {heading}", "", body]
    lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes] if report.notes else []
    return "\n".join(lines) + "\n"


def write_report(report: Report, out_dir: Path, name: str) -> List[Path]:
    """Write NAME.md and NAME.json into out_dir (created if needed); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, document = out_dir / f"{name}.md", out_dir / f"{name}.json"
    markdown.write_text(render_markdown(report), encoding="utf-8")
    document.write_text(json.dumps({**report.data, "notes": report.notes}, indent=2, default=str) + "\n", encoding="utf-8")
    return [markdown, document]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def format_us(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def format_ratio(ratio: Optional[float]) -> str:
    if ratio is None:
        return MISSING
    return f"{ratio:.2f} ({1 / ratio:.1f}x faster)" if ratio <= 1 else f"{ratio:.2f} ({ratio:.1f}x slower)"


def time_ratio(case: CaseResult, key: str, baseline: str) -> Optional[float]:
    """Variant key's median time over baseline's, or None if either did not run."""
    if key not in case.engines or baseline not in case.engines:
        return None
    return case.engines[key].timing.median_us / case.engines[baseline].timing.median_us


def time_cell(case: CaseResult, key: str, with_p90: bool = True) -> str:
    """'median / p90' (or the median alone) of one variant, flagged if its output was wrong."""
    result = case.engines.get(key)
    if result is None:
        return MISSING
    cell = format_us(result.timing.median_us) + (f" / {format_us(result.timing.p90_us)}" if with_p90 else "")
    return cell + (" MISMATCH" if result.matches_reference is False else "")


def header_lines(machine: Mapping[str, Any], date: str, command: str) -> List[str]:
    """Where (CPU model, its widest ISA, fastlstm's kernels), when, how it was invoked, with what software."""
    cpu = f"{machine['cpu']}, {machine['logical_cpus']} logical CPUs, ISA {machine['isa']}"
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    return [f"machine: {cpu}, fastlstm kernels {machine['fastlstm_isa']}", f"date: {date}", f"command: `{command}`",
            f"software: {versions}"]


def timing_lines(settings: SuiteSettings, timer_floor_ns: float, what: str = "engines") -> List[str]:
    """How the numbers were taken: threads, interleaving, budget, priming."""
    budget = f"{settings.rounds} rounds" if settings.rounds else f"~{settings.seconds:g} s per config"
    priming = (f"each turn: untimed priming calls (at least one, for {settings.priming_seconds * 1e3:g} ms), then the "
               "timed call, so its weights are back in cache after the others ran") if settings.priming_seconds else (
               "no priming: each timed call directly follows the other calls (caches disturbed)")
    return [f"threads per engine: {settings.threads}; timing: one process, {what} interleaved round-robin (rotating "
            f"order), {budget}, per-call perf_counter_ns; harness floor {timer_floor_ns:.0f} ns/call", priming]


def engine_lines(cases: Sequence[CaseResult]) -> List[str]:
    """'label: what ran' per variant, from the first case it ran in."""
    details: Dict[str, str] = {}
    for result in (result for case in cases for result in case.engines.values()):
        details.setdefault(result.label, result.detail)
    return [f"{label}: {detail}" for label, detail in details.items()]


def merged_notes(cases: Sequence[CaseResult], first: Sequence[str] = ()) -> List[str]:
    """`first`, then each case's notes, de-duplicated, in order."""
    return list(dict.fromkeys([*first, *(note for case in cases for note in case.notes)]))


def settings_json(settings: SuiteSettings) -> Dict[str, Any]:
    return {**dataclasses.asdict(settings), "engines": list(settings.engines)}


def engine_result_json(result: EngineResult) -> Dict[str, Any]:
    error = result.max_abs_error
    return {"label": result.label, "engine": result.engine, "detail": result.detail, **dataclasses.asdict(result.timing),
            "max_abs_error": error if error is None or math.isfinite(error) else str(error),  # JSON has no inf
            "matches_reference": result.matches_reference}


def case_json(case: CaseResult) -> Dict[str, Any]:
    return {"config": case.config.to_dict(), "shape": case.config.describe(), "rounds": case.rounds,
            "warmup_rounds": case.warmup_rounds,
            "engines": {key: engine_result_json(result) for key, result in case.engines.items()}, "notes": case.notes}
