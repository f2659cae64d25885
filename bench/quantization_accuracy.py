"""Accuracy of reduced-precision weights: max abs error against float64 nn.LSTM (on the same float32
weights) of fastlstm fp32, bf16 and int8, OpenVINO at its default precision (bf16 on AVX512_BF16 or
AMX CPUs) and torch's dynamic int8 LSTM, on random-init and briefly trained LSTMs.

    python bench/quantization_accuracy.py [--quick] [--out bench/results/quantization_accuracy.md]

The error is over output, h_n and c_n. Trained models come from trained_lstm.py (a few seconds each).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trained_lstm import long_inputs, train_integrator  # noqa: E402

Outputs = Tuple[np.ndarray, np.ndarray, np.ndarray]
COLUMNS = ("fastlstm fp32", "fastlstm bf16", "fastlstm int8", "OpenVINO", "torch int8")


def float64_reference(lstm, x: np.ndarray) -> Outputs:
    import torch

    with torch.no_grad():
        out, (h, c) = copy.deepcopy(lstm).double()(torch.from_numpy(x).double())
    return out.numpy(), h.numpy(), c.numpy()


def fastlstm_outputs(lstm, x: np.ndarray, scheme: Optional[str]) -> Outputs:
    import fastlstm

    model = fastlstm.LSTM.from_torch(lstm)
    if scheme is not None:
        model = model.quantize(scheme)
    out, (h, c) = model(x)
    return out, h, c


def torch_int8_outputs(lstm, x: np.ndarray) -> Outputs:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lstm), {torch.nn.LSTM}, dtype=torch.qint8)
        with torch.no_grad():
            out, (h, c) = quantized(torch.from_numpy(x))
    return out.numpy(), h.numpy(), c.numpy()


def openvino_outputs(lstm, x: np.ndarray) -> Optional[Outputs]:
    try:
        import openvino
    except ImportError:
        return None
    from fastlstm.bench.engines import export_lstm_to_onnx

    core = openvino.Core()
    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(workdir, "lstm.onnx")
        export_lstm_to_onnx(lstm, {"x": x}, path)
        compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_NUM_THREADS": 1})
    request = compiled.create_infer_request()
    request.infer({0: x})
    return tuple(np.array(request.get_output_tensor(i).data) for i in range(3))  # type: ignore[return-value]


def errors_of(lstm, x: np.ndarray) -> Dict[str, Optional[float]]:
    reference = float64_reference(lstm, x)

    def error(outputs: Optional[Outputs]) -> Optional[float]:
        if outputs is None:
            return None
        return max(float(np.abs(np.asarray(a, np.float64) - b).max()) for a, b in zip(outputs, reference))

    runs: Dict[str, Callable[[], Optional[Outputs]]] = {
        "fastlstm fp32": lambda: fastlstm_outputs(lstm, x, None),
        "fastlstm bf16": lambda: fastlstm_outputs(lstm, x, "bf16"),
        "fastlstm int8": lambda: fastlstm_outputs(lstm, x, "int8"),
        "OpenVINO": lambda: openvino_outputs(lstm, x),
        "torch int8": lambda: torch_int8_outputs(lstm, x),
    }
    result = {name: error(run()) for name, run in runs.items()}
    result["max |c|"] = float(np.abs(reference[2]).max())
    return result


def random_cases(quick: bool) -> List[Tuple[str, Callable[[], Tuple[object, np.ndarray]]]]:
    import torch

    def case(hidden: int, steps: int, seed: int):
        def make():
            torch.manual_seed(seed)
            lstm = torch.nn.LSTM(64, hidden).eval()
            return lstm, np.random.default_rng(seed).standard_normal((steps, 2, 64)).astype(np.float32)
        return f"random H{hidden} T{steps}", make

    sizes = (64, 256) if quick else (64, 256, 512, 1024)
    return [case(hidden, 100, seed) for hidden in sizes for seed in ((0,) if quick else (0, 1))]


def trained_cases(quick: bool) -> List[Tuple[str, Callable[[], Tuple[object, np.ndarray]]]]:
    def case(hidden: int, layers: int, seed: int):
        def make():
            lstm = train_integrator(hidden_size=hidden, num_layers=layers, seed=seed)
            return lstm, long_inputs(lstm.input_size, 200, 4, seed=seed + 10)
        return f"trained H{hidden} L{layers} seed {seed}", make

    specs = [(64, 1, 0)] if quick else [(64, 1, 0), (64, 1, 1), (64, 1, 2), (128, 1, 0), (64, 2, 0)]
    return [case(*spec) for spec in specs]


def render(rows: List[Tuple[str, Dict[str, Optional[float]]]]) -> str:
    header = ["case", "max abs c"] + list(COLUMNS)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, errors in rows:
        cells = [name, f"{errors['max |c|']:.1f}"] + ["-" if errors[c] is None else f"{errors[c]:.1e}" for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two random and one trained model")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    for name, make in random_cases(args.quick) + trained_cases(args.quick):
        lstm, x = make()
        rows.append((name, errors_of(lstm, x)))
        print(render(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    table = render(rows)
    print(table, end="")
    if args.out is not None:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
