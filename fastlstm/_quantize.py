"""Reduced-precision weights: bf16 and int8, for `LSTM.quantize`, `LSTMCell.quantize` and the packed
Linear of whole models.

Only the weight matrices change format; inputs, outputs, states, biases and every sum stay float32
(the kernels widen each weight to float32 as they load it). What the formats cost in accuracy is
therefore exactly the rounding of the weights, measured in docs/reduced_precision.md.

- bf16: each weight rounded to the nearest bfloat16 (ties to even), kept as its 16 bits (numpy has
  no bfloat16 dtype, so the arrays are uint16).
- int8: one float32 scale per row and per group of INT8_GROUP inputs, `scale = max|w| / 127` over
  the group, `q = round(w / scale)` in [-127, 127]. Groups along the input rather than one scale per
  row: a trained LSTM's rows carry a few large weights, and a per-row scale would spend the whole
  8 bits on them (measured in bench/quantization_accuracy.py).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from . import _core

__all__ = [
    "SCHEMES",
    "WEIGHTS_DTYPES",
    "QUANTIZED_DTYPES",
    "INT8_GROUP",
    "check_scheme",
    "quantize_matrix",
    "dequantize_matrix",
    "is_matrix_name",
    "quantize_weights",
    "check_stored_weights",
    "checked_int8_scales",
]

# quantize() scheme -> the model's weights_dtype.
WEIGHTS_DTYPES: Dict[str, str] = {"bf16": "bfloat16", "int8": "int8"}
SCHEMES = tuple(WEIGHTS_DTYPES)
# How a quantized matrix is held in memory (numpy has no bfloat16: its bits, as uint16) -> weights_dtype.
QUANTIZED_DTYPES: Dict[np.dtype, str] = {np.dtype(np.uint16): "bfloat16", np.dtype(np.int8): "int8"}
INT8_GROUP: int = _core.INT8_GROUP
_INT8_MAX = 127  # symmetric: -128 is never used, so negating a weight never overflows


def check_scheme(scheme: object, dtype: np.dtype, weights_dtype: str) -> str:
    """The scheme, checked against the model it would quantize: ValueError for an unknown scheme
    or an already-quantized model, TypeError for a float64 model."""
    if not isinstance(scheme, str) or scheme not in WEIGHTS_DTYPES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of: {', '.join(map(repr, SCHEMES))}")
    if dtype != np.float32:
        raise TypeError(f"only float32 models can be quantized; this one is {dtype} (convert its weights to float32 first)")
    if weights_dtype != "float32":
        raise ValueError(f"the weights are already {weights_dtype}; quantize the float32 model instead")
    return scheme


def is_matrix_name(name: str) -> bool:
    """Whether an nn.LSTM parameter is a weight matrix (quantized) rather than a bias (kept float32)."""
    return name.startswith("weight_")


def quantize_matrix(weight: np.ndarray, scheme: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A float32 (rows, k) matrix in the scheme's stored form: (bf16 bits as uint16, None) or
    (int8 values, float32 scales of shape (rows, ceil(k / INT8_GROUP)))."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {w.shape}")
    if scheme == "bf16":
        return _bf16_bits(w), None
    if scheme == "int8":
        return _int8_groups(w)
    raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of: {', '.join(map(repr, SCHEMES))}")


def dequantize_matrix(values: np.ndarray, scales: Optional[np.ndarray]) -> np.ndarray:
    """The float32 matrix the kernels compute with: bf16 bits widened, or int8 times its scales."""
    if values.dtype == np.uint16:
        return (values.astype(np.uint32) << 16).view(np.float32)
    if values.dtype == np.int8 and scales is not None:
        k = values.shape[1]
        return values.astype(np.float32) * np.repeat(scales, INT8_GROUP, axis=1)[:, :k]
    raise TypeError(f"not a quantized matrix: dtype {values.dtype}")


def _bf16_bits(w: np.ndarray) -> np.ndarray:
    bits = w.view(np.uint32)
    # Round to nearest, ties to even, by adding just under half a bf16 ulp plus the kept lowest
    # bit; values near float32's largest round to infinity, as they should.
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(w)
    if nan.any():  # the rounding could carry a NaN's payload into infinity: keep it a (quiet) NaN
        rounded[nan] = ((bits[nan] >> 16) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def _int8_groups(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    if not np.isfinite(w).all():
        raise ValueError("int8 quantization needs finite weights (this matrix holds inf or NaN); use 'bf16'")
    rows, k = w.shape
    groups = -(-k // INT8_GROUP)
    padded = np.zeros((rows, groups * INT8_GROUP), np.float32)
    padded[:, :k] = w
    blocks = padded.reshape(rows, groups, INT8_GROUP)
    scales = (np.abs(blocks).max(axis=2) / np.float32(_INT8_MAX)).astype(np.float32)
    # An all-zero group keeps scale 0 and values 0; dividing by 1 there avoids 0/0.
    divisor = np.where(scales > 0, scales, np.float32(1))[:, :, None]
    q = np.clip(np.rint(blocks / divisor), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    return np.ascontiguousarray(q.reshape(rows, -1)[:, :k]), scales


def quantize_weights(
    weights: Mapping[str, np.ndarray], scheme: str
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """nn.LSTM-named float32 weights -> (stored arrays by the same names, int8 scales by matrix name).
    Biases stay float32; every array is read-only."""
    stored: Dict[str, np.ndarray] = {}
    scales: Dict[str, np.ndarray] = {}
    for name, array in weights.items():
        if is_matrix_name(name):
            values, matrix_scales = quantize_matrix(array, scheme)
            stored[name] = _read_only(values)
            if matrix_scales is not None:
                scales[name] = _read_only(matrix_scales)
        else:
            stored[name] = array
    return stored, scales


def check_stored_weights(
    shapes: Mapping[str, Tuple[int, ...]], weights: Mapping[str, np.ndarray], scales: Mapping[str, np.ndarray],
    weights_dtype: str, where: str,
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Check quantized weights read from a file or a pickle against the parameter shapes of their
    config: names, shapes, dtypes, and for int8 finite non-negative scales of the right shape.
    Returns read-only C-contiguous copies. Raises ValueError/TypeError naming `where`."""
    matrix_dtype = {"bfloat16": np.dtype(np.uint16), "int8": np.dtype(np.int8)}.get(weights_dtype)
    if matrix_dtype is None:
        raise ValueError(f"{where}: unknown weights_dtype {weights_dtype!r}; expected 'bfloat16' or 'int8'")
    expected_scales = {n for n in shapes if is_matrix_name(n)} if weights_dtype == "int8" else set()
    if set(weights) != set(shapes) or set(scales) != expected_scales:
        missing = sorted((set(shapes) - set(weights)) | {n + ".scales" for n in expected_scales - set(scales)})
        extra = sorted((set(weights) - set(shapes)) | {n + ".scales" for n in set(scales) - expected_scales})
        raise ValueError(f"{where}: the {weights_dtype} weights do not match the config: missing {missing}, unexpected {extra}")
    checked_weights: Dict[str, np.ndarray] = {}
    checked_scales: Dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        array = np.asarray(weights[name])
        dtype = matrix_dtype if is_matrix_name(name) else np.dtype(np.float32)
        if array.dtype.newbyteorder("=") != dtype or tuple(array.shape) != tuple(shape):
            raise ValueError(f"{where}: {name!r} must be {dtype} of shape {tuple(shape)} for {weights_dtype} weights, "
                             f"got {array.dtype} of shape {tuple(array.shape)}")
        checked_weights[name] = _read_only(np.array(array, dtype=dtype, order="C"))
        if name in expected_scales:
            checked_scales[name] = checked_int8_scales(scales[name], shape, name + ".scales", where)
    return checked_weights, checked_scales


def checked_int8_scales(scales: np.ndarray, matrix_shape: Tuple[int, ...], name: str, where: str) -> np.ndarray:
    """The scales of an int8 matrix of `matrix_shape`, read from a file or a program: float32, one per
    row and group of INT8_GROUP inputs, finite and non-negative; a read-only C-contiguous copy.
    ValueError naming `where` and `name` otherwise."""
    s = np.asarray(scales)
    groups = (matrix_shape[0], -(-matrix_shape[1] // INT8_GROUP))
    if s.dtype.newbyteorder("=") != np.float32 or tuple(s.shape) != groups:
        raise ValueError(f"{where}: {name!r} must be float32 of shape {groups}, got {s.dtype} of shape {tuple(s.shape)}")
    s = np.array(s, dtype=np.float32, order="C")
    if not (np.isfinite(s).all() and (s >= 0).all()):
        raise ValueError(f"{where}: {name!r} must hold finite non-negative scales")
    return _read_only(s)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
