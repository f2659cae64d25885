"""fastlstm.Batcher: dynamic batching of concurrent requests inside one process.

At batch 1 an LSTM step is bound by reading the recurrent weights; a batch of 8 reads them once for
8 rows, so it costs much less per sequence. The batcher queues requests from any number of threads
(or asyncio tasks), and a worker thread runs whatever is waiting as one batched call, then hands
each caller its own rows. The per-request work (checks, copies) runs in the callers' threads; the
worker only merges, calls and splits. Workers share the cores: a call takes every core no other
call is using, at least one (the thread pool serves one call at a time; a second call runs on its
own thread). On two cores the default is two workers: a lone call takes both cores, and under load
two single-threaded batches compute more than one batch split over both.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
import weakref
from typing import Any, Callable, Deque, List, Optional, Tuple

from ._batch_plans import Plan, Request, step_plan, submit_plan
from ._system import MAX_THREADS, get_num_threads

__all__ = ["Batcher", "BatcherFull", "BatcherClosed"]

# How long close() and the finalizer let the worker drain by default before giving up on joining it.
_DEFAULT_CLOSE_TIMEOUT = 60.0


class BatcherFull(RuntimeError):
    """The batcher's queue is full and the caller asked not to wait (or waited past its timeout)."""


class BatcherClosed(RuntimeError):
    """The batcher is closed: it takes no new requests."""


class _Pending:
    """A queued request: its plan, its checked arrays, its future and when it arrived."""

    __slots__ = ("plan", "request", "future", "arrived")

    def __init__(self, plan: Plan, request: Request, future: "concurrent.futures.Future[Any]") -> None:
        self.plan = plan
        self.request = request
        self.future = future
        self.arrived = time.monotonic()


class _Queue:
    """The queue and the worker's loop. Kept apart from Batcher so that the worker thread holds no
    reference to the Batcher: a batcher dropped without close() is finalised, which drains and
    stops the worker instead of leaving it waiting forever."""

    def __init__(self, max_batch: int, max_delay: float, max_queue: int, num_threads: int,
                 on_batch: Optional[Callable[[int, float], None]]) -> None:
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_queue = max_queue
        self.num_threads = num_threads  # the cores all calls share; 0: fastlstm.get_num_threads()
        self.busy_threads = 0  # threads of the calls running now
        self.on_batch = on_batch
        self.items: Deque[_Pending] = collections.deque()
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)  # the worker waits here for requests
        self.space = threading.Condition(self.lock)  # blocked submitters wait here for room
        self.closed = False

    # ----------------------------------------------------------------------------- callers' side
    def put(self, item: _Pending, block: bool, timeout: Optional[float]) -> None:
        with self.lock:
            if self.closed:
                raise BatcherClosed("the batcher is closed and takes no new requests")
            if len(self.items) >= self.max_queue:
                if not block:
                    raise BatcherFull(f"the batcher's queue is full ({self.max_queue} requests waiting); try again later")
                deadline = None if timeout is None else time.monotonic() + timeout
                while len(self.items) >= self.max_queue and not self.closed:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise BatcherFull(
                            f"the batcher's queue stayed full ({self.max_queue} requests waiting) for {timeout:g} s"
                        )
                    self.space.wait(remaining)
                if self.closed:
                    raise BatcherClosed("the batcher was closed while this request waited for room in its queue")
            self.items.append(item)
            # All workers: one may be waiting for its batch to fill, another idle.
            self.arrived.notify_all()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.arrived.notify_all()
            self.space.notify_all()

    # ----------------------------------------------------------------------------- worker's side
    def run(self) -> None:
        """The worker: take a batch, run it, repeat; after close(), drain what is queued, then return."""
        expected, free_since = 1, time.monotonic()
        while True:
            taken = self._take(expected, free_since)
            if taken is None:
                return
            batch, threads = taken
            try:
                self._run_batch(batch, threads)
            except BaseException as error:  # noqa: BLE001 - a bug here must not leave callers waiting forever
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
            finally:
                with self.lock:
                    self.busy_threads -= threads
            # The callers just answered often send their next request at once (a client loop, a
            # stream's next step): expect as many again.
            expected, free_since = len(batch), time.monotonic()

    def _take(self, expected: int, free_since: float) -> Optional[Tuple[List[_Pending], int]]:
        """The next batch: the oldest request and up to max_batch - 1 later ones with the same plan and
        key. It goes at once when `expected` of them wait (as many as this worker's last batch, so
        a lone caller never waits for company) or max_batch do; else once max_delay has passed since
        the oldest arrived or since this worker became free, whichever is later, so that requests
        queued during the last call do not leave without the callers that call just answered (which
        would split the callers into a large and a small batch for good). At once after close().
        Also returns the threads its call may use: the cores no other call is using, at least one."""
        expected = min(expected, self.max_batch)
        with self.lock:
            while True:
                if not self.items:
                    if self.closed:
                        return None
                    self.arrived.wait()  # woken by put() or close()
                    continue
                first = self.items[0]
                if self.closed or self._count_mergeable(first) >= expected:
                    break
                remaining = max(first.arrived, free_since) + self.max_delay - time.monotonic()
                if remaining <= 0:
                    break
                # Another worker may take `first` meanwhile: everything is looked at again after the wait.
                self.arrived.wait(remaining)
            batch, kept = [], collections.deque()
            for item in self.items:
                if len(batch) < self.max_batch and item.plan is first.plan and item.request.key == first.request.key:
                    batch.append(item)
                else:
                    kept.append(item)
            self.items = kept
            self.space.notify(len(batch))
            cores = self.num_threads or get_num_threads()
            threads = max(1, cores - self.busy_threads)
            self.busy_threads += threads
            return batch, threads

    def _count_mergeable(self, first: _Pending) -> int:
        plan, key = first.plan, first.request.key
        return sum(1 for item in self.items if item.plan is plan and item.request.key == key)

    def _run_batch(self, batch: List[_Pending], threads: int) -> None:
        # A future cancelled while queued is dropped; the others are marked running (no more cancel).
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not batch:
            return
        plan = batch[0].plan
        started = time.perf_counter()
        results: Optional[List[Any]] = None
        if len(batch) > 1:
            try:
                results = plan.run_batch([item.request.payload for item in batch], threads)
            except Exception:  # noqa: BLE001 - each request is retried alone below and gets its own error
                results = None
        if results is None:
            # A lone request, or a merged call that failed: each request runs alone, so one bad
            # request fails alone and the others still get their results.
            for item in batch:
                try:
                    item.future.set_result(plan.run_one(item.request.payload, threads))
                except BaseException as error:  # noqa: BLE001 - delivered to its caller
                    item.future.set_exception(error)
        else:
            for item, result in zip(batch, results):
                item.future.set_result(result)
        if self.on_batch is not None:
            try:
                self.on_batch(len(batch), time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - a metrics hook must not stop the worker
                pass


def _finalize(queue: _Queue, threads: List[threading.Thread]) -> None:
    queue.close()
    for thread in threads:
        if thread is not threading.current_thread():
            thread.join(_DEFAULT_CLOSE_TIMEOUT)


class Batcher:
    """Merge concurrent requests to one model into batched calls, from any number of threads.

        with fastlstm.Batcher(model, max_batch=32, max_delay_ms=1.0) as batcher:
            future = batcher.submit(x)                    # any thread; x: one sequence (T, input_size)
            output, (h_n, c_n) = future.result()          # exactly model(x), bitwise
            output, (h_n, c_n) = await batcher.infer(x)   # the same from asyncio
            y, (h, c) = batcher.step(x_t, (h, c)).result()  # one step of one stream: model.step(x_t, (h, c))

    What a request is, per model:

    - `fastlstm.LSTM`: `submit(x, hx=None)`, one unbatched sequence `(T, input_size)` and optional 2-D
      `(h0, c0)`; the result is `model(x, hx)`. Sequences of different lengths share one call
      (`lengths=`). `step(x_t, state=None)`: one stream's step `(input_size,)` with its own 2-D `(h, c)`;
      the result is `model.step(x_t, state)`.
    - `fastlstm.LSTMCell`: `submit(x, hx=None)` (or `step`), `x` of shape `(input_size,)`; the result
      is `cell(x, hx)`.
    - `fastlstm.Model` (from `fastlstm.convert`): `submit(*inputs)`, one example, each input without
      its batch axis; the result is `model(*(x[None] for x in inputs))` with axis 0 of every output
      dropped. Axis 0 must be the batch in every input and output (checked when the batcher is
      made, by running 3 examples together and alone); only examples of equal shapes share a
      call (no padding).

    Inputs are numpy arrays of the model's dtype. A bad request raises `TypeError`/`ValueError` from
    `submit` itself, in the caller's thread, and never reaches a batch. Should a merged call fail
    anyway, each of its requests runs alone and gets its own result or error.

    A batch runs at once when as many mergeable requests wait as the worker's last batch had (so a
    lone caller never waits for company, and callers that send their next request as soon as they
    are answered stay together) or when `max_batch` do; otherwise when the oldest has waited
    `max_delay_ms`, counted from when the worker became free if that is later. While one worker
    computes, the next batch gathers for the other. At most `max_queue`
    requests wait: then `submit(..., block=True)` (the default) waits for room, up to `timeout`
    seconds, and `block=False` raises `BatcherFull` at once. `close()` takes no new requests
    (`BatcherClosed`), runs every queued one and stops the worker thread; leaving the `with` block
    closes too.

    Args:
        model: a fastlstm.LSTM, LSTMCell or Model.
        max_batch: most requests per call (>= 1).
        max_delay_ms: how long a batch smaller than the worker's last one waits for more requests
            (>= 0), counted from when its oldest request arrived or when the worker became free,
            whichever is later (a request queued during a call waits for that call too).
        max_queue: most requests waiting at once (>= 1).
        workers: worker threads, each running one batch at a time (>= 1). Default: 2 for an LSTM or
            LSTMCell on exactly 2 cores (num_threads, or fastlstm.get_num_threads() when the
            batcher is made), else 1: with more cores one call uses them all through the thread
            pool, and a second worker would compute on a single core beside it. A Model's calls
            take fastlstm.set_num_threads's cores each: one worker. bench/lab.py batching measures
            the choices.
        num_threads: the cores the calls of an LSTM or LSTMCell share, at most MAX_THREADS
            (0: fastlstm.get_num_threads() at each call). A call takes every core no other call
            is using, at least one; a Model's calls follow fastlstm.set_num_threads.
        on_batch: optional `callback(batch_size, seconds)`, called by the worker after each call
            (for metrics; its exceptions are ignored).
    """

    def __init__(self, model: Any, max_batch: int = 32, max_delay_ms: float = 1.0, max_queue: int = 1024, *,
                 workers: Optional[int] = None, num_threads: int = 0,
                 on_batch: Optional[Callable[[int, float], None]] = None) -> None:
        checked = [("max_batch", max_batch, 1), ("max_queue", max_queue, 1), ("num_threads", num_threads, 0)]
        if workers is not None:
            checked.append(("workers", workers, 1))
        for name, value, low in checked:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        if num_threads > MAX_THREADS:  # else every call would fail, request by request
            raise ValueError(f"num_threads must lie in [0, {MAX_THREADS}] (0: fastlstm.get_num_threads()), "
                             f"got {num_threads}")
        if isinstance(max_delay_ms, bool) or not isinstance(max_delay_ms, (int, float)):
            raise TypeError(f"max_delay_ms must be a number, got {type(max_delay_ms).__name__}")
        if not 0 <= max_delay_ms <= 60_000:
            raise ValueError(f"max_delay_ms must lie in [0, 60000], got {max_delay_ms}")
        self._submit_plan = submit_plan(model)
        self._step_plan = step_plan(model)
        self._model = model
        if workers is None:
            workers = 2 if self._submit_plan.takes_threads and (num_threads or get_num_threads()) == 2 else 1
        self._queue = _Queue(max_batch, max_delay_ms / 1e3, max_queue, num_threads, on_batch)
        self._threads = [threading.Thread(target=self._queue.run, name=f"fastlstm-batcher-{index}", daemon=True)
                         for index in range(workers)]
        for thread in self._threads:
            thread.start()
        self._finalizer = weakref.finalize(self, _finalize, self._queue, self._threads)

    @property
    def model(self) -> Any:
        """The model the batcher calls."""
        return self._model

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._queue.closed

    def pending(self) -> int:
        """Requests waiting for a batch now."""
        with self._queue.lock:
            return len(self._queue.items)

    def submit(self, *args: Any, block: bool = True, timeout: Optional[float] = None,
               **kwargs: Any) -> "concurrent.futures.Future[Any]":
        """Queue one request (see the class docstring) and return its Future.

        block/timeout: when the queue is full, wait for room (at most `timeout` seconds; None waits
        until there is room or the batcher closes), or with block=False raise BatcherFull at once.
        """
        return self._put(self._submit_plan, args, kwargs, block, timeout)

    def step(self, *args: Any, block: bool = True, timeout: Optional[float] = None,
             **kwargs: Any) -> "concurrent.futures.Future[Any]":
        """Queue one streaming step `(x_t, state=None)` of one stream and return its Future; the
        result is `model.step(x_t, state)` for an LSTM, `cell(x_t, state)` for an LSTMCell. Steps of
        many streams run as one batched step."""
        if self._step_plan is None:
            raise TypeError(f"step is for fastlstm.LSTM and LSTMCell; a {type(self._model).__name__} takes submit()")
        return self._put(self._step_plan, args, kwargs, block, timeout)

    async def infer(self, *args: Any, **kwargs: Any) -> Any:
        """`submit` for asyncio: `output, (h_n, c_n) = await batcher.infer(x)`. Never blocks the event
        loop: when the queue is full it raises BatcherFull."""
        return await asyncio.wrap_future(self._put(self._submit_plan, args, kwargs, False, None))

    async def infer_step(self, *args: Any, **kwargs: Any) -> Any:
        """`step` for asyncio (never blocks the event loop; BatcherFull when the queue is full)."""
        return await asyncio.wrap_future(self.step(*args, block=False, **kwargs))

    def _put(self, plan: Plan, args: Tuple[Any, ...], kwargs: dict, block: bool,
             timeout: Optional[float]) -> "concurrent.futures.Future[Any]":
        if self._queue.closed:
            raise BatcherClosed("the batcher is closed and takes no new requests")
        request = plan.check(args, kwargs)
        future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        self._queue.put(_Pending(plan, request, future), block, timeout)
        return future

    def close(self, timeout: Optional[float] = None) -> None:
        """Take no new requests, run every queued one, and stop the worker thread (waiting for it at
        most `timeout` seconds; None waits until it has drained). Safe to call more than once."""
        self._queue.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            self._finalizer.detach()

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        queue = self._queue
        state = "closed" if queue.closed else "open"
        return (f"fastlstm.Batcher({type(self._model).__name__}, max_batch={queue.max_batch}, "
                f"max_delay_ms={queue.max_delay * 1e3:g}, max_queue={queue.max_queue}, workers={len(self._threads)}; {state})")
