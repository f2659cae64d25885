"""The forward pass split across threads (hidden units, directions, batch rows) gives nn.LSTM's
results, and a sequence's result is bitwise the same whatever batch it is in or however many
threads computed it (every kernel sums each row in the same order)."""

import numpy as np
import pytest
import torch

import fastlstm

# (input, hidden, layers, bidirectional, proj, T, B): each exercises one way of splitting work.
CONFIGS = [
    pytest.param(64, 256, 2, False, 0, 30, 1, id="hidden-units"),
    pytest.param(32, 256, 1, False, 64, 20, 1, id="hidden-units-proj"),
    # Odd panel counts: 13 hidden and 3 projection panels (3 members), 33 hidden panels.
    pytest.param(16, 200, 1, False, 40, 10, 7, id="hidden-units-odd-panels-proj"),
    pytest.param(16, 520, 1, False, 0, 10, 1, id="hidden-units-33-panels"),
    pytest.param(48, 192, 2, True, 0, 25, 1, id="directions"),
    pytest.param(40, 160, 1, True, 0, 15, 8, id="batch-rows-from-8"),
    pytest.param(24, 48, 2, False, 0, 12, 40, id="batch-rows"),
    pytest.param(24, 48, 1, True, 16, 12, 33, id="batch-rows-bidir-proj"),
]


@pytest.mark.parametrize("input_size, hidden, layers, bidirectional, proj, steps, batch", CONFIGS)
# Counts past 8 and up to MAX_THREADS run in child processes under a timeout (test_thread_counts.py).
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_threads_match_torch(input_size, hidden, layers, bidirectional, proj, steps, batch, threads):
    torch.manual_seed(0)
    net = torch.nn.LSTM(input_size, hidden, layers, bidirectional=bidirectional, proj_size=proj).eval()
    model = fastlstm.LSTM.from_torch(net)
    x = torch.randn(steps, batch, input_size)
    lengths = torch.randint(1, steps + 1, (batch,))
    lengths[0] = steps
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    with torch.no_grad():
        expected, (h_ref, c_ref) = net(packed)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(expected, total_length=steps)
    output, (h_n, c_n) = model(x.numpy(), lengths=lengths.numpy(), num_threads=threads)
    assert np.abs(output - expected.numpy()).max() <= 1e-5
    assert np.abs(h_n - h_ref.numpy()).max() <= 1e-5
    assert np.abs(c_n - c_ref.numpy()).max() <= 1e-5


@pytest.mark.parametrize("input_size, hidden, layers, bidirectional, proj, steps, batch", CONFIGS)
def test_result_independent_of_threads_and_batch(input_size, hidden, layers, bidirectional, proj, steps, batch):
    model = fastlstm.LSTM(input_size, hidden, layers, bidirectional=bidirectional, proj_size=proj, seed=3)
    x = np.random.default_rng(1).standard_normal((steps, max(batch, 6), input_size)).astype(np.float32)
    one_thread, (h1, c1) = model(x, num_threads=1)
    for threads in (2, 4):
        output, (h_n, c_n) = model(x, num_threads=threads)
        assert np.array_equal(output, one_thread)
        assert np.array_equal(h_n, h1) and np.array_equal(c_n, c1)
    for rows in (slice(0, 1), slice(2, 5)):
        alone, _ = model(np.ascontiguousarray(x[:, rows]), num_threads=1)
        assert np.array_equal(alone, one_thread[:, rows])


@pytest.mark.parametrize("batch", [2, 3, 4, 5, 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_small_batches_split_by_hidden_units_match_each_row_alone(isa, batch, dtype):
    """Batches below 8 share each step's hidden units across threads; a few rows share each weight
    load of the fused step (2 per sweep with AVX2, 4 with AVX-512), more take GEMM tiles (from 3
    rows with AVX2, 5 elsewhere): every row must still equal its own one-row, one-thread run
    bitwise, under every kernel set."""
    model = fastlstm.LSTM(40, 192, 2, seed=4, dtype=dtype)
    x = np.random.default_rng(batch).standard_normal((12, batch, 40)).astype(dtype)
    lengths = np.arange(12, 12 - batch, -1) if batch > 2 else None
    for threads in (1, 2):
        output, _ = model(x, num_threads=threads, lengths=lengths)
        for row in range(batch):
            steps = 12 if lengths is None else int(lengths[row])
            alone, _ = model(np.ascontiguousarray(x[:steps, row : row + 1]), num_threads=1)
            assert np.array_equal(output[:steps, row : row + 1], alone)


def test_exact_and_finishing_while_other_processes_hold_every_core():
    """Busy processes on every core deschedule the pool's helpers mid-call: the caller then finishes
    alone and later calls back off. Results must stay bitwise those of one thread, with no hang."""
    import os
    import subprocess
    import sys
    import time

    model = fastlstm.LSTM(64, 256, 2, bidirectional=True, seed=5)  # hidden split: one phase per step
    x = np.random.default_rng(2).standard_normal((60, 1, 64)).astype(np.float32)
    expected, (h1, c1) = model(x, num_threads=1)
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    ]
    try:
        deadline = time.monotonic() + 2.0
        calls = 0
        while time.monotonic() < deadline or calls < 20:
            output, (h_n, c_n) = model(x, num_threads=2)
            assert np.array_equal(output, expected)
            assert np.array_equal(h_n, h1) and np.array_equal(c_n, c1)
            calls += 1
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
