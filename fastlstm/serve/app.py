"""The ASGI app of `fastlstm serve` (Starlette): predictions through a fastlstm.Batcher, the model's
description, health and Prometheus metrics.

    POST /v1/predict   {"inputs": [x0, ...]} -> {"outputs": [y0, ...], "names": [...]}
                       or a .npy body (Content-Type: application/x-npy) -> an .npz of the outputs
    GET  /v1/model     kind, inputs and outputs (name, dtype, shape; null = varies), weights dtype, limits
    GET  /healthz      {"status": "ok"}
    GET  /metrics      Prometheus text

Every refusal is a 4xx with a JSON body {"error": message}: 400 malformed body, 413 too large a body
or too long a sequence, 415 unknown content type, 422 wrong shapes or dtypes; 503 when the queue is
full or the service is stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, AsyncIterator, Dict, List, Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import _model
from .._batcher import Batcher, BatcherClosed, BatcherFull
from .config import ServeConfig
from .endpoint import Endpoint, RequestError
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .parsing import JSON, NPY, NPZ, check_lengths, json_body, npz_body, parse_json, parse_npy

__all__ = ["create_app", "app_from_environment"]


def create_app(config: Optional[ServeConfig] = None, model: Any = None) -> Starlette:
    """The service's app for `config` (default: the bundled model and default limits). `model`, if
    given, is served instead of loading `config.model`. The Batcher starts with the app (its
    lifespan) and is closed, after it has answered every queued request, when the app stops."""
    config = config or ServeConfig()
    if model is None:
        model = _model.load(str(config.model_path))
    endpoint = Endpoint(model)
    metrics = Metrics()
    state: Dict[str, Any] = {"batcher": None}
    about = _about(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["batcher"] = Batcher(model, config.max_batch, config.max_delay_ms, config.max_queue,
                                   on_batch=metrics.on_batch)
        try:
            yield
        finally:
            state["batcher"].close()

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        try:
            batcher: Optional[Batcher] = state["batcher"]
            if batcher is None:
                raise RequestError(503, "the service is starting")
            content_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
            if content_type in _JSON_TYPES:
                content_type = JSON
            elif content_type not in (NPY, "application/octet-stream"):
                raise RequestError(415, f"send {JSON} or {NPY} (a .npy file), got Content-Type {content_type!r}")
            body = await _read_body(request, config.max_body_bytes)
            if content_type == JSON:
                arrays = parse_json(body, endpoint.inputs)
            else:
                arrays = parse_npy(body, endpoint.inputs)
            endpoint.check_count(len(arrays))
            check_lengths(arrays, endpoint.inputs, config.max_length)
            try:
                future = batcher.submit(*endpoint.submit_args(arrays), block=False)
            except (TypeError, ValueError) as error:
                raise RequestError(422, str(error)) from None
            try:
                result = await asyncio.wrap_future(future)
            except (TypeError, ValueError) as error:  # the model's own checks at call time
                raise RequestError(422, str(error)) from None
            outputs = endpoint.output_arrays(result)
            names = [spec.name for spec in endpoint.outputs]
            if len(names) != len(outputs):
                names = [f"output[{i}]" for i in range(len(outputs))]
            accept = request.headers.get("accept", "")
            if content_type != JSON and JSON not in accept:
                response = Response(npz_body(names, outputs), media_type=NPZ)
            else:
                response = Response(json_body(names, outputs), media_type=JSON)
            metrics.latency.observe(time.perf_counter() - started)
            return response
        except RequestError as error:
            return _error(error.status, error.message, metrics)
        except BatcherFull as error:
            return _error(503, str(error), metrics, {"Retry-After": "1"})
        except BatcherClosed:
            return _error(503, "the service is stopping", metrics)

    async def describe(request: Request) -> Response:
        return JSONResponse({**endpoint.describe(), "about": about,
                             "batching": {"max_batch": config.max_batch, "max_delay_ms": config.max_delay_ms,
                                          "max_queue": config.max_queue},
                             "limits": {"max_body_bytes": config.max_body_bytes, "max_length": config.max_length}})

    async def healthz(request: Request) -> Response:
        batcher = state["batcher"]
        if batcher is None or batcher.closed:
            return JSONResponse({"status": "stopping"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    async def unexpected(request: Request, error: Exception) -> Response:
        # Never expected (every known refusal is a 4xx above); said plainly rather than as a bare 500.
        return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"}, status_code=500)

    routes = [Route("/v1/predict", predict, methods=["POST"]), Route("/v1/model", describe, methods=["GET"]),
              Route("/healthz", healthz, methods=["GET"]), Route("/metrics", prometheus, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error, Exception: unexpected})
    app.add_middleware(_CountRequests, metrics=metrics)
    return app


def app_from_environment() -> Starlette:
    """The app factory uvicorn's worker processes call (`--workers N`): settings from the environment."""
    return create_app(ServeConfig.from_environment())


class _CountRequests:
    """ASGI middleware: count every HTTP answer by path and status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_counted(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
            self.metrics.requests.labels(path, str(status["code"])).inc()


# JSON, and what clients send it as when not told otherwise (curl -d: form-urlencoded).
_JSON_TYPES = {JSON, "text/plain", "application/x-www-form-urlencoded", ""}
_KNOWN_PATHS = {"/v1/predict", "/v1/model", "/healthz", "/metrics"}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, f"a bad Content-Length {declared!r}")
        if int(declared) > limit:
            raise RequestError(413, f"the body has {int(declared)} bytes; this service accepts at most {limit} (--max-body-bytes)")
    chunks: List[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body has more than {limit} bytes; this service accepts at most {limit} (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, metrics: Metrics, headers: Optional[Dict[str, str]] = None) -> Response:
    metrics.errors.labels(str(status)).inc()
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _about(config: ServeConfig) -> Dict[str, Any]:
    """The model file's name and, if a JSON companion (same name, .json) sits beside it, its content."""
    path = config.model_path
    companion = path.with_suffix(".json")
    about: Dict[str, Any] = {"file": path.name, "bundled": config.model is None}
    if companion.is_file():
        with contextlib.suppress(OSError, ValueError):
            about.update(json.loads(companion.read_text()))
    return about

