"""Serve a fastlstm model on Ray Serve: N replicas, each batching its own requests with fastlstm.Batcher.

Ray Serve runs the replicas (processes, on any node of the cluster) and the HTTP proxy that spreads
requests over them; inside each replica, fastlstm.Batcher merges the requests it receives into
batched calls. The HTTP API is `fastlstm serve`'s predict: POST {"inputs": [x0, ...]} ->
{"outputs": [...], "names": [...]}, so clients need not know which one they talk to.

    python examples/ray_serve.py --smoke                     # local Ray (2 CPUs), a few requests, checked
    python examples/ray_serve.py --measure --seconds 10      # 1 vs 2 replicas under 16 clients
    python examples/ray_serve.py medium.safetensors --measure --steps 50   # the same on your model
    python examples/ray_serve.py MODEL_FILE --replicas 4 --port 8000   # serve until Ctrl-C

On a cluster: start Ray on each machine (`ray start --head` on one, `ray start --address HEAD:6379`
on the others), put the model file on storage every node reads (the same path everywhere), and run
this script on the head node with `--address auto`. Needs `pip install "fastlstm[ray]"`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from fastlstm.serve import BUNDLED_MODEL


def deployment(replicas: int, max_batch: int, max_delay_ms: float) -> Any:
    """The Ray Serve deployment: each replica loads the model file once and runs one Batcher."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    @serve.deployment(num_replicas=replicas, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256)
    class FastlstmModel:
        def __init__(self, model_file: str) -> None:
            import fastlstm
            from fastlstm.serve.endpoint import Endpoint

            # One thread per call: the replicas, not the threads inside one, share out the cores.
            fastlstm.set_num_threads(1)
            self.model = fastlstm.load(model_file)
            self.endpoint = Endpoint(self.model)
            self.batcher = fastlstm.Batcher(self.model, max_batch=max_batch, max_delay_ms=max_delay_ms)

        async def __call__(self, request: Request) -> Response:
            from fastlstm.serve.endpoint import RequestError
            from fastlstm.serve.parsing import json_body, parse_json

            try:
                arrays = parse_json(await request.body(), self.endpoint.inputs)
                self.endpoint.check_count(len(arrays))
                result = await self.batcher.infer(*self.endpoint.submit_args(arrays))
            except RequestError as error:
                return JSONResponse({"error": error.message}, status_code=error.status)
            except (TypeError, ValueError) as error:
                return JSONResponse({"error": str(error)}, status_code=422)
            names = [spec.name for spec in self.endpoint.outputs]
            return Response(json_body(names, self.endpoint.output_arrays(result)), media_type="application/json")

        def __del__(self) -> None:
            self.batcher.close()

    return FastlstmModel


def start(model_file: Path, replicas: int, port: int, max_batch: int, max_delay_ms: float) -> str:
    """Deploy on the connected Ray instance; return the predict URL."""
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = deployment(replicas, max_batch, max_delay_ms).bind(str(model_file))
    serve.run(app, name="fastlstm", route_prefix="/v1/predict")
    return f"http://127.0.0.1:{port}/v1/predict"


def predict(url: str, x: np.ndarray, timeout: float = 60) -> List[Any]:
    body = json.dumps({"inputs": [x.tolist()]}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["outputs"]


def example_inputs(model_file: Path, count: int, steps: int = 12, seed: int = 0) -> List[np.ndarray]:
    """Random first inputs for the model (`steps` long where the length varies), e.g. windows of 12
    months for the bundled forecaster."""
    import fastlstm
    from fastlstm.serve.endpoint import Endpoint

    spec = Endpoint(fastlstm.load(str(model_file))).inputs[0]
    shape = tuple(steps if size is None else size for size in spec.shape)
    rng = np.random.default_rng(seed)
    return [rng.random(shape).astype(spec.dtype) for _ in range(count)]


def smoke(url: str, model_file: Path) -> Dict[str, Any]:
    """A few concurrent requests, each answer checked against the model alone in this process."""
    import fastlstm

    model = fastlstm.load(str(model_file))
    inputs = example_inputs(model_file, 16)
    answers: List[Any] = [None] * len(inputs)
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, predict(url, inputs[i])))
               for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    alone = (lambda x: model(x)[0]) if isinstance(model, fastlstm.LSTM) else (lambda x: model(x[None])[0])
    equal = all(answer is not None and np.array_equal(np.asarray(answer[0], np.float32), alone(x))
                for x, answer in zip(inputs, answers))
    return {"requests": len(inputs), "all_equal_to_lone_calls": equal}


def load(url: str, model_file: Path, clients: int, seconds: float, steps: int) -> Dict[str, float]:
    """`clients` threads sending requests back to back for `seconds`: req/s, p50 and p99 (ms)."""
    inputs = example_inputs(model_file, 64, steps)
    latencies: List[List[float]] = [[] for _ in range(clients)]
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        k = index
        while time.monotonic() < deadline:
            started = time.perf_counter()
            predict(url, inputs[k % len(inputs)])
            latencies[index].append(time.perf_counter() - started)
            k += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    samples = np.concatenate([np.asarray(s) for s in latencies]) * 1e3
    return {"req_per_s": samples.size / wall, "p50_ms": float(np.percentile(samples, 50)),
            "p99_ms": float(np.percentile(samples, 99))}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("model", nargs="?", type=Path, default=BUNDLED_MODEL,
                        help="a model file (default: the bundled airline forecaster)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas to run (default: 2)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of Ray Serve's proxy (default: 8000)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster ('auto'); default: a local instance")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=1.0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="local Ray (2 CPUs), 16 checked requests, then stop")
    mode.add_argument("--measure", action="store_true", help="1 vs 2 replicas under --clients clients, then stop")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=12, help="sequence length of --measure's requests (default: 12)")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        if args.smoke:
            url = start(args.model, args.replicas, args.port, args.max_batch, args.max_delay_ms)
            print(json.dumps({"smoke": smoke(url, args.model), "replicas": args.replicas}))
            return 0
        if args.measure:
            results = {}
            for replicas in (1, 2):
                url = start(args.model, replicas, args.port, args.max_batch, args.max_delay_ms)
                load(url, args.model, args.clients, 1.0, args.steps)  # warm up
                results[replicas] = load(url, args.model, args.clients, args.seconds, args.steps)
                print(f"{replicas} replica(s): {results[replicas]}", file=sys.stderr)
                serve.delete("fastlstm")
            print(json.dumps({"model": str(args.model), "steps": args.steps, "clients": args.clients,
                              "seconds": args.seconds, "by_replicas": results}))
            return 0
        url = start(args.model, args.replicas, args.port, args.max_batch, args.max_delay_ms)
        print(f"serving {args.model} with {args.replicas} replica(s) at {url} (Ctrl-C stops)", file=sys.stderr)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
