"""One adapter per engine, built from a case's weights, exposing a zero-argument `run()`.

Everything engine-specific (input conversion, sessions, thread settings, layouts) happens once, in the
constructor, so the timed call is what a service does per request: call the model on an input already
in the engine's native form (numpy for fastlstm and ORT, a tensor for torch).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tempfile
import warnings
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import numpy as np

from fastlstm.bench.weights import WeightSource

Outputs = Tuple[np.ndarray, np.ndarray, np.ndarray]  # out, h_n, c_n
ENGINE_NAMES: Tuple[str, ...] = ("fastlstm", "torch", "ort")
ENGINE_LABELS: Dict[str, str] = {"fastlstm": "fastlstm", "torch": "torch", "ort": "ORT", "openvino-fp32": "OpenVINO fp32"}
# With `--weights`: fastlstm's reduced-precision models and the peers a user would pick for them.
REDUCED_LABELS: Dict[str, str] = {"fastlstm-bf16": "fastlstm bf16", "fastlstm-int8": "fastlstm int8",
                                  "openvino": "OpenVINO", "torch-int8": "torch int8"}
ENGINE_LABELS.update(REDUCED_LABELS)


class Engine(Protocol):
    """What the timing loop and the output check need from an engine."""

    detail: str  # one line saying what actually runs
    run: Callable[[], object]

    def outputs(self) -> Outputs: ...


@dataclasses.dataclass(frozen=True)
class SimpleEngine:
    """An Engine made of closures."""

    detail: str
    run: Callable[[], object]
    outputs: Callable[[], Outputs]


def unavailable_reason(engine: str, source: WeightSource) -> Optional[str]:
    """Why `engine` cannot run here (a missing package), or None."""
    if engine.startswith("fastlstm"):
        return None
    if source.torch_lstm is None:
        return "torch is not installed" + (" (ORT needs it to export the model)" if engine == "ort" else "")
    for name, package in (("ort", "onnxruntime"), ("openvino", "openvino")):
        if engine == name and importlib.util.find_spec(package) is None:
            return f"{package} is not installed"
    return None


def build_engine(engine: str, source: WeightSource, x: np.ndarray, threads: Optional[int]) -> Engine:
    """The named engine's adapter on input x (T, B, I); threads=None is fastlstm's default policy."""
    if engine == "fastlstm":
        return fastlstm_engine(fastlstm_model(source), x, threads)
    if engine.startswith("fastlstm-"):  # fastlstm-bf16, fastlstm-int8
        return fastlstm_engine(fastlstm_model(source).quantize(engine.split("-")[1]), x, threads)
    if threads is None:
        raise ValueError(f"{engine} needs an explicit thread count")
    engines = {"torch": torch_engine, "ort": ort_engine, "openvino": openvino_engine, "torch-int8": torch_int8_engine}
    return engines[engine](source.torch_lstm, x, threads)


def fastlstm_model(source: WeightSource) -> Any:
    """The case's fastlstm model: the loaded file, a copy of the torch module, or (without torch)
    fastlstm's own random weights of the same shape."""
    import fastlstm

    if source.fastlstm_model is not None:
        return source.fastlstm_model
    if source.torch_lstm is not None:
        return fastlstm.LSTM.from_torch(source.torch_lstm)
    lstm = source.config.lstm
    return fastlstm.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, bidirectional=lstm.bidirectional,
                         seed=source.seed)


def fastlstm_threads_text(threads: Optional[int]) -> str:
    return "default thread policy (num_threads not passed)" if threads is None else f"num_threads={threads} per call"


def fastlstm_engine(model: Any, x: np.ndarray, threads: Optional[int]) -> Engine:
    """`model(x)` on numpy input, threads passed per call, so the process-wide default is left alone
    (threads=None times that default policy itself)."""
    import fastlstm

    # A model loaded from a file may expect (B, T, I); that layout is made once, here.
    batch_first = bool(model.batch_first)
    x_native = np.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x
    kwargs = {} if threads is None else {"num_threads": threads}

    def outputs() -> Outputs:
        out, (h_n, c_n) = model(x_native, **kwargs)
        return (out.transpose(1, 0, 2) if batch_first else out), h_n, c_n

    return SimpleEngine(f"fastlstm {fastlstm.__version__}, {fastlstm_threads_text(threads)}",
                        lambda: model(x_native, **kwargs), outputs)


def torch_runner(module: Any, x: np.ndarray, threads: int) -> Callable[[], Any]:
    """`module(x)` under inference_mode on a tensor made once (the usual way to serve it), torch's
    intra-op pool set to `threads`."""
    import torch

    torch.set_num_threads(threads)
    x_tensor = torch.from_numpy(x)

    def run() -> Any:
        with torch.inference_mode():
            return module(x_tensor)

    return run


def torch_dynamic_int8(module: Any, kinds: Any) -> Any:
    """torch's dynamic int8 quantization (quantize_dynamic, qint8) of the `kinds` of modules inside
    `module` (never the root itself)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        return torch.ao.quantization.quantize_dynamic(module, kinds, dtype=torch.qint8)


def torch_engine(lstm: Any, x: np.ndarray, threads: int) -> Engine:
    """torch.nn.LSTM under inference_mode on a tensor made once (the usual way to serve it)."""
    import torch

    run = torch_runner(lstm, x, threads)

    def outputs() -> Outputs:
        out, (h_n, c_n) = run()
        return out.numpy(), h_n.numpy(), c_n.numpy()

    return SimpleEngine(f"torch {torch.__version__} nn.LSTM, inference_mode", run, outputs)


def ort_engine(lstm: Any, x: np.ndarray, threads: int) -> Engine:
    """ONNX Runtime on the torch module's ONNX export, CPU provider, sequential execution."""
    feed = {"x": x}
    session, detail = create_onnx_session(lstm, feed, threads)
    return SimpleEngine(detail, lambda: session.run(None, feed), lambda: tuple(session.run(None, feed)))


def torch_int8_engine(lstm: Any, x: np.ndarray, threads: int) -> Engine:
    """torch's dynamic int8 LSTM (quantize_dynamic, per-tensor int8 weights, 8-bit activations): the
    module is wrapped, since quantize_dynamic never swaps the root module itself."""
    import torch

    quantized = torch_dynamic_int8(torch.nn.Sequential(lstm), {torch.nn.LSTM})
    engine = torch_engine(quantized, x, threads)
    return SimpleEngine(f"torch {torch.__version__} quantize_dynamic qint8 LSTM, inference_mode", engine.run, engine.outputs)


def openvino_engine(lstm: Any, x: np.ndarray, threads: int) -> Engine:
    """OpenVINO on the ONNX export at its default precision (bf16 on CPUs with AVX512_BF16 or AMX)."""
    with tempfile.TemporaryDirectory(prefix="fastlstm-bench-openvino-") as workdir:
        path = os.path.join(workdir, "lstm.onnx")
        exporter, _ = export_lstm_to_onnx(lstm, {"x": x}, path)
        request, detail = openvino_request(path, threads, precision=None)

    def outputs() -> Outputs:
        request.infer({0: x})
        return tuple(np.array(request.get_output_tensor(i).data) for i in range(3))  # type: ignore[return-value]

    return SimpleEngine(f"{detail}, {exporter} ONNX export", lambda: request.infer({0: x}), outputs)


def openvino_request(path: str, threads: int, precision: Optional[str]) -> Tuple[Any, str]:
    """An OpenVINO infer request on an ONNX file (CPU, `threads` inference threads, one stream, latency
    hint) and a line saying what runs; precision "f32" pins it, None keeps OpenVINO's default."""
    import openvino

    core = openvino.Core()
    settings: Dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if precision is not None:
        settings["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(core.read_model(path), "CPU", settings)
    used = compiled.get_property("INFERENCE_PRECISION_HINT")
    used = getattr(used, "get_type_name", lambda: used)()  # "bf16", "f32"
    return compiled.create_infer_request(), (f"OpenVINO {openvino.__version__}, {used} precision"
                                             f"{' (its default)' if precision is None else ''}, "
                                             f"INFERENCE_NUM_THREADS={threads}")


def ort_session(path: str, threads: int) -> Any:
    """ONNX Runtime on an ONNX file: CPU provider, one intra-op pool of `threads`, inter-op 1, sequential."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def create_onnx_session(lstm: Any, feed: Dict[str, np.ndarray], threads: int) -> Tuple[Any, str]:
    """An ORT session on the export of `lstm` and a line saying what runs, checked by one call on feed.

    feed is {"x": x}, or {"x": x, "h0": h0, "c0": c0} for a stream that carries its states as graph
    inputs. One intra-op pool of `threads`, inter-op 1, sequential execution.
    """
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="fastlstm-bench-onnx-") as workdir:
        path = os.path.join(workdir, "lstm.onnx")
        exporter, earlier_failures = export_lstm_to_onnx(lstm, feed, path)
        session = ort_session(path, threads)
    try:
        session.run(None, feed)
    except Exception as error:
        # A fallback exporter's graph may not run (proj_size, which ONNX's LSTM op lacks): say why the
        # preferred exporter was not used, which is the actual cause.
        earlier = f"; earlier: {' | '.join(earlier_failures)}" if earlier_failures else ""
        raise RuntimeError(f"ORT cannot run the {exporter} export: {first_line(error)}{earlier}") from error
    return session, f"onnxruntime {onnxruntime.__version__}, {exporter} exporter, intra-op threads {threads}"


def first_line(error: BaseException, limit: int = 200) -> str:
    """A short form of an exception for notes (exporter errors can run to pages)."""
    line = (str(error).strip().splitlines() or [""])[0].split("  [Caused by")[0]
    return f"{type(error).__name__}: {line[: limit - 3] + '...' if len(line) > limit else line}"


def export_lstm_to_onnx(lstm: Any, feed: Dict[str, np.ndarray], path: str) -> Tuple[str, List[str]]:
    """Export with the legacy TorchScript exporter, else the dynamo one; return the exporter used and why
    the ones before it failed.

    Legacy first because it emits ONNX's LSTM op, which ORT runs with its own LSTM kernel: ORT at its
    best, the fair comparison. Shapes stay static, which lets ORT constant-fold zero initial states.
    """
    import torch

    class FlatOutputs(torch.nn.Module):  # ONNX graphs have flat inputs and outputs
        def __init__(self) -> None:
            super().__init__()
            self.lstm = lstm

        def forward(self, x: Any, *state: Any) -> Tuple[Any, Any, Any]:
            out, (h_n, c_n) = self.lstm(x, tuple(state) if state else None)
            return out, h_n, c_n

    example = tuple(torch.from_numpy(array) for array in feed.values())
    failures: List[str] = []
    for exporter, kwargs in (("legacy", {"dynamo": False, "opset_version": 17}), ("dynamo", {"dynamo": True})):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(FlatOutputs().eval(), example, path, input_names=list(feed),
                                  output_names=["out", "h_n", "c_n"], **kwargs)
            return exporter, failures
        except Exception as error:  # noqa: BLE001 - any exporter failure means: try the next one
            failures.append(f"{exporter} exporter: {first_line(error)}")
    raise RuntimeError("ONNX export failed with every exporter; " + " | ".join(failures))
