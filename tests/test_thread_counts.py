"""Any thread count the pool allows (1..fastlstm.MAX_THREADS) works, on this 2-CPU machine as on a
192-core server: every split (batch rows, hidden units with odd panel counts, projections) gives
results bitwise equal to one thread, for LSTM, LSTMCell and step(). Each thread count runs in a
child process under a timeout, so a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from child_process import run_python

# Each case: how the model is built, the call, and which split it exercises at many threads.
CHILD = """
import json, sys
import numpy as np
import fastlstm

threads = int(sys.argv[1]) if len(sys.argv) > 1 else {threads}
rng = np.random.default_rng(0)

def sequences(model, steps, batch):
    return rng.standard_normal((steps, batch, model.input_size)).astype(model.dtype)

lstm_rows = fastlstm.LSTM(8, 16, seed=1)
lstm_rows_deep = fastlstm.LSTM(8, 24, num_layers=2, bidirectional=True, proj_size=8, seed=2)
lstm_hidden = fastlstm.LSTM(16, 520, seed=3)                   # 33 panels of 16 floats
lstm_hidden_proj = fastlstm.LSTM(16, 200, proj_size=40, seed=4)  # 13 hidden, 3 projection panels
lstm_hidden_f64 = fastlstm.LSTM(16, 200, dtype=np.float64, seed=5)  # 25 panels of 8 doubles
cell_rows = fastlstm.LSTMCell(8, 16, seed=6)
cell_hidden = fastlstm.LSTMCell(16, 520, seed=7)

x_rows = sequences(lstm_rows, 1, 64)  # the reported hang: batch 64, 16 threads
x_wide = sequences(lstm_rows_deep, 3, 1024)
lengths = rng.integers(1, 4, 1024)
cases = {{
    "rows": (lstm_rows, lambda m, n: m(x_rows, num_threads=n)),
    "rows-1024-bidir-proj-lengths": (lstm_rows_deep, lambda m, n: m(x_wide, lengths=lengths, num_threads=n)),
    "hidden-33-panels": (lstm_hidden, lambda m, n: m(sequences(m, 5, 1), num_threads=n)),
    "hidden-proj-odd-panels": (lstm_hidden_proj, lambda m, n: m(sequences(m, 5, 7), num_threads=n)),
    "hidden-float64": (lstm_hidden_f64, lambda m, n: m(sequences(m, 4, 2), num_threads=n)),
    "step-rows": (lstm_rows, lambda m, n: m.step(x_rows[0], m.initial_state(64), num_threads=n)),
    "step-hidden": (lstm_hidden, lambda m, n: m.step(sequences(m, 1, 1)[0], None, num_threads=n)),
    "cell-rows-48": (cell_rows, lambda m, n: m(rng.standard_normal((48, 8)).astype(np.float32), num_threads=n)),
    "cell-hidden": (cell_hidden, lambda m, n: m(rng.standard_normal((1, 16)).astype(np.float32), num_threads=n)),
}}

def arrays(result):
    if isinstance(result, tuple):
        return [a for part in result for a in arrays(part)]
    return [np.array(result, copy=True)]

fastlstm.set_num_threads(threads)
differ = []
for name, (model, call) in cases.items():
    state = rng.bit_generator.state
    by_default = arrays(call(model, 0))       # the pool's setting: set_num_threads(threads)
    rng.bit_generator.state = state
    explicit = arrays(call(model, threads))   # per call
    rng.bit_generator.state = state
    alone = arrays(call(model, 1))
    if not all(np.array_equal(a, b) for a, b in zip(by_default, alone)):
        differ.append(name + " (default)")
    if not all(np.array_equal(a, b) for a, b in zip(explicit, alone)):
        differ.append(name + " (explicit)")
print(json.dumps({{"threads": fastlstm.get_num_threads(), "differ": differ, "cases": len(cases)}}))
"""


@pytest.mark.parametrize("threads", [2, 3, 9, 16, 64, 256])
def test_every_split_is_bitwise_one_thread(threads: int) -> None:
    report = run_python(CHILD.format(threads=threads), timeout=120)
    assert report["threads"] == threads
    assert report["differ"] == [], f"results differ from one thread at {threads} threads: {report['differ']}"


def test_the_most_threads_allowed() -> None:
    """MAX_THREADS itself, with a batch that gives every member its rows (1024 x 4)."""
    code = """
    import json
    import numpy as np
    import fastlstm
    fastlstm.set_num_threads(fastlstm.MAX_THREADS)
    model = fastlstm.LSTM(4, 8, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 4 * fastlstm.MAX_THREADS, 4)).astype(np.float32)
    many, _ = model(x)
    one, _ = model(x, num_threads=1)
    print(json.dumps({"equal": bool(np.array_equal(many, one))}))
    """
    assert run_python(code, timeout=180) == {"equal": True}


@pytest.mark.parametrize(
    "value, error, message",
    [
        (0, ValueError, r"num_threads must lie in \[1, 1024\], got 0"),
        (2**31, ValueError, r"must lie in \[1, 1024\], got 2147483648"),
        (fastlstm.MAX_THREADS + 1, ValueError, r"got 1025"),
        (None, TypeError, "num_threads must be an int, got NoneType"),
        (1.5, TypeError, "must be an int, got float"),
        (True, TypeError, "must be an int, got bool"),
    ],
)
def test_set_num_threads_refuses_clearly(value: object, error: type, message: str) -> None:
    before = fastlstm.get_num_threads()
    with pytest.raises(error, match=message):
        fastlstm.set_num_threads(value)  # type: ignore[arg-type]
    assert fastlstm.get_num_threads() == before


@pytest.mark.parametrize(
    "value, error, message",
    [
        (-1, ValueError, r"num_threads must lie in \[0, 1024\] \(0: the default"),
        (2**31, ValueError, "got 2147483648"),
        (None, TypeError, "num_threads must be an int, got NoneType"),
        (1.5, TypeError, "must be an int, got float"),
    ],
)
@pytest.mark.parametrize("entry", ["call", "call-lengths", "step", "step-out", "cell"])
def test_per_call_num_threads_refuses_clearly(entry: str, value: object, error: type, message: str) -> None:
    model = fastlstm.LSTM(3, 4, seed=0)
    cell = fastlstm.LSTMCell(3, 4, seed=0)
    x = np.zeros((2, 1, 3), np.float32)
    calls = {
        "call": lambda: model(x, num_threads=value),
        "call-lengths": lambda: model(x, lengths=[2], num_threads=value),
        "step": lambda: model.step(x[0], num_threads=value),
        "step-out": lambda: model.step(x[0], model.initial_state(1), out=(np.zeros((1, 4), np.float32),
                                       *model.initial_state(1)), num_threads=value),
        "cell": lambda: cell(x[0], num_threads=value),
    }
    with pytest.raises(error, match=message):
        calls[entry]()


def test_numpy_integers_are_thread_counts() -> None:
    before = fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(np.int64(3))
        assert fastlstm.get_num_threads() == 3
        model = fastlstm.LSTM(3, 4, seed=0)
        x = np.ones((2, 1, 3), np.float32)
        np.testing.assert_array_equal(model(x, num_threads=np.int32(2))[0], model(x, num_threads=1)[0])
    finally:
        fastlstm.set_num_threads(before)


def test_workers_a_call_does_not_need_stay_asleep() -> None:
    """After one call with 1024 threads the pool holds 1023 workers; a later 2-thread call must wake
    only the one it can use. (Waking them all cost ~1 CPU-second per call on spinning workers.)"""
    code = """
    import json, os, time
    import numpy as np
    import fastlstm
    model = fastlstm.LSTM(16, 64, seed=0)
    x = np.zeros((5, 16, 16), np.float32)
    model(np.zeros((1, 4096, 16), np.float32), num_threads=fastlstm.MAX_THREADS)
    time.sleep(0.2)  # the helpers of that call go back to sleep
    before = os.times()
    for _ in range(10):
        model(x, num_threads=2)
    after = os.times()
    print(json.dumps({"cpu_seconds": (after.user + after.system) - (before.user + before.system)}))
    """
    report = run_python(code, timeout=180)
    assert report["cpu_seconds"] < 2.0, f"10 small 2-thread calls took {report['cpu_seconds']:.1f} CPU-seconds"
