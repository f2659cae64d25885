"""Runs the benchmark cases: build engines on shared weights, check their outputs, time them interleaved.

Output check before timing: a fast wrong answer is worthless, so every engine's (out, h_n, c_n) is
compared with torch's once, and a mismatch is reported loudly and recorded next to the numbers.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from fastlstm.bench.configs import BenchConfig
from fastlstm.bench.engines import ENGINE_LABELS, Engine, Outputs, build_engine, unavailable_reason
from fastlstm.bench.timing import (
    DEFAULT_PRIMING_SECONDS,
    DEFAULT_SECONDS_PER_CONFIG,
    TimingSummary,
    time_interleaved,
)
from fastlstm.bench.weights import WeightSource

MATCH_TOLERANCE = 1e-4
OUTPUT_NAMES = ("out", "h_n", "c_n")


@dataclasses.dataclass
class EngineResult:
    """One engine on one case: its timing, what ran, and how far it was from torch."""

    engine: str
    detail: str
    timing: TimingSummary
    max_abs_error: Optional[float]  # None when there was no torch reference to compare with

    @property
    def matches_reference(self) -> Optional[bool]:
        return None if self.max_abs_error is None else self.max_abs_error <= MATCH_TOLERANCE


@dataclasses.dataclass
class CaseResult:
    """Every engine's result on one benchmark case, plus what could not be run and why."""

    config: BenchConfig
    engines: Dict[str, EngineResult]
    rounds: int
    warmup_rounds: int
    notes: List[str]

    @property
    def mismatched_engines(self) -> List[str]:
        return [name for name, result in self.engines.items() if result.matches_reference is False]


@dataclasses.dataclass(frozen=True)
class SuiteSettings:
    """How to run: which engines, how many threads each, and how long to time each case."""

    engines: Sequence[str]
    threads: int = 1
    rounds: Optional[int] = None  # exact timed rounds; None means fill `seconds`
    seconds: float = DEFAULT_SECONDS_PER_CONFIG
    priming_seconds: float = DEFAULT_PRIMING_SECONDS  # untimed calls before each timed one (warm cache)
    seed: int = 0


def max_abs_difference(actual: Outputs, expected: Outputs) -> float:
    """Largest absolute difference over out, h_n and c_n; inf if any shape differs."""
    worst = 0.0
    for got, want in zip(actual, expected):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            return float("inf")
        if got.size:
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))))
    return worst


def warn(message: str) -> None:
    print(f"!! {message}", file=sys.stderr, flush=True)


def torch_reference(source: WeightSource, x: np.ndarray) -> Optional[Outputs]:
    """torch's (out, h_n, c_n) on x: the oracle every engine is checked against."""
    if source.torch_lstm is None:
        return None
    import torch

    with torch.inference_mode():
        out, (h_n, c_n) = source.torch_lstm(torch.from_numpy(x))
    return out.numpy().copy(), h_n.numpy().copy(), c_n.numpy().copy()


def run_case(source: WeightSource, x: np.ndarray, settings: SuiteSettings) -> CaseResult:
    """Build, check and time every requested engine on one case; engines that cannot run are noted."""
    config = source.config
    notes = list(source.notes)
    reference = torch_reference(source, x)
    if reference is None:
        notes.append("outputs not checked: torch (the reference) is not installed")

    engines: List[Engine] = []
    errors: Dict[str, float] = {}
    for name in settings.engines:
        reason = unavailable_reason(name, source)
        if reason is not None:
            notes.append(f"{ENGINE_LABELS[name]} skipped: {reason}")
            continue
        try:
            engine = build_engine(name, source, x, settings.threads)
            outputs = engine.outputs()  # also the first (untimed) call
        except Exception as error:  # noqa: BLE001 - one broken engine must not stop the suite
            message = f"{ENGINE_LABELS[name]} failed on {config.name}: {type(error).__name__}: {error}"
            warn(message)
            notes.append(message)
            continue
        if reference is not None:
            errors[name] = max_abs_difference(outputs, reference)
            if errors[name] > MATCH_TOLERANCE:
                message = (
                    f"MISMATCH: {ENGINE_LABELS[name]} differs from torch on {config.name}: "
                    f"max abs error {errors[name]:.3g} > {MATCH_TOLERANCE:g}"
                )
                warn(message)
                notes.append(message)
        engines.append(engine)

    if not engines:
        return CaseResult(config=config, engines={}, rounds=0, warmup_rounds=0, notes=notes)
    timing = time_interleaved(
        {engine.name: engine.run for engine in engines},
        rounds=settings.rounds,
        seconds=settings.seconds,
        priming_seconds=settings.priming_seconds,
    )
    results = {
        engine.name: EngineResult(
            engine=engine.name,
            detail=engine.detail,
            timing=timing.summaries[engine.name],
            max_abs_error=errors.get(engine.name),
        )
        for engine in engines
    }
    return CaseResult(
        config=config, engines=results, rounds=timing.rounds, warmup_rounds=timing.warmup_rounds, notes=notes
    )


def run_suite(
    sources: Sequence[Callable[[], WeightSource]],
    settings: SuiteSettings,
    make_input: Callable[[BenchConfig, int], np.ndarray],
    progress: Callable[[int, int, CaseResult], None] = lambda index, total, result: None,
) -> List[CaseResult]:
    """Run the cases one after another; each case's engines are freed before the next is built.

    Sources are callables so a case's weights exist only while it runs (the large cases hold
    tens of MB per engine).
    """
    results = []
    for index, make_source in enumerate(sources, start=1):
        source = make_source()
        x = make_input(source.config, settings.seed)
        result = run_case(source, x, settings)
        results.append(result)
        progress(index, len(sources), result)
    return results
