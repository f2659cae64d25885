"""The `medium` nn.LSTM served by torch in the same framework as `fastlstm serve` (Starlette on uvicorn),
for bench/http_load.py: the same predict route and the same .npy-in, .npz-out bodies (fastlstm.serve's
own parsing), so that only the engine differs. Each request is one `lstm(x)` call under
inference_mode, run in Starlette's thread pool (torch releases the GIL while it computes) with one
torch thread per call, as bench/concurrency.py found best for concurrent callers.

    python bench/torch_server.py WEIGHTS.pt --port 8001
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional

import numpy as np


def make_app(weights: str) -> Any:
    import torch
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from fastlstm.serve.endpoint import ArraySpec, RequestError
    from fastlstm.serve.parsing import NPZ, npz_body, parse_npy

    state = torch.load(weights, weights_only=True)
    sizes = state["weight_ih_l0"].shape
    layers = sum(1 for name in state if name.startswith("weight_ih_l"))
    lstm = torch.nn.LSTM(sizes[1], sizes[0] // 4, layers)
    lstm.load_state_dict(state)
    lstm.eval()
    spec = [ArraySpec("input", np.dtype(np.float32), (None, sizes[1]))]

    def run(x: np.ndarray) -> List[np.ndarray]:
        torch.set_num_threads(1)  # OpenMP's thread count is per thread: set it in the pool's threads
        with torch.inference_mode():
            output, (h_n, c_n) = lstm(torch.from_numpy(x))
        return [output.numpy(), h_n.numpy(), c_n.numpy()]

    async def predict(request: Request) -> Response:
        try:
            (x,) = parse_npy(await request.body(), spec)
        except RequestError as error:
            return JSONResponse({"error": error.message}, status_code=error.status)
        outputs = await run_in_threadpool(run, x)
        return Response(npz_body(["output", "h_n", "c_n"], outputs), media_type=NPZ)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/v1/predict", predict, methods=["POST"]), Route("/healthz", healthz)])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help="an nn.LSTM state_dict (.pt)")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    import torch
    import uvicorn

    torch.set_num_threads(1)
    uvicorn.run(make_app(args.weights), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
