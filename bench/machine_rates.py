"""What this machine's cores can do, measured: single-core sgemm peak, cache read rates, the batch-1
floors they imply, and fastlstm's smallest call. The lab's `floors` and `threads` hold engines to them.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

import lstm_metrics
import read_probe
from fastlstm.bench.timing import measure_call_ns

# Run in a fresh interpreter so that the BLAS thread count is fixed before numpy loads its BLAS.
SGEMM_PEAK_SCRIPT = """
import time, numpy as np
n = 1024
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(7):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
print(2 * n ** 3 / best / 1e9)
"""
SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
READ_BATCH_BYTES = 64 << 20  # each timed batch of the read probe reads about this much: milliseconds
READ_REPEATS = 15


def measure_sgemm_peak_gflops(timeout_seconds: float = 120.0) -> Optional[float]:
    """Single-core fp32 GEMM rate: numpy 1024^3, best of 7, BLAS pinned to one thread; None on failure."""
    try:
        completed = subprocess.run(
            [sys.executable, "-c", SGEMM_PEAK_SCRIPT],
            capture_output=True,
            text=True,
            env={**os.environ, **SINGLE_THREAD_ENV},
            timeout=timeout_seconds,
            check=True,
        )
        return float(completed.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class SgemmPeak:
    """The best single-core sgemm rate over several moments of a run.

    A neighbour's busy spell on a shared host can halve any one measurement, and the engines are held
    against the peak, so a run samples it after every config and keeps the best (None until one succeeds).
    """

    def __init__(self) -> None:
        self.best: Optional[float] = None
        self.samples = 0

    def sample(self) -> None:
        rate = measure_sgemm_peak_gflops()
        if rate is not None:
            self.samples += 1
            self.best = rate if self.best is None else max(self.best, rate)

    def describe(self) -> str:
        if self.best is None:
            return "not measured"
        when = f"best of {self.samples} measurements, one after each config" if self.samples > 1 else "measured after the config"
        return f"{self.best:.1f} GFLOP/s ({when}; each the best of 7 calls)"


@functools.lru_cache(maxsize=None)
def measure_read_seconds(nbytes: int) -> float:
    """Seconds one core takes to read `nbytes` of cached data once, with fastlstm's active ISA's widest
    loads (bench/read_probe). Best of READ_REPEATS batches, since a neighbour can slow any one of them."""
    passes = max(3, READ_BATCH_BYTES // max(1, nbytes))
    return read_probe.measure_read_seconds(nbytes, passes, READ_REPEATS)


def measure_batch1_floors(
    cases: Sequence[Any], sgemm_peak: Optional[float], threads: int = 1
) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Per batch-1 case that ran: the floor of one call at `threads` threads and the read time of one
    thread's share of a W_hh, in microseconds (lstm_metrics.batch1_floor_microseconds). Empty without
    an sgemm peak."""
    floors: Dict[str, float] = {}
    reads: Dict[str, float] = {}
    if sgemm_peak is None:
        return floors, reads
    for case in cases:
        if case.config.batch != 1 or not case.engines:
            continue
        name = case.config.name
        floors[name] = lstm_metrics.batch1_floor_microseconds(case.config, measure_read_seconds, sgemm_peak, threads)
        reads[name] = measure_read_seconds(lstm_metrics.recurrent_matrix_bytes(case.config) // threads) * 1e6
    return floors, reads


def measure_empty_call_us() -> float:
    """Microseconds of fastlstm's smallest call, `LSTM(1, 1)` on one step of batch 1 at one thread, timed
    as the suite times calls: the fixed cost of a call (Python, the checks, the output arrays). The lowest
    of 5 medians of 4,000 calls: like the read floor, a best case, since a neighbour on a shared host can
    halve a core's speed for seconds."""
    import fastlstm

    model = fastlstm.LSTM(1, 1, seed=0)
    x = np.zeros((1, 1, 1), np.float32)
    return min(measure_call_ns(lambda: model(x, num_threads=1), calls=4_000) for _ in range(5)) / 1e3
