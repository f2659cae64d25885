"""What the HTTP service knows about its model: the names, sizes and dtypes of a request's inputs and
of its answer's outputs, and how a list of input arrays becomes a `Batcher.submit` call.

    LSTM      inputs  input (T, input_size) [, h0, c0 (2-D, both or neither)]
              outputs output (T, D*H_out), h_n, c_n
    LSTMCell  inputs  input (input_size,) [, h_0, c_0]         outputs h_1, c_1
    Model     inputs  forward's arguments, one example each (no batch axis)
              outputs forward's result flattened (output, or output[0], output[1], ...)

Sizes that vary from request to request are None (null in JSON).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._cell import LSTMCell
from .._model import LSTM
from .._program import Model
from .._symbolic import evaluate, symbol_of

__all__ = ["ArraySpec", "Endpoint", "RequestError"]


class RequestError(Exception):
    """A request the service refuses: its HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    name: str
    dtype: np.dtype
    shape: Tuple[Optional[int], ...]  # None: varies per request
    required: bool = True

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "dtype": str(self.dtype), "shape": list(self.shape), "required": self.required}


class Endpoint:
    """The model behind the service, described and called through a Batcher."""

    def __init__(self, model: Any) -> None:
        self.model = model
        if isinstance(model, LSTM):
            self.kind = "LSTM"
            h_shape, c_shape = (s.shape for s in model.initial_state())
            width = (2 if model.bidirectional else 1) * (model.proj_size or model.hidden_size)
            self.inputs = [ArraySpec("input", model.dtype, (None, model.input_size)),
                           ArraySpec("h0", model.dtype, h_shape, False), ArraySpec("c0", model.dtype, c_shape, False)]
            self.outputs = [ArraySpec("output", model.dtype, (None, width)),
                            ArraySpec("h_n", model.dtype, h_shape), ArraySpec("c_n", model.dtype, c_shape)]
            self.weights_dtype = model.weights_dtype
        elif isinstance(model, LSTMCell):
            self.kind = "LSTMCell"
            state = (model.hidden_size,)
            self.inputs = [ArraySpec("input", model.dtype, (model.input_size,)),
                           ArraySpec("h_0", model.dtype, state, False), ArraySpec("c_0", model.dtype, state, False)]
            self.outputs = [ArraySpec("h_1", model.dtype, state), ArraySpec("c_1", model.dtype, state)]
            self.weights_dtype = model.weights_dtype
        elif isinstance(model, Model):
            self.kind = "Model"
            program = model._program  # read-only: the declared inputs and their symbols
            self.inputs = [ArraySpec(spec.name, spec.dtype, tuple(d if isinstance(d, int) else None for d in spec.shape[1:]))
                           for spec in program.inputs]
            self.outputs = _probe_outputs(model)
            self.weights_dtype = model.weights_dtype
        else:
            raise TypeError(f"fastlstm serve takes a fastlstm.LSTM, LSTMCell or Model, got {type(model).__name__}")

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "inputs": [s.describe() for s in self.inputs],
                "outputs": [s.describe() for s in self.outputs], "weights_dtype": self.weights_dtype}

    def submit_args(self, arrays: List[np.ndarray]) -> Tuple[Any, ...]:
        """The Batcher.submit arguments for one request's input arrays (in `inputs` order)."""
        required = sum(spec.required for spec in self.inputs)
        if self.kind == "Model":
            return tuple(arrays)
        if len(arrays) == required:
            return (arrays[0],)
        return (arrays[0], (arrays[1], arrays[2]))

    def check_count(self, count: int) -> None:
        required = [spec.name for spec in self.inputs if spec.required]
        names = [spec.name for spec in self.inputs]
        if count not in (len(required), len(names)):
            allowed = f"{len(required)} ({', '.join(required)})"
            if len(names) != len(required):
                allowed += f" or {len(names)} ({', '.join(names)})"
            raise RequestError(422, f"the model takes {allowed} inputs, got {count}")

    def output_arrays(self, result: Any) -> List[np.ndarray]:
        """One request's result as the list of output arrays, in `outputs` order."""
        if self.kind == "LSTM":
            output, (h_n, c_n) = result
            return [output, h_n, c_n]
        if self.kind == "LSTMCell":
            return list(result)
        leaves: List[np.ndarray] = []
        _flatten(result, leaves)
        return leaves


def _flatten(value: Any, leaves: List[Any]) -> None:
    if isinstance(value, (tuple, list)):
        for item in value:
            _flatten(item, leaves)
    elif isinstance(value, dict):
        for item in value.values():
            _flatten(item, leaves)
    else:
        leaves.append(np.asarray(value))


def _probe_outputs(model: Model) -> List[ArraySpec]:
    """The outputs' names, dtypes and per-example shapes, found by running the model on two small
    zero examples whose free sizes differ (a size that differs between them varies per request)."""
    program = model._program
    shapes = []
    for free in (2, 3):
        bindings: Dict[str, int] = {}
        for spec in program.inputs:
            for dim in spec.shape:
                symbol = symbol_of(dim)
                if symbol is not None:
                    low, high = program.symbols.get(symbol, (1, None))
                    bindings.setdefault(symbol, max(low, min(free, high if high is not None else free)))
        try:
            arrays = [np.zeros(tuple(evaluate(d, bindings) for d in spec.shape), spec.dtype) for spec in program.inputs]
            leaves: List[np.ndarray] = []
            _flatten(model(*arrays), leaves)
        except (TypeError, ValueError):  # a model whose code needs other sizes: outputs described by none
            return []
        shapes.append([(leaf.dtype, leaf.shape[1:]) for leaf in leaves])
    names = ["output"] if len(shapes[0]) == 1 else [f"output[{i}]" for i in range(len(shapes[0]))]
    return [ArraySpec(name, dtype, tuple(a if a == b else None for a, b in zip(shape, other)))
            for name, (dtype, shape), (_, other) in zip(names, shapes[0], shapes[1])]
