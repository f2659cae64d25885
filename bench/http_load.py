"""`lab.py http`: a bounded HTTP load test of `fastlstm serve` against torch served the same way.

Both servers run the `medium` LSTM (I128 H256, 2 layers) with the same weights, on uvicorn +
Starlette, on 127.0.0.1 only: `fastlstm serve FILE` (requests merged by fastlstm.Batcher) and
bench/torch_server.py (one nn.LSTM call per request in Starlette's thread pool). Each request is one
sequence of 20-100 steps as a .npy body; the answer is an .npz of output, h_n and c_n. N client
threads, each on its own keep-alive connection, send requests back to back for a fixed time; servers
alternate A B B A in halves. The clients run on the same machine as the servers (they share its
cores), so absolute rates are lower than a remote load generator would see; the ratio is the point.
fastlstm's answers are checked bitwise against the model alone, torch's within 1e-4.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

import lab_options
from batching import MAX_STEPS, MIN_STEPS, NETWORK
from fastlstm.bench import report
from fastlstm.bench.cli import EXIT_MISMATCH, positive_float, positive_int, progress, publish, run_info

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_SECONDS = 10.0
DEFAULT_CLIENTS = 16
SERVERS = ("fastlstm serve", "torch")


def npy_bodies(seed: int, count: int = 64) -> List[bytes]:
    rng = np.random.default_rng(seed)
    bodies = []
    for steps in rng.integers(MIN_STEPS, MAX_STEPS + 1, count):
        buffer = io.BytesIO()
        np.save(buffer, rng.standard_normal((int(steps), NETWORK.input_size)).astype(np.float32))
        bodies.append(buffer.getvalue())
    return bodies


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: List[str], port: int) -> subprocess.Popen:
    import fastlstm

    # The servers import the fastlstm this lab runs (a checkout's in-place build, or the installed one).
    package_root = str(Path(fastlstm.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tempfile.gettempdir(),
                               env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited: {process.stderr.read().decode()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command} did not start within 120 s")


def post(connection: http.client.HTTPConnection, body: bytes) -> Dict[str, np.ndarray]:
    connection.request("POST", "/v1/predict", body, {"Content-Type": "application/x-npy"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
    return dict(np.load(io.BytesIO(data)))


def run_load(port: int, bodies: List[bytes], clients: int, seconds: float) -> Dict[str, Any]:
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[str] = []
    barrier = threading.Barrier(clients + 1)
    window: Dict[str, float] = {}

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        k = index * 7
        try:
            post(connection, bodies[k % len(bodies)])  # connect and warm up
            barrier.wait()
            while time.perf_counter() < window["deadline"]:
                started = time.perf_counter()
                post(connection, bodies[k % len(bodies)])
                latencies[index].append(time.perf_counter() - started)
                k += 1
        except Exception as error:  # noqa: BLE001 - reported
            errors.append(repr(error))
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    window["deadline"] = float("inf")
    try:
        barrier.wait()
        started = time.perf_counter()
        window["deadline"] = started + seconds
    except threading.BrokenBarrierError:
        started = time.perf_counter()
    for thread in threads:
        thread.join(seconds + 120)
    wall = time.perf_counter() - started
    samples = np.concatenate([np.asarray(s) for s in latencies]) * 1e3 if any(latencies) else np.zeros(0)
    return {"requests": int(samples.size), "wall_seconds": wall, "samples_ms": samples, "errors": errors}


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    samples = np.concatenate([run["samples_ms"] for run in runs])
    wall = sum(run["wall_seconds"] for run in runs)
    return {"requests": int(samples.size), "req_per_s": samples.size / wall,
            "p50_ms": float(np.percentile(samples, 50)) if samples.size else None,
            "p99_ms": float(np.percentile(samples, 99)) if samples.size else None,
            "errors": [error for run in runs for error in run["errors"]]}


def run(args: argparse.Namespace, command: str) -> int:
    import torch

    import fastlstm

    info = run_info(command)
    scratch = Path(tempfile.mkdtemp(prefix="fastlstm-http-"))
    model = fastlstm.LSTM(NETWORK.input_size, NETWORK.hidden_size, NETWORK.num_layers, seed=args.seed)
    model.save(str(scratch / "medium.safetensors"))
    torch.save({name: torch.from_numpy(np.array(array)) for name, array in model.state_dict().items()},
               scratch / "medium.pt")
    ports = {"fastlstm serve": free_port(), "torch": free_port()}
    commands = {
        "fastlstm serve": [sys.executable, "-m", "fastlstm.cli", "serve", str(scratch / "medium.safetensors"),
                           "--port", str(ports["fastlstm serve"]), "--max-batch", str(args.max_batch),
                           "--max-delay-ms", str(args.max_delay_ms), "--log-level", "warning"],
        "torch": [sys.executable, str(BENCH_DIR / "torch_server.py"), str(scratch / "medium.pt"),
                  "--port", str(ports["torch"])],
    }
    processes = {}
    try:
        for name in SERVERS:
            progress(f"lab http: starting {name} on 127.0.0.1:{ports[name]}")
            processes[name] = start(commands[name], ports[name])
        bodies = npy_bodies(args.seed)
        x = np.load(io.BytesIO(bodies[0]))
        expected = model(x)
        answers = {name: post(http.client.HTTPConnection("127.0.0.1", ports[name], timeout=60), bodies[0]) for name in SERVERS}
        got = answers["fastlstm serve"]
        bitwise = all(np.array_equal(got[key], value) for key, value in
                      zip(("output", "h_n", "c_n"), (expected[0], *expected[1])))
        torch_error = max(float(np.abs(answers["torch"][key] - value).max()) for key, value in
                          zip(("output", "h_n", "c_n"), (expected[0], *expected[1])))
        runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in SERVERS}
        for name in list(SERVERS) + list(reversed(SERVERS)):
            runs[name].append(run_load(ports[name], bodies, args.clients, args.seconds / 2))
            progress(f"lab http: {name} half done ({runs[name][-1]['requests']} requests)")
        results = {name: summarize(server_runs) for name, server_runs in runs.items()}
    finally:
        for process in processes.values():
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    rows = [[name, f"{r['req_per_s']:,.0f}", f"{r['req_per_s'] / results['torch']['req_per_s']:.2f}x",
             f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(len(r["errors"]))] for name, r in results.items()]
    header = report.header_lines(info["machine"], info["date"], info["command"]) + [
        f"`medium` LSTM ({NETWORK.input_size}-{NETWORK.hidden_size}, {NETWORK.num_layers} layers), one sequence of "
        f"{MIN_STEPS}-{MAX_STEPS} steps per request as .npy, answers as .npz; {args.clients} client threads with "
        f"keep-alive connections on the same machine; ~{args.seconds:g} s per server in two halves (A B B A)",
        f"fastlstm serve: --max-batch {args.max_batch} --max-delay-ms {args.max_delay_ms:g}; torch: "
        "bench/torch_server.py, one nn.LSTM call per request in Starlette's thread pool, 1 torch thread per call",
    ]
    checks = (f"fastlstm serve's answer bitwise equal to the model alone: {'yes' if bitwise else 'NO'}; "
              f"torch server's max abs difference: {torch_error:.2g}")
    table = report.markdown_table(["server", "req/s", "vs torch", "p50 ms", "p99 ms", "errors"], rows)
    data = {**info, "settings": {"clients": args.clients, "seconds": args.seconds, "max_batch": args.max_batch,
                                 "max_delay_ms": args.max_delay_ms, "seed": args.seed},
            "bitwise": bitwise, "torch_max_abs_error": torch_error, "servers": results}
    document = report.Report("fastlstm serve vs torch on the same web framework (HTTP load)", header,
                             [("Load", checks + "\n\n" + table)], [], data)
    publish(document, lab_options.output_dir(args), "http")
    return 0 if bitwise and torch_error < 1e-4 else EXIT_MISMATCH


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("http", help="HTTP load: fastlstm serve vs torch in the same framework",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=positive_int, default=DEFAULT_CLIENTS, metavar="N",
                        help=f"client threads (default: {DEFAULT_CLIENTS})")
    parser.add_argument("--seconds", type=positive_float, default=DEFAULT_SECONDS, metavar="S",
                        help=f"load duration per server (default: {DEFAULT_SECONDS:g})")
    parser.add_argument("--max-batch", type=positive_int, default=32, metavar="N")
    parser.add_argument("--max-delay-ms", type=float, default=1.0, metavar="MS")
    parser.add_argument("--seed", type=int, default=0)
    lab_options.add_output_arguments(parser, "http.md and http.json")
    parser.set_defaults(handler=run, parser=parser)
