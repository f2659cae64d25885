"""How much compute N CPUs deliver at once, against one of them alone.

A multi-thread speedup means little without it. On a shared virtual machine two vCPUs can be two
cores in one minute and, in the next, two hyperthreads of one core (or one core time-sliced): on the
host these benchmarks were written on, an FMA loop on both vCPUs at once ran at 94 + 96 GFLOP/s in
one test and at 66 + 51 in another a few minutes earlier, against 97 on one vCPU alone. With the
second kind of placement no engine can gain much from a second thread, so `lab.py threads` samples
this capacity after every config and prints it next to the speedups.

Each CPU runs single-threaded numpy sgemm in its own process, pinned to that CPU; the processes start
together, so they overlap for the whole window. The capacity is the sum of their rates over the rate
of one process alone (the faster of one run just before and one just after): N.00x means N whole
cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from machine_rates import SINGLE_THREAD_ENV

WINDOW_SECONDS = 0.4  # each process's timed window: ~130 sgemm calls of 512^3
START_DELAY_SECONDS = 0.5  # time for every process to import numpy before the common start

# Pins itself to one CPU, waits for the common start (wall clock, shared by the processes), then
# runs 512^3 sgemm calls for the window and prints its rate in GFLOP/s.
LOAD_SCRIPT = """
import os, sys, time
import numpy as np
cpu, start_at, window = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
os.sched_setaffinity(0, {cpu})
n = 512
rng = np.random.default_rng(cpu)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
while time.time() < start_at:
    time.sleep(0.001)
calls, start = 0, time.perf_counter()
while time.perf_counter() - start < window:
    a @ b
    calls += 1
print(2 * n ** 3 * calls / (time.perf_counter() - start) / 1e9)
"""


def capacity_cpus(threads: int) -> Optional[List[int]]:
    """The first `threads` CPUs this process may run on, or None if it may use fewer (or no Linux
    affinity to pin with)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return cpus[:threads] if len(cpus) >= threads else None


def measure_rates(cpus: Sequence[int], window_seconds: float = WINDOW_SECONDS) -> Optional[List[float]]:
    """GFLOP/s of one sgemm process per CPU, all running at once; None if any process failed."""
    start_at = time.time() + START_DELAY_SECONDS
    env = {**os.environ, **SINGLE_THREAD_ENV}
    command = [sys.executable, "-c", LOAD_SCRIPT]
    try:
        processes = [
            subprocess.Popen(
                command + [str(cpu), repr(start_at), repr(window_seconds)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            for cpu in cpus
        ]
    except OSError:
        return None
    rates: List[float] = []
    failed = False
    for process in processes:
        try:
            out, _ = process.communicate(timeout=60)
            rates.append(float(out.strip().splitlines()[-1]))
        except (subprocess.SubprocessError, ValueError, IndexError):
            process.kill()
            failed = True
        failed = failed or process.returncode != 0
    return None if failed else rates


class CoreCapacity:
    """Capacity samples for the CPUs `threads` threads would run on, one per config (by name)."""

    def __init__(self, threads: int) -> None:
        self.cpus = capacity_cpus(threads)
        self.by_config: Dict[str, float] = {}

    def sample(self, config_name: str) -> None:
        """One CPU alone, all of them at once, then one alone again; the faster lone rate counts, since
        a neighbour's busy spell can slow either (one lone sample per side made 2 CPUs read 2.22x).
        A failed measurement records nothing."""
        if self.cpus is None:
            return
        before = measure_rates(self.cpus[:1])
        together = measure_rates(self.cpus)
        after = measure_rates(self.cpus[:1])
        if before and together and after and max(before[0], after[0]) > 0:
            self.by_config[config_name] = sum(together) / max(before[0], after[0])

    def summary_text(self) -> str:
        """One line for the report header."""
        count = 0 if self.cpus is None else len(self.cpus)
        if not self.by_config:
            return "not measured (this process may use fewer CPUs than threads, or the measurement failed)"
        values = sorted(self.by_config.values())
        span = f"{values[0]:.2f}x" if len(values) == 1 else f"{values[0]:.2f}x-{values[-1]:.2f}x"
        return (
            f"{span} one CPU's rate over {len(values)} sample(s), one after each config "
            f"({count} CPUs running single-threaded numpy sgemm at once, each pinned to its CPU; "
            f"{count}.00x means {count} whole cores)"
        )
