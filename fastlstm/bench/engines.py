"""One small adapter per engine. Each is built from the same weights and exposes a zero-argument `run()`.

Everything engine-specific (input conversion, sessions, thread settings, layouts) happens once in the
constructor, so the timed call is exactly what a service would do per request: call the model on an
input that is already in the engine's native form (numpy for fastlstm and ORT, a tensor for torch).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import numpy as np

from fastlstm.bench.weights import WeightSource, torch_or_none

Outputs = Tuple[np.ndarray, np.ndarray, np.ndarray]  # out, h_n, c_n

ENGINE_NAMES: Tuple[str, ...] = ("fastlstm", "torch", "ort")
ENGINE_LABELS: Dict[str, str] = {"fastlstm": "fastlstm", "torch": "torch", "ort": "ORT"}


class Engine(Protocol):
    """What the timing loop and the output check need from an engine."""

    name: str
    detail: str  # one line saying what actually runs, e.g. which ONNX exporter and kernel
    run: Callable[[], object]

    def outputs(self) -> Outputs: ...


def unavailable_reason(engine: str, source: WeightSource) -> Optional[str]:
    """Why an engine cannot run here (missing package or missing weights in its form), or None."""
    if engine == "torch":
        return None if source.torch_lstm is not None else "torch is not installed"
    if engine == "ort":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed"
        if source.torch_lstm is None:
            return "ORT needs torch to export the model to ONNX, and torch is not installed"
        return None
    if engine == "fastlstm":
        try:
            import fastlstm
        except ImportError as error:
            return f"fastlstm cannot be imported ({error})"
        if getattr(fastlstm, "LSTM", None) is None:
            return "fastlstm.LSTM is not available (is the C++ extension built?)"
        return None
    raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINE_NAMES)}")


def build_engine(engine: str, source: WeightSource, x: np.ndarray, threads: Optional[int]) -> Engine:
    """Construct the named engine's adapter on input x of shape (T, B, I).

    threads=None is fastlstm's own default policy (no num_threads passed); torch and ORT need a count.
    """
    if engine == "fastlstm":
        return FastlstmEngine(source, x, threads)
    if threads is None:
        raise ValueError(f"{engine} needs an explicit thread count")
    if engine == "torch":
        return TorchEngine(source.torch_lstm, x, threads)
    if engine == "ort":
        return OnnxRuntimeEngine(source.torch_lstm, x, threads)
    raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINE_NAMES)}")


def _split_outputs(result: Any) -> Tuple[Any, Any, Any]:
    out, (h_n, c_n) = result
    return out, h_n, c_n


class FastlstmEngine:
    """fastlstm's forward on numpy input: weights copied from the torch module, or the model loaded
    from the user's file, or (without torch) random weights of the same shape.

    Threads are passed per call (`model(x, num_threads=n)`), not set process-wide, so one run can
    time several thread counts on one model and leave the library's default policy untouched;
    threads=None times that default policy itself (no num_threads given).
    """

    name = "fastlstm"

    def __init__(self, source: WeightSource, x: np.ndarray, threads: Optional[int]) -> None:
        import fastlstm

        model = fastlstm_model(source)
        # A model loaded from a file may expect (B, T, I); feed it that layout, made once, here.
        self._batch_first = bool(getattr(model, "batch_first", False))
        x_native = np.ascontiguousarray(x.transpose(1, 0, 2)) if self._batch_first else x
        if threads is None:
            self.run: Callable[[], object] = lambda: model(x_native)
        else:
            self.run = lambda: model(x_native, num_threads=threads)
        self.detail = f"fastlstm {fastlstm.__version__}, {fastlstm_threads_text(threads)}"

    def outputs(self) -> Outputs:
        out, h_n, c_n = (np.asarray(a) for a in _split_outputs(self.run()))
        if self._batch_first:
            out = out.transpose(1, 0, 2)
        return out, h_n, c_n


def fastlstm_threads_text(threads: Optional[int]) -> str:
    if threads is None:
        return "default thread policy (num_threads not passed)"
    return f"num_threads={threads} per call"


def fastlstm_model(source: WeightSource) -> Any:
    """The fastlstm model a case runs: the user's file, a copy of the torch module, or (without torch)
    fastlstm's own random weights of the same shape."""
    import fastlstm

    if source.fastlstm_model is not None:
        return source.fastlstm_model
    if source.torch_lstm is not None:
        return fastlstm.LSTM.from_torch(source.torch_lstm)
    lstm = source.config.lstm
    extra = {"proj_size": lstm.proj_size} if lstm.proj_size else {}
    return fastlstm.LSTM(
        lstm.input_size,
        lstm.hidden_size,
        num_layers=lstm.num_layers,
        bidirectional=lstm.bidirectional,
        seed=source.seed,
        **extra,
    )


class TorchEngine:
    """torch.nn.LSTM under inference_mode on a pre-made tensor (the usual way to serve it)."""

    name = "torch"

    def __init__(self, lstm: Any, x: np.ndarray, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        x_tensor = torch.from_numpy(x)

        def run() -> object:
            with torch.inference_mode():
                return lstm(x_tensor)

        self.run: Callable[[], object] = run
        self.detail = f"torch {torch.__version__} nn.LSTM, inference_mode"

    def outputs(self) -> Outputs:
        out, h_n, c_n = _split_outputs(self.run())
        return out.numpy(), h_n.numpy(), c_n.numpy()


class OnnxRuntimeEngine:
    """ONNX Runtime on the torch module's ONNX export, CPU provider, sequential execution."""

    name = "ort"
    INPUT_NAME = "x"

    def __init__(self, lstm: Any, x: np.ndarray, threads: int) -> None:
        feed = {self.INPUT_NAME: x}
        session, self.detail = create_onnx_session(lstm, feed, threads)
        self.run: Callable[[], object] = lambda: session.run(None, feed)

    def outputs(self) -> Outputs:
        out, h_n, c_n = self.run()  # type: ignore[misc]
        return out, h_n, c_n


ONNX_OUTPUT_NAMES = ("out", "h_n", "c_n")


def create_onnx_session(lstm: Any, feed: Dict[str, np.ndarray], threads: int) -> Tuple[Any, str]:
    """An ORT session on the export of `lstm`, plus a line saying what runs; checked by one call on feed.

    feed is {"x": x} or {"x": x, "h0": h0, "c0": c0}: with states, they are graph inputs (a stream
    carries them from call to call). One intra-op pool of `threads`, inter-op 1, sequential execution.
    """
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="fastlstm-bench-onnx-") as workdir:
        path = os.path.join(workdir, "lstm.onnx")
        exporter, earlier_failures = export_lstm_to_onnx(lstm, feed, path)
        uses_lstm_op = onnx_graph_has_lstm_op(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # The session reads the file now; the temporary directory may go away afterwards.
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    try:
        session.run(None, feed)
    except Exception as error:
        # A fallback exporter's graph may not run (e.g. proj_size, which ONNX's LSTM op lacks);
        # say why the preferred exporter was not used, which is the actual cause.
        why = f"; earlier: {' | '.join(earlier_failures)}" if earlier_failures else ""
        raise RuntimeError(f"ORT cannot run the {exporter} export: {_first_line(error)}{why}") from error
    kernel = {True: "ORT LSTM op", False: "decomposed graph (no ONNX LSTM op)", None: "graph not inspected"}[
        uses_lstm_op
    ]
    return session, f"onnxruntime {onnxruntime.__version__}, {exporter} exporter, {kernel}, intra-op threads {threads}"


def _lstm_wrapper(torch: Any, lstm: Any) -> Any:
    """A module taking (x) or (x, h0, c0) and returning (out, h_n, c_n) flat, since ONNX graphs have
    flat inputs and outputs."""

    class LSTMOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = lstm

        def forward(self, x: Any, *state: Any) -> Tuple[Any, Any, Any]:
            out, (h_n, c_n) = self.lstm(x, tuple(state) if state else None)
            return out, h_n, c_n

    return LSTMOutputs().eval()


MAX_ERROR_CHARS = 200


def _first_line(error: BaseException) -> str:
    """A short form of an exception for notes (exporter errors can run to pages of IR)."""
    text = str(error).strip()
    line = text.splitlines()[0].split("  [Caused by")[0] if text else ""
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 3] + "..."
    return f"{type(error).__name__}: {line}"


def export_lstm_to_onnx(lstm: Any, feed: Dict[str, np.ndarray], path: str) -> Tuple[str, List[str]]:
    """Export with the legacy TorchScript exporter, else the dynamo one; feed's keys name the graph inputs.

    Returns the exporter that produced the file and the reasons the ones before it failed.

    The legacy exporter is tried first because it emits a real ONNX LSTM op, which ORT runs with its
    own CPU LSTM kernel: that is ORT at its best, the fair comparison. Shapes are left static (this
    session only ever sees this input), which lets ORT constant-fold the zero initial states.
    """
    torch = torch_or_none()
    assert torch is not None, "ONNX export needs torch"
    module = _lstm_wrapper(torch, lstm)
    example = tuple(torch.from_numpy(array) for array in feed.values())
    common = dict(input_names=list(feed), output_names=list(ONNX_OUTPUT_NAMES))
    failures = []
    for exporter, kwargs in (("legacy", {"dynamo": False, "opset_version": 17}), ("dynamo", {"dynamo": True})):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, example, path, **common, **kwargs)
            return exporter, failures
        except Exception as error:  # noqa: BLE001 - any exporter failure means: try the next one
            failures.append(f"{exporter} exporter: {_first_line(error)}")
    raise RuntimeError("ONNX export failed with every exporter; " + " | ".join(failures))


def onnx_graph_has_lstm_op(path: str) -> Optional[bool]:
    """Whether the exported graph holds an ONNX LSTM node (None when the onnx package is missing)."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(path, load_external_data=False)
    return any(node.op_type == "LSTM" for node in model.graph.node)
