"""Arrays changed by another thread during a call never crash the process. The extension copies
and validates what it indexes with (lengths) before releasing the GIL; a racing caller may get
garbage out, or a clear error, never an out-of-bounds access. Children run under a timeout."""

from __future__ import annotations

from child_process import run_python


def test_lengths_flipped_by_another_thread() -> None:
    code = """
    import json, threading
    import numpy as np
    import fastlstm

    model = fastlstm.LSTM(1, 2, seed=0)
    batch = 100_000  # wide enough that the old code (no private copy) crashed in 3 of 3 runs
    x = np.zeros((10, batch, 1), np.float32)
    lengths = np.full(batch, 10, np.int64)
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            lengths[-1] = 10**12
            lengths[-1] = 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    refused = computed = 0
    try:
        for _ in range(20):
            try:
                model(x, lengths=lengths)
                computed += 1
            except ValueError:
                refused += 1
    finally:
        stop.set()
        flipper.join()
    print(json.dumps({"refused": refused, "computed": computed}))
    """
    report = run_python(code, timeout=300)
    assert report["refused"] + report["computed"] == 20


def test_states_and_input_rewritten_during_calls() -> None:
    """Values the kernels only read as numbers (x, h0, c0) may change mid-call: any result, no crash."""
    code = """
    import json, threading
    import numpy as np
    import fastlstm

    model = fastlstm.LSTM(4, 64, num_layers=2, seed=0)
    x = np.zeros((50, 16, 4), np.float32)
    h0, c0 = model.initial_state(16)
    stop = threading.Event()

    def scribble():
        value = 0.0
        while not stop.is_set():
            value = -value + 1e30
            x[...] = value
            c0[...] = -value

    writer = threading.Thread(target=scribble)
    writer.start()
    try:
        for _ in range(40):
            model(x, (h0, c0))
    finally:
        stop.set()
        writer.join()
    print(json.dumps({"ok": True}))
    """
    assert run_python(code, timeout=300) == {"ok": True}
