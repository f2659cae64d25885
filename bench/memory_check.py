#!/usr/bin/env python3
"""RSS over many fastlstm calls of mixed shapes: the "no growth over 100k calls" check.

    python bench/memory_check.py                    # 100k calls, RSS every 10k
    python bench/memory_check.py --calls 1000000 --every 100000 --max-growth-mb 2

Each call picks a model (fp32 1 layer; fp32 2-layer bidirectional with projection; fp64 3-layer
batch_first), a batch of 1..4 and a length of 1..8, and one path: numpy, numpy with hx and lengths,
torch tensors, PackedSequence, unbatched, a stream of step() calls, step() into caller buffers, or
calls the extension rejects. After a warm-up that visits every path at the largest shapes (so the
per-thread scratch reaches its high-water mark), resident memory should stay flat. Exit status 1 if
it grows by more than --max-growth-mb. torch is optional: without it the torch paths are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from lab import use_checkout

use_checkout()  # the checkout's fastlstm when it is built in place
import fastlstm  # noqa: E402
from mixed_calls import KINDS, make_models, one_call, resident_bytes, warm_up  # noqa: E402


def resident_mib() -> float:
    return resident_bytes() / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="measured calls (default 100000)")
    parser.add_argument("--every", type=int, default=10_000, help="print RSS every this many calls")
    parser.add_argument("--warmup", type=int, default=3_000, help="mixed calls before the baseline")
    parser.add_argument("--max-growth-mb", type=float, default=4.0, help="allowed RSS growth after warm-up")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    models = make_models()
    rng = np.random.default_rng(args.seed)
    warm_up(models, rng, args.warmup)

    torch = sys.modules.get("torch")
    print(f"fastlstm {fastlstm.__version__}, isa {fastlstm.cpu_info()['isa']}, torch "
          f"{torch.__version__ if torch is not None else 'absent (torch paths skipped)'}")
    baseline = resident_mib()
    start = time.perf_counter()
    print(f"{'calls':>10} {'RSS MiB':>10} {'growth MiB':>11} {'us/call':>9}")
    print(f"{0:>10} {baseline:>10.2f} {0.0:>11.2f} {'':>9}")
    peak_growth = 0.0
    last_time, last_calls = start, 0
    for i in range(1, args.calls + 1):
        one_call(models[i % len(models)], rng, int(rng.integers(KINDS)))
        if i % args.every == 0 or i == args.calls:
            now = time.perf_counter()
            rss = resident_mib()
            peak_growth = max(peak_growth, rss - baseline)
            per_call = (now - last_time) / (i - last_calls) * 1e6
            print(f"{i:>10} {rss:>10.2f} {rss - baseline:>11.2f} {per_call:>9.1f}", flush=True)
            last_time, last_calls = now, i
    growth = resident_mib() - baseline
    verdict = "OK" if peak_growth <= args.max_growth_mb else "FAIL"
    print(f"{verdict}: RSS grew {growth:.2f} MiB (peak growth {peak_growth:.2f} MiB, limit "
          f"{args.max_growth_mb} MiB) over {args.calls} calls in {time.perf_counter() - start:.1f} s")
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
