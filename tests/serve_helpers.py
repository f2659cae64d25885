"""Start `fastlstm serve` as a real process on 127.0.0.1 and talk HTTP to it (stdlib only)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from child_process import SLOWDOWN

STARTUP_SECONDS = 60 * SLOWDOWN
REQUEST_SECONDS = 30 * SLOWDOWN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log: Any) -> None:
        self.process, self.port, self.log = process, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, path: str, body: Optional[bytes] = None, content_type: str = "application/json",
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        """(status, headers, body) of one request; 4xx/5xx are returned, not raised."""
        request = urllib.request.Request(self.url + path, data=body, method="GET" if body is None else "POST")
        if body is not None:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def predict_json(self, *inputs: np.ndarray) -> Tuple[int, Any]:
        status, _, body = self.request("/v1/predict", json.dumps({"inputs": [x.tolist() for x in inputs]}).encode())
        return status, json.loads(body)

    def predict_npy(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        buffer = io.BytesIO()
        np.save(buffer, x)
        status, headers, body = self.request("/v1/predict", buffer.getvalue(), "application/x-npy")
        assert status == 200, body
        return dict(np.load(io.BytesIO(body), allow_pickle=False))

    def metrics(self) -> Dict[str, float]:
        """Sample name with labels -> value, from /metrics."""
        status, _, body = self.request("/metrics")
        assert status == 200
        samples = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def logs(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"fastlstm serve exited with {server.process.returncode}:\n{server.logs()}")
        with contextlib.suppress(OSError):
            if server.request("/healthz")[0] == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"fastlstm serve did not answer /healthz within {STARTUP_SECONDS} s:\n{server.logs()}")


@contextlib.contextmanager
def running_server(*arguments: str) -> Iterator[Server]:
    """`fastlstm serve ARGUMENTS --port P` on 127.0.0.1, stopped (SIGTERM, then SIGKILL) afterwards."""
    port = free_port()
    log = tempfile.TemporaryFile()
    command: List[str] = [sys.executable, "-m", "fastlstm.cli", "serve", *arguments, "--host", "127.0.0.1",
                          "--port", str(port), "--log-level", "warning"]
    # From a temporary folder: a source checkout's unbuilt package must not shadow the installed one.
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
                               env=dict(os.environ))
    server = Server(process, port, log)
    try:
        wait_until_up(server)
        yield server
    finally:
        stop(server)
        log.close()


def stop(server: Server, timeout: float = 30) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout * SLOWDOWN)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout)
    return server.process.returncode
