"""fastlstm._core.PackedLinear*: nn.Linear on the packed GEMM, for converted models' heads.

Results against numpy (float64 reference) across shapes that cross the kernels' edges (panels of
16/8 outputs, 256-wide reduction blocks, 4-row tiling threshold, 64-row passes), under every
instruction set; and every argument the binding refuses, so that calling the extension directly
with inconsistent arrays raises instead of reading or writing out of bounds.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastlstm import _core

CLASSES = {np.float32: _core.PackedLinearF32, np.float64: _core.PackedLinearF64}
# a few ulps of each output's scale (the reduction order differs from numpy's BLAS)
RELATIVE_TOLERANCE = {np.float32: 2e-6, np.float64: 1e-14}


def reference(x, weight, bias):
    result = x.astype(np.float64) @ weight.astype(np.float64).T
    return result if bias is None else result + bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, in_features, out_features, with_bias", [
    (1, 100, 1, True), (1, 256, 256, True), (32, 256, 256, True), (32, 100, 1, True), (3, 7, 17, False),
    (4, 300, 33, True), (5, 513, 8, True), (70, 40, 16, True), (129, 12, 31, False), (2, 1, 5, True),
])
def test_matches_numpy_on_every_isa(isa, dtype, rows, in_features, out_features, with_bias):
    rng = np.random.default_rng(rows * 1000 + in_features + out_features)
    weight = rng.standard_normal((out_features, in_features)).astype(dtype)
    bias = rng.standard_normal(out_features).astype(dtype) if with_bias else None
    x = rng.standard_normal((rows, in_features)).astype(dtype)
    layer = CLASSES[dtype](weight, bias)
    assert (layer.in_features, layer.out_features) == (in_features, out_features)
    got = layer.forward(x)
    assert got.dtype == dtype and got.shape == (rows, out_features) and got.flags.c_contiguous
    want = reference(x, weight, bias)
    scale = np.abs(x).max() * np.abs(weight).max() * in_features + 1
    assert np.abs(got - want).max() <= RELATIVE_TOLERANCE[dtype] * scale


def test_rows_read_in_place_from_strided_views():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((20, 6)).astype(np.float32)
    layer = _core.PackedLinearF32(weight, None)
    sequence = rng.standard_normal((5, 9, 6)).astype(np.float32)
    for view in (sequence[:, -1, :], sequence[::2, 3], sequence[::-1, 0]):
        np.testing.assert_allclose(layer.forward(view), view @ weight.T, rtol=1e-5, atol=1e-5)
    assert layer.forward(np.zeros((0, 6), np.float32)).shape == (0, 20)


def test_the_weights_are_copied():
    weight = np.ones((3, 4), np.float32)
    bias = np.zeros(3, np.float32)
    layer = _core.PackedLinearF32(weight, bias)
    weight[:] = 5
    bias[:] = 1
    np.testing.assert_array_equal(layer.forward(np.ones((1, 4), np.float32)), [[4, 4, 4]])


@pytest.mark.parametrize("weight, bias, error, message", [
    ([[1.0, 2.0]], None, TypeError, r"weight must be a numpy array, got list"),
    (np.ones((2, 3), np.float64), None, TypeError, r"weight must have dtype float32"),
    (np.ones(3, np.float32), None, ValueError, r"weight must be 2-D"),
    (np.ones((0, 3), np.float32), None, ValueError, r"weight must be 2-D .* sizes in \[1, 2\*\*24\]"),
    (np.ones((3, 0), np.float32), None, ValueError, r"sizes in \[1, 2\*\*24\]"),
    (np.ones((3, 4), np.float32)[:, ::2], None, ValueError, r"weight must be C-contiguous"),
    (np.ones((3, 4), np.float32), np.ones(4, np.float32), ValueError, r"bias must have shape \(3,\), got \(4,\)"),
    (np.ones((3, 4), np.float32), np.ones(3, np.float64), TypeError, r"bias must have dtype float32"),
    (np.ones((3, 4), np.float32), [0.0, 0.0, 0.0], TypeError, r"bias must be a numpy array"),
    (np.ones((3, 4), np.float32).astype(">f4"), None, TypeError, r"weight must have dtype float32"),
], ids=["list", "dtype", "1d", "no_outputs", "no_inputs", "strided", "bias_shape", "bias_dtype", "bias_list",
        "byte_swapped"])
def test_construction_refuses_inconsistent_arrays(weight, bias, error, message):
    with pytest.raises(error, match=message):
        _core.PackedLinearF32(weight, bias)


@pytest.mark.parametrize("make_input, error, message", [
    (lambda: np.ones((2, 5), np.float32), ValueError, r"input must have 4 features, got \(2, 5\)"),
    (lambda: np.ones(4, np.float32), ValueError, r"input must be 2-D"),
    (lambda: np.ones((1, 2, 4), np.float32), ValueError, r"input must be 2-D"),
    (lambda: np.ones((2, 4), np.float64), TypeError, r"input must have dtype float32"),
    (lambda: np.ones((2, 8), np.float32)[:, ::2], ValueError, r"last dimension must be contiguous"),
    (lambda: [[1.0] * 4], TypeError, r"input must be a numpy array"),
    (lambda: np.frombuffer(b"\0" * 33, np.uint8)[1:].view(np.float32).reshape(2, 4), ValueError, r"aligned"),
], ids=["features", "1d", "3d", "dtype", "strided_features", "list", "misaligned"])
def test_forward_refuses_inconsistent_inputs(make_input, error, message):
    layer = _core.PackedLinearF32(np.ones((3, 4), np.float32), None)
    with pytest.raises(error, match=message):
        layer.forward(make_input())
