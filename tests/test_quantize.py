"""Reduced-precision weights (`LSTM.quantize("bf16" | "int8")`): every kernel set against a reference
on the very same rounded weights (bitwise for bf16, whose kernels compute exactly what the float32
ones do on the widened weights), determinism across batch and threads, the accuracy budgets against
float64 nn.LSTM on random and briefly trained weights (next to torch's dynamic int8 LSTM), the API,
pickles, files, and the packed Linear in both formats."""

from __future__ import annotations

import copy
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import isa_params, make_torch_lstm, run_torch, torch

import fastlstm
from fastlstm import _core
from fastlstm._quantize import INT8_GROUP, dequantize_matrix, quantize_matrix

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # the trained-model recipe lives in the lab
from trained_lstm import long_inputs, train_integrator  # noqa: E402

SCHEMES = ("bf16", "int8")
# int8 applies its scales in the kernels (a sum per group times the group's scale) while the
# reference multiplies each weight first: a few float32 roundings apart (measured up to 4e-6).
INT8_SAME_WEIGHTS_BOUND = 2e-5
# With VNNI the activations are also rounded, to 1/32767 of their row's largest: for 300 inputs of
# |x| <= 3.5, about sqrt(300) * |w| 0.14 * 3e-5 = 7e-5 (measured 5.5e-5).
VNNI_SAME_WEIGHTS_BOUND = 1.5e-4


def rng_input(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def float64_outputs(module, x):
    """nn.LSTM's outputs in float64 on the module's own weights."""
    return run_torch(copy.deepcopy(module).double(), x.astype(np.float64))


def max_error(actual, expected):
    return max(float(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64)).max()) for a, e in zip(actual, expected))


def torch_int8_outputs(module, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(module), {torch.nn.LSTM}, dtype=torch.qint8)
        with torch.no_grad():
            out, (h, c) = quantized(torch.from_numpy(x))
    return out.numpy(), h.numpy(), c.numpy()


def run(model, x, **kwargs):
    out, (h, c) = model(x, **kwargs)
    return out, h, c


# ------------------------------------------------------------------------- kernels on the same weights
SHAPES = [
    # input, hidden, layers, bidirectional, proj, T, B: odd sizes exercise partial panels, a ragged
    # last k pair and int8 group, the fused step (B <= 4 with AVX-512,
    # <= 2 with AVX2) and the GEMM step (more rows).
    dict(input_size=37, hidden_size=70, num_layers=2, bidirectional=True, proj_size=0, steps=9, batch=3),
    dict(input_size=300, hidden_size=48, num_layers=1, bidirectional=False, proj_size=21, steps=6, batch=7),
    dict(input_size=64, hidden_size=260, num_layers=1, bidirectional=False, proj_size=0, steps=5, batch=13),
]
CASES, IDS = isa_params([(shape, scheme) for shape in SHAPES for scheme in SCHEMES], reduced=range(6),
                        ids=[f"shape{i}-{scheme}" for i in range(len(SHAPES)) for scheme in SCHEMES])


@pytest.fixture(params=[True, False], ids=["vnni", "no-vnni"])
def int8_vnni(request):
    """int8 with the AVX-512 VNNI kernels (where the CPU has them) and with the plain ones."""
    _core._set_dot_instructions(request.param)
    try:
        yield request.param
    finally:
        _core._set_dot_instructions(True)


def expected_kernel_isas(isa, scheme, dot):
    """The kernel set the forced ISA should give the scheme: AVX-512 int8 runs VNNI where the CPU has it."""
    _core._set_dot_instructions(dot)
    name = _core.quantized_kernel_isas()[SCHEMES.index(scheme)]
    return name if dot and isa == "avx512" and name == "avx512_vnni" else isa


@pytest.mark.parametrize("isa,case", CASES, ids=IDS, indirect=["isa"])
def test_each_isa_computes_the_rounded_weights(isa, case, int8_vnni):
    shape, scheme = case
    if scheme == "bf16" and not int8_vnni:
        pytest.skip("the switch concerns int8 alone")
    assert _core.quantized_kernel_isas()[SCHEMES.index(scheme)] == expected_kernel_isas(isa, scheme, int8_vnni)
    shape = dict(shape)
    steps, batch = shape.pop("steps"), shape.pop("batch")
    model = fastlstm.LSTM(**shape, seed=3).quantize(scheme)
    rounded = fastlstm.LSTM(**shape, weights=model.state_dict())  # float32, on the widened weights
    x = rng_input((steps, batch, shape["input_size"]))
    got = run(model, x)
    if scheme == "bf16":
        for a, b in zip(got, run(rounded, x)):
            np.testing.assert_array_equal(a, b)  # the same float32 arithmetic on the same values
    module = make_torch_lstm(**shape)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    dot = _core.quantized_kernel_isas()[SCHEMES.index(scheme)] == "avx512_vnni"
    bound = VNNI_SAME_WEIGHTS_BOUND if dot else INT8_SAME_WEIGHTS_BOUND
    assert max_error(got, float64_outputs(module, x)) < bound
    # A single step (the input projection inside the fused step) agrees with the sequence's first step.
    out, (h, c) = model.step(x[0])
    first = run(model, x[:1])
    np.testing.assert_array_equal(out, first[0][0])
    np.testing.assert_array_equal(h, first[1])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_results_do_not_depend_on_the_batch_or_the_threads(scheme, int8_vnni):
    model = fastlstm.LSTM(48, 256, num_layers=2, seed=1).quantize(scheme)
    x = rng_input((20, 12, 48), seed=2)
    alone = [run(model, x[:, b : b + 1], num_threads=1) for b in (0, 5, 11)]
    for threads in (1, 2):
        together = run(model, x, num_threads=threads)
        for (out, h, c), b in zip(alone, (0, 5, 11)):
            np.testing.assert_array_equal(together[0][:, b : b + 1], out)
            np.testing.assert_array_equal(together[2][:, b : b + 1], c)
    # batch 1 split across threads by hidden units
    np.testing.assert_array_equal(run(model, x[:, :1], num_threads=2)[0], alone[0][0])
    # 2-4 rows: the fused step's multi-row sweeps, or GEMM tiles, depending on the kernel set
    for rows in (2, 3, 4):
        together = run(model, np.ascontiguousarray(x[:, :rows]), num_threads=1)
        np.testing.assert_array_equal(together[0][:, :1], alone[0][0])


# ------------------------------------------------------------------------------------- accuracy budgets
@pytest.mark.parametrize("hidden", [64, 256, 1024])
def test_random_weights_within_budget_and_better_than_torch_int8(hidden):
    steps = 100 if hidden < 1024 else 30  # the float64 reference of H=1024 is the slow part
    module = make_torch_lstm(64, hidden, seed=hidden)
    model = fastlstm.LSTM.from_torch(module)
    x = rng_input((steps, 2, 64), seed=4)
    reference = float64_outputs(module, x)
    bf16 = max_error(run(model.quantize("bf16"), x), reference)
    int8 = max_error(run(model.quantize("int8"), x), reference)
    torch_int8 = max_error(torch_int8_outputs(module, x), reference)
    assert bf16 <= 2e-3
    assert int8 <= torch_int8, (int8, torch_int8)


@pytest.fixture(scope="module")
def trained():
    """An LSTM trained for ~3 s: saturated gates, |c| well above 10 on its inputs."""
    torch.manual_seed(0)
    return train_integrator()


def test_trained_weights_within_budget_and_better_than_torch_int8(trained):
    x = long_inputs(trained.input_size, 200, 4, seed=5)
    reference = float64_outputs(trained, x)
    assert np.abs(reference[2]).max() > 10  # the regime the budgets are about
    model = fastlstm.LSTM.from_torch(trained)
    errors = {scheme: max_error(run(model.quantize(scheme), x), reference) for scheme in SCHEMES}
    torch_int8 = max_error(torch_int8_outputs(trained, x), reference)
    # Measured here: 0.08 (bf16), 0.50 (int8), 0.82 (torch int8); OpenVINO's bf16 (0.12) is compared in
    # bench/quantization_accuracy.py, as OpenVINO is no test dependency (docs/reduced_precision.md).
    assert errors["bf16"] <= 0.15 and errors["bf16"] <= 0.25 * torch_int8, (errors, torch_int8)
    assert errors["int8"] <= torch_int8, (errors, torch_int8)


# ------------------------------------------------------------------------------------------------ API
def test_quantize_returns_a_new_model_and_leaves_the_original():
    model = fastlstm.LSTM(16, 32, seed=0)
    before = model.state_dict()
    for scheme, name in (("bf16", "bfloat16"), ("int8", "int8")):
        quantized = model.quantize(scheme)
        assert quantized is not model and quantized.weights_dtype == name and quantized.dtype == np.float32
        assert name in repr(quantized)
    assert model.weights_dtype == "float32"
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_quantize_refusals():
    with pytest.raises(TypeError, match="float32"):
        fastlstm.LSTM(4, 8, dtype=np.float64).quantize("bf16")
    with pytest.raises(ValueError, match="'bf16', 'int8'"):
        fastlstm.LSTM(4, 8).quantize("fp8")
    with pytest.raises(ValueError, match="already bfloat16"):
        fastlstm.LSTM(4, 8).quantize("bf16").quantize("int8")
    with pytest.raises(TypeError, match="float32"):
        fastlstm.LSTMCell(4, 8, dtype=np.float64).quantize("int8")
    with pytest.raises(ValueError, match="finite"):
        quantize_matrix(np.array([[np.inf, 1.0]], np.float32), "int8")


def test_lstm_cell_quantize():
    cell = fastlstm.LSTMCell(10, 20, seed=1)
    x = rng_input((3, 10))
    for scheme in SCHEMES:
        quantized = cell.quantize(scheme)
        assert quantized.weights_dtype == {"bf16": "bfloat16", "int8": "int8"}[scheme]
        lstm = fastlstm.LSTM(10, 20, weights={k + "_l0": v for k, v in quantized.state_dict().items()})
        h, c = quantized(x)
        out, (h_n, c_n) = lstm.step(x)
        np.testing.assert_allclose(h, out, atol=VNNI_SAME_WEIGHTS_BOUND)
        np.testing.assert_allclose(pickle.loads(pickle.dumps(quantized))(x)[0], h, rtol=0, atol=0)
    assert cell.weights_dtype == "float32"


def test_rounding():
    w = np.array([[1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5e-39, np.nan, np.float32(3.4e38)]], np.float32)
    bits, _ = quantize_matrix(w, "bf16")
    back = dequantize_matrix(bits, None)
    assert back[0, 0] == 1.0 and back[0, 1] == 1.0  # a tie goes to the even neighbour
    assert back[0, 2] == 1.0 + 4 * 2**-8  # ... which here is the one above
    assert np.isnan(back[0, 4]) and back[0, 5] == np.inf  # past bf16's largest by over half an ulp
    w = np.zeros((2, INT8_GROUP + 3), np.float32)
    w[0, :INT8_GROUP] = np.linspace(-1, 2, INT8_GROUP)
    w[1, -1] = -0.5
    q, scales = quantize_matrix(w, "int8")
    assert q.dtype == np.int8 and scales.shape == (2, 2) and scales[0, 1] == 0 and q[0].max() == 127
    assert np.abs(dequantize_matrix(q, scales) - w).max() <= scales.max() / 2 + 1e-7


def test_pickle_and_files_keep_the_stored_weights(tmp_path):
    model = fastlstm.LSTM(12, 40, num_layers=2, bidirectional=True, proj_size=8, batch_first=True, seed=2)
    x = rng_input((3, 5, 12))
    for scheme in SCHEMES:
        quantized = model.quantize(scheme)
        expected = run(quantized, x)
        path = tmp_path / f"{scheme}.safetensors"
        quantized.save(path)
        for copy_ in (pickle.loads(pickle.dumps(quantized)), fastlstm.load(path)):
            assert copy_.weights_dtype == quantized.weights_dtype and copy_.batch_first
            for a, b in zip(run(copy_, x), expected):
                np.testing.assert_array_equal(a, b)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "bf16.safetensors"), framework="np") as handle:
        assert handle.get_slice("weight_hh_l0").get_dtype() == "BF16"
    with safe_open(str(tmp_path / "int8.safetensors"), framework="np") as handle:
        assert handle.get_slice("weight_hh_l0").get_dtype() == "I8"
        assert handle.get_tensor("weight_hh_l0.scales").dtype == np.float32


def packed_linear(weight, bias, scheme):
    """A Linear packed as a converted model's quantized Linear is (fastlstm/_ops_linear.py)."""
    values, scales = quantize_matrix(weight, scheme)
    if scheme == "bf16":
        return fastlstm._core.PackedLinearBf16(values, bias, None)
    return fastlstm._core.PackedLinearI8(values, bias, scales)


def test_packed_linear_in_both_formats():
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((37, 150)) / np.sqrt(150)).astype(np.float32)  # nn.Linear's scale
    bias = rng.standard_normal(37).astype(np.float32)
    x = rng.standard_normal((9, 150)).astype(np.float32)
    bits, _ = quantize_matrix(weight, "bf16")
    q, scales = quantize_matrix(weight, "int8")
    for packed, w in ((_core.PackedLinearBf16(bits, bias), dequantize_matrix(bits, None)),
                      (_core.PackedLinearI8(q, bias, scales), dequantize_matrix(q, scales))):
        np.testing.assert_allclose(packed.forward(x), x.astype(np.float64) @ w.T + bias, atol=VNNI_SAME_WEIGHTS_BOUND)
    for scheme in SCHEMES:  # the helper whole models use
        np.testing.assert_array_equal(packed_linear(weight, bias, scheme).forward(x),
                                      {"bf16": _core.PackedLinearBf16(bits, bias), "int8": _core.PackedLinearI8(q, bias, scales)}[scheme].forward(x))
    with pytest.raises(ValueError, match="scales"):
        _core.PackedLinearI8(q, bias)
    with pytest.raises(ValueError, match="scales"):
        _core.PackedLinearI8(q, bias, scales[:, :1].copy())
    with pytest.raises(TypeError, match="uint16"):
        _core.PackedLinearBf16(weight, bias)


# ------------------------------------------------------------------------------------ hostile files
def _tamper(path, tmp_path, edit):
    """Rewrite a quantized file's header through `edit(header)` (keeping the data), return the new path."""
    import json
    import struct

    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    data = raw[8 + length :]
    data = edit(header, data) or data
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out = tmp_path / "tampered.safetensors"
    out.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return out


def _set_metadata(key, value):
    def edit(header, data):
        header["__metadata__"]["fastlstm." + key] = value
    return edit


def _declare(name, **fields):
    def edit(header, data):
        header[name].update(fields)
    return edit


def _scales_to(value):
    def edit(header, data):
        begin, end = header["weight_hh_l0.scales"]["data_offsets"]
        scales = np.full((end - begin) // 4, value, np.float32)
        return data[:begin] + scales.tobytes() + data[end:]
    return edit


@pytest.mark.parametrize("edit,match", [
    (_set_metadata("weights_dtype", "int4"), "weights_dtype"),
    (_set_metadata("int8_group", "32"), "groups of 64"),
    (_set_metadata("hidden_size", "16777216"), "refused|invalid"),
    (_declare("weight_hh_l0", dtype="I16"), "declared|could not be read"),
    (_declare("weight_hh_l0", shape=[64, 8]), "declared|could not be read"),
    (_scales_to(np.nan), "finite non-negative"),
    (_scales_to(-1.0), "finite non-negative"),
])
def test_hostile_quantized_files_are_refused(tmp_path, edit, match):
    path = tmp_path / "model.safetensors"
    fastlstm.LSTM(8, 16, seed=0).quantize("int8").save(path)
    with pytest.raises(ValueError, match=match):
        fastlstm.load(_tamper(path, tmp_path, edit))


def test_quantized_file_missing_scales_or_truncated(tmp_path):
    path = tmp_path / "model.safetensors"
    fastlstm.LSTM(8, 16, seed=0).quantize("int8").save(path)

    def drop_scales(header, data):
        del header["weight_hh_l0.scales"]

    with pytest.raises(ValueError):
        fastlstm.load(_tamper(path, tmp_path, drop_scales))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="could not be read|truncated"):
        fastlstm.load(truncated)


def test_bf16_file_declaring_another_layout_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    fastlstm.LSTM(8, 16, seed=0).quantize("bf16").save(path)
    with pytest.raises(ValueError):
        fastlstm.load(_tamper(path, tmp_path, _declare("weight_ih_l0", dtype="F16")))
