"""Reduced-precision weights for converted models (`Model.quantize`).

The matrices of the LSTM, LSTMCell and Linear steps are stored as `LSTM.quantize` stores an LSTM's:
bf16 as the bits of each value (uint16), int8 as values with float32 scales per row and group of
inputs, kept as `<name>.scales`. The steps find them by name and run them on the same kernels.
Everything else (embeddings, biases, normalisation parameters, the weights of other operations)
stays as it is. A matrix another step also reads (a Linear tied to an Embedding, say) is quantized
as a copy named `<name>.<scheme>`, so that step still reads the original.
"""

from __future__ import annotations

import collections
import copy
from typing import Any, Dict, Iterator, List, Mapping, Tuple

import numpy as np

from ._quantize import QUANTIZED_DTYPES, check_scheme, quantize_matrix

__all__ = ["quantize_program", "program_weights_dtype", "check_bf16_uses"]

_QUANTIZED_OPS = ("lstm", "lstm_cell", "linear")


def _weight_refs(value: Any) -> Iterator[Dict[str, Any]]:
    """Every {"weight": name} reference inside a step argument."""
    if isinstance(value, dict):
        if "weight" in value and len(value) == 1:
            yield value
        else:
            for item in value.values():
                yield from _weight_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _weight_refs(item)


def _matrix_refs(document: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> List[Dict[str, Any]]:
    """The references to the matrices the quantized kernels read: the 2-D stored weights of LSTM and
    LSTMCell steps, and a Linear step's weight."""
    refs = []
    for step in document["steps"]:
        if step["op"] not in _QUANTIZED_OPS:
            continue
        arg = step["args"].get("weights" if step["op"] != "linear" else "weight")
        refs += [ref for ref in _weight_refs(arg) if np.ndim(weights.get(ref["weight"])) == 2]
    return refs


def check_bf16_uses(document: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
    """bf16 matrices are held as uint16 bits, which only the quantized kernels may read: refuse a
    program that hands one to any other operation (it would compute on the raw integers)."""
    bits = {name for name, array in weights.items() if array.dtype == np.uint16}
    if not bits:
        return
    allowed = {id(ref) for ref in _matrix_refs(document, weights)}
    for index, step in enumerate(document["steps"]):
        for ref in _weight_refs(step["args"]):
            if ref["weight"] in bits and id(ref) not in allowed:
                raise ValueError(f"step {index} ({step['op']}) reads the bfloat16 weight {ref['weight']!r}; only the "
                                 f"weight matrices of lstm, lstm_cell and linear steps may be bfloat16")


def program_weights_dtype(document: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> str:
    """How the model's LSTM, LSTMCell and Linear matrices are stored: "float32" (also for a model
    without any), "float64", "bfloat16" or "int8"."""
    dtypes = {weights[ref["weight"]].dtype for ref in _matrix_refs(document, weights)}
    for dtype, name in QUANTIZED_DTYPES.items():
        if dtype in dtypes:
            return name
    return "float64" if np.dtype(np.float64) in dtypes else "float32"


def quantize_program(document: Mapping[str, Any], weights: Mapping[str, np.ndarray],
                     scheme: str) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """(the program, its weights) with every LSTM, LSTMCell and Linear matrix in `scheme` ("bf16" or
    "int8"). TypeError for a float64 model, ValueError for an unknown scheme, a model already
    quantized, or one without such matrices."""
    weights_dtype = program_weights_dtype(document, weights)
    check_scheme(scheme, np.dtype(np.float64 if weights_dtype == "float64" else np.float32), weights_dtype)
    document = copy.deepcopy(dict(document))
    refs = _matrix_refs(document, weights)
    if not refs:
        raise ValueError("the model has no LSTM, LSTMCell or Linear weights to quantize")
    all_uses = collections.Counter(ref["weight"] for step in document["steps"] for ref in _weight_refs(step["args"]))
    matrix_uses = collections.Counter(ref["weight"] for ref in refs)
    stored: Dict[str, np.ndarray] = dict(weights)
    renamed: Dict[str, str] = {}
    for ref in refs:
        name = ref["weight"]
        if name not in renamed:
            target = name if matrix_uses[name] == all_uses[name] else _free_name(f"{name}.{scheme}", stored)
            values, scales = quantize_matrix(weights[name], scheme)
            stored[target] = values
            if scales is not None:
                stored[_free_name(f"{target}.scales", stored, exact=True)] = scales
            renamed[name] = target
        ref["weight"] = renamed[name]
    return document, stored


def _free_name(name: str, taken: Mapping[str, Any], exact: bool = False) -> str:
    if name not in taken:
        return name
    if exact:  # a scales name is found by its matrix's name: it cannot move
        raise ValueError(f"cannot quantize: the model already holds a weight named {name!r}")
    index = 2
    while f"{name}_{index}" in taken:
        index += 1
    return f"{name}_{index}"

