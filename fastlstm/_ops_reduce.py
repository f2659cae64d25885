"""Reductions and normalisations over axes: sum/mean/max..., norms, softmax, LayerNorm, BatchNorm.

torch's `dim=None` and `dim=[]` both mean every axis; `keepdim` keeps reduced axes as size 1.
Normalisations follow torch's CPU formulas (LayerNorm: (x - mean) * rsqrt(var + eps); BatchNorm
in eval: x * alpha + beta with alpha = weight / sqrt(running_var + eps), prepared once at load).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ._ops_base import Builder, StepArgs, StepFn, as_dtype

__all__ = ["BUILDERS"]


def _axes(a: StepArgs, name: str = "dim") -> Optional[Tuple[int, ...]]:
    dims = a.ints(name, None)
    return None if not dims else tuple(dims)  # None and [] both reduce every axis, as in torch


def _reduction(fn: Callable[..., Any], quiet: bool = False) -> Builder:
    def build(a: StepArgs) -> StepFn:
        x, out, dtype = a.tensor("input"), a.out, a.dtype()
        axes, keepdim = _axes(a), a.flag("keepdim", False)

        def run(env):
            if quiet:
                with np.errstate(all="ignore"):
                    env[out] = as_dtype(fn(x(env), axis=axes, keepdims=keepdim), dtype)
            else:
                env[out] = as_dtype(fn(x(env), axis=axes, keepdims=keepdim), dtype)
        return run
    return build


def _build_sum(a: StepArgs) -> StepFn:
    dtype = a.dtype()
    # Integers and bools sum in int64, as torch; floats in their own precision.
    accumulate = np.int64 if dtype.kind in "iub" else None
    return _reduction(lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims, dtype=accumulate))(a)


def _build_arg_reduction(pick: Callable[..., Any]) -> Builder:
    def build(a: StepArgs) -> StepFn:
        x, out = a.tensor("input"), a.out
        dim, keepdim = a.optional_int("dim"), a.flag("keepdim", False)

        def run(env):
            value = x(env)
            if dim is None:
                index = pick(value.reshape(-1))
                env[out] = np.asarray(index, np.int64).reshape((1,) * value.ndim if keepdim else ())
            else:
                env[out] = np.asarray(pick(value, axis=dim, keepdims=keepdim), np.int64)
        return run
    return build


def _build_max_or_min_dim(pick: Callable[..., Any]) -> Builder:
    """max(dim)/min(dim): (values, indices), indices of the first extreme as torch on CPU."""
    def build(a: StepArgs) -> StepFn:
        x = a.tensor("input")
        values_slot, indices_slot = a.outs(2)
        dim, keepdim = a.integer("dim"), a.flag("keepdim", False)

        def run(env):
            value = x(env)
            index = pick(value, axis=dim, keepdims=True)
            values = np.take_along_axis(value, index, axis=dim)
            if not keepdim:
                values, index = np.squeeze(values, axis=dim), np.squeeze(index, axis=dim)
            env[values_slot], env[indices_slot] = values, index.astype(np.int64, copy=False)
        return run
    return build


def _mean(x: Any, axis: Any, keepdims: bool) -> Any:
    """np.mean without its Python warning on empty axes (torch returns nan silently)."""
    count = _count(np.shape(x), axis)
    with np.errstate(all="ignore"):
        return np.true_divide(np.sum(x, axis=axis, keepdims=keepdims), count)


def _count(shape: Tuple[int, ...], axis: Any) -> int:
    axes = range(len(shape)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    count = 1
    for a in axes:
        count *= shape[a]
    return count


def _build_vector_norm(a: StepArgs) -> StepFn:
    order = a.number("ord", 2)
    x, out, dtype = a.tensor("input"), a.out, a.dtype()
    axes, keepdim = _axes(a), a.flag("keepdim", False)

    def norm(value):
        magnitude = np.abs(value)
        if order == 2:
            return np.sqrt(np.sum(magnitude * magnitude, axis=axes, keepdims=keepdim))
        if order == 1:
            return np.sum(magnitude, axis=axes, keepdims=keepdim)
        if order == float("inf"):
            return np.max(magnitude, axis=axes, keepdims=keepdim)
        if order == float("-inf"):
            return np.min(magnitude, axis=axes, keepdims=keepdim)
        if order == 0:
            return np.sum(magnitude != 0, axis=axes, keepdims=keepdim)
        return np.sum(magnitude ** order, axis=axes, keepdims=keepdim) ** (1.0 / order)

    def run(env):
        with np.errstate(all="ignore"):
            env[out] = as_dtype(norm(x(env)), dtype)
    return run


def _build_var_or_std(take_root: bool) -> Builder:
    def build(a: StepArgs) -> StepFn:
        correction = a.number("correction", 1)
        x, out, dtype = a.tensor("input"), a.out, a.dtype()
        axes, keepdim = _axes(a), a.flag("keepdim", False)

        def run(env):
            value = x(env)
            with np.errstate(all="ignore"):  # torch gives nan for too few values, without a warning
                deviation = value - np.true_divide(np.sum(value, axis=axes, keepdims=True), _count(value.shape, axes))
                result = np.true_divide(np.sum(deviation * deviation, axis=axes, keepdims=keepdim),
                                        _count(value.shape, axes) - correction)
                env[out] = as_dtype(np.sqrt(result) if take_root else result, dtype)
        return run
    return build


def _logsumexp(x: Any, axis: Any, keepdims: bool) -> Any:
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0)  # torch's guard: all -inf rows give -inf, not nan
    total = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return total if keepdims else np.squeeze(total, axis=axis)


def _build_cumsum(a: StepArgs) -> StepFn:
    x, out, dtype, dim = a.tensor("input"), a.out, a.dtype(), a.integer("dim")

    def run(env):
        env[out] = as_dtype(np.cumsum(x(env), axis=dim, dtype=dtype), dtype)
    return run


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / np.sum(exponentials, axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _build_softmax(fn: Callable[[np.ndarray, int], np.ndarray]) -> Builder:
    def build(a: StepArgs) -> StepFn:
        x, out, dtype, dim = a.tensor("input"), a.out, a.dtype(), a.integer("dim")

        def run(env):
            with np.errstate(all="ignore"):
                env[out] = as_dtype(fn(np.asarray(x(env), dtype), dim), dtype)
        return run
    return build


def _build_layer_norm(a: StepArgs) -> StepFn:
    x, out, dtype = a.tensor("input"), a.out, a.dtype()
    count = a.integer("normalized_ndim")
    if count < 1:
        raise a.fail("normalized_ndim must be >= 1")
    axes = tuple(range(-count, 0))
    weight, bias = a.optional_tensor("weight"), a.optional_tensor("bias")
    eps = a.number("eps")

    def run(env):
        value = x(env)
        centered = value - _mean(value, axes, True)
        variance = _mean(centered * centered, axes, True)
        result = centered * (1.0 / np.sqrt(variance + eps))
        if weight is not None:
            result = result * weight(env)
        if bias is not None:
            result = result + bias(env)
        env[out] = as_dtype(result, dtype)
    return run


def _build_rms_norm(a: StepArgs) -> StepFn:
    x, out, dtype = a.tensor("input"), a.out, a.dtype()
    count = a.integer("normalized_ndim")
    axes = tuple(range(-count, 0))
    weight = a.optional_tensor("weight")
    eps = a.optional_number("eps")
    eps = float(np.finfo(dtype).eps) if eps is None else eps

    def run(env):
        value = x(env)
        result = value * (1.0 / np.sqrt(_mean(value * value, axes, True) + eps))
        if weight is not None:
            result = result * weight(env)
        env[out] = as_dtype(result, dtype)
    return run


def _build_batch_norm(a: StepArgs) -> StepFn:
    """Eval-mode batch norm over axis 1 (channels) with the running statistics."""
    x, out, dtype = a.tensor("input"), a.out, a.dtype()
    eps = a.number("eps")
    mean, variance = a.weight("running_mean"), a.weight("running_var")
    weight, bias = a.weight("weight"), a.weight("bias")
    if mean is None or variance is None:
        raise a.fail("running_mean and running_var must be stored weights")
    if (a.has("weight") and weight is None) or (a.has("bias") and bias is None):
        raise a.fail("weight and bias must be stored weights")
    if mean.ndim != 1 or variance.shape != mean.shape:
        raise a.fail(f"running statistics must be 1-D of one size, got {mean.shape} and {variance.shape}")
    for name, array in (("weight", weight), ("bias", bias)):
        if array is not None and array.shape != mean.shape:
            raise a.fail(f"{name} has shape {array.shape}, expected {mean.shape}")
    alpha = (1.0 / np.sqrt(variance + eps)).astype(dtype)
    if weight is not None:
        alpha = (alpha * weight).astype(dtype)
    beta = (-mean * alpha).astype(dtype) if bias is None else (bias - mean * alpha).astype(dtype)
    by_ndim: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    def run(env):
        value = x(env)
        ndim = value.ndim
        params = by_ndim.get(ndim)
        if params is None:
            shape = (-1,) if ndim == 1 else (1, -1) + (1,) * (ndim - 2)
            params = by_ndim.setdefault(ndim, (alpha.reshape(shape), beta.reshape(shape)))
        env[out] = as_dtype(value * params[0] + params[1], dtype)
    return run


BUILDERS: Dict[str, Builder] = {
    "sum": _build_sum,
    "mean": _reduction(_mean),
    "amax": _reduction(np.max),
    "amin": _reduction(np.min),
    "prod": _reduction(np.prod),
    "any": _reduction(np.any),
    "all": _reduction(np.all),
    "logsumexp": _reduction(_logsumexp, quiet=True),
    "argmax": _build_arg_reduction(np.argmax),
    "argmin": _build_arg_reduction(np.argmin),
    "max_dim": _build_max_or_min_dim(np.argmax),
    "min_dim": _build_max_or_min_dim(np.argmin),
    "vector_norm": _build_vector_norm,
    "var": _build_var_or_std(take_root=False),
    "std": _build_var_or_std(take_root=True),
    "cumsum": _build_cumsum,
    "softmax": _build_softmax(softmax),
    "log_softmax": _build_softmax(log_softmax),
    "layer_norm": _build_layer_norm,
    "rms_norm": _build_rms_norm,
    "batch_norm": _build_batch_norm,
}
