"""What machine the numbers came from: CPU model, instruction set, software versions, sgemm peak.

Benchmark numbers without their machine are not comparable; these go at the top of results.md.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

# Run in a fresh interpreter so the BLAS thread count is fixed before numpy loads its BLAS; the
# current process may already have numpy (and its thread pool) loaded.
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


def cpu_model_name() -> str:
    """lscpu's 'Model name', else /proc/cpuinfo's, else whatever platform knows."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in text.splitlines():
            if line.strip().startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for line in _read_proc_cpuinfo().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _read_proc_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def isa_from_cpu_flags() -> str:
    """The widest SIMD instruction set the CPU reports (not necessarily what fastlstm compiled)."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "NEON"
    flags: set = set()
    for line in _read_proc_cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags and "fma" in flags:
        return "AVX2+FMA"
    if "avx" in flags:
        return "AVX"
    return "SSE/generic" if flags else f"unknown ({machine})"


def fastlstm_cpu_info() -> Optional[Dict[str, Any]]:
    """fastlstm.cpu_info() if the package offers it: the kernels it actually dispatches to."""
    try:
        import fastlstm
    except ImportError:
        return None
    cpu_info = getattr(fastlstm, "cpu_info", None)
    if not callable(cpu_info):
        return None
    try:
        return dict(cpu_info())
    except Exception:  # noqa: BLE001 - machine description is best effort
        return None


def software_versions() -> Dict[str, str]:
    """Versions of everything that was timed; missing packages are simply absent."""
    versions = {"python": platform.python_version()}
    for module_name in ("numpy", "torch", "onnxruntime", "fastlstm"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        versions[module_name] = str(getattr(module, "__version__", "unknown"))
    return versions


def measure_sgemm_peak_gflops(timeout_seconds: float = 120.0) -> Optional[float]:
    """Single-core fp32 GEMM rate: numpy 1024x1024 @ 1024x1024, best of 7, BLAS pinned to one thread.

    None if the measurement could not run (the report then leaves out % of peak).
    """
    env = {**os.environ, **SINGLE_THREAD_ENV}
    try:
        completed = subprocess.run(
            [sys.executable, "-c", SGEMM_PEAK_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_seconds,
            check=True,
        )
        return float(completed.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class SgemmPeak:
    """The best single-core sgemm rate over several moments of a run.

    A neighbour's busy spell on a shared host can halve any one measurement (41.6 against 85.6
    GFLOP/s on the same machine, minutes apart), and the engines are held against the peak, so the
    run samples it after every config and keeps the best. best is None until a sample succeeds.
    """

    def __init__(self) -> None:
        self.best: Optional[float] = None
        self.samples = 0

    def sample(self) -> None:
        rate = measure_sgemm_peak_gflops()
        if rate is not None:
            self.samples += 1
            self.best = rate if self.best is None else max(self.best, rate)


READ_PROBE_BATCH_BYTES = 64 << 20  # each timed batch reads about this much, so it lasts milliseconds


@functools.lru_cache(maxsize=None)
def measure_read_seconds(nbytes: int) -> float:
    """Seconds one core takes to read `nbytes` of cached data once: fastlstm's widest loads, passes
    alternating direction, the faster of one stream and the fused step's four streams per weight
    block. Best of 15 batches, since a neighbour on a shared host can slow any one of them.

    This is the floor a batch-1 step sits on: it must read all of W_hh (or a thread's share of it).
    """
    from fastlstm import _core

    passes = max(3, READ_PROBE_BATCH_BYTES // max(1, nbytes))
    return _core.measure_read_seconds(nbytes, passes, 15)


def measure_batch1_floors(
    cases: Sequence[Any], sgemm_peak: Optional[float], threads: int = 1
) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Per batch-1 case that ran: the floor of one call at `threads` threads and the read time of one
    thread's share of a W_hh, both in microseconds (see metrics.batch1_floor_microseconds). Empty
    without an sgemm peak."""
    from fastlstm.bench import metrics

    floors: Dict[str, float] = {}
    reads: Dict[str, float] = {}
    if sgemm_peak is None:
        return floors, reads
    for case in cases:
        if case.config.batch != 1 or not case.engines:
            continue
        floors[case.config.name] = metrics.batch1_floor_microseconds(case.config, measure_read_seconds, sgemm_peak, threads)
        reads[case.config.name] = measure_read_seconds(metrics.recurrent_matrix_bytes(case.config) // threads) * 1e6
    return floors, reads


def measure_empty_call_us() -> Optional[float]:
    """Microseconds of fastlstm's smallest call, `LSTM(1, 1)` on one step of batch 1 at one thread,
    timed as the suite times its calls: the fixed cost of a call (Python, the checks, the output
    arrays) with next to no arithmetic. The lowest of 5 medians of 4,000 calls: like the read floor
    (the best of 15 batches), a best case, since a neighbour on a shared host can halve a core's
    speed for seconds. None when fastlstm cannot be imported."""
    import numpy as np

    from fastlstm.bench.timing import measure_call_ns

    try:
        import fastlstm
    except ImportError:
        return None
    model = fastlstm.LSTM(1, 1, seed=0)
    x = np.zeros((1, 1, 1), np.float32)
    return min(measure_call_ns(lambda: model(x, num_threads=1), calls=4_000) for _ in range(5)) / 1e3


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask): fastlstm's default thread count is this."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def describe_machine() -> Dict[str, Any]:
    """Everything about this machine the report prints (sgemm peak is measured separately)."""
    info: Dict[str, Any] = {
        "cpu": cpu_model_name(),
        "isa": isa_from_cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "available_cpus": available_cpus(),
        "platform": platform.platform(),
        "versions": software_versions(),
    }
    kernel_info = fastlstm_cpu_info()
    if kernel_info is not None:
        info["fastlstm_cpu_info"] = kernel_info
    return info
