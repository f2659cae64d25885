"""Runs the benchmark cases: build engines on shared weights, check their outputs, time them interleaved.

Output check before timing: a fast wrong answer is worthless, so every engine's (out, h_n, c_n) is
compared with torch's once, and a mismatch is reported loudly and recorded next to the numbers.

A case times a list of variants: an engine plus how it is called (thread count, call path). The
standard comparison has one variant per engine; `bench threads` and `bench stream` time several of
the same engine side by side through the same check-then-interleave path.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from fastlstm.bench.configs import BenchConfig
from fastlstm.bench.engines import ENGINE_LABELS, Engine, Outputs, build_engine, fastlstm_model, unavailable_reason
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
    label: Optional[str] = None  # the variant's name in tables; None means the engine's label

    @property
    def matches_reference(self) -> Optional[bool]:
        return None if self.max_abs_error is None else self.max_abs_error <= MATCH_TOLERANCE

    @property
    def display_label(self) -> str:
        return self.label or ENGINE_LABELS.get(self.engine, self.engine)


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


@dataclasses.dataclass(frozen=True)
class Variant:
    """One timed column of a case: an engine, and how it is built and called.

    key names it in results (the engine's own name in the standard comparison); engine says whose
    availability decides whether it can run; build makes the adapter from the case's weights and input.
    """

    key: str
    label: str
    engine: str
    build: Callable[[WeightSource, np.ndarray], Engine]


def engine_variant(
    engine: str, threads: Optional[int], key: Optional[str] = None, label: Optional[str] = None
) -> Variant:
    """A variant running the standard adapter of `engine` at `threads` (None: fastlstm's default policy)."""
    return Variant(
        key=key or engine,
        label=label or ENGINE_LABELS[engine],
        engine=engine,
        build=lambda source, x: build_engine(engine, source, x, threads),
    )


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
    variants = [engine_variant(name, settings.threads) for name in settings.engines]
    return run_variants(source, x, variants, settings)


def share_fastlstm_model(source: WeightSource, variants: Sequence[Variant]) -> WeightSource:
    """With several fastlstm variants, pack the weights once and let all of them call that one model
    (same weights, and a case's memory does not grow with its variant count)."""
    if sum(variant.engine == "fastlstm" for variant in variants) < 2 or source.fastlstm_model is not None:
        return source
    if unavailable_reason("fastlstm", source) is not None:
        return source
    return dataclasses.replace(source, fastlstm_model=fastlstm_model(source))


def run_variants(
    source: WeightSource,
    x: np.ndarray,
    variants: Sequence[Variant],
    settings: SuiteSettings,
    reference: Optional[Outputs] = None,
) -> CaseResult:
    """Build and check each variant, then time those that built, interleaved; the rest are noted.

    reference: the outputs every variant's `outputs()` must match; default: torch's forward on x from
    zero states. settings supplies the timing budget (rounds / seconds / priming).
    """
    config = source.config
    notes = list(source.notes)
    if reference is None:
        reference = torch_reference(source, x)
    if reference is None:
        notes.append("outputs not checked: torch (the reference) is not installed")
    source = share_fastlstm_model(source, variants)

    built: List[Variant] = []
    engines: List[Engine] = []
    errors: Dict[str, float] = {}
    for variant in variants:
        reason = unavailable_reason(variant.engine, source)
        if reason is not None:
            notes.append(f"{ENGINE_LABELS[variant.engine]} skipped: {reason}")
            continue
        try:
            engine = variant.build(source, x)
            outputs = engine.outputs()  # also the first (untimed) call
        except Exception as error:  # noqa: BLE001 - one broken engine must not stop the suite
            message = f"{variant.label} failed on {config.name}: {type(error).__name__}: {error}"
            warn(message)
            notes.append(message)
            continue
        if reference is not None:
            errors[variant.key] = max_abs_difference(outputs, reference)
            if errors[variant.key] > MATCH_TOLERANCE:
                message = (
                    f"MISMATCH: {variant.label} differs from torch on {config.name}: "
                    f"max abs error {errors[variant.key]:.3g} > {MATCH_TOLERANCE:g}"
                )
                warn(message)
                notes.append(message)
        built.append(variant)
        engines.append(engine)

    if not engines:
        return CaseResult(config=config, engines={}, rounds=0, warmup_rounds=0, notes=list(dict.fromkeys(notes)))
    timing = time_interleaved(
        {variant.key: engine.run for variant, engine in zip(built, engines)},
        rounds=settings.rounds,
        seconds=settings.seconds,
        priming_seconds=settings.priming_seconds,
    )
    results = {
        variant.key: EngineResult(
            engine=variant.engine,
            detail=engine.detail,
            timing=timing.summaries[variant.key],
            max_abs_error=errors.get(variant.key),
            label=variant.label,
        )
        for variant, engine in zip(built, engines)
    }
    return CaseResult(
        config=config,
        engines=results,
        rounds=timing.rounds,
        warmup_rounds=timing.warmup_rounds,
        notes=list(dict.fromkeys(notes)),
    )


def run_suite(
    sources: Sequence[Callable[[], WeightSource]],
    settings: SuiteSettings,
    make_input: Callable[[BenchConfig, int], np.ndarray],
    progress: Callable[[int, int, CaseResult], None] = lambda index, total, result: None,
    variants: Optional[Sequence[Variant]] = None,
) -> List[CaseResult]:
    """Run the cases one after another; each case's engines are freed before the next is built.

    Sources are callables so a case's weights exist only while it runs (the large cases hold
    tens of MB per engine). variants: what to time on every case (default: settings.engines at
    settings.threads, one variant each).
    """
    results = []
    for index, make_source in enumerate(sources, start=1):
        source = make_source()
        x = make_input(source.config, settings.seed)
        if variants is None:
            result = run_case(source, x, settings)
        else:
            result = run_variants(source, x, variants, settings)
        results.append(result)
        progress(index, len(sources), result)
    return results
