"""`lab.py concurrency`: N client threads sharing one model, each sending batch-1 requests.

A service answers several callers at once, each on its own thread, all calling one loaded model.
For each client count (default 1, 2, 4, 8), that many `threading.Thread`s are released together by a
Barrier and each issues requests back to back for a fixed duration, timing every request with
perf_counter_ns. Reported: p50 / p99 latency per request and total throughput (requests / s).

Workloads, both on the `medium` network (I128 H256, 2 layers, unidirectional) at batch 1:
- step: one streaming step per request; each client is its own stream carrying its own (h, c)
  (fastlstm `model.step(x_t, (h, c), out=(y, h, c))`, torch `lstm(x, hx)`);
- seq20: a 20-step sequence per request from zero state (`model(x)`, `lstm(x)`), e.g. a short window.
H=256 is where a step stops being trivial (W_hh is 1 MiB per layer) but still fits in L2.

Threads: torch runs with `torch.set_num_threads(1)` for the whole run, because its intra-op pool is
shared by every client thread of the process (more would oversubscribe the cores once several
clients run). It is called again in each client thread: OpenMP's thread count is per thread, and a
thread that did not set it ran 2-thread OpenMP teams that stalled for tens of ms on this 2-core
machine (one client, medium step: p90 48 ms vs 0.46 ms). fastlstm runs with its default policy
(num_threads not passed), under which a call that finds the worker pool busy runs on its own
thread, so concurrent calls never oversubscribe either.
Engines alternate A B B A in halves of the duration, so both see the same machine weather.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

import lab_options
from fastlstm.bench import report
from fastlstm.bench.cli import EXIT_MISMATCH, positive_float, progress, publish, run_info
from fastlstm.bench.configs import CONFIGS_BY_NAME, BenchConfig
from fastlstm.bench.engines import ENGINE_LABELS, Outputs, fastlstm_model
from fastlstm.bench.suite import MATCH_TOLERANCE, max_abs_difference, torch_reference, warn
from fastlstm.bench.weights import WeightSource, make_input, random_weights
from streaming import initial_state

DEFAULT_CLIENTS = (1, 2, 4, 8)
DEFAULT_SECONDS = 2.0  # per workload, client count and engine
WARMUP_REQUESTS = 5  # per client thread, before the barrier (per-thread buffers, lazy init)
ENGINES = ("fastlstm", "torch")
NETWORK = CONFIGS_BY_NAME["medium"].lstm


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    description: str
    config: BenchConfig
    streaming: bool  # one step carrying each client's state, vs a sequence from zero state


WORKLOADS: Dict[str, Workload] = {
    workload.name: workload
    for workload in (
        Workload(
            "step",
            "one streaming step per request, each client carrying its own (h, c)",
            BenchConfig("medium-step", NETWORK, seq_len=1, batch=1),
            streaming=True,
        ),
        Workload(
            "seq20",
            "a 20-step sequence per request, from zero state",
            BenchConfig("medium-T20", NETWORK, seq_len=20, batch=1),
            streaming=False,
        ),
    )
}


# ------------------------------------------------------------------------------------ requests
@dataclasses.dataclass(frozen=True)
class Clients:
    """How an engine's clients are made: make_request() gives a new client's request function, with
    its own state and buffers over the model and input all clients share; thread_setup runs first
    in each client thread (per-thread library settings)."""

    make_request: Callable[[], Callable[[], object]]
    thread_setup: Callable[[], None] = lambda: None


def fastlstm_clients(model: Any, x: np.ndarray, workload: Workload) -> Clients:
    if not workload.streaming:
        return Clients(lambda: (lambda: model(x)))
    x_t = x[0]

    def make_client() -> Callable[[], object]:
        h, c = model.initial_state(1)
        y = np.empty((1, NETWORK.output_hidden_size), x.dtype)
        step, state, out = model.step, (h, c), (y, h, c)
        return lambda: step(x_t, state, out=out)

    return Clients(make_client)


def torch_clients(lstm: Any, x: np.ndarray, workload: Workload) -> Clients:
    import torch

    x_tensor = torch.from_numpy(x)
    one_thread = lambda: torch.set_num_threads(1)  # noqa: E731 - OpenMP's count is per thread
    if not workload.streaming:

        def make_sequence_client() -> Callable[[], object]:
            def request() -> object:
                with torch.inference_mode():
                    return lstm(x_tensor)

            return request

        return Clients(make_sequence_client, one_thread)

    def make_client() -> Callable[[], object]:
        layers = NETWORK.num_layers * (2 if NETWORK.bidirectional else 1)
        state = [(torch.zeros(layers, 1, NETWORK.output_hidden_size), torch.zeros(layers, 1, NETWORK.hidden_size))]

        def request() -> None:
            with torch.inference_mode():
                _, state[0] = lstm(x_tensor, state[0])

        return request

    return Clients(make_client, one_thread)


def check_outputs(source: WeightSource, model: Any, x: np.ndarray, workload: Workload) -> Optional[float]:
    """fastlstm's request vs torch's on the same input (and, for a step, the same random state)."""
    if source.torch_lstm is None:
        return None
    if not workload.streaming:
        reference = torch_reference(source, x)
        out, (h_n, c_n) = model(x)
        return max_abs_difference((out, h_n, c_n), reference)  # type: ignore[arg-type]
    import torch

    h0, c0 = initial_state(workload.config, seed=0)
    h, c = h0.copy(), c0.copy()
    y = np.empty((1, NETWORK.output_hidden_size), x.dtype)
    model.step(x[0], (h, c), out=(y, h, c))
    with torch.inference_mode():
        out, (h_n, c_n) = source.torch_lstm(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    expected: Outputs = (out.numpy(), h_n.numpy(), c_n.numpy())
    return max_abs_difference((y[None], h, c), expected)


# -------------------------------------------------------------------------------------- timing
@dataclasses.dataclass
class ClientRun:
    """All requests of one timed run: every client's latencies (ns) and the run's wall time."""

    latencies_ns: List[int]
    wall_ns: int


def run_clients(engine: Clients, clients: int, seconds: float) -> ClientRun:
    """Start `clients` threads together (Barrier); each sends requests until the deadline.

    Each thread first runs the engine's thread setup and makes WARMUP_REQUESTS untimed requests (its
    own buffers and thread-local state), then waits at the barrier; the last one to arrive opens the
    window for all. A request started before the deadline is completed and counted. The wall time
    runs from the barrier to the last client's last response.
    """
    requests = [engine.make_request() for _ in range(clients)]
    latencies: List[List[int]] = [[] for _ in range(clients)]
    finished_ns = [0] * clients
    errors: List[BaseException] = []
    window = {"start": 0, "deadline": 0}

    def open_window() -> None:
        window["start"] = time.perf_counter_ns()
        window["deadline"] = window["start"] + int(seconds * 1e9)

    barrier = threading.Barrier(clients, action=open_window)

    def client(index: int) -> None:
        request, samples, clock = requests[index], latencies[index], time.perf_counter_ns
        try:
            engine.thread_setup()
            for _ in range(WARMUP_REQUESTS):
                request()
            barrier.wait()
            deadline = window["deadline"]
            while True:
                start = clock()
                request()
                end = clock()
                samples.append(end - start)
                if end >= deadline:
                    break
            finished_ns[index] = end
        except threading.BrokenBarrierError:
            pass  # another client failed; its error is reported
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), name=f"bench-client-{i}") for i in range(clients)]
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        if gc_was_enabled:
            gc.enable()
    if errors:
        raise errors[0]
    return ClientRun(
        latencies_ns=[sample for samples in latencies for sample in samples],
        wall_ns=max(finished_ns) - window["start"],
    )


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """One engine under one client count: requests served, latency percentiles, throughput."""

    requests: int
    wall_seconds: float
    p50_us: float
    p99_us: float
    mean_us: float

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_seconds

    @classmethod
    def from_runs(cls, runs: Sequence[ClientRun]) -> "LoadResult":
        samples_us = np.asarray([s for run in runs for s in run.latencies_ns], dtype=np.float64) / 1e3
        return cls(
            requests=int(samples_us.size),
            wall_seconds=sum(run.wall_ns for run in runs) / 1e9,
            p50_us=float(np.percentile(samples_us, 50)),
            p99_us=float(np.percentile(samples_us, 99)),
            mean_us=float(samples_us.mean()),
        )


def measure_load(engines: Dict[str, Clients], clients: int, seconds: float) -> Dict[str, LoadResult]:
    """Each engine gets `seconds` in two halves, in A B B A order, and its halves are pooled."""
    order = list(engines) + list(reversed(engines))
    runs: Dict[str, List[ClientRun]] = {name: [] for name in engines}
    for name in order:
        runs[name].append(run_clients(engines[name], clients, seconds / 2))
    return {name: LoadResult.from_runs(engine_runs) for name, engine_runs in runs.items()}


@dataclasses.dataclass
class WorkloadResult:
    workload: Workload
    by_clients: Dict[int, Dict[str, LoadResult]]
    max_abs_error: Optional[float]
    details: Dict[str, str]
    notes: List[str]

    @property
    def mismatch(self) -> bool:
        return self.max_abs_error is not None and not self.max_abs_error <= MATCH_TOLERANCE


def run_workload(
    workload: Workload, clients: Sequence[int], seconds: float, seed: int, on_done: Callable[[str], None]
) -> WorkloadResult:
    source = random_weights(workload.config, seed)
    x = make_input(workload.config, seed)
    notes: List[str] = []
    engines: Dict[str, Clients] = {}
    details: Dict[str, str] = {}
    error: Optional[float] = None
    model = fastlstm_model(source)
    error = check_outputs(source, model, x, workload)
    engines["fastlstm"] = fastlstm_clients(model, x, workload)
    details["fastlstm"] = (
        "model.step(x_t, (h, c), out=(y, h, c))" if workload.streaming else "model(x)"
    ) + ", default thread policy (num_threads not passed)"
    if source.torch_lstm is not None:
        import torch

        engines["torch"] = torch_clients(source.torch_lstm, x, workload)
        details["torch"] = (
            f"torch {torch.__version__} nn.LSTM({'x, hx' if workload.streaming else 'x'}), inference_mode, "
            "torch.set_num_threads(1) in the process and in each client thread"
        )
    else:
        notes.append("torch skipped: torch is not installed (and fastlstm's outputs are not checked)")
    if error is not None and error > MATCH_TOLERANCE:
        message = (
            f"MISMATCH: fastlstm differs from torch on {workload.name}: "
            f"max abs error {error:.3g} > {MATCH_TOLERANCE:g}"
        )
        warn(message)
        notes.append(message)

    by_clients: Dict[int, Dict[str, LoadResult]] = {}
    for count in clients:
        by_clients[count] = measure_load(engines, count, seconds) if engines else {}
        summary = ", ".join(
            f"{ENGINE_LABELS[name]} {r.throughput:,.0f} req/s p50 {r.p50_us:.1f} us p99 {r.p99_us:.1f} us"
            for name, r in by_clients[count].items()
        )
        on_done(f"{workload.name} clients={count} ... done ({summary or 'nothing ran'})")
    return WorkloadResult(workload, by_clients, error, details, notes)


# -------------------------------------------------------------------------------------- report
def _latency_cell(result: Optional[LoadResult]) -> str:
    if result is None:
        return report.MISSING
    return f"{report.format_us(result.p50_us)} / {report.format_us(result.p99_us)}"


def _throughput_cell(result: Optional[LoadResult]) -> str:
    return report.MISSING if result is None else f"{result.throughput:,.0f}"


def throughput_ratio(loads: Dict[str, LoadResult]) -> Optional[float]:
    """fastlstm's throughput over torch's (above 1: fastlstm serves more)."""
    if "fastlstm" not in loads or "torch" not in loads:
        return None
    return loads["fastlstm"].throughput / loads["torch"].throughput


def workload_table(result: WorkloadResult) -> str:
    header = ["clients"]
    header += [f"{ENGINE_LABELS[name]} req/s" for name in ENGINES]
    header += ["fastlstm/torch throughput"]
    header += [f"{ENGINE_LABELS[name]} latency us (p50 / p99)" for name in ENGINES]
    rows = []
    for count, loads in result.by_clients.items():
        ratio = throughput_ratio(loads)
        row = [str(count)] + [_throughput_cell(loads.get(name)) for name in ENGINES]
        row += [report.MISSING if ratio is None else f"{ratio:.2f}x"]
        row += [_latency_cell(loads.get(name)) for name in ENGINES]
        rows.append(row)
    return report.markdown_table(header, rows)


def concurrency_report(results: Sequence[WorkloadResult], settings: Dict[str, Any], run: Dict[str, Any]) -> report.Report:
    """The report; run is cli.run_info's."""
    machine = run["machine"]
    header = report.header_lines(machine, run["date"], run["command"]) + [
        f"each client count: that many threading.Threads released together by a Barrier, each sending batch-1 "
        f"requests back to back; ~{settings['seconds']:g} s per engine, in two halves, engines alternating A B B A; "
        f"{WARMUP_REQUESTS} untimed requests per client first; per-request perf_counter_ns; GC paused",
        "throughput: requests completed by all clients / wall time from the barrier to the last response",
        "torch: `torch.set_num_threads(1)` for the whole run, since its intra-op pool is shared by all client "
        "threads of the process; called again in each client thread, because OpenMP's thread count is per "
        "thread (without it, client threads ran 2-thread OpenMP teams that stalled for tens of ms)",
        "fastlstm: default thread policy (num_threads not passed); a call that finds the worker pool busy "
        "runs on its own thread",
        f"this machine has {machine['available_cpus']} CPUs available: with more clients than CPUs, latency "
        "includes waiting for a core",
    ]
    sections = []
    for result in results:
        workload = result.workload
        checked = "not checked" if result.max_abs_error is None else (
            f"max abs error vs torch {result.max_abs_error:.2g}" + (" MISMATCH" if result.mismatch else ""))
        details = "\n".join(f"- {ENGINE_LABELS[name]}: {detail}" for name, detail in result.details.items())
        body = f"Network {workload.config.describe()} (the `medium` config's shapes); fastlstm output {checked}.\n\n"
        sections.append((f"{workload.name}: {workload.description}", body + details + "\n\n" + workload_table(result)))

    def load_json(load: LoadResult) -> Dict[str, Any]:
        return {**dataclasses.asdict(load), "throughput_per_s": load.throughput}

    workloads = {
        result.workload.name: {
            "description": result.workload.description,
            "config": result.workload.config.to_dict(),
            "shape": result.workload.config.describe(),
            "max_abs_error": result.max_abs_error,
            "matches_reference": None if result.max_abs_error is None else not result.mismatch,
            "engines": result.details,
            "by_clients": [
                {"clients": count, "engines": {name: load_json(load) for name, load in loads.items()},
                 "fastlstm_throughput_over_torch": throughput_ratio(loads)}
                for count, loads in result.by_clients.items()
            ],
            "notes": result.notes,
        }
        for result in results
    }
    notes = list(dict.fromkeys(note for result in results for note in result.notes))
    return report.Report("fastlstm under concurrent clients", header, sections, notes,
                         {**run, "settings": settings, "workloads": workloads})


def _workload_list(text: str) -> List[str]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names or any(name not in WORKLOADS for name in names):
        raise argparse.ArgumentTypeError(f"choose workloads from {','.join(WORKLOADS)}, got {text!r}")
    return names


def positive_int_list(text: str) -> List[int]:
    """'1,2,4,8' -> [1, 2, 4, 8], duplicates dropped, order kept."""
    try:
        values = list(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        values = []
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}")
    return values


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("concurrency", help="N client threads sending batch-1 requests: latency and throughput",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=positive_int_list, default=list(DEFAULT_CLIENTS), metavar="LIST",
                        help=f"comma-separated client thread counts (default: {','.join(map(str, DEFAULT_CLIENTS))})")
    parser.add_argument("--workloads", type=_workload_list, default=list(WORKLOADS), metavar="LIST",
                        help=f"comma-separated workloads (default: {','.join(WORKLOADS)})")
    parser.add_argument("--seconds", type=positive_float, default=DEFAULT_SECONDS, metavar="S",
                        help=f"load duration per workload, client count and engine (default: {DEFAULT_SECONDS:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")
    lab_options.add_output_arguments(parser, "concurrency.md and concurrency.json")
    parser.set_defaults(handler=run, parser=parser)


def _torch_threads(count: Optional[int]) -> Optional[int]:
    """Set torch's intra-op thread count (if torch is installed); return the previous one."""
    try:
        import torch
    except ImportError:
        return None
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    return previous


def run(args: argparse.Namespace, command: str) -> int:
    workloads = [WORKLOADS[name] for name in args.workloads]
    total = len(workloads) * len(args.clients)
    progress(f"lab concurrency: workloads {','.join(args.workloads)}, clients {','.join(map(str, args.clients))}, "
             f"~{args.seconds:g} s per engine each ({total} measurements)")
    run = run_info(command)
    done = [0]

    def on_done(message: str) -> None:
        done[0] += 1
        progress(f"[{done[0]}/{total}] {message}")

    previous_torch_threads = _torch_threads(1)
    try:
        results = [run_workload(w, args.clients, args.seconds, args.seed, on_done) for w in workloads]
    finally:
        _torch_threads(previous_torch_threads)
    settings = {"clients": args.clients, "workloads": args.workloads, "seconds": args.seconds, "seed": args.seed}
    document = concurrency_report(results, settings, run)
    publish(document, lab_options.output_dir(args), "concurrency")
    if any(result.mismatch for result in results):
        progress("!! fastlstm's output differs from torch's (see Notes)")
        return EXIT_MISMATCH
    return 0
