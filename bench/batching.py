"""`lab.py batching`: N client threads sending single sequences, directly or through fastlstm.Batcher.

The workload of issue #18: each client sends one unbatched `medium` sequence (I128 H256, 2 layers)
per request, of a length drawn uniformly from 20-100 steps, and waits for its answer. Ways to serve it:

- direct:       every client calls `model(x)` itself (default thread policy);
- direct-1t:    the same with `num_threads=1` (concurrent calls do not fight for the cores);
- batcher:      one `fastlstm.Batcher(model, max_batch, max_delay_ms)` with its defaults (2 workers
                sharing the cores: a call alone takes them all, two calls one each); clients
                `submit(x).result()`;
- batcher-1w:   the same with 1 worker, whose calls take every core.

Then the headroom: the kernel's CPU time per request for batches of 1-16 such sequences (one thread,
back to back, rows dropping out as their sequences end), and the requests per second that would
give on every core. No batcher on this kernel can beat that ceiling for 16 clients (a batch never
holds more than the 16 requests in flight, and one thread per call costs the least CPU).

Clients are threads released together by a Barrier (bench/concurrency.py's harness), each cycling
through its own 64 random sequences; every way sees the same inputs. Ways alternate A B C D D C B A
in halves of the duration. Every batcher answer is first checked bitwise against a lone `model(x)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import resource
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

import lab_options
from concurrency import Clients, ClientRun, LoadResult, positive_int_list, run_clients
from fastlstm.bench import report
from fastlstm.bench.cli import EXIT_MISMATCH, positive_float, positive_int, progress, publish, run_info
from fastlstm.bench.configs import CONFIGS_BY_NAME
from fastlstm.bench.machine import available_cpus

DEFAULT_CLIENTS = (1, 16)
DEFAULT_SECONDS = 4.0  # per client count and way
SEQUENCES_PER_CLIENT = 64
MIN_STEPS, MAX_STEPS = 20, 100
NETWORK = CONFIGS_BY_NAME["medium"].lstm
WAYS = ("direct", "direct-1t", "batcher", "batcher-1w")


def client_inputs(seed: int, client: int) -> List[np.ndarray]:
    rng = np.random.default_rng([seed, client])
    lengths = rng.integers(MIN_STEPS, MAX_STEPS + 1, SEQUENCES_PER_CLIENT)
    return [rng.standard_normal((int(t), NETWORK.input_size)).astype(np.float32) for t in lengths]


def ways(model: Any, batchers: Dict[str, Any], seed: int) -> Dict[str, Clients]:
    """One Clients per way; each new client of a way gets the next client's inputs."""

    def clients(call: Callable[[np.ndarray], Any]) -> Clients:
        counter = itertools.count()

        def make_request() -> Callable[[], object]:
            inputs = itertools.cycle(client_inputs(seed, next(counter)))
            return lambda: call(next(inputs))

        return Clients(make_request)

    made = {
        "direct": clients(lambda x: model(x)),
        "direct-1t": clients(lambda x: model(x, num_threads=1)),
    }
    for name, batcher in batchers.items():
        made[name] = clients(lambda x, submit=batcher.submit: submit(x).result())
    return made


def check_bitwise(model: Any, batcher: Any, seed: int) -> bool:
    """A burst of every client's first sequences through the batcher, each against a lone model(x)."""
    inputs = [x for client in range(16) for x in client_inputs(seed, client)[:4]]
    futures = [batcher.submit(x) for x in inputs]
    for x, future in zip(inputs, futures):
        output, (h_n, c_n) = future.result(timeout=60)
        lone, (lone_h, lone_c) = model(x)
        if not (np.array_equal(output, lone) and np.array_equal(h_n, lone_h) and np.array_equal(c_n, lone_c)):
            return False
    return True


HEADROOM_BATCHES = (1, 2, 4, 8, 16)
HEADROOM_ROUNDS = 16  # calls per batch size, the sizes interleaved round by round


def kernel_cpu_per_request(model: Any, seed: int) -> Dict[int, float]:
    """CPU seconds per request of one-thread calls on batches of each HEADROOM_BATCHES size, the
    sequences drawn like the clients' (zero-padded, lengths= as the Batcher calls). The sizes take
    turns, so that a noisy neighbour slows them all alike; the CPU time is the calling thread's."""
    rng = np.random.default_rng([seed, 1_000])
    calls: Dict[int, List[Tuple[np.ndarray, np.ndarray]]] = {}
    for batch in HEADROOM_BATCHES:
        calls[batch] = []
        for _ in range(HEADROOM_ROUNDS):
            lengths = rng.integers(MIN_STEPS, MAX_STEPS + 1, batch)
            x = rng.standard_normal((int(lengths.max()), batch, NETWORK.input_size)).astype(np.float32)
            calls[batch].append((x, lengths))
    spent = {batch: 0.0 for batch in HEADROOM_BATCHES}
    for round_index in range(-2, HEADROOM_ROUNDS):  # two warm-up rounds
        for batch in HEADROOM_BATCHES:
            x, lengths = calls[batch][max(round_index, 0)]
            before = time.thread_time()
            model(x, lengths=lengths, num_threads=1)
            if round_index >= 0:
                spent[batch] += time.thread_time() - before
    return {batch: spent[batch] / (batch * HEADROOM_ROUNDS) for batch in HEADROOM_BATCHES}


def cpu_seconds() -> float:
    """CPU time used by this process so far (every thread, user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_ways(engines: Dict[str, Clients], clients: int, seconds: float) -> Dict[str, Tuple[LoadResult, float]]:
    """Each way gets `seconds` in two halves, A B C ... C B A; its load and the process's CPU seconds
    per request. The machine is shared, so requests per CPU-second is the cost of a request whatever
    else runs, while requests per second also depends on how much of the machine the process gets."""
    runs: Dict[str, List[ClientRun]] = {name: [] for name in engines}
    cpu: Dict[str, float] = {name: 0.0 for name in engines}
    for name in list(engines) + list(reversed(engines)):
        before = cpu_seconds()
        runs[name].append(run_clients(engines[name], clients, seconds / 2))
        cpu[name] += cpu_seconds() - before
    measured = {}
    for name, engine_runs in runs.items():
        load = LoadResult.from_runs(engine_runs)
        measured[name] = (load, cpu[name] / max(load.requests, 1))
    return measured


@dataclasses.dataclass
class BatchSizes:
    """The batcher's calls, counted by its on_batch hook."""

    calls: int = 0
    requests: int = 0

    def __call__(self, size: int, seconds: float) -> None:
        self.calls += 1
        self.requests += size


def run(args: argparse.Namespace, command: str) -> int:
    import fastlstm

    progress(f"lab batching: clients {','.join(map(str, args.clients))}, ~{args.seconds:g} s per way each")
    info = run_info(command)
    model = fastlstm.LSTM(NETWORK.input_size, NETWORK.hidden_size, NETWORK.num_layers, seed=args.seed)
    sizes = {name: BatchSizes() for name in WAYS if name.startswith("batcher")}
    batchers = {
        "batcher": fastlstm.Batcher(model, args.max_batch, args.max_delay_ms, on_batch=sizes["batcher"]),
        "batcher-1w": fastlstm.Batcher(model, args.max_batch, args.max_delay_ms, workers=1, on_batch=sizes["batcher-1w"]),
    }
    try:
        progress("kernel CPU per request by batch size ...")
        headroom = kernel_cpu_per_request(model, args.seed)
        bitwise = all(check_bitwise(model, batcher, args.seed) for batcher in batchers.values())
        engines = ways(model, batchers, args.seed)
        results: Dict[int, Dict[str, Tuple[LoadResult, float]]] = {}
        mean_batch: Dict[int, Dict[str, float]] = {}
        for count in args.clients:
            for counter in sizes.values():
                counter.calls = counter.requests = 0
            results[count] = measure_ways(engines, count, args.seconds)
            mean_batch[count] = {name: c.requests / max(c.calls, 1) for name, c in sizes.items()}
            summary = ", ".join(f"{name} {r.throughput:,.0f} req/s p50 {r.p50_us / 1e3:.2f} ms"
                                for name, (r, _) in results[count].items())
            progress(f"clients={count} ... done ({summary})")
    finally:
        for batcher in batchers.values():
            batcher.close()
    document = batching_report(results, mean_batch, headroom, bitwise, args, info)
    publish(document, lab_options.output_dir(args), "batching")
    if not bitwise:
        progress("!! a batcher's answer differs from a lone model(x) (see Notes)")
        return EXIT_MISMATCH
    return 0


def batching_report(results: Dict[int, Dict[str, Tuple[LoadResult, float]]], mean_batch: Dict[int, Dict[str, float]],
                    headroom: Dict[int, float], bitwise: bool, args: argparse.Namespace,
                    info: Dict[str, Any]) -> report.Report:
    header = report.header_lines(info["machine"], info["date"], info["command"]) + [
        f"network {NETWORK.input_size}-{NETWORK.hidden_size}, {NETWORK.num_layers} layers (`medium`); one unbatched "
        f"sequence per request, length uniform in {MIN_STEPS}-{MAX_STEPS}; each client cycles through its own "
        f"{SEQUENCES_PER_CLIENT} sequences (the same for every way)",
        f"batchers: max_batch={args.max_batch}, max_delay_ms={args.max_delay_ms:g}; ~{args.seconds:g} s per way "
        "and client count in two halves, ways alternating A B C D D C B A; latency per request, perf_counter_ns",
        "throughput: requests completed by all clients / wall time from the barrier to the last response; "
        "CPU ms per request: this process's CPU time (all threads) over its requests, which does not depend on how "
        "much of a shared machine the process gets (16 direct callers are 16 runnable threads competing with other "
        "processes for the cores; a batcher computes on 2)",
    ]
    rows = []
    for count, loads in results.items():
        base, base_cpu = loads["direct"]
        for name in WAYS:
            load, cpu = loads[name]
            batch = mean_batch[count].get(name)
            rows.append([str(count), name, f"{load.throughput:,.0f}", f"{load.throughput / base.throughput:.2f}x",
                         f"{load.p50_us / 1e3:.2f}", f"{load.p99_us / 1e3:.2f}", f"{cpu * 1e3:.2f}",
                         f"{base_cpu / cpu:.2f}x", report.MISSING if batch is None else f"{batch:.1f}"])
    table = report.markdown_table(
        ["clients", "way", "req/s", "vs direct", "p50 ms", "p99 ms", "CPU ms/req", "req per CPU-s vs direct",
         "mean batch"], rows)
    notes = [] if bitwise else ["MISMATCH: a batcher's answer differed from a lone model(x)"]
    data = {**info, "settings": {"clients": args.clients, "seconds": args.seconds, "max_batch": args.max_batch,
                                 "max_delay_ms": args.max_delay_ms, "seed": args.seed},
            "bitwise_equal_to_lone_calls": bitwise,
            "kernel_cpu_seconds_per_request_by_batch": headroom,
            "by_clients": [{"clients": count, "ways": {name: {**dataclasses.asdict(load), "throughput_per_s": load.throughput,
                                                              "cpu_seconds_per_request": cpu}
                                                       for name, (load, cpu) in loads.items()},
                            "mean_batch": mean_batch[count]} for count, loads in results.items()]}
    section = ("Batcher vs direct calls", "Every batcher answer bitwise equal to a lone model(x): "
               f"{'yes' if bitwise else 'NO'}.\n\n" + table)
    return report.Report("fastlstm.Batcher under concurrent clients", header,
                         [section, headroom_section(headroom, results)], notes, data)


def headroom_section(headroom: Dict[int, float], results: Dict[int, Dict[str, Tuple[LoadResult, float]]]) -> Tuple[str, str]:
    cores = available_cpus()
    direct = {count: loads["direct"][0].throughput for count, loads in results.items()}
    rows = []
    for batch, cost in headroom.items():
        ceiling = cores / cost
        versus = ", ".join(f"{ceiling / rate:.2f}x at {count} clients" for count, rate in direct.items() if count >= batch)
        rows.append([str(batch), f"{cost * 1e3:.2f}", f"{headroom[1] / cost:.2f}x", f"{ceiling:,.0f}", versus or report.MISSING])
    table = report.markdown_table(
        ["batch", "kernel CPU ms/req (1 thread)", "vs batch 1", f"req/s on {cores} cores, kernel only", "vs direct calls"],
        rows)
    return ("Headroom", "The kernel alone, batches of the clients' sequences, one thread, back to back: what "
            "every request costs at least at each batch size, and the requests per second that would give on "
            "every core with no other work (no Python, no waiting).\n\n" + table)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("batching", help="N clients sending single sequences: direct calls vs fastlstm.Batcher",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=positive_int_list, default=list(DEFAULT_CLIENTS), metavar="LIST",
                        help=f"comma-separated client thread counts (default: {','.join(map(str, DEFAULT_CLIENTS))})")
    parser.add_argument("--seconds", type=positive_float, default=DEFAULT_SECONDS, metavar="S",
                        help=f"load duration per client count and way (default: {DEFAULT_SECONDS:g})")
    parser.add_argument("--max-batch", type=positive_int, default=32, metavar="N", help="the batchers' max_batch (default: 32)")
    parser.add_argument("--max-delay-ms", type=float, default=1.0, metavar="MS", help="the batchers' max_delay_ms (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")
    lab_options.add_output_arguments(parser, "batching.md and batching.json")
    parser.set_defaults(handler=run, parser=parser)

