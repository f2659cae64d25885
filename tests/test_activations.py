"""The kernels' sigmoid and tanh keep a few ulps of relative accuracy across their whole range,
small arguments included (tanh(1e-8) is 1e-8, not 0), with the same formula in every kernel set.

They are read through the public API: in LSTM(1, 1) with W_ih selecting one gate and a bias of 40
saturating another to exactly 1, one step from zero state leaves c_n = i * g = tanh(x) (or
sigmoid(x)) exactly as the kernel computed it, for a batch of many x at once."""

from __future__ import annotations

from typing import Dict

import numpy as np
import pytest

import fastlstm

# Measured worst cases are 2.43 ulps (tanh) and 2.05 ulps (sigmoid) in both dtypes, every ISA.
MAX_ULPS = 3.0
# The extended-precision reference for each dtype (x86-64's long double has a 64-bit mantissa).
REFERENCE = {np.float32: np.float64, np.float64: np.longdouble}
SMALLEST_EXPONENT = {np.float32: -30, np.float64: -300}


def activation_probe(kind: str, x: np.ndarray) -> np.ndarray:
    dtype = x.dtype
    w_ih, bias = np.zeros((4, 1), dtype), np.zeros(4, dtype)
    gate, saturated = (2, 0) if kind == "tanh" else (0, 2)  # gates i, f, g, o
    w_ih[gate, 0] = 1
    bias[saturated] = 40  # sigmoid(40) and tanh(40) round to exactly 1
    weights: Dict[str, np.ndarray] = {
        "weight_ih_l0": w_ih,
        "weight_hh_l0": np.zeros((4, 1), dtype),
        "bias_ih_l0": bias,
        "bias_hh_l0": np.zeros(4, dtype),
    }
    model = fastlstm.LSTM(1, 1, dtype=dtype, weights=weights)
    _, (_, c_n) = model(x.reshape(1, -1, 1))
    return c_n.reshape(-1)


def arguments(dtype: type) -> np.ndarray:
    magnitudes = np.logspace(SMALLEST_EXPONENT[dtype], np.log10(20), 50_000)
    return np.concatenate([magnitudes, -magnitudes, [0.0]]).astype(dtype)


def ulps_off(got: np.ndarray, exact: np.ndarray, dtype: type) -> np.ndarray:
    spacing = np.spacing(np.abs(exact).astype(dtype)).astype(exact.dtype)
    return np.abs(got.astype(exact.dtype) - exact) / spacing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_relative_accuracy(isa: str, dtype: type) -> None:
    x = arguments(dtype)
    got = activation_probe("tanh", x)
    exact = np.tanh(x.astype(REFERENCE[dtype]))
    worst = ulps_off(got, exact, dtype)
    assert worst.max() <= MAX_ULPS, f"tanh({x[worst.argmax()]!r}) is {worst.max():.2f} ulps off on {isa}"
    np.testing.assert_array_equal(np.signbit(got), np.signbit(x))  # odd, and tanh(+0) = +0
    tiny = np.array([1e-8, -3e-7], dtype)  # where 2 / (1 + exp(-2x)) - 1 gave 0 and 24% off
    assert ulps_off(activation_probe("tanh", tiny), np.tanh(tiny.astype(REFERENCE[dtype])), dtype).max() <= MAX_ULPS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_relative_accuracy(isa: str, dtype: type) -> None:
    x = arguments(dtype)
    x = x[x > (-80 if dtype == np.float32 else -700)]  # results below the smallest normal number are out of scope
    got = activation_probe("sigmoid", x)
    wide = x.astype(REFERENCE[dtype])
    exact = 1 / (1 + np.exp(-wide))
    worst = ulps_off(got, exact, dtype)
    assert worst.max() <= MAX_ULPS, f"sigmoid({x[worst.argmax()]!r}) is {worst.max():.2f} ulps off on {isa}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturation_and_nan(isa: str, dtype: type) -> None:
    # (Infinite inputs cannot be probed this way: the zero weights of the other gates give 0 * inf.)
    x = np.array([1e4, -1e4, np.nan], dtype)
    np.testing.assert_array_equal(activation_probe("tanh", x), [1, -1, np.nan])
    got = activation_probe("sigmoid", x)
    assert got[0] == 1 and 0 <= got[1] < np.finfo(dtype).tiny and np.isnan(got[2])
