"""No memory growth over many calls of mixed shapes: every path a service takes (numpy and torch
inputs, PackedSequence, lengths, hx, step() with and without caller buffers, errors raised by the
extension) must release what it takes, and the per-thread scratch must stop growing once it has
seen the largest shape. bench/memory_check.py runs the same mix 100k times and prints RSS as it goes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the workload's torch paths are part of what is measured

import fastlstm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # the workload lives with memory_check.py
from mixed_calls import make_models, one_call, resident_bytes, run_mixed, warm_up  # noqa: E402

# AddressSanitizer (.ci/sanitize) keeps freed memory in a quarantine of up to 256 MiB before reusing
# it, so resident memory measures the quarantine, not fastlstm; leaks are its and valgrind's job there.
pytestmark = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                reason="RSS is meaningless under AddressSanitizer's quarantine")

GROWTH_BUDGET = 3 * 2**20  # bytes of resident memory the measured calls may add after warm-up


def test_no_rss_growth_over_20k_mixed_calls():
    models = make_models()
    warm_up(models, np.random.default_rng(0), mixed_calls=3000)
    before = resident_bytes()
    start = time.perf_counter()
    run_mixed(models, np.random.default_rng(2), 20_000)
    elapsed = time.perf_counter() - start
    growth = resident_bytes() - before
    assert growth < GROWTH_BUDGET, f"RSS grew by {growth / 2**20:.2f} MiB over 20k calls ({elapsed:.1f} s)"


def test_no_rss_growth_from_calls_on_short_lived_threads():
    """Scratch is kept per calling thread: it must be freed when the thread exits, or a service
    that runs requests on fresh threads leaks a workspace per thread."""
    models = make_models()
    rng = np.random.default_rng(3)

    def worker(seed: int) -> None:
        local = np.random.default_rng(seed)
        for model in models:
            for kind in (0, 1, 5):
                one_call(model, local, kind)

    def run_threads(count: int, offset: int) -> None:
        for i in range(count):
            thread = threading.Thread(target=worker, args=(offset + i,))
            thread.start()
            thread.join()

    run_threads(50, 0)
    run_mixed(models, np.random.default_rng(4), 200)
    del rng
    before = resident_bytes()
    run_threads(400, 1000)
    growth = resident_bytes() - before
    assert growth < GROWTH_BUDGET, f"RSS grew by {growth / 2**20:.2f} MiB over 400 short-lived threads"


def test_models_are_freed():
    """Building and dropping models (weights packed in C++) returns their memory."""
    x = np.zeros((2, 1, 64), np.float32)

    def churn(count: int) -> None:
        for seed in range(count):
            model = fastlstm.LSTM(64, 256, num_layers=2, seed=seed)  # ~3 MiB of packed weights
            model(x)
            del model

    churn(5)
    before = resident_bytes()
    churn(60)
    growth = resident_bytes() - before
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.2f} MiB over 60 models of ~3 MiB each"
