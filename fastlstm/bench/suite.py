"""Runs cases: build every variant on the case's weights, check its outputs against torch, time them interleaved.

The check comes first because a fast wrong answer is worthless; a mismatch is reported loudly and
recorded beside the numbers. A variant is an engine plus how it is called: `fastlstm bench` times one
per engine, the lab's thread and streaming benchmarks several of one engine through the same path.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from fastlstm.bench.configs import BenchConfig
from fastlstm.bench.engines import ENGINE_LABELS, Engine, Outputs, build_engine, fastlstm_model, unavailable_reason
from fastlstm.bench.timing import DEFAULT_PRIMING_SECONDS, DEFAULT_SECONDS_PER_CONFIG, TimingSummary, time_interleaved
from fastlstm.bench.weights import WeightSource, make_input

MATCH_TOLERANCE = 1e-4


@dataclasses.dataclass
class EngineResult:
    """One variant on one case: its timing, what ran, and how far it was from torch (None: unchecked)."""

    engine: str
    label: str
    detail: str
    timing: TimingSummary
    max_abs_error: Optional[float]
    tolerance: Optional[float] = MATCH_TOLERANCE  # None: reduced precision, its error reported but never a mismatch

    @property
    def matches_reference(self) -> Optional[bool]:
        if self.max_abs_error is None or self.tolerance is None:
            return None
        return self.max_abs_error <= self.tolerance


@dataclasses.dataclass
class CaseResult:
    """Every variant's result on one case, by key, plus notes on what could not run and why."""

    config: BenchConfig
    engines: Dict[str, EngineResult]
    rounds: int
    warmup_rounds: int
    notes: List[str]

    @property
    def mismatched(self) -> List[str]:
        return [result.label for result in self.engines.values() if result.matches_reference is False]


@dataclasses.dataclass(frozen=True)
class SuiteSettings:
    """Which engines, how many threads each, and how long to time each case (rounds=None: fill seconds)."""

    engines: Sequence[str]
    threads: int = 1
    rounds: Optional[int] = None
    seconds: float = DEFAULT_SECONDS_PER_CONFIG
    priming_seconds: float = DEFAULT_PRIMING_SECONDS
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Variant:
    """One timed column: `key` names it in results, `engine` decides whether it can run here, and `build`
    makes its adapter from the case's weights and input."""

    key: str
    label: str
    engine: str
    build: Callable[[WeightSource, np.ndarray], Engine]
    tolerance: Optional[float] = MATCH_TOLERANCE  # against torch's float32 outputs; None: not held to any


def engine_variant(engine: str, threads: Optional[int], key: str = "", label: str = "") -> Variant:
    """The standard adapter of `engine` at `threads` (None: fastlstm's default policy)."""
    return Variant(key or engine, label or ENGINE_LABELS[engine], engine, lambda s, x: build_engine(engine, s, x, threads))


def max_abs_difference(actual: Outputs, expected: Outputs) -> float:
    """Largest absolute difference over out, h_n and c_n; inf if any shape differs."""
    pairs = [(np.asarray(got, np.float64), np.asarray(want, np.float64)) for got, want in zip(actual, expected)]
    if any(got.shape != want.shape for got, want in pairs):
        return float("inf")
    return max(float(np.max(np.abs(got - want), initial=0.0)) for got, want in pairs)


def warn(message: str) -> None:
    print(f"!! {message}", file=sys.stderr, flush=True)


def torch_reference(source: WeightSource, x: np.ndarray) -> Optional[Outputs]:
    """torch's (out, h_n, c_n) on x from zero states, or None without torch."""
    if source.torch_lstm is None:
        return None
    import torch

    with torch.inference_mode():
        out, (h_n, c_n) = source.torch_lstm(torch.from_numpy(x))
    return out.numpy().copy(), h_n.numpy().copy(), c_n.numpy().copy()


def run_variants(source: WeightSource, x: np.ndarray, variants: Sequence[Variant], settings: SuiteSettings,
                 reference: Optional[Outputs] = None) -> CaseResult:
    """Build each variant and check it against `reference` (default: torch's forward on x), then time
    those that built, interleaved; the others are noted."""
    notes = list(source.notes)
    reference = reference if reference is not None else torch_reference(source, x)
    if reference is None:
        notes.append("outputs not checked: torch (the reference) is not installed")
    if sum(v.engine == "fastlstm" for v in variants) > 1 and source.fastlstm_model is None:
        # fastlstm variants share one packed model: the same weights, and memory independent of their count.
        source = dataclasses.replace(source, fastlstm_model=fastlstm_model(source))
    built: Dict[str, Engine] = {}
    errors: Dict[str, float] = {}
    for variant in variants:
        reason = unavailable_reason(variant.engine, source)
        if reason is not None:
            notes.append(f"{ENGINE_LABELS[variant.engine]} skipped: {reason}")
            continue
        try:
            engine = variant.build(source, x)
            outputs = engine.outputs()  # also the first, untimed call
        except Exception as error:  # noqa: BLE001 - one broken engine must not stop the suite
            notes.append(f"{variant.label} failed on {source.config.name}: {type(error).__name__}: {error}")
            warn(notes[-1])
            continue
        built[variant.key] = engine
        if reference is not None:
            errors[variant.key] = max_abs_difference(outputs, reference)
            if variant.tolerance is not None and errors[variant.key] > variant.tolerance:
                notes.append(f"MISMATCH: {variant.label} differs from torch on {source.config.name}: max abs error "
                             f"{errors[variant.key]:.3g} > {variant.tolerance:g}")
                warn(notes[-1])
    notes = list(dict.fromkeys(notes))
    if not built:
        return CaseResult(source.config, {}, 0, 0, notes)
    timing = time_interleaved({key: engine.run for key, engine in built.items()}, rounds=settings.rounds,
                              seconds=settings.seconds, priming_seconds=settings.priming_seconds)
    by_key = {variant.key: variant for variant in variants}
    results = {
        key: EngineResult(by_key[key].engine, by_key[key].label, engine.detail, timing.summaries[key], errors.get(key),
                          by_key[key].tolerance)
        for key, engine in built.items()
    }
    return CaseResult(source.config, results, timing.rounds, timing.warmup_rounds, notes)


def run_suite(sources: Sequence[Callable[[], WeightSource]], settings: SuiteSettings,
              after_case: Callable[[int, int, CaseResult], None] = lambda index, total, case: None,
              variants: Optional[Sequence[Variant]] = None) -> List[CaseResult]:
    """Run the cases in turn, calling after_case(index, total, result) after each.

    Sources are callables so that only one case's weights (tens of MB for the large ones) are alive at a
    time. variants: what each case times (default: each of settings.engines at settings.threads).
    """
    variants = variants or [engine_variant(name, settings.threads) for name in settings.engines]
    results = []
    for index, make_source in enumerate(sources, start=1):
        source = make_source()
        results.append(run_variants(source, make_input(source.config, settings.seed), variants, settings))
        after_case(index, len(sources), results[-1])
    return results
