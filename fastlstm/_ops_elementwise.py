"""Elementwise operations: activations, arithmetic with broadcasting, comparisons, selection.

Each follows the formula torch uses on CPU, so results agree to float rounding. Results are cast
to the dtype torch produced at conversion (`as_dtype`), because numpy promotes some mixes
differently (int tensor / 2 is float32 in torch, float64 in numpy). Operations that can overflow
or divide by zero run under np.errstate: torch returns inf/nan silently, and so do we.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict

import numpy as np

from ._ops_base import Builder, StepArgs, StepFn, as_dtype

__all__ = ["BUILDERS"]

_SQRT_HALF = math.sqrt(0.5)
_GELU_TANH_BETA = math.sqrt(2.0 / math.pi)
_GELU_TANH_KAPPA = 0.044715


def sigmoid(x: Any) -> Any:
    # The tanh form never overflows (1 / (1 + exp(-x)) does for x < -88 in float32, with a
    # numpy warning) and is accurate to a few ulps, like torch's.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _erf_float64(x: np.ndarray) -> np.ndarray:
    return _ERF_UFUNC(x).astype(np.float64)


_ERF_UFUNC = np.frompyfunc(math.erf, 1, 1)


def erf(x: Any) -> Any:
    """erf to float rounding: libm's erf for float64 (numpy has none); for float32, Abramowitz and
    Stegun 7.1.26 evaluated in float64 (max error 1.5e-7, below float32's resolution of GELU's
    output at the scales that matter)."""
    x = np.asarray(x)
    if x.dtype == np.float32:
        z = np.abs(x.astype(np.float64))
        t = 1.0 / (1.0 + 0.3275911 * z)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        return (np.sign(x) * (1.0 - poly * np.exp(-z * z))).astype(np.float32)
    return _erf_float64(x.astype(np.float64, copy=False))


def gelu(x: Any, approximate: str) -> Any:
    if approximate == "tanh":
        inner = _GELU_TANH_BETA * (x + _GELU_TANH_KAPPA * (x * x * x))
        return 0.5 * x * (1.0 + np.tanh(inner))
    return 0.5 * x * (1.0 + erf(x * _SQRT_HALF))


def _unary(fn: Callable[[Any], Any], quiet: bool = False) -> Builder:
    def build(a: StepArgs) -> StepFn:
        x, out, dtype = a.tensor("input"), a.out, a.dtype()
        if quiet:
            def run(env):
                with np.errstate(all="ignore"):
                    env[out] = as_dtype(fn(x(env)), dtype)
        else:
            def run(env):
                env[out] = as_dtype(fn(x(env)), dtype)
        return run
    return build


def _build_gelu(a: StepArgs) -> StepFn:
    approximate = a.choice("approximate", ("none", "tanh"), "none")
    return _unary(lambda x: gelu(x, approximate))(a)


def _build_leaky_relu(a: StepArgs) -> StepFn:
    slope = a.number("negative_slope", 0.01)
    return _unary(lambda x: np.where(x > 0, x, x * slope))(a)


def _build_elu(a: StepArgs) -> StepFn:
    alpha, scale, input_scale = a.number("alpha", 1.0), a.number("scale", 1.0), a.number("input_scale", 1.0)
    negative_scale = alpha * scale

    def elu(x):
        # expm1 of min(x, 0): the positive side never reaches exp, so nothing overflows.
        negative = np.expm1(np.minimum(x, 0) * input_scale) * negative_scale
        return np.where(x > 0, x * scale, negative)
    return _unary(elu)(a)


def _build_softplus(a: StepArgs) -> StepFn:
    beta, threshold = a.number("beta", 1.0), a.number("threshold", 20.0)

    def softplus(x):
        scaled = x * beta
        return np.where(scaled > threshold, x, np.logaddexp(0, scaled) / beta)
    return _unary(softplus, quiet=True)(a)


def _build_hardtanh(a: StepArgs) -> StepFn:
    low, high = a.number("min_val", -1.0), a.number("max_val", 1.0)
    return _unary(lambda x: np.clip(x, low, high))(a)


def _build_clamp(a: StepArgs) -> StepFn:
    x, out, dtype = a.tensor("input"), a.out, a.dtype()
    low = a.value("min") if a.has("min") else None
    high = a.value("max") if a.has("max") else None
    if low is None and high is None:
        raise a.fail("at least one of min and max must be given")

    def run(env):
        value = x(env)
        if low is not None:
            value = np.maximum(value, low(env))
        if high is not None:
            value = np.minimum(value, high(env))
        env[out] = as_dtype(value, dtype)
    return run


def _binary(fn: Callable[[Any, Any], Any], quiet: bool = False) -> Builder:
    def build(a: StepArgs) -> StepFn:
        left, right, out, dtype = a.value("input"), a.value("other"), a.out, a.dtype()
        if quiet:
            def run(env):
                with np.errstate(all="ignore"):
                    env[out] = as_dtype(fn(left(env), right(env)), dtype)
        else:
            def run(env):
                env[out] = as_dtype(fn(left(env), right(env)), dtype)
        return run
    return build


def _build_add_or_sub(subtract: bool) -> Builder:
    def build(a: StepArgs) -> StepFn:
        alpha = a.number("alpha", 1)
        combine = np.subtract if subtract else np.add
        if alpha == 1:
            return _binary(combine)(a)
        return _binary(lambda x, y: combine(x, np.multiply(y, alpha)))(a)
    return build


def _trunc_divide(x: Any, y: Any) -> Any:
    quotient = np.true_divide(x, y)
    if np.asarray(quotient).dtype.kind == "f" and (np.asarray(x).dtype.kind in "iu" and np.asarray(y).dtype.kind in "iu"):
        # integers: exact, as torch (float division would round large values)
        floor = np.floor_divide(x, y)
        inexact = (np.remainder(x, y) != 0) & ((np.asarray(x) < 0) != (np.asarray(y) < 0))
        return floor + inexact
    return np.trunc(quotient)


def _build_div(a: StepArgs) -> StepFn:
    mode = a.choice("rounding_mode", ("true", "trunc", "floor"), "true")
    if mode == "trunc":
        return _binary(_trunc_divide, quiet=True)(a)
    if mode == "floor":
        return _binary(np.floor_divide, quiet=True)(a)
    return _binary(np.true_divide, quiet=True)(a)


def _build_where(a: StepArgs) -> StepFn:
    condition, left, right, out, dtype = a.tensor("condition"), a.value("input"), a.value("other"), a.out, a.dtype()

    def run(env):
        env[out] = as_dtype(np.where(condition(env), left(env), right(env)), dtype)
    return run


def _build_masked_fill(a: StepArgs) -> StepFn:
    x, mask, value, out, dtype = a.tensor("input"), a.tensor("mask"), a.value("value"), a.out, a.dtype()

    def run(env):
        env[out] = as_dtype(np.where(mask(env), value(env), x(env)), dtype)
    return run


BUILDERS: Dict[str, Builder] = {
    # activations
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "tanh": _unary(np.tanh),
    "sigmoid": _unary(sigmoid),
    "silu": _unary(lambda x: x * sigmoid(x)),
    "gelu": _build_gelu,
    "leaky_relu": _build_leaky_relu,
    "elu": _build_elu,
    "softplus": _build_softplus,
    "hardtanh": _build_hardtanh,
    "clamp": _build_clamp,
    # elementwise math
    "exp": _unary(np.exp, quiet=True),
    "expm1": _unary(np.expm1, quiet=True),
    "log": _unary(np.log, quiet=True),
    "log1p": _unary(np.log1p, quiet=True),
    "sqrt": _unary(np.sqrt, quiet=True),
    "rsqrt": _unary(lambda x: 1.0 / np.sqrt(x), quiet=True),
    "reciprocal": _unary(lambda x: 1.0 / x, quiet=True),
    "abs": _unary(np.abs),
    "neg": _unary(np.negative),
    "sign": _unary(np.sign),
    "floor": _unary(np.floor),
    "ceil": _unary(np.ceil),
    "round": _unary(np.round),
    "sin": _unary(np.sin),
    "cos": _unary(np.cos),
    "erf": _unary(erf),
    "logical_not": _unary(np.logical_not),
    "isnan": _unary(np.isnan),
    # arithmetic (either side may be a scalar), broadcasting as torch does
    "add": _build_add_or_sub(subtract=False),
    "sub": _build_add_or_sub(subtract=True),
    "mul": _binary(np.multiply),
    "div": _build_div,
    "remainder": _binary(np.remainder, quiet=True),
    "pow": _binary(np.power, quiet=True),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "eq": _binary(np.equal),
    "ne": _binary(np.not_equal),
    "lt": _binary(np.less),
    "le": _binary(np.less_equal),
    "gt": _binary(np.greater),
    "ge": _binary(np.greater_equal),
    "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or),
    "logical_xor": _binary(np.logical_xor),
    "where": _build_where,
    "masked_fill": _build_masked_fill,
}
