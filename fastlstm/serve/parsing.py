"""Request bodies to input arrays, and output arrays to response bodies, with the service's limits.

JSON: `{"inputs": [x0, x1, ...]}`, one nested list of numbers per input; numbers become the input's
dtype (JSON has no float32), but only numbers: strings, booleans, nulls and ragged lists are refused.
.npy: the body is one array in NumPy's .npy format (for one-input requests); its dtype must be the
input's own (any byte order), never cast. The header is read and its declared size checked against
the body before anything is allocated.
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
from typing import Any, List, Sequence

import numpy as np

from .endpoint import ArraySpec, RequestError

__all__ = ["JSON", "NPY", "NPZ", "parse_json", "parse_npy", "check_lengths", "json_body", "npz_body"]

JSON = "application/json"
NPY = "application/x-npy"
NPZ = "application/x-npz"
_LITERALS = re.compile(rb"\b(true|false)\b")
_MAX_NPY_HEADER = 65535


def parse_json(body: bytes, specs: Sequence[ArraySpec]) -> List[np.ndarray]:
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except RequestError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise RequestError(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(document, dict) or set(document) != {"inputs"}:
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise RequestError(400, f'the body must be a JSON object {{"inputs": [x0, ...]}} and nothing else, got {keys}')
    inputs = document["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(400, f'"inputs" must be a list with one nested list per model input, got {type(inputs).__name__}')
    if len(inputs) > len(specs):
        raise RequestError(422, f"the model takes at most {len(specs)} inputs, got {len(inputs)}")
    if _LITERALS.search(body):
        raise RequestError(400, "inputs must be numbers; true and false are not")
    return [_json_array(value, spec) for value, spec in zip(inputs, specs)]


def _refuse_constant(name: str) -> Any:
    raise RequestError(400, f"inputs must be finite numbers, got {name}")


def _json_array(value: Any, spec: ArraySpec) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as error:  # ragged nesting, or an integer too large
        raise RequestError(400, f"{spec.name} must be a rectangular nested list of numbers: {error}") from None
    if array.dtype.kind not in "iuf":
        raise RequestError(400, f"{spec.name} must hold numbers only (a rectangular nested list), got "
                                f"{'a ragged or mixed list' if array.dtype.kind == 'O' else 'strings or nulls'}")
    if spec.dtype.kind in "iu" and array.dtype.kind == "f":
        raise RequestError(422, f"{spec.name} must hold integers ({spec.dtype}), got fractional numbers")
    try:
        converted = array.astype(spec.dtype, casting="unsafe")
    except (ValueError, OverflowError) as error:
        raise RequestError(422, f"{spec.name}: {error}") from None
    if spec.dtype.kind in "iu" and not np.array_equal(converted, array):
        raise RequestError(422, f"{spec.name} holds integers outside {spec.dtype}'s range")
    if spec.dtype.kind == "f" and not np.isfinite(converted).all():
        # JSON has no infinity; a number like 1e400 only reads as one.
        raise RequestError(422, f"{spec.name} holds numbers too large for {spec.dtype}")
    return converted


def parse_npy(body: bytes, specs: Sequence[ArraySpec]) -> List[np.ndarray]:
    """The body as one .npy array, for a model whose requests need one input."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unknown .npy version {version}")
        header_length = int.from_bytes(stream.read(2 if version == (1, 0) else 4), "little")
        if header_length > _MAX_NPY_HEADER:
            raise ValueError(f"a header of {header_length} bytes")
        header = ast.literal_eval(stream.read(header_length).decode("latin1" if version != (3, 0) else "utf8"))
        shape, fortran, dtype = header["shape"], header["fortran_order"], np.dtype(header["descr"])
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise ValueError(f"a bad shape {shape!r}")
        if not isinstance(fortran, bool):
            raise ValueError(f"fortran_order must be True or False, got {fortran!r}")
    except (ValueError, TypeError, KeyError, SyntaxError, MemoryError, UnicodeDecodeError, OverflowError,
            RecursionError, AttributeError) as error:
        raise RequestError(400, f"the body is not a valid .npy array: {error}") from None
    spec = specs[0]
    if dtype.hasobject or dtype.fields is not None or dtype.newbyteorder("=") != spec.dtype:
        raise RequestError(422, f"{spec.name} must have dtype {spec.dtype}, got {dtype} "
                                "(fastlstm never casts silently)")
    count = math.prod(shape)  # Python integers: a hostile shape cannot wrap around
    data = body[stream.tell():]
    if len(data) != count * dtype.itemsize:
        raise RequestError(400, f"the .npy header declares {shape} {dtype} ({count * dtype.itemsize} bytes) "
                                f"but the body holds {len(data)} bytes of data")
    array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    return [np.ascontiguousarray(array, dtype=spec.dtype)]


def check_lengths(arrays: Sequence[np.ndarray], specs: Sequence[ArraySpec], max_length: int) -> None:
    """413 if an axis that varies per request (a sequence's length) is longer than max_length."""
    for array, spec in zip(arrays, specs):
        if array.ndim != len(spec.shape):
            continue  # the model's own check names the mistake
        for axis, (size, declared) in enumerate(zip(array.shape, spec.shape)):
            if declared is None and size > max_length:
                raise RequestError(413, f"{spec.name} has {size} on axis {axis}; this service accepts at most "
                                        f"{max_length} (--max-length)")


def json_body(names: Sequence[str], arrays: Sequence[np.ndarray]) -> bytes:
    # allow_nan: a model may compute NaN or Inf from finite inputs; Python's json reads them back.
    return json.dumps({"outputs": [array.tolist() for array in arrays], "names": list(names)},
                      allow_nan=True, separators=(",", ":")).encode()


def npz_body(names: Sequence[str], arrays: Sequence[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **dict(zip(names, arrays)))
    return buffer.getvalue()
