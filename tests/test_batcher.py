"""fastlstm.Batcher: every caller gets bitwise what a lone call gives, whatever else shares its batch;
bad requests fail alone; the queue is bounded; close() drains and leaves no thread behind."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time
from typing import Any, List, Sequence

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastlstm  # noqa: E402

TIMEOUT = 60  # seconds any single wait in these tests may take (never reached when all is well)


def batcher_threads() -> List[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("fastlstm-batcher")]


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    before = set(batcher_threads())
    yield
    deadline = time.monotonic() + TIMEOUT
    while set(batcher_threads()) - before and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert not set(batcher_threads()) - before, "a batcher worker thread outlived its test"


def assert_same_bits(got: Any, expected: Any) -> None:
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()
        return
    assert type(got) is type(expected) and len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_same_bits(g, e)


def random_sequences(rng: np.random.Generator, count: int, input_size: int, dtype: Any = np.float32) -> List[np.ndarray]:
    return [rng.standard_normal((int(t), input_size)).astype(dtype) for t in rng.integers(1, 40, count)]


def submit_from_threads(batcher: fastlstm.Batcher, requests: Sequence[tuple], method: str = "submit") -> List[Any]:
    """Every request from its own thread, all released together; their results in request order."""
    barrier = threading.Barrier(len(requests))
    results: List[Any] = [None] * len(requests)

    def client(index: int) -> None:
        barrier.wait(TIMEOUT)
        results[index] = getattr(batcher, method)(*requests[index]).result(TIMEOUT)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    return results


class BatchLog:
    def __init__(self) -> None:
        self.sizes: List[int] = []

    def __call__(self, size: int, seconds: float) -> None:
        self.sizes.append(size)


# ------------------------------------------------------------------------------------ bitwise
@pytest.mark.parametrize("kwargs", [
    dict(num_layers=2),
    dict(num_layers=2, batch_first=True, bidirectional=True),
    dict(num_layers=1, proj_size=5),
    dict(num_layers=2, dtype=np.float64),
])
def test_sequences_of_different_lengths_merge_and_each_gets_its_lone_result(kwargs: dict) -> None:
    model = fastlstm.LSTM(6, 16, seed=1, **kwargs)
    rng = np.random.default_rng(0)
    xs = random_sequences(rng, 24, 6, model.dtype)
    requests: List[tuple] = []
    for index, x in enumerate(xs):
        if index % 3 == 0:  # some requests carry their own initial state
            h0, c0 = (rng.standard_normal(s.shape).astype(model.dtype) for s in model.initial_state())
            requests.append((x, (h0, c0)))
        else:
            requests.append((x,))
    log = BatchLog()
    with fastlstm.Batcher(model, max_batch=8, max_delay_ms=50, on_batch=log) as batcher:
        results = submit_from_threads(batcher, requests)
    for request, result in zip(requests, results):
        assert_same_bits(result, model(*request))
    assert max(log.sizes) > 1 and max(log.sizes) <= 8 and sum(log.sizes) == len(requests)


def test_a_burst_from_one_thread_is_merged_up_to_max_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fastlstm.LSTM(4, 8, seed=0)
    xs = random_sequences(np.random.default_rng(1), 20, 4)
    log = BatchLog()
    with fastlstm.Batcher(model, max_batch=8, max_delay_ms=200, workers=1, on_batch=log) as batcher:
        gate = Gate(batcher._submit_plan, monkeypatch)
        held = batcher.submit(xs[0])
        assert gate.entered.wait(TIMEOUT)  # the worker holds one request while the burst queues
        futures = [batcher.submit(x) for x in xs]
        gate.open.set()
        held.result(TIMEOUT)
        results = [future.result(TIMEOUT) for future in futures]
    # The held one, then max_batch at a time; the last 4 wait max_delay_ms for company, then go.
    assert log.sizes == [1, 8, 8, 4]
    for x, result in zip(xs, results):
        assert_same_bits(result, model(x))


def test_streams_step_together_and_each_keeps_its_own_state() -> None:
    model = fastlstm.LSTM(5, 12, num_layers=2, seed=3)
    rng = np.random.default_rng(2)
    streams = 6
    frames = rng.standard_normal((10, streams, 5)).astype(np.float32)
    states = [None] * streams  # the first step of each stream starts from zeros
    expected = [model.initial_state() for _ in range(streams)]
    log = BatchLog()
    with fastlstm.Batcher(model, max_batch=16, max_delay_ms=50, on_batch=log) as batcher:
        for t in range(frames.shape[0]):
            results = submit_from_threads(batcher, [(frames[t, s], states[s]) for s in range(streams)], "step")
            for s, (output, state) in enumerate(results):
                lone_output, lone_state = model.step(frames[t, s], expected[s])
                assert_same_bits((output, state), (lone_output, lone_state))
                states[s], expected[s] = state, lone_state
    assert max(log.sizes) > 1


def test_cell_steps_merge() -> None:
    cell = fastlstm.LSTMCell(7, 9, seed=4)
    rng = np.random.default_rng(3)
    requests = []
    for index in range(12):
        x = rng.standard_normal(7).astype(np.float32)
        hx = None if index % 2 else tuple(rng.standard_normal(9).astype(np.float32) for _ in range(2))
        requests.append((x,) if hx is None else (x, hx))
    with fastlstm.Batcher(cell, max_batch=12, max_delay_ms=50) as batcher:
        results = submit_from_threads(batcher, requests)
        stepped = batcher.step(*requests[0]).result(TIMEOUT)
    for request, result in zip(requests, results):
        assert_same_bits(result, cell(*request))
    assert_same_bits(stepped, cell(*requests[0]))


class Forecaster(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 10, batch_first=True)
        self.head = torch.nn.Linear(10, 2)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out.mean(dim=1)) * scale


@pytest.fixture(scope="module")
def converted() -> fastlstm.Model:
    torch.manual_seed(0)
    example = (torch.randn(2, 7, 3), torch.ones(2, 1))
    return fastlstm.convert(Forecaster().eval(), example)


def test_converted_model_merges_equal_shapes_and_matches_lone_calls(converted: fastlstm.Model,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    requests = [(rng.standard_normal((length, 3)).astype(np.float32), rng.standard_normal(1).astype(np.float32))
                for length in [5, 9, 5, 5, 9, 12, 5, 9]]
    log = BatchLog()
    with fastlstm.Batcher(converted, max_batch=8, max_delay_ms=100, on_batch=log) as batcher:
        gate = Gate(batcher._submit_plan, monkeypatch)
        held = batcher.submit(np.ones((7, 3), np.float32), np.ones(1, np.float32))
        assert gate.entered.wait(TIMEOUT)  # the worker holds a first request while the others queue
        futures = [batcher.submit(*request) for request in requests]
        gate.open.set()
        held.result(TIMEOUT)
        results = [future.result(TIMEOUT) for future in futures]
    for (x, scale), result in zip(requests, results):
        assert_same_bits(result, converted(x[None], scale[None])[0])
    # Only equal shapes share a call: the held one, then lengths 5 (x4), 9 (x3), 12 (x1).
    assert sorted(log.sizes) == [1, 1, 3, 4]


def test_converted_model_requests_are_checked_like_the_model(converted: fastlstm.Model) -> None:
    with fastlstm.Batcher(converted) as batcher:
        with pytest.raises(TypeError, match=r"takes 2 input\(s\) \(x, scale\), got 1"):
            batcher.submit(np.zeros((5, 3), np.float32))
        with pytest.raises(ValueError, match=r"without its batch axis: 2-D .*got 3-D"):
            batcher.submit(np.zeros((1, 5, 3), np.float32), np.ones(1, np.float32))
        with pytest.raises(ValueError, match="axis 2 must be 3"):
            batcher.submit(np.zeros((5, 4), np.float32), np.ones(1, np.float32))
        with pytest.raises(TypeError, match="x must have dtype float32, got float64"):
            batcher.submit(np.zeros((5, 3)), np.ones(1, np.float32))
        with pytest.raises(TypeError, match="a Model takes submit"):
            batcher.step(np.zeros(3, np.float32))


class TimeMajor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


def test_a_model_whose_axis_0_is_not_its_batch_is_refused() -> None:
    torch.manual_seed(0)
    # Time-major: axis 0 is a free size shared by input and output, but it is time, not the batch.
    model = fastlstm.convert(TimeMajor().eval(), torch.randn(7, 2, 3))
    with pytest.raises(ValueError, match=r"axis 0 of .* is not a batch: the result for one example depends on the others"):
        fastlstm.Batcher(model)


# ------------------------------------------------------------------------------------ bad requests
def test_bad_requests_fail_alone_at_submit_with_clear_errors() -> None:
    model = fastlstm.LSTM(4, 8, num_layers=2, seed=0)
    good = np.ones((6, 4), np.float32)
    with fastlstm.Batcher(model, max_delay_ms=20) as batcher:
        pending = batcher.submit(good)
        with pytest.raises(TypeError, match="input has dtype float64 but the model is float32"):
            batcher.submit(np.ones((6, 4)))
        with pytest.raises(ValueError, match=r"one unbatched sequence \(T, input_size\).*got 3-D input of shape \(1, 6, 4\)"):
            batcher.submit(np.ones((1, 6, 4), np.float32))
        with pytest.raises(ValueError, match="input_size"):
            batcher.submit(np.ones((6, 5), np.float32))
        with pytest.raises(ValueError, match="at least 1"):
            batcher.submit(np.ones((0, 4), np.float32))
        with pytest.raises(ValueError, match=r"h0 must also be 2-D \(2, 8\), got 3-D \(2, 1, 8\)"):
            batcher.submit(good, (np.zeros((2, 1, 8), np.float32), np.zeros((2, 8), np.float32)))
        with pytest.raises(TypeError, match="input must be a numpy array, got list"):
            batcher.submit([[1.0] * 4])
        with pytest.raises(TypeError, match="unexpected keyword argument 'lengths'"):
            batcher.submit(good, lengths=[6])
        with pytest.raises(ValueError, match=r"one stream's step \(input_size,\)"):
            batcher.step(good)
        assert_same_bits(pending.result(TIMEOUT), model(good))


def test_a_failing_merged_call_falls_back_to_lone_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fastlstm.LSTM(4, 8, seed=0)
    xs = random_sequences(np.random.default_rng(5), 6, 4)
    with fastlstm.Batcher(model, max_batch=8, max_delay_ms=100) as batcher:
        plan = batcher._submit_plan

        def broken(payloads: Any, num_threads: int) -> Any:
            raise RuntimeError("merged call failed")

        calls = []
        lone = plan.run_one

        def run_one(payload: Any, num_threads: int) -> Any:
            calls.append(payload)
            if np.array_equal(payload[0], xs[2]):
                raise ValueError("this one request is bad")
            return lone(payload, num_threads)

        monkeypatch.setattr(plan, "run_batch", broken)
        monkeypatch.setattr(plan, "run_one", run_one)
        futures = [batcher.submit(x) for x in xs]
        for index, (x, future) in enumerate(zip(xs, futures)):
            if index == 2:
                with pytest.raises(ValueError, match="this one request is bad"):
                    future.result(TIMEOUT)
            else:
                assert_same_bits(future.result(TIMEOUT), model(x))
    assert len(calls) == len(xs)


# ------------------------------------------------------------------------------------ queue
class Gate:
    """Holds the worker inside a call until opened."""

    def __init__(self, plan: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered, self.open = threading.Event(), threading.Event()
        run_one, run_batch = plan.run_one, plan.run_batch

        def held(run: Any) -> Any:
            def call(payload: Any, num_threads: int) -> Any:
                self.entered.set()
                assert self.open.wait(TIMEOUT)
                return run(payload, num_threads)
            return call

        monkeypatch.setattr(plan, "run_one", held(run_one))
        monkeypatch.setattr(plan, "run_batch", held(run_batch))


def test_a_full_queue_blocks_or_refuses_as_the_caller_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fastlstm.LSTM(4, 8, seed=0)
    x = np.ones((3, 4), np.float32)
    batcher = fastlstm.Batcher(model, max_batch=1, max_delay_ms=0, max_queue=2, workers=1)
    gate = Gate(batcher._submit_plan, monkeypatch)
    try:
        first = batcher.submit(x)
        assert gate.entered.wait(TIMEOUT)  # the worker holds the first request; two more fill the queue
        queued = [batcher.submit(x), batcher.submit(x)]
        with pytest.raises(fastlstm.BatcherFull, match=r"queue is full \(2 requests waiting\)"):
            batcher.submit(x, block=False)
        started = time.monotonic()
        with pytest.raises(fastlstm.BatcherFull, match="stayed full"):
            batcher.submit(x, timeout=0.2)
        assert 0.15 < time.monotonic() - started < TIMEOUT
        blocked: List[Any] = []
        waiter = threading.Thread(target=lambda: blocked.append(batcher.submit(x, timeout=TIMEOUT)))
        waiter.start()
        time.sleep(0.1)
        assert waiter.is_alive()  # waiting for room
        gate.open.set()  # room appears as the worker moves on
        waiter.join(TIMEOUT)
        assert not waiter.is_alive()
        for future in [first, *queued, *blocked]:
            assert_same_bits(future.result(TIMEOUT), model(x))
    finally:
        gate.open.set()
        batcher.close()


def test_close_wakes_blocked_submitters_drains_the_queue_and_stops_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fastlstm.LSTM(4, 8, seed=0)
    x = np.ones((3, 4), np.float32)
    batcher = fastlstm.Batcher(model, max_batch=1, max_delay_ms=0, max_queue=1, workers=2)
    gate = Gate(batcher._submit_plan, monkeypatch)
    futures = [batcher.submit(x), batcher.submit(x)]  # both workers hold one each
    assert gate.entered.wait(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while batcher.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    futures.append(batcher.submit(x))  # fills the queue
    outcome: List[BaseException] = []

    def blocked_submit() -> None:
        try:
            batcher.submit(x)
        except BaseException as error:  # noqa: BLE001
            outcome.append(error)

    waiter = threading.Thread(target=blocked_submit)
    waiter.start()
    time.sleep(0.1)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    waiter.join(TIMEOUT)
    assert len(outcome) == 1 and isinstance(outcome[0], fastlstm.BatcherClosed)
    gate.open.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive() and batcher.closed
    for future in futures:  # queued before close: all answered
        assert_same_bits(future.result(0), model(x))
    with pytest.raises(fastlstm.BatcherClosed, match="closed"):
        batcher.submit(x)
    assert not batcher_threads()


def test_a_cancelled_request_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fastlstm.LSTM(4, 8, seed=0)
    x = np.ones((3, 4), np.float32)
    log = BatchLog()
    with fastlstm.Batcher(model, max_batch=1, max_delay_ms=0, workers=1, on_batch=log) as batcher:
        gate = Gate(batcher._submit_plan, monkeypatch)
        first = batcher.submit(x)
        assert gate.entered.wait(TIMEOUT)
        cancelled = batcher.submit(x)
        assert cancelled.cancel()
        gate.open.set()
        first.result(TIMEOUT)
    assert log.sizes == [1]


def test_a_dropped_batcher_stops_its_worker() -> None:
    model = fastlstm.LSTM(4, 8, seed=0)
    batcher = fastlstm.Batcher(model)
    future = batcher.submit(np.ones((3, 4), np.float32))
    del batcher
    gc.collect()
    assert future.result(TIMEOUT)[0].shape == (3, 8)
    # the autouse fixture checks that the worker thread is gone


def test_asyncio_infer_matches_lone_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fastlstm.LSTM(4, 8, num_layers=2, seed=0)
    xs = random_sequences(np.random.default_rng(6), 10, 4)
    log = BatchLog()

    async def main(batcher: fastlstm.Batcher, gate: Gate) -> List[Any]:
        step = await batcher.infer_step(xs[0][0])
        assert_same_bits(step, model.step(xs[0][0]))
        held = batcher.submit(xs[0])
        assert await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, TIMEOUT)
        tasks = [asyncio.ensure_future(batcher.infer(x)) for x in xs]
        await asyncio.sleep(0.05)  # every task has queued its request while the worker is held
        gate.open.set()
        await asyncio.wrap_future(held)
        return await asyncio.gather(*tasks)

    with fastlstm.Batcher(model, max_batch=16, max_delay_ms=50, workers=1, on_batch=log) as batcher:
        results = asyncio.run(asyncio.wait_for(main(batcher, Gate(batcher._submit_plan, monkeypatch)), TIMEOUT))
    for x, result in zip(xs, results):
        assert_same_bits(result, model(x))
    assert log.sizes[-1] == len(xs)


def test_arguments_are_checked() -> None:
    model = fastlstm.LSTM(4, 8, seed=0)
    with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
        fastlstm.Batcher(model, max_batch=0)
    with pytest.raises(TypeError, match="max_queue must be an int, got float"):
        fastlstm.Batcher(model, max_queue=2.0)
    with pytest.raises(ValueError, match=r"max_delay_ms must lie in \[0, 60000\], got -1"):
        fastlstm.Batcher(model, max_delay_ms=-1)
    # Above the range every call would fail, one request at a time: refused when the batcher is made.
    with pytest.raises(ValueError, match=r"num_threads must lie in \[0, 1024\]"):
        fastlstm.Batcher(model, num_threads=fastlstm.MAX_THREADS + 1)
    with pytest.raises(TypeError, match="Batcher takes a fastlstm.LSTM, LSTMCell or Model, got Linear"):
        fastlstm.Batcher(torch.nn.Linear(2, 2))
    with fastlstm.Batcher(model, max_batch=4) as batcher:
        assert "max_batch=4" in repr(batcher) and "open" in repr(batcher)
    assert "closed" in repr(batcher)


def test_many_clients_many_rounds_under_load() -> None:
    """16 threads, each sending 20 requests back to back to 2 workers: every answer is its lone call's."""
    model = fastlstm.LSTM(8, 16, num_layers=2, seed=7)
    xs = random_sequences(np.random.default_rng(7), 64, 8)
    expected = [model(x) for x in xs]
    failures: List[int] = []
    with fastlstm.Batcher(model, max_batch=8, max_delay_ms=1, max_queue=4, workers=2) as batcher:
        def client(offset: int) -> None:
            for k in range(20):
                index = (offset * 7 + k) % len(xs)
                result = batcher.submit(xs[index], timeout=TIMEOUT).result(TIMEOUT)
                if result[0].tobytes() != expected[index][0].tobytes():
                    failures.append(index)

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(client, range(16), timeout=TIMEOUT))
    assert not failures


def test_a_lone_caller_does_not_wait_for_company() -> None:
    """The worker's last batch had one request: the next lone request goes at once, not after
    max_delay_ms (here far longer than the call)."""
    model = fastlstm.LSTM(4, 8, seed=0)
    x = np.ones((3, 4), np.float32)
    with fastlstm.Batcher(model, max_delay_ms=2_000) as batcher:
        for _ in range(3):
            started = time.monotonic()
            assert_same_bits(batcher.submit(x).result(TIMEOUT), model(x))
            assert time.monotonic() - started < 1.0


def test_calls_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call running alone takes every core; one starting while the other worker computes takes
    the rest, at least one (the thread pool serves one call at a time)."""
    model = fastlstm.LSTM(4, 8, seed=0)
    x = np.ones((3, 4), np.float32)
    for cores, expected in ((2, [2, 1]), (8, [8, 1])):
        batcher = fastlstm.Batcher(model, max_batch=1, max_delay_ms=0, workers=2, num_threads=cores)
        assert "workers=2" in repr(batcher)
        plan = batcher._submit_plan
        threads: List[int] = []
        entered, release = threading.Semaphore(0), threading.Event()
        lone = plan.run_one

        def run_one(payload: Any, num_threads: int) -> Any:
            threads.append(num_threads)
            entered.release()
            assert release.wait(TIMEOUT)
            return lone(payload, num_threads)

        monkeypatch.setattr(plan, "run_one", run_one)
        try:
            first = batcher.submit(x)
            assert entered.acquire(timeout=TIMEOUT)  # the first call holds the cores
            second = batcher.submit(x)
            assert entered.acquire(timeout=TIMEOUT)
            assert threads == expected
            release.set()
            for future in (first, second):
                assert_same_bits(future.result(TIMEOUT), model(x))
        finally:
            release.set()
            batcher.close()


def test_default_workers() -> None:
    model = fastlstm.LSTM(4, 8, seed=0)
    with fastlstm.Batcher(model, num_threads=1) as batcher:
        assert "workers=1" in repr(batcher)
    with fastlstm.Batcher(model, num_threads=2) as batcher:
        assert "workers=2" in repr(batcher)
    with fastlstm.Batcher(model, num_threads=4) as batcher:
        assert "workers=1" in repr(batcher)
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        fastlstm.Batcher(model, workers=0)
