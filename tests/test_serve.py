"""`fastlstm serve`: the real server on 127.0.0.1, over HTTP. Answers equal the model's own (bitwise
through .npy, exactly through JSON), bad requests get a 4xx with a JSON message and the server
keeps serving, metrics count what happened, SIGTERM lets requests in flight finish."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

import fastlstm  # noqa: E402
from fastlstm.serve import BUNDLED_MODEL  # noqa: E402
from serve_helpers import REQUEST_SECONDS, SLOWDOWN, Server, free_port, running_server, stop, wait_until_up  # noqa: E402


@pytest.fixture(scope="module")
def bundled() -> Any:
    with running_server("--max-length", "64", "--max-body-bytes", "100000") as server:
        yield server


@pytest.fixture(scope="module")
def lstm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "lstm.safetensors"
    fastlstm.LSTM(3, 8, num_layers=2, seed=5).save(str(path))
    return path


@pytest.fixture(scope="module")
def slow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LSTM whose requests of thousands of steps take a large fraction of a second."""
    path = tmp_path_factory.mktemp("serve") / "slow.safetensors"
    fastlstm.LSTM(8, 512, num_layers=2, seed=1).save(str(path))
    return path


def slow_request(steps: int) -> bytes:
    """A request of `steps` steps for slow_file; a twentieth as many in a sanitized build, whose
    kernels run 30-50x slower (the graceful shutdown waits 30 s at most)."""
    body = io.BytesIO()
    np.save(body, np.full((steps if SLOWDOWN == 1 else steps // 20, 8), 0.5, np.float32))
    return body.getvalue()


def test_the_bundled_model_is_small_and_described(bundled: Server) -> None:
    assert BUNDLED_MODEL.stat().st_size < 16_000
    status, _, body = bundled.request("/v1/model")
    assert status == 200
    described = json.loads(body)
    assert described["kind"] == "Model" and described["weights_dtype"] == "float32"
    assert described["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 1], "required": True}]
    assert described["outputs"] == [{"name": "output", "dtype": "float32", "shape": [1], "required": True}]
    assert described["about"]["bundled"] and described["about"]["scaling"]["max"] > described["about"]["scaling"]["min"]
    assert described["limits"] == {"max_body_bytes": 100000, "max_length": 64}
    assert bundled.request("/healthz")[:1] == (200,)


def test_predictions_equal_the_model_alone(bundled: Server) -> None:
    model = fastlstm.load(str(BUNDLED_MODEL))
    window = np.linspace(0.2, 0.6, 12, dtype=np.float32)[:, None]
    expected = model(window[None])[0]
    status, answer = bundled.predict_json(window)
    assert status == 200 and answer["names"] == ["output"]
    assert np.array_equal(np.asarray(answer["outputs"][0], np.float32), expected)  # float32 -> JSON -> float32 is exact
    assert bundled.predict_npy(window)["output"].tobytes() == expected.tobytes()


def test_concurrent_requests_are_batched_and_counted(bundled: Server) -> None:
    model = fastlstm.load(str(BUNDLED_MODEL))
    before = bundled.metrics()
    rng = np.random.default_rng(0)
    windows = [rng.random((12, 1), dtype=np.float32) for _ in range(32)]
    answers: List[Any] = [None] * len(windows)

    def client(index: int) -> None:
        answers[index] = bundled.predict_npy(windows[index])["output"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(windows))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_SECONDS)
    for window, answer in zip(windows, answers):
        assert answer is not None and answer.tobytes() == model(window[None])[0].tobytes()
    after = bundled.metrics()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('fastlstm_http_requests_total{path="/v1/predict",status="200"}') == len(windows)
    assert delta("fastlstm_predict_latency_seconds_count") == len(windows)
    assert delta("fastlstm_batch_size_sum") == len(windows)  # every request went through the batcher
    assert 1 <= delta("fastlstm_batch_size_count") <= len(windows)


def npy_header(header: str) -> bytes:
    """A version 1.0 .npy body with this header and no data."""
    text = header.encode("latin1") + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


BAD_REQUESTS = [
    (b"{", "application/json", 400, "not valid JSON"),
    (b'{"inputs": [[["a"]]]}', "application/json", 400, "must hold numbers only"),
    (b'{"inputs": [[[true]]]}', "application/json", 400, "true and false are not"),
    (b'{"inputs": [[[1], [2, 3]]]}', "application/json", 400, "rectangular nested list"),
    (b'{"inputs": [[[NaN]]]}', "application/json", 400, "finite numbers, got NaN"),
    (b'{"inputs": [[[1]]], "extra": 1}', "application/json", 400, "and nothing else"),
    (b'{"inputs": [[[1, 2]]]}', "application/json", 422, "axis 2 must be 1"),
    (b'{"inputs": [[1]]}', "application/json", 422, "without its batch axis"),
    (b'{"inputs": []}', "application/json", 422, "takes 1 (x) inputs, got 0"),
    (b'{"inputs": [[[1e300]]]}', "application/json", 422, "too large for float32"),
    (json.dumps({"inputs": [[[0.5]] * 65]}).encode(), "application/json", 413, "at most 64 (--max-length)"),
    (b"0" * 100001, "application/json", 413, "at most 100000 (--max-body-bytes)"),
    (b"\x93NUMPY\x01\x00{", "application/x-npy", 400, "not a valid .npy array"),
    (b'{"inputs": [[[1e400]]]}', "application/json", 422, "too large for float32"),  # reads as inf
    # hostile .npy headers: sizes past 64 bits (2**64 elements; 2**70), a fortran_order that is no bool
    (npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }"),
     "application/x-npy", 400, "declares"),
    (npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1180591620717411303424,), }"),
     "application/x-npy", 400, "declares"),
    (npy_header("{'descr': '<f4', 'fortran_order': 'yes', 'shape': (12, 1), }"),
     "application/x-npy", 400, "fortran_order must be True or False"),
    (b"x", "image/png", 415, "application/x-npy"),
]


@pytest.mark.parametrize("body, content_type, status, message", BAD_REQUESTS)
def test_bad_requests_get_4xx_with_a_clear_message(bundled: Server, body: bytes, content_type: str, status: int,
                                                   message: str) -> None:
    got, headers, answer = bundled.request("/v1/predict", body, content_type)
    assert got == status, answer
    assert headers["content-type"].startswith("application/json")
    assert message in json.loads(answer)["error"]
    assert bundled.predict_json(np.full((12, 1), 0.5, np.float32))[0] == 200  # still serving


def test_npy_of_the_wrong_dtype_or_size_is_refused(bundled: Server) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((12, 1)))
    status, _, body = bundled.request("/v1/predict", buffer.getvalue(), "application/x-npy")
    assert status == 422 and "must have dtype float32, got float64" in json.loads(body)["error"]
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((12, 1), np.float32))
    truncated = buffer.getvalue()[:-8]
    status, _, body = bundled.request("/v1/predict", truncated, "application/x-npy")
    assert status == 400 and "declares (12, 1) float32 (48 bytes) but the body holds 40" in json.loads(body)["error"]
    errors = bundled.metrics()
    assert errors['fastlstm_predict_errors_total{status="422"}'] >= 1
    assert bundled.request("/nope")[0] == 404 and bundled.request("/v1/predict")[0] == 405


def test_an_lstm_file_with_states_and_unknown_files_refused(lstm_file: Path, tmp_path: Path) -> None:
    model = fastlstm.load(str(lstm_file))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 3)).astype(np.float32)
    h0, c0 = (rng.standard_normal(s.shape).astype(np.float32) for s in model.initial_state())
    with running_server(str(lstm_file)) as server:
        status, _, body = server.request("/v1/model")
        described = json.loads(body)
        assert status == 200
        assert described["kind"] == "LSTM"
        assert [s["name"] for s in described["inputs"]] == ["input", "h0", "c0"]
        assert described["outputs"][0] == {"name": "output", "dtype": "float32", "shape": [None, 8], "required": True}
        status, answer = server.predict_json(x, h0, c0)
        assert status == 200 and answer["names"] == ["output", "h_n", "c_n"]
        output, (h_n, c_n) = model(x, (h0, c0))
        for got, expected in zip(answer["outputs"], (output, h_n, c_n)):
            assert np.array_equal(np.asarray(got, np.float32), expected)
        status, answer = server.predict_json(x, h0)
        assert status == 422 and "takes 1 (input) or 3 (input, h0, c0) inputs, got 2" in answer["error"]
    missing = subprocess.run([sys.executable, "-m", "fastlstm.cli", "serve", str(tmp_path / "none.safetensors")],
                             capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir())
    assert missing.returncode == 2 and "cannot serve" in missing.stderr and "none.safetensors" in missing.stderr


def test_sigterm_lets_requests_in_flight_finish(slow_file: Path) -> None:
    # A request of 10,000 steps (about half a second or more) is in flight when SIGTERM arrives.
    port = free_port()
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", "fastlstm.cli", "serve", str(slow_file), "--port", str(port),
                                "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT,
                               cwd=tempfile.gettempdir())
    server = Server(process, port, log)
    try:
        wait_until_up(server)
        body = slow_request(10_000)
        answered: List[Any] = []

        def client() -> None:
            status, _, _ = server.request("/v1/predict", body, "application/x-npy")
            answered.append((status, time.monotonic()))

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(0.2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        thread.join(REQUEST_SECONDS)
        assert answered and answered[0][0] == 200, server.logs()
        assert answered[0][1] > started  # answered after the signal: it was in flight
        # uvicorn exits through the signal it was stopped by (a supervisor sees SIGTERM), after shutdown.
        assert process.wait(REQUEST_SECONDS) in (0, -signal.SIGTERM), server.logs()
        assert "Traceback" not in server.logs()
        assert time.monotonic() - started < REQUEST_SECONDS
    finally:
        stop(server)
        log.close()


def test_worker_processes_each_serve_the_model(lstm_file: Path) -> None:
    model = fastlstm.load(str(lstm_file))
    x = np.ones((4, 3), np.float32)
    with running_server(str(lstm_file), "--workers", "2") as server:
        for _ in range(6):  # spread over both workers by the kernel's accept queue
            assert server.predict_npy(x)["output"].tobytes() == model(x)[0].tobytes()


def test_a_full_queue_answers_503_and_the_queued_request_still_succeeds(slow_file: Path) -> None:
    # Requests of several hundred milliseconds each, six at once, one queue place: one or two
    # workers (by the machine's cores) take one each, one request waits in the queue, and the others,
    # arriving while those compute, find it full.
    body = slow_request(4_000)
    with running_server(str(slow_file), "--max-queue", "1") as server:
        answers: List[Any] = []
        clients = [threading.Thread(target=lambda: answers.append(
            server.request("/v1/predict", body, "application/x-npy"))) for _ in range(6)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(REQUEST_SECONDS)
        statuses = sorted(status for status, _, _ in answers)
        assert statuses[0] == 200 and statuses[-1] == 503, statuses
        for status, headers, answer in answers:
            if status == 503:
                assert "queue is full (1 requests waiting)" in json.loads(answer)["error"]
                assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "1"
        assert server.metrics()['fastlstm_predict_errors_total{status="503"}'] == statuses.count(503)


@pytest.mark.parametrize("scheme, expected", [("bf16", "bfloat16"), ("int8", "int8")])
def test_the_model_description_names_quantized_weights(scheme: str, expected: str) -> None:
    from fastlstm.serve.endpoint import Endpoint

    lstm = fastlstm.LSTM(4, 8, seed=0)
    assert Endpoint(lstm).weights_dtype == "float32"
    assert Endpoint(lstm.quantize(scheme)).weights_dtype == expected
    assert Endpoint(fastlstm.LSTMCell(4, 8, seed=0).quantize(scheme)).weights_dtype == expected
