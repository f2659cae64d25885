"""Model.quantize: a converted whole model's LSTM, LSTMCell and Linear matrices in bf16 or int8.

Each quantized model is held to the same model computed in float32 on its rounded weights
(`dequantize_matrix`): only the weights' rounding may differ from the float32 model, and what that
costs against torch is measured and bounded. Files keep the quantized weights as they are and load
without torch; programs that misuse quantized weights are refused at load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

pytest.importorskip("fastlstm._core", reason="fastlstm's C++ extension is not built")
torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm._quantize import dequantize_matrix  # noqa: E402
from convert_helpers import run_saved_models_without_torch  # noqa: E402

SCHEMES = ("bf16", "int8")


class Tagger(nn.Module):
    """Embedding + 2-layer biLSTM + Linear per step, the tagger of the whole-model benchmark, small."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 24, 2, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(48, 5)

    def forward(self, tokens: Any) -> Any:
        out, _ = self.lstm(self.embedding(tokens))
        return self.linear(out).log_softmax(-1)


class Decoder(nn.Module):
    """An LSTMCell unrolled for 4 steps with a projection back to its input (Linear reused each step)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(6, 20)
        self.out = nn.Linear(20, 6)

    def forward(self, x: Any) -> Any:
        h = torch.zeros(x.size(0), 20)
        c = torch.zeros(x.size(0), 20)
        outputs = []
        for _ in range(4):
            h, c = self.cell(x, (h, c))
            x = self.out(h)
            outputs.append(x)
        return torch.stack(outputs, 1)


class TiedHead(nn.Module):
    """A language model whose output layer shares the embedding's matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(40, 12)
        self.lstm = nn.LSTM(12, 12)
        self.head = nn.Linear(12, 40)
        self.head.weight = self.embedding.weight

    def forward(self, tokens: Any) -> Any:
        out, _ = self.lstm(self.embedding(tokens))
        return self.head(out)


def build(kind: str) -> Any:
    torch.manual_seed({"tagger": 0, "decoder": 1, "tied": 2}[kind])
    return {"tagger": Tagger, "decoder": Decoder, "tied": TiedHead}[kind]().eval()


def example(kind: str, batch: int, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "decoder":
        return rng.standard_normal((batch, 6), dtype=np.float32)
    if kind == "tied":
        return rng.integers(0, 40, size=(steps, batch), dtype=np.int64)
    return rng.integers(0, 50, size=(batch, steps), dtype=np.int64)


def rounded_float_model(quantized: fastlstm.Model) -> fastlstm.Model:
    """The quantized model's program in float32, on its quantized weights widened back to float32."""
    weights = quantized.state_dict()
    plain: Dict[str, np.ndarray] = {}
    for name, array in weights.items():
        if name.endswith(".scales"):
            continue
        if array.dtype in (np.uint16, np.int8) and f"{name}.scales" in weights or array.dtype == np.uint16:
            plain[name] = dequantize_matrix(array, weights.get(f"{name}.scales"))
        else:
            plain[name] = array
    return fastlstm.Model(quantized.program(), plain)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", ["tagger", "decoder", "tied"])
def test_quantized_model_is_the_float_model_on_rounded_weights(kind: str, scheme: str) -> None:
    module = build(kind)
    model = fastlstm.convert(module, torch.from_numpy(example(kind, 2, 5)))
    quantized = model.quantize(scheme)
    assert model.weights_dtype == "float32"
    assert quantized.weights_dtype == {"bf16": "bfloat16", "int8": "int8"}[scheme]
    x = example(kind, 3, 11, seed=1)  # other batch and length than the example
    got = quantized(x)
    # Only the weights' rounding differs from float32 arithmetic: bf16 weights widen exactly. int8
    # may also round the activations to 16 bits (the VNNI kernels' integer dot products), 1.5e-5
    # of each row's largest value.
    np.testing.assert_allclose(got, rounded_float_model(quantized)(x), rtol=0, atol=2e-5 if scheme == "bf16" else 2e-4)
    with torch.inference_mode():
        reference = module(torch.from_numpy(x)).double().numpy()
    error = float(np.max(np.abs(got - reference)))
    assert 1e-7 < error < 2e-2, error  # rounded (not the float model), and by a weight rounding's worth
    assert np.array_equal(model(x), fastlstm.convert(module, torch.from_numpy(example(kind, 2, 5)))(x))


def test_quantize_leaves_the_model_and_other_weights_alone() -> None:
    model = fastlstm.convert(build("tagger"), torch.from_numpy(example("tagger", 2, 5)))
    before = {name: array.copy() for name, array in model.state_dict().items()}
    quantized = model.quantize("int8")
    assert all(np.array_equal(before[name], array) for name, array in model.state_dict().items())
    stored = quantized.state_dict()
    assert stored["embedding.weight"].dtype == np.float32  # a lookup, not a matrix product
    assert stored["lstm.bias_ih_l0"].dtype == np.float32 and stored["linear.bias"].dtype == np.float32
    assert stored["lstm.weight_hh_l1_reverse"].dtype == np.int8
    assert stored["lstm.weight_hh_l1_reverse.scales"].shape == (96, 1)  # 4 x 24 rows, one group of 24 inputs
    assert stored["linear.weight"].dtype == np.int8


def test_a_matrix_shared_with_an_embedding_is_quantized_as_a_copy() -> None:
    module = build("tied")
    model = fastlstm.convert(module, torch.from_numpy(example("tied", 2, 5))).quantize("bf16")
    stored = model.state_dict()
    tied = [name for name in stored if name.endswith(".bf16")]
    assert len(tied) == 1 and stored[tied[0]].dtype == np.uint16
    assert stored[tied[0][: -len(".bf16")]].dtype == np.float32  # the embedding still reads float32
    x = example("tied", 3, 7, seed=3)
    with torch.inference_mode():
        reference = module(torch.from_numpy(x)).numpy()
    assert float(np.max(np.abs(model(x) - reference))) < 2e-2


@pytest.mark.parametrize("scheme", SCHEMES)
def test_saved_quantized_model_loads_without_torch(scheme: str, tmp_path: Path) -> None:
    model = fastlstm.convert(build("tagger"), torch.from_numpy(example("tagger", 2, 5))).quantize(scheme)
    path = tmp_path / "tagger.safetensors"
    model.save(path)
    x = example("tagger", 2, 9, seed=4)
    loaded = fastlstm.load(path)
    assert loaded.weights_dtype == model.weights_dtype
    assert np.array_equal(loaded(x), model(x))
    for name, array in model.state_dict().items():
        assert loaded.state_dict()[name].dtype == array.dtype and np.array_equal(loaded.state_dict()[name], array)
    header = json.loads(path.read_bytes()[8: 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    matrix_code = {"bf16": "BF16", "int8": "I8"}[scheme]
    assert header["lstm.weight_ih_l0"]["dtype"] == matrix_code and header["embedding.weight"]["dtype"] == "F32"
    (outputs,), = run_saved_models_without_torch(tmp_path, [(str(path), [(x,)])])
    assert np.array_equal(outputs, model(x))


def test_quantize_refusals() -> None:
    model = fastlstm.convert(build("decoder"), torch.from_numpy(example("decoder", 2, 5)))
    with pytest.raises(ValueError, match="unknown quantization scheme 'fp8'; choose one of: 'bf16', 'int8'"):
        model.quantize("fp8")
    with pytest.raises(ValueError, match="already bfloat16"):
        model.quantize("bf16").quantize("int8")
    double = fastlstm.convert(build("tagger").double(), torch.from_numpy(example("tagger", 2, 5)))
    assert double.weights_dtype == "float64"
    with pytest.raises(TypeError, match="only float32 models can be quantized"):
        double.quantize("bf16")

    class NoMatrices(nn.Module):
        def forward(self, x: Any) -> Any:
            return torch.relu(x) * 2

    plain = fastlstm.convert(NoMatrices().eval(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no LSTM, LSTMCell or Linear weights"):
        plain.quantize("int8")


def _edited(model: fastlstm.Model, **changes: np.ndarray) -> Dict[str, np.ndarray]:
    weights = dict(model.state_dict())
    weights.update(changes)
    return {name: array for name, array in weights.items() if array is not None}


def test_programs_misusing_quantized_weights_are_refused() -> None:
    model = fastlstm.convert(build("tagger"), torch.from_numpy(example("tagger", 2, 5)))
    int8 = model.quantize("int8")
    document = int8.program()
    weights = int8.state_dict()
    without_scales = {k: v for k, v in weights.items() if k != "linear.weight.scales"}
    with pytest.raises(ValueError, match="has no scales"):
        fastlstm.Model(document, without_scales)
    with pytest.raises(ValueError, match="finite non-negative"):
        fastlstm.Model(document, {**weights, "linear.weight.scales": -weights["linear.weight.scales"]})
    with pytest.raises(ValueError, match="scales"):
        fastlstm.Model(document, {**weights, "lstm.weight_ih_l0.scales": weights["lstm.weight_ih_l0.scales"][:-1]})
    # bf16 bits handed to an operation other than the quantized kernels (here: the embedding lookup)
    table_bits = model.quantize("bf16").state_dict()["linear.weight"][:1].repeat(50, 0)[:, :16]
    with pytest.raises(ValueError, match="only the weight matrices of lstm, lstm_cell and linear steps may be bfloat16"):
        fastlstm.Model(model.program(), {**model.state_dict(), "embedding.weight": np.ascontiguousarray(table_bits)})


class ComputedBias(nn.Module):
    """A Linear whose bias is computed in forward: its stored matrix is quantized, the bias added after."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.lin = nn.Linear(16, 3)

    def forward(self, x: Any) -> Any:
        y, _ = self.lstm(x)
        return nn.functional.linear(y[:, -1], self.lin.weight, self.lin.bias + x[0, 0, :3])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_linear_with_a_computed_bias_keeps_its_bias(scheme: str) -> None:
    torch.manual_seed(5)
    module = ComputedBias().eval()
    example = torch.randn(2, 5, 8)
    quantized = fastlstm.convert(module, example).quantize(scheme)
    x = np.random.default_rng(6).standard_normal((3, 7, 8)).astype(np.float32)
    np.testing.assert_allclose(quantized(x), rounded_float_model(quantized)(x), rtol=0, atol=2e-4)
    with torch.inference_mode():
        reference = module(torch.from_numpy(x)).numpy()
    assert float(np.max(np.abs(quantized(x) - reference))) < 2e-2


def test_a_weight_named_like_the_safetensors_metadata_is_refused_at_save(tmp_path: Path) -> None:
    model = fastlstm.convert(build("decoder"), torch.from_numpy(example("decoder", 2, 5)))
    document = model.program()
    weights = dict(model.state_dict())
    weights["__metadata__"] = weights.pop("out.bias")
    text = json.dumps(document).replace('"out.bias"', '"__metadata__"')
    renamed = fastlstm.Model(text, weights)
    with pytest.raises(ValueError, match="cannot be named '__metadata__'"):
        renamed.save(tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())
