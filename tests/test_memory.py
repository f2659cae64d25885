"""No memory growth over many calls of mixed shapes: every path a service takes (numpy and torch
inputs, PackedSequence, lengths, hx, step() with and without caller buffers, errors raised by the
extension) must release what it takes, and the per-thread scratch must stop growing once it has
seen the largest shape. bench/memory_check.py runs the same mix 100k times and prints RSS as it goes.
"""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import fastlstm  # noqa: E402

# AddressSanitizer (.ci/sanitize) keeps freed memory in a quarantine of up to 256 MiB before reusing
# it, so resident memory measures the quarantine, not fastlstm; leaks are its and valgrind's job there.
pytestmark = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                reason="RSS is meaningless under AddressSanitizer's quarantine")

PAGE = os.sysconf("SC_PAGE_SIZE")
GROWTH_BUDGET = 3 * 2**20  # bytes of resident memory the measured calls may add after warm-up
I, H = 6, 12


def resident_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def make_models():
    return [
        fastlstm.LSTM(I, H, seed=0),
        fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=5, seed=1),
        fastlstm.LSTM(I, H, num_layers=3, batch_first=True, dtype=np.float64, seed=2),
    ]


def one_call(model: fastlstm.LSTM, rng: np.random.Generator, kind: int) -> None:
    """One call of a mixed workload: `kind` picks the path, rng the shapes (batch 1..4, T 1..8)."""
    batch, steps = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    dtype = model.dtype
    shape = (batch, steps, I) if model.batch_first else (steps, batch, I)
    x = rng.standard_normal(shape).astype(dtype)
    h0, c0 = (a + 0.1 for a in model.initial_state(batch))
    if kind == 0:
        model(x)
    elif kind == 1:
        model(x, (h0, c0), lengths=rng.integers(1, steps + 1, size=batch))
    elif kind == 2:
        out, (h, c) = model(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        assert isinstance(out, torch.Tensor)
    elif kind == 3:
        lengths = torch.from_numpy(rng.integers(1, steps + 1, size=batch))
        packed = pack_padded_sequence(torch.from_numpy(x), lengths, batch_first=model.batch_first,
                                      enforce_sorted=False)
        model(packed)
    elif kind == 4:
        h, c = model.initial_state(None)
        model(rng.standard_normal((steps, I)).astype(dtype), (h, c))  # unbatched
    elif kind == 5:
        state = model.initial_state(batch)
        for t in range(steps):
            _, state = model.step(x[:, t] if model.batch_first else x[t], state)
    elif kind == 6:
        width = model.config.num_directions * model.config.output_hidden_size
        output, h_n, c_n = np.empty((batch, width), dtype), h0.copy(), c0.copy()
        model.step(x[:, 0] if model.batch_first else x[0], (h_n, c_n), out=(output, h_n, c_n))  # in place
    elif kind == 7:
        # Errors raised inside the extension, after it has taken references to the arrays.
        bad_out = np.empty((batch + 1, 3), dtype)
        with pytest.raises(ValueError):
            model.step(x[:, 0] if model.batch_first else x[0], (h0, c0), out=(bad_out, h0.copy(), c0.copy()))
        with pytest.raises((ValueError, TypeError)):
            model(x, (h0, c0[..., :-1]))
    else:
        raise AssertionError(kind)


KINDS = 8


def run_mixed(models, calls: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(calls):
        one_call(models[i % len(models)], rng, int(rng.integers(KINDS)))


def test_no_rss_growth_over_20k_mixed_calls():
    models = make_models()
    # Warm-up: every path at the largest shapes, so scratch reaches its high-water mark, and enough
    # calls for allocator pools (pymalloc arenas, torch's caches) to settle.
    rng = np.random.default_rng(0)
    for model in models:
        for kind in range(KINDS):
            for _ in range(30):
                one_call(model, rng, kind)
    run_mixed(models, 3000, seed=1)
    before = resident_bytes()
    start = time.perf_counter()
    run_mixed(models, 20_000, seed=2)
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
    run_mixed(models, 200, seed=4)
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
