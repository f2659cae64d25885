"""`fastlstm serve`: its arguments, and uvicorn started on the app."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..bench.cli import positive_int
from .config import ENVIRONMENT_VARIABLE, ServeConfig

DESCRIPTION = """\
Serve a model over HTTP on uvicorn. Concurrent requests are merged into batched calls by
fastlstm.Batcher (every answer is bitwise the model's answer to that request alone).

  POST /v1/predict  {"inputs": [x0, ...]} (JSON) or one .npy array (Content-Type: application/x-npy)
  GET  /v1/model    input and output names, shapes and dtypes; the weights' dtype; the limits
  GET  /healthz     GET /metrics (Prometheus text)

Without MODEL_FILE it serves the bundled airline-passengers forecaster (a few KB): one request is a
window of scaled months, shape (months, 1). Stop it with Ctrl-C or SIGTERM: requests in flight finish.
"""


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def register(subparsers: Any) -> None:
    """Add `serve` to the top-level `fastlstm` parser."""
    defaults = ServeConfig()
    parser = subparsers.add_parser("serve", help="serve a model over HTTP (needs fastlstm[serve])",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", metavar="MODEL_FILE",
                        help="a file fastlstm.load reads (.safetensors from save or convert, .pt, .npz); "
                             "default: the bundled airline forecaster")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="worker processes, each with its own model and batcher (default: 1)")
    parser.add_argument("--max-batch", type=positive_int, default=defaults.max_batch, metavar="N",
                        help=f"most requests per model call (default: {defaults.max_batch})")
    parser.add_argument("--max-delay-ms", type=non_negative_float, default=defaults.max_delay_ms, metavar="MS",
                        help=f"longest a request waits for others to join its batch (default: {defaults.max_delay_ms:g})")
    parser.add_argument("--max-queue", type=positive_int, default=defaults.max_queue, metavar="N",
                        help=f"requests waiting at most; more answer 503 (default: {defaults.max_queue})")
    parser.add_argument("--max-body-bytes", type=positive_int, default=defaults.max_body_bytes, metavar="N",
                        help=f"largest request body; larger answer 413 (default: {defaults.max_body_bytes})")
    parser.add_argument("--max-length", type=positive_int, default=defaults.max_length, metavar="T",
                        help=f"longest sequence (any axis that varies per request); longer answer 413 (default: {defaults.max_length})")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (default: info)")
    parser.set_defaults(handler=run_serve, parser=parser)


def run_serve(args: argparse.Namespace, command: str) -> int:
    try:
        import uvicorn

        from . import app as _app  # noqa: F401 - Starlette and prometheus_client, checked before loading anything
    except ImportError as error:
        print(f"fastlstm serve: error: {error.name or error} is not installed; install the serve extra: "
              f'pip install "fastlstm[serve]"', file=sys.stderr)
        return 2
    config = ServeConfig(None if args.model is None else os.path.abspath(args.model), args.max_batch,
                         args.max_delay_ms, args.max_queue, args.max_body_bytes, args.max_length)
    try:
        _app.create_app(config)  # load and describe the model once here: a bad file fails before listening
    except (OSError, ValueError, TypeError, KeyError) as error:
        print(f"fastlstm serve: error: cannot serve {config.model_path}: {error}", file=sys.stderr)
        return 2
    # Worker processes (and the single process alike) build the app from the environment, so that
    # every worker loads its own model.
    os.environ[ENVIRONMENT_VARIABLE] = config.to_environment()
    uvicorn.run("fastlstm.serve.app:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, timeout_graceful_shutdown=30)
    return 0
