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


def build_engine(engine: str, source: WeightSource, x: np.ndarray, threads: int) -> Engine:
    """Construct the named engine's adapter on input x of shape (T, B, I)."""
    if engine == "fastlstm":
        return FastlstmEngine(source, x, threads)
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
    from the user's file, or (without torch) random weights of the same shape."""

    name = "fastlstm"

    def __init__(self, source: WeightSource, x: np.ndarray, threads: int) -> None:
        import fastlstm

        set_num_threads = getattr(fastlstm, "set_num_threads", None)
        if callable(set_num_threads):
            set_num_threads(threads)
        model = self._build_model(fastlstm, source)
        # A model loaded from a file may expect (B, T, I); feed it that layout, made once, here.
        self._batch_first = bool(getattr(model, "batch_first", False))
        x_native = np.ascontiguousarray(x.transpose(1, 0, 2)) if self._batch_first else x
        self.run: Callable[[], object] = lambda: model(x_native)
        version = getattr(fastlstm, "__version__", "")
        threads_note = "" if callable(set_num_threads) else ", no set_num_threads"
        self.detail = f"fastlstm {version}".strip() + threads_note

    @staticmethod
    def _build_model(fastlstm: Any, source: WeightSource) -> Any:
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

    def outputs(self) -> Outputs:
        out, h_n, c_n = (np.asarray(a) for a in _split_outputs(self.run()))
        if self._batch_first:
            out = out.transpose(1, 0, 2)
        return out, h_n, c_n


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
    OUTPUT_NAMES = ("out", "h_n", "c_n")

    def __init__(self, lstm: Any, x: np.ndarray, threads: int) -> None:
        import onnxruntime

        with tempfile.TemporaryDirectory(prefix="fastlstm-bench-onnx-") as workdir:
            path = os.path.join(workdir, "lstm.onnx")
            exporter, earlier_failures = export_lstm_to_onnx(lstm, x, path)
            uses_lstm_op = onnx_graph_has_lstm_op(path)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            # The session reads the file now; the temporary directory may go away afterwards.
            session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        self.run: Callable[[], object] = lambda: session.run(None, feed)
        try:
            self.run()
        except Exception as error:
            # A fallback exporter's graph may not run (e.g. proj_size, which ONNX's LSTM op lacks);
            # say why the preferred exporter was not used, which is the actual cause.
            why = f"; earlier: {' | '.join(earlier_failures)}" if earlier_failures else ""
            raise RuntimeError(f"ORT cannot run the {exporter} export: {_first_line(error)}{why}") from error
        kernel = {True: "ORT LSTM op", False: "decomposed graph (no ONNX LSTM op)", None: "graph not inspected"}[
            uses_lstm_op
        ]
        self.detail = f"onnxruntime {onnxruntime.__version__}, {exporter} exporter, {kernel}"

    def outputs(self) -> Outputs:
        out, h_n, c_n = self.run()  # type: ignore[misc]
        return out, h_n, c_n


def _lstm_wrapper(torch: Any, lstm: Any) -> Any:
    """A module returning (out, h_n, c_n) flat, since ONNX graphs have flat outputs."""

    class LSTMOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = lstm

        def forward(self, x: Any) -> Tuple[Any, Any, Any]:
            out, (h_n, c_n) = self.lstm(x)
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


def export_lstm_to_onnx(lstm: Any, x: np.ndarray, path: str) -> Tuple[str, List[str]]:
    """Export with the legacy TorchScript exporter, else the dynamo one.

    Returns the exporter that produced the file and the reasons the ones before it failed.

    The legacy exporter is tried first because it emits a real ONNX LSTM op, which ORT runs with its
    own CPU LSTM kernel: that is ORT at its best, the fair comparison. Shapes are left static (this
    session only ever sees this input), which lets ORT constant-fold the zero initial states.
    """
    torch = torch_or_none()
    assert torch is not None, "ONNX export needs torch"
    module = _lstm_wrapper(torch, lstm)
    example = (torch.from_numpy(x),)
    common = dict(input_names=[OnnxRuntimeEngine.INPUT_NAME], output_names=list(OnnxRuntimeEngine.OUTPUT_NAMES))
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
