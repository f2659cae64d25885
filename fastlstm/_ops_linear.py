"""Matrix products and lookups: Linear, matmul, addmm, einsum, Embedding.

A Linear layer's weight is stored (out_features, in_features) as in torch; it is used through
its transpose, a view numpy's BLAS reads without copying. Inputs of any rank are flattened to
one matrix product, so a (B, T, F) sequence costs one GEMM, not B of them.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ._ops_base import Builder, StepArgs, StepFn, as_dtype
from ._quantize import QUANTIZED_DTYPES, checked_int8_scales

__all__ = ["BUILDERS", "linear"]


def linear(x: np.ndarray, weight_t: np.ndarray, bias: "np.ndarray | None") -> np.ndarray:
    """x @ weight_t (+ bias) for x of any rank >= 1; weight_t is (in_features, out_features)."""
    if x.shape[-1:] != weight_t.shape[:1]:
        raise ValueError(
            f"linear: input has {x.shape[-1] if x.ndim else 0} features (shape {x.shape}), "
            f"but the layer takes {weight_t.shape[0]}"
        )
    if x.ndim <= 2:
        result = np.matmul(x, weight_t)
    else:
        result = np.matmul(x.reshape(-1, x.shape[-1]), weight_t).reshape(x.shape[:-1] + weight_t.shape[1:])
    if bias is not None:
        result += bias
    return result


def _build_linear(a: StepArgs) -> StepFn:
    x, out, dtype = a.tensor("input"), a.out, a.dtype()
    weight, bias = a.weight("weight"), a.weight("bias")
    if weight is not None and weight.dtype in QUANTIZED_DTYPES:
        return _build_quantized_linear(a, weight, bias)
    if weight is not None and (bias is not None or not a.has("bias")):
        _check_linear_shapes(a, weight, bias)
        packed = _packed_linear(weight, bias)
        if packed is not None:
            return _run_packed(packed, x, out, weight.dtype)
        weight_t = weight.T

        def run(env):
            env[out] = as_dtype(linear(x(env), weight_t, bias), dtype)
        return run
    # weights computed in forward (rare: tied or generated weights) are transposed per call
    get_weight, get_bias = a.tensor("weight"), a.optional_tensor("bias")

    def run_computed(env):
        w = get_weight(env)
        env[out] = as_dtype(linear(x(env), w.T, None if get_bias is None else get_bias(env)), dtype)
    return run_computed


# Linear layers run on fastlstm's packed GEMM (the C++ PackedLinear) rather than numpy's matmul.
# Measured interleaved, medians of 40 runs, fp32, one Xeon (AVX-512) core of a loaded 2-core host:
#   256->256  batch 1:  2.2 us vs 5.4 us     batch 32: 34-56 us vs 70-219 us (OpenBLAS, 1-2 threads)
#   100->1    batch 1:  0.4 us vs 1.7 us     batch 32:  2.5 us vs 1.7 us
# numpy wins only the last case, where the output is 1/16 of a panel, by 0.8 us; one path is
# kept for all shapes. Set False to compare.
USE_PACKED_LINEAR = True
_PACKED_LINEAR_CLASSES = {np.dtype(np.float32): "PackedLinearF32", np.dtype(np.float64): "PackedLinearF64"}


def _packed_linear(weight: np.ndarray, bias: "np.ndarray | None") -> Any:
    """The layer packed for the C++ kernels, or None where numpy computes it (the extension
    predates PackedLinear, or the weights are not float32/float64)."""
    from . import _core

    name = _PACKED_LINEAR_CLASSES.get(weight.dtype)
    cls = getattr(_core, name, None) if name is not None and USE_PACKED_LINEAR else None
    if cls is None or (bias is not None and bias.dtype != weight.dtype):
        return None
    return cls(np.ascontiguousarray(weight), None if bias is None else np.ascontiguousarray(bias))


_QUANTIZED_LINEAR_CLASSES = {"bfloat16": "PackedLinearBf16", "int8": "PackedLinearI8"}


def _check_linear_shapes(a: StepArgs, weight: np.ndarray, bias: "np.ndarray | None") -> None:
    if weight.ndim != 2:
        raise a.fail(f"weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise a.fail(f"bias has shape {bias.shape}, expected ({weight.shape[0]},)")


def _build_quantized_linear(a: StepArgs, weight: np.ndarray, bias: "np.ndarray | None") -> StepFn:
    """A quantized model's Linear: bf16 bits or int8 values (with the scales stored beside them),
    float32 in and out. A stored bias goes into the kernel; one computed in forward is added after."""
    from . import _core

    _check_linear_shapes(a, weight, bias)
    weights_dtype = QUANTIZED_DTYPES[weight.dtype]
    (stored_name,) = a.stored_names("weight")
    scales = None
    if weights_dtype == "int8":
        scales = checked_int8_scales(a.scales_of(stored_name), weight.shape, f"{stored_name}.scales", a.where)
    if bias is not None and bias.dtype != np.float32:
        raise a.fail(f"a {weights_dtype} layer takes a float32 bias, got {bias.dtype}")
    try:
        packed = getattr(_core, _QUANTIZED_LINEAR_CLASSES[weights_dtype])(weight, bias, scales)
    except (TypeError, ValueError) as exc:
        raise a.fail(f"invalid {weights_dtype} weights: {exc}") from None
    x, out, dtype = a.tensor("input"), a.out, a.dtype()
    run = _run_packed(packed, x, out, np.dtype(np.float32))
    if bias is not None or not a.has("bias"):
        return run
    computed_bias = a.tensor("bias")

    def run_with_bias(env):
        run(env)
        env[out] = as_dtype(env[out] + computed_bias(env), dtype)
    return run_with_bias


def _run_packed(packed: Any, x: Any, out: int, dtype: np.dtype) -> StepFn:
    forward, features, out_features = packed.forward, packed.in_features, packed.out_features
    itemsize = dtype.itemsize

    def run(env):
        value = x(env)
        if value.dtype != dtype or value.ndim == 0 or value.shape[-1] != features:
            raise ValueError(f"linear: input of dtype {value.dtype} and shape {value.shape} does not fit the "
                             f"layer ({features} {dtype} features)")
        rows = value if value.ndim == 2 else value.reshape(-1, features)
        if rows.strides[-1] != itemsize and features > 1:
            rows = np.ascontiguousarray(rows)  # the kernel reads each row as one run; rows may be strided
        result = forward(rows)
        env[out] = result if value.ndim == 2 else result.reshape(value.shape[:-1] + (out_features,))
    return run


def _build_matmul(a: StepArgs) -> StepFn:
    left, right, out, dtype = a.tensor("input"), a.tensor("other"), a.out, a.dtype()

    def run(env):
        env[out] = as_dtype(np.matmul(left(env), right(env)), dtype)
    return run


def _build_addmm(a: StepArgs) -> StepFn:
    bias, left, right, out, dtype = a.tensor("input"), a.tensor("mat1"), a.tensor("mat2"), a.out, a.dtype()
    beta, alpha = a.number("beta", 1), a.number("alpha", 1)

    def run(env):
        product = np.matmul(left(env), right(env))
        if alpha != 1:
            product = product * alpha
        base = bias(env)
        env[out] = as_dtype(product + (base if beta == 1 else base * beta), dtype)
    return run


def _build_einsum(a: StepArgs) -> StepFn:
    equation = a.raw("equation")
    if not isinstance(equation, str):
        raise a.fail("equation must be a string")
    operands, out, dtype = a.tensors("tensors"), a.out, a.dtype()

    def run(env):
        env[out] = as_dtype(np.einsum(equation, *[operand(env) for operand in operands]), dtype)
    return run


def _build_embedding(a: StepArgs) -> StepFn:
    table, indices, out = a.tensor("weight"), a.tensor("indices"), a.out
    stored = a.weight("weight")
    if stored is not None and stored.ndim != 2:
        raise a.fail(f"the embedding table must be 2-D, got shape {stored.shape}")

    def run(env):
        rows, chosen = table(env), indices(env)
        if chosen.dtype.kind not in "iu":
            raise TypeError(f"embedding indices must be integers, got dtype {chosen.dtype}")
        # numpy would wrap negative indices silently; torch refuses them, and so do we
        if chosen.size and (chosen.min() < 0 or chosen.max() >= rows.shape[0]):
            raise IndexError(
                f"embedding index out of range: indices run from {chosen.min()} to {chosen.max()}, "
                f"the table has {rows.shape[0]} rows"
            )
        env[out] = rows[chosen]
    return run


BUILDERS: Dict[str, Builder] = {
    "linear": _build_linear,
    "matmul": _build_matmul,
    "addmm": _build_addmm,
    "einsum": _build_einsum,
    "embedding": _build_embedding,
}
