"""Interleaved timing: every engine gets one timed call per round, in a rotating order.

Why interleave: shared machines drift (frequency, neighbours, caches). Alternating single calls exposes
all engines to the same weather, and rotating the order cancels any advantage of going first.
Why prime: each engine's call evicts the others' weights from cache, and a single streaming step would
then mostly time fetching weights from memory. So each turn first makes untimed calls (at least one, for
`priming_seconds`), then the timed one, as in a service that runs its model back to back.
priming_seconds=0 is strict one-call round-robin, which measures caches disturbed by other work.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

DEFAULT_SECONDS_PER_CONFIG = 3.0
DEFAULT_PRIMING_SECONDS = 0.002
# The batched configs' calls take 0.1-0.3 s: filling the budget would give them a handful of samples,
# and a median of five hangs on single calls.
MIN_ROUNDS = 15
MAX_ROUNDS = 1_000_000
WARMUP_SHARE_OF_BUDGET, MAX_WARMUP_SECONDS = 0.1, 1.0  # at least one warmup round, then up to this much


@dataclasses.dataclass(frozen=True)
class TimingSummary:
    """Statistics of one engine's per-call times, in microseconds."""

    median_us: float
    p90_us: float
    min_us: float
    mean_us: float
    calls: int

    @classmethod
    def from_samples_ns(cls, samples_ns: Sequence[int]) -> "TimingSummary":
        us = np.asarray(samples_ns, dtype=np.float64) / 1e3
        return cls(float(np.median(us)), float(np.percentile(us, 90)), float(us.min()), float(us.mean()), int(us.size))


@dataclasses.dataclass(frozen=True)
class InterleavedTiming:
    summaries: Dict[str, TimingSummary]
    warmup_rounds: int
    rounds: int


def _run_rounds(functions: Sequence[Callable[[], object]], rounds: int, first_round: int,
                samples: Optional[List[List[int]]], priming_seconds: float = 0.0) -> None:
    """Each round, every function in rotating order: priming calls, then one call timed into samples."""
    clock, priming_ns, count = time.perf_counter_ns, int(priming_seconds * 1e9), len(functions)
    for round_index in range(first_round, first_round + rounds):
        for index in ((round_index + offset) % count for offset in range(count)):
            function = functions[index]
            if priming_ns > 0:
                deadline = clock() + priming_ns
                function()
                while clock() < deadline:
                    function()
            start = clock()
            function()
            elapsed = clock() - start
            if samples is not None:
                samples[index].append(elapsed)


def choose_round_count(seconds: float, seconds_per_round: float) -> int:
    """Enough rounds to fill the budget, never fewer than MIN_ROUNDS (a median needs samples)."""
    if seconds_per_round <= 0:
        return MAX_ROUNDS
    return max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(seconds / seconds_per_round)))


def time_interleaved(runs: Mapping[str, Callable[[], object]], *, rounds: Optional[int] = None,
                     seconds: float = DEFAULT_SECONDS_PER_CONFIG,
                     priming_seconds: float = DEFAULT_PRIMING_SECONDS) -> InterleavedTiming:
    """Time each zero-argument callable per call, interleaved round-robin: `rounds` timed rounds, or as
    many as fill about `seconds` (estimated from the warmup). The garbage collector is paused while
    timing, so that a collection cannot land inside one engine's call."""
    if not runs or (rounds is not None and rounds <= 0):
        raise ValueError(f"need something to time and a positive round count, got {len(runs)} and {rounds}")
    functions = list(runs.values())
    warmup_budget = min(MAX_WARMUP_SECONDS, WARMUP_SHARE_OF_BUDGET * seconds)
    warmup_rounds, round_seconds, warmup_start = 0, 0.0, time.perf_counter()
    while warmup_rounds == 0 or time.perf_counter() - warmup_start < warmup_budget:
        round_start = time.perf_counter()
        _run_rounds(functions, 1, warmup_rounds, None, priming_seconds)
        round_seconds = time.perf_counter() - round_start
        warmup_rounds += 1
    timed_rounds = rounds if rounds is not None else choose_round_count(seconds, round_seconds)
    samples: List[List[int]] = [[] for _ in functions]
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        _run_rounds(functions, timed_rounds, warmup_rounds, samples, priming_seconds)
    finally:
        if gc_was_enabled:
            gc.enable()
    summaries = {name: TimingSummary.from_samples_ns(times) for name, times in zip(runs, samples)}
    return InterleavedTiming(summaries, warmup_rounds, timed_rounds)


def measure_call_ns(call: Callable[[], object], calls: int = 20_000) -> float:
    """Median nanoseconds of one call, timed as the suite times calls; on an empty call, the harness's floor."""
    samples: List[List[int]] = [[]]
    _run_rounds([call], calls, 0, samples)
    return float(np.median(samples[0]))
