"""Whole models: a converted `fastlstm.Model` (saved, then read by `fastlstm.load`) against torch eager and ORT on
the whole module's export at the case's shape (static: ORT at its best), for three standard models with seeded
weights; then the Model against its LSTM alone (`fastlstm.LSTM` on the LSTM's input), the price of the head.
Also `--model` on a file written by `fastlstm.convert(...).save`, timed on fastlstm alone."""

from __future__ import annotations

import dataclasses
import importlib.util
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fastlstm._config import LSTMConfig
from fastlstm.bench import report
from fastlstm.bench.configs import BenchConfig
from fastlstm.bench.engines import (ENGINE_LABELS, SimpleEngine, openvino_request, ort_session, torch_dynamic_int8,
                                    torch_runner)
from fastlstm.bench.precision import PEERS, WEIGHT_KEYS
from fastlstm.bench.suite import MATCH_TOLERANCE, CaseResult, SuiteSettings, Variant, run_variants
from fastlstm.bench.timing import time_interleaved
from fastlstm.bench.weights import WeightSource

BATCHES = (1, 32)
MODELS = {  # name: (the LSTM inside, seq_len); the heads are in build_module
    "forecaster": (LSTMConfig(1, 100, 1, batch_first=True), 12),  # + Linear(100, 1) on the last step
    "tagger": (LSTMConfig(128, 256, 2, batch_first=True, bidirectional=True), 50),  # Embedding(5000, 128) + Linear(512, 10)
    "speaker": (LSTMConfig(40, 256, 3, batch_first=True), 160),  # + Linear(256, 256) + ReLU + L2-normalise, last step
}
OVERHEAD_GOAL = "model <= bare LSTM x 1.1 + 3 us at batch 1"


@dataclasses.dataclass(frozen=True)
class WholeModelConfig(BenchConfig):
    kind: str = ""  # the model's name; `lstm` is the LSTM inside

    def describe(self) -> str:
        return f"{self.kind} T{self.seq_len} B{self.batch}"

    def to_dict(self) -> Dict[str, object]:
        return {**super().to_dict(), "model": self.kind}


def select_models(spec: str) -> List[str]:
    names = list(MODELS) if spec.strip() == "all" else [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names:
        raise ValueError(f"unknown whole model(s): {', '.join(unknown) or '(none)'}; choose from: all, {', '.join(MODELS)}")
    return names


def build_module(name: str, seed: int) -> Any:
    """The standard model `name` as an eval-mode torch module with seeded random weights."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class WholeModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(5000, 128) if name == "tagger" else nn.Identity()
            self.lstm = nn.LSTM(**dataclasses.asdict(MODELS[name][0]))
            self.linear = nn.Linear(*{"forecaster": (100, 1), "tagger": (512, 10), "speaker": (256, 256)}[name])

        def forward(self, x: Any) -> Any:
            out, _ = self.lstm(self.embedding(x))
            if name == "tagger":
                return self.linear(out)
            head = self.linear(out[:, -1, :])
            return head if name == "forecaster" else F.normalize(torch.relu(head), p=2, dim=1)

    torch.manual_seed(seed)
    return WholeModel().eval().requires_grad_(False)


def make_model_input(name: str, batch: int, seq_len: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "tagger":
        return rng.integers(0, 5000, size=(batch, seq_len), dtype=np.int64)
    return rng.standard_normal((batch, seq_len, MODELS[name][0].input_size), dtype=np.float32)


def flat_outputs(value: Any) -> Tuple[np.ndarray, ...]:
    """Every array in a (nested) output, in order, as numpy."""
    if isinstance(value, (tuple, list)):
        return tuple(array for item in value for array in flat_outputs(item))
    if isinstance(value, dict):
        return tuple(array for key in sorted(value) for array in flat_outputs(value[key]))
    return (value.numpy() if hasattr(value, "numpy") else np.asarray(value),)


def model_engine(model: Any, inputs: Sequence[np.ndarray], threads: int) -> SimpleEngine:
    """Model takes no per-call thread count: the process default is set."""
    import fastlstm

    fastlstm.set_num_threads(threads)
    return SimpleEngine(f"fastlstm {fastlstm.__version__} Model (convert, save, load), set_num_threads({threads})",
                        lambda: model(*inputs), lambda: flat_outputs(model(*inputs)))


def torch_engine(module: Any, x: np.ndarray, threads: int) -> SimpleEngine:
    import torch

    run = torch_runner(module, x, threads)
    return SimpleEngine(f"torch {torch.__version__} whole module, inference_mode", run, lambda: flat_outputs(run()))


def export_whole_module(module: Any, x: np.ndarray, path: str) -> None:
    """The whole module to ONNX at x's shape (legacy exporter: ONNX's LSTM op, which ORT and OpenVINO run with
    their own LSTM kernels; static shapes let them fold the zero initial states)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), path, input_names=["x"], dynamo=False, opset_version=17)


def ort_engine(module: Any, x: np.ndarray, threads: int) -> SimpleEngine:
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="fastlstm-bench-onnx-") as workdir:
        export_whole_module(module, x, f"{workdir}/model.onnx")
        session = ort_session(f"{workdir}/model.onnx", threads)
    feed = {"x": x}
    return SimpleEngine(f"onnxruntime {onnxruntime.__version__}, whole module (legacy exporter, static shapes), "
                        f"intra-op threads {threads}", lambda: session.run(None, feed), lambda: tuple(session.run(None, feed)))


def openvino_engine(module: Any, x: np.ndarray, threads: int, precision: Optional[str] = "f32") -> SimpleEngine:
    """OpenVINO on the same ONNX file, pinned to fp32 by default (on BF16-capable CPUs its own default
    is bf16, not the computation the others do), or at its default with precision=None (the peer of
    fastlstm's reduced-precision weights)."""
    with tempfile.TemporaryDirectory(prefix="fastlstm-bench-onnx-") as workdir:
        export_whole_module(module, x, f"{workdir}/model.onnx")
        request, detail = openvino_request(f"{workdir}/model.onnx", threads, precision)

    def outputs() -> Tuple[np.ndarray, ...]:
        return tuple(np.array(value) for value in request.infer({0: x}).values())

    return SimpleEngine(f"{detail}, whole module (same ONNX file)", lambda: request.infer({0: x}), outputs)


def torch_int8_engine(module: Any, x: np.ndarray, threads: int) -> SimpleEngine:
    """torch's dynamic int8 quantization of the module's LSTMs and Linears (quantize_dynamic)."""
    import torch

    engine = torch_engine(torch_dynamic_int8(module, {torch.nn.LSTM, torch.nn.Linear}), x, threads)
    return SimpleEngine(engine.detail.replace("whole module", "whole module, quantize_dynamic qint8 LSTM and Linear"),
                        engine.run, engine.outputs)


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def run_whole_models(names: Sequence[str], settings: SuiteSettings, after_case: Callable[[int, int, CaseResult], None],
                     weights: Sequence[str] = ("fp32",)) -> Tuple[List[CaseResult], List[Dict[str, Any]]]:
    """Each model at each of BATCHES: the engine comparison (checked against torch; reduced-precision
    `weights` and their peers reported with their errors instead), then the overhead pass."""
    import fastlstm
    import torch

    cases, overheads, total = [], [], len(names) * len(BATCHES)
    for name in names:
        lstm_config, seq_len = MODELS[name]
        module = build_module(name, settings.seed)
        bare = fastlstm.LSTM.from_torch(module.lstm)
        with tempfile.TemporaryDirectory(prefix="fastlstm-bench-model-") as workdir:
            fastlstm.convert(module, torch.from_numpy(make_model_input(name, 2, 7, 0))).save(f"{workdir}/m.safetensors")
            model = fastlstm.load(f"{workdir}/m.safetensors")
        models = {"fastlstm": model, **{WEIGHT_KEYS[fmt]: model.quantize(fmt) for fmt in weights if fmt != "fp32"}}
        builders: Dict[str, Callable[[np.ndarray], SimpleEngine]] = {
            **{key: lambda x, m=m: model_engine(m, (x,), settings.threads) for key, m in models.items()},
            "torch": lambda x: torch_engine(module, x, settings.threads),
            "ort": lambda x: ort_engine(module, x, settings.threads),
            "openvino-fp32": lambda x: openvino_engine(module, x, settings.threads),
            "openvino": lambda x: openvino_engine(module, x, settings.threads, precision=None),
            "torch-int8": lambda x: torch_int8_engine(module, x, settings.threads),
        }
        for batch in BATCHES:
            x = make_model_input(name, batch, seq_len, settings.seed)
            config = WholeModelConfig(f"{name}-b{batch}", lstm_config, seq_len, batch, kind=name)
            source = WeightSource(config, torch_lstm=module, fastlstm_model=model)
            with torch.inference_mode():
                reference = flat_outputs(module(torch.from_numpy(x)))
                x_lstm = module.embedding(torch.from_numpy(x)).numpy().copy()
            variants = [Variant(key, ENGINE_LABELS[key], key, lambda _source, x, key=key: builders[key](x), tolerance)
                        for key, tolerance in whole_model_engines(settings.engines, weights)]
            case = run_variants(source, x, variants, settings, reference)
            cases.append(case)
            after_case(len(cases), total, case)
            timing = time_interleaved({"model": lambda: model(x), "bare": lambda: bare(x_lstm, num_threads=settings.threads)},
                                      rounds=settings.rounds, seconds=settings.seconds,
                                      priming_seconds=settings.priming_seconds)
            model_us, bare_us = timing.summaries["model"].median_us, timing.summaries["bare"].median_us
            overheads.append({"case": config.name, "model_us": model_us, "bare_lstm_us": bare_us, "overhead_us":
                              model_us - bare_us, "allowed_us": bare_us * 0.1 + 3.0, "meets_goal": model_us <= bare_us * 1.1 + 3.0})
    return cases, overheads


def whole_model_engines(engines: Sequence[str], weights: Sequence[str] = ("fp32",)) -> List[Tuple[str, Optional[float]]]:
    """(key, tolerance against torch) of each column: the engines asked for (fastlstm's float32 model
    only if fp32 is among `weights`), OpenVINO pinned to fp32 where installed when ORT is asked for
    (the same ONNX file), then each reduced format and its peer, not held to torch's outputs."""
    keys = [engine for engine in engines if engine != "fastlstm" or "fp32" in weights]
    keys += ["openvino-fp32"] if "ort" in engines and openvino_installed() else []
    columns: List[Tuple[str, Optional[float]]] = [(key, MATCH_TOLERANCE) for key in keys]
    for fmt in weights:
        if fmt != "fp32":
            columns += [(WEIGHT_KEYS[fmt], None), (PEERS[fmt], None)]
    return columns


def overhead_section(overheads: Sequence[Dict[str, Any]]) -> Tuple[str, str]:
    rows = [[o["case"], report.format_us(o["model_us"]), report.format_us(o["bare_lstm_us"]),
             f"{o['overhead_us']:+.1f}", f"{o['allowed_us']:.1f}", "yes" if o["meets_goal"] else "no"] for o in overheads]
    table = report.markdown_table(["case", "Model us", "bare LSTM us", "overhead us", "allowed us", "within"], rows)
    return ("Converted model against its LSTM alone (fastlstm only, medians)",
            f"Goal: {OVERHEAD_GOAL} (allowed = 10% of the bare call + 3 us).\n\n{table}")


def converted_file_source(path: Path, seq_len: int, batch: int) -> Tuple[WeightSource, List[np.ndarray]]:
    """A converted file as a case: synthetic inputs, free sizes from the first LSTM's layout (batch_first: batch,
    time; else time, batch; further ones 1), 1-D integer inputs as lengths, other integers 0."""
    import fastlstm

    model = fastlstm.load(str(path))
    document = model.program()
    lstm_step = next((step["args"] for step in document["steps"] if step["op"] == "lstm"), None)
    batch_first = bool(lstm_step and lstm_step.get("batch_first"))
    free_sizes = [batch, seq_len] if batch_first else [seq_len, batch]
    symbols: Dict[str, int] = {}
    rng = np.random.default_rng(0)
    inputs, shapes = [], []
    for tensor in document["inputs"]["tensors"]:
        shape = []
        for size in tensor["shape"]:
            if isinstance(size, dict):
                size = symbols.setdefault(size["sym"], (free_sizes + [1] * len(tensor["shape"]))[len(symbols)])
            shape.append(int(size))
        dtype = np.dtype(tensor["dtype"])
        integer = np.full(shape, seq_len if len(shape) == 1 else 0, dtype=dtype) if dtype.kind in "iu" else None
        inputs.append(rng.standard_normal(shape).astype(dtype) if integer is None else integer)
        shapes.append(f"{tensor['name']} {dtype} {tuple(shape)}")
    lstm = LSTMConfig(lstm_step["input_size"], lstm_step["hidden_size"], lstm_step["num_layers"]) if lstm_step else LSTMConfig(1, 1)
    config = WholeModelConfig(path.stem, lstm, seq_len, batch, kind=f"converted model {', '.join(model.operations)}")
    notes = [f"{path.name} is a converted whole model: timed on fastlstm alone (torch and ORT need the torch module, "
             f"which the file does not hold), on synthetic inputs {'; '.join(shapes)}; outputs not checked"]
    return WeightSource(config, fastlstm_model=model, notes=notes), inputs


def run_converted_file(path: Path, seq_len: int, batch: int, settings: SuiteSettings) -> CaseResult:
    """`--model FILE` on a converted file: the Model alone, unchecked (the file holds no torch module)."""
    source, inputs = converted_file_source(path, seq_len, batch)
    model = source.fastlstm_model

    build = lambda _source, _x: model_engine(model, inputs, settings.threads)  # noqa: E731
    case = run_variants(source, inputs[0], [Variant("fastlstm", "fastlstm", "fastlstm", build)], settings)
    case.notes = [note for note in case.notes if not note.startswith("outputs not checked: torch")]
    return case
