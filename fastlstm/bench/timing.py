"""Interleaved timing: every engine gets one timed call per round, in a rotating order.

Why interleave: these machines drift (identical runs differ by up to 1.7x as frequency, neighbours
and caches change). Timing engine A for ten seconds and then engine B exposes them to different
weather; alternating single calls exposes both to the same weather, and rotating the order cancels
any advantage of going first (turbo budget, allocator state).

Priming: interleaving has a cost. Each engine's call evicts the others' weights from cache, and a
single streaming step (T=1) is then mostly the time to fetch weights from DRAM. Measured here, fastlstm's
stream-step-h512 took 89 us timed alone but 470-590 us between torch and ORT calls; priming each turn
with untimed calls for 0.3 / 1 / 3 ms gave 217 / 95 / 89 us. So by default each engine's turn first
makes untimed priming calls (at least one, for DEFAULT_PRIMING_SECONDS) and then the timed call: the
same weather for all engines, each with its own weights in cache, as in a service that runs its model
back to back. Long calls get one priming call, short ones many. `priming_seconds=0` gives strict
one-call round-robin, which measures caches disturbed by other work.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

DEFAULT_SECONDS_PER_CONFIG = 3.0
# The batched configs' calls take 0.1-0.3 s, so the 3 s budget gave them the minimum; at 5, their
# medians hung on single calls (batch128's fastlstm/torch read 0.81-0.93 over four runs on one shared
# host). 15 costs the default suite about 30 s more.
MIN_ROUNDS = 15
MAX_ROUNDS = 1_000_000
# Warmup: at least one round (first-call allocations, lazy initialisation), then more until this
# share of the budget has passed, which also gives a stable estimate of one round's cost.
WARMUP_SHARE_OF_BUDGET = 0.1
MAX_WARMUP_SECONDS = 1.0
DEFAULT_PRIMING_SECONDS = 0.002


@dataclasses.dataclass(frozen=True)
class TimingSummary:
    """Statistics of one engine's per-call times (microseconds)."""

    median_us: float
    p90_us: float
    min_us: float
    mean_us: float
    calls: int

    @classmethod
    def from_samples_ns(cls, samples_ns: Sequence[int]) -> "TimingSummary":
        if not samples_ns:
            raise ValueError("no timing samples")
        samples_us = np.asarray(samples_ns, dtype=np.float64) / 1e3
        return cls(
            median_us=float(np.median(samples_us)),
            p90_us=float(np.percentile(samples_us, 90)),
            min_us=float(samples_us.min()),
            mean_us=float(samples_us.mean()),
            calls=int(samples_us.size),
        )


@dataclasses.dataclass(frozen=True)
class InterleavedTiming:
    """The outcome of one interleaved run: per-engine summaries plus how it was run."""

    summaries: Dict[str, TimingSummary]
    warmup_rounds: int
    rounds: int
    priming_seconds: float


def _rotations(count: int) -> List[List[int]]:
    """Orders [0..n-1], [1..n-1,0], ...: round r uses rotation r % n, so each engine goes first equally."""
    return [[(start + offset) % count for offset in range(count)] for start in range(count)]


def _run_rounds(
    functions: Sequence[Callable[[], object]],
    rounds: int,
    first_round: int,
    samples: Optional[List[List[int]]],
    priming_seconds: float = 0.0,
) -> None:
    """Give every function one turn per round, in rotating order: priming calls, then one timed call.

    Priming (when priming_seconds > 0) is untimed calls, at least one, until priming_seconds passed.
    The timed call's ns go into samples[engine] if samples is given.
    """
    clock = time.perf_counter_ns
    priming_ns = int(priming_seconds * 1e9)
    rotations = _rotations(len(functions))
    for round_index in range(first_round, first_round + rounds):
        for engine_index in rotations[round_index % len(functions)]:
            function = functions[engine_index]
            if priming_ns > 0:
                priming_deadline = clock() + priming_ns
                function()
                while clock() < priming_deadline:
                    function()
            start = clock()
            function()
            elapsed = clock() - start
            if samples is not None:
                samples[engine_index].append(elapsed)


def choose_round_count(seconds: float, seconds_per_round: float) -> int:
    """Enough rounds to fill the budget, but never fewer than MIN_ROUNDS (a median needs samples)."""
    if seconds_per_round <= 0:
        return MAX_ROUNDS
    return max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(seconds / seconds_per_round)))


def time_interleaved(
    runs: Mapping[str, Callable[[], object]],
    *,
    rounds: Optional[int] = None,
    seconds: float = DEFAULT_SECONDS_PER_CONFIG,
    priming_seconds: float = DEFAULT_PRIMING_SECONDS,
) -> InterleavedTiming:
    """Time each zero-argument callable per call, interleaved round-robin.

    Each engine's turn is untimed priming calls (for priming_seconds; none if 0) followed by one timed
    call (see the module doc for why).
    With `rounds` given, exactly that many timed rounds run (each engine called `rounds` times);
    otherwise the count is chosen from the warmup so the timed part lasts about `seconds`.
    The garbage collector is paused while timing so a collection cannot land inside one engine's call.
    """
    if not runs:
        raise ValueError("nothing to time")
    if rounds is not None and rounds <= 0:
        raise ValueError(f"rounds must be positive, got {rounds}")
    if priming_seconds < 0:
        raise ValueError(f"priming_seconds must be >= 0, got {priming_seconds}")
    names = list(runs)
    functions = [runs[name] for name in names]

    warmup_budget = min(MAX_WARMUP_SECONDS, WARMUP_SHARE_OF_BUDGET * seconds)
    warmup_rounds = 0
    last_round_seconds = 0.0
    warmup_start = time.perf_counter()
    while warmup_rounds == 0 or time.perf_counter() - warmup_start < warmup_budget:
        round_start = time.perf_counter()
        _run_rounds(functions, 1, warmup_rounds, samples=None, priming_seconds=priming_seconds)
        last_round_seconds = time.perf_counter() - round_start
        warmup_rounds += 1

    timed_rounds = rounds if rounds is not None else choose_round_count(seconds, last_round_seconds)
    samples: List[List[int]] = [[] for _ in names]
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        _run_rounds(functions, timed_rounds, warmup_rounds, samples, priming_seconds)
    finally:
        if gc_was_enabled:
            gc.enable()

    summaries = {name: TimingSummary.from_samples_ns(samples[i]) for i, name in enumerate(names)}
    return InterleavedTiming(
        summaries=summaries, warmup_rounds=warmup_rounds, rounds=timed_rounds, priming_seconds=priming_seconds
    )


def measure_call_ns(call: Callable[[], object], calls: int = 20_000) -> float:
    """Median nanoseconds of one call, timed as the suite times its calls (clock reads included)."""
    samples: List[List[int]] = [[]]
    _run_rounds([call], calls, 0, samples)
    return float(np.median(samples[0]))


def measure_timer_floor_ns(calls: int = 20_000) -> float:
    """Median time the harness itself adds to one timed call (clock reads + an empty call).

    Quoted next to the results so sub-10-us numbers can be read with their floor in mind.
    """
    return measure_call_ns(lambda: None, calls)
