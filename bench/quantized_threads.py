"""fastlstm's float32, bf16 and int8 models at 1 and N threads, timed interleaved, fastlstm alone.

    python bench/quantized_threads.py [--configs NAMES] [--threads N] [--rounds R]

Prints a markdown table of median microseconds per call and each format's N-thread speedup. Only
fastlstm runs: a peer's worker threads keep spinning on the other cores after its calls (ORT's,
torch's OpenMP), which would measure fastlstm's contention back-off instead of its scaling.
Weights are fastlstm's own random ones (the speed does not depend on their values).
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

import fastlstm
from fastlstm.bench.configs import CONFIGS_BY_NAME, select_configs

FORMATS = ("fp32", "bf16", "int8")
DEFAULT_CONFIGS = "stream-step-h512,medium,large,bidir,batch32"


def calls_per_round(seq_len: int, batch: int) -> int:
    """Enough calls per timed round that it lasts about a millisecond or more."""
    return 200 if seq_len == 1 else 20 if batch == 1 else 4


def measure(name: str, threads: int, rounds: int) -> Dict[Tuple[str, int], float]:
    """Median microseconds per call of each (format, thread count), rounds interleaved."""
    config = CONFIGS_BY_NAME[name]
    lstm = config.lstm
    model = fastlstm.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, bidirectional=lstm.bidirectional, seed=0)
    models = {"fp32": model, "bf16": model.quantize("bf16"), "int8": model.quantize("int8")}
    x = np.random.default_rng(0).standard_normal((config.seq_len, config.batch, lstm.input_size)).astype(np.float32)
    calls = calls_per_round(config.seq_len, config.batch)
    samples: Dict[Tuple[str, int], List[float]] = {(fmt, n): [] for fmt in FORMATS for n in (1, threads)}
    for _ in range(rounds):
        for (fmt, n), times in samples.items():
            for _ in range(2):  # the weights back in cache, the workers awake
                models[fmt](x, num_threads=n)
            start = time.perf_counter()
            for _ in range(calls):
                models[fmt](x, num_threads=n)
            times.append((time.perf_counter() - start) / calls * 1e6)
    return {key: float(np.median(times)) for key, times in samples.items()}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"standard configs (default: {DEFAULT_CONFIGS})")
    parser.add_argument("--threads", type=int, default=2, help="the thread count compared with 1 (default: 2)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per config (default: 9)")
    args = parser.parse_args(argv)
    names = [config.name for config in select_configs(args.configs)]
    n = args.threads
    print(f"{fastlstm.cpu_info()['cpu']}, kernels {fastlstm.cpu_info()['isa']}; median us per call, 1T / {n}T (speedup)\n")
    print("| config | " + " | ".join(FORMATS) + " |")
    print("|---|" + "---|" * len(FORMATS))
    for name in names:
        med = measure(name, n, args.rounds)
        cells = [f"{med[(fmt, 1)]:,.0f} / {med[(fmt, n)]:,.0f} ({med[(fmt, 1)] / med[(fmt, n)]:.2f}x)" for fmt in FORMATS]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
