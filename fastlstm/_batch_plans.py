"""How `fastlstm.Batcher` merges requests for each kind of model, and splits the results again.

A plan checks one request in the caller's thread (so a bad request fails alone, with the engine's
own message, before it is queued), gives it a key (requests with equal keys can share one call),
runs a list of same-key requests as one batched call, and runs one request alone. Every plan
returns to each request exactly what a lone call on that request returns: the kernels compute each
row of a batch in the same order whatever surrounds it, so the merged call's rows are bitwise a
lone call's (held to that by tests/test_batcher.py).

    SequencePlan   LSTM: one unbatched sequence (T, I) and optional 2-D (h0, c0); sequences of
                   different lengths share a call through `lengths=` (zero-padded to the longest).
    StepPlan       LSTM.step: one time step (I,) of one stream with its own (h, c).
    CellPlan       LSTMCell: one step (I,) with optional (h, c).
    ModelPlan      fastlstm.Model: one example of each input without its batch axis; only examples
                   of equal shapes share a call (padding would change what a converted model
                   computes, e.g. a mean over time, so it is never done).
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from ._cell import LSTMCell
from ._checks import check_array_dtype, check_input_size, checked_state_pair
from ._model import LSTM
from ._program import Model
from ._symbolic import bind_dims, describe_shape, evaluate, symbol_of

__all__ = ["Plan", "Request", "submit_plan", "step_plan"]


class Request:
    """One checked request: its merge key and its arrays (whatever the plan needs)."""

    __slots__ = ("key", "payload")

    def __init__(self, key: Hashable, payload: Any) -> None:
        self.key = key
        self.payload = payload


class Plan:
    """The interface of a plan (see the module docstring)."""

    def check(self, args: Tuple[Any, ...], kwargs: dict) -> Request:
        raise NotImplementedError

    # Whether run_batch/run_one honour num_threads (a converted Model's calls follow set_num_threads).
    takes_threads = True

    def run_batch(self, payloads: Sequence[Any], num_threads: int) -> List[Any]:
        raise NotImplementedError

    def run_one(self, payload: Any, num_threads: int) -> Any:
        raise NotImplementedError


def _array(value: Any, name: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    return value


def _checked_input(args: Tuple[Any, ...], model: Any, owner: str, takes: str, expects: str, ndim: int,
                   hint: str = "") -> np.ndarray:
    """A request's input: given, of the model's dtype, `ndim`-D, with the model's input size last.
    The messages say what the method `takes` and what the batcher `expects` per request."""
    if not args:
        raise TypeError(f"{takes}, got no input")
    x = _array(args[0], "input")
    check_array_dtype(x, "input", model.dtype, owner)
    if x.ndim != ndim:
        raise ValueError(f"{expects}, got {x.ndim}-D input of shape {x.shape}{hint}")
    check_input_size(x.shape[-1], model.input_size)
    return x


def _optional_state(args: Tuple[Any, ...], kwargs: dict, method: str, names: Tuple[str, ...]) -> Any:
    """The one optional state argument after the input (positional or by one of `names`)."""
    if len(args) > 2:
        raise TypeError(f"{method} takes the input and an optional state, got {len(args)} positional arguments")
    state = args[1] if len(args) == 2 else None
    for name, value in kwargs.items():
        if name not in names or len(args) == 2:
            raise TypeError(f"{method} got an unexpected keyword argument {name!r}")
        state = value
    return state


def _stack_states(states: Sequence[Optional[Tuple[np.ndarray, np.ndarray]]], zeros: Tuple[np.ndarray, np.ndarray],
                  axis: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The requests' states stacked on the batch axis, zeros for those without one; None if none has one
    (a missing state is zeros to the kernel too, so mixing both gives each request a lone call's bits)."""
    if all(state is None for state in states):
        return None
    h = np.stack([zeros[0] if s is None else s[0] for s in states], axis=axis)
    c = np.stack([zeros[1] if s is None else s[1] for s in states], axis=axis)
    return h, c


class _LSTMPlan(Plan):
    """What the plans of a `fastlstm.LSTM` share: the model and its zero states."""

    def __init__(self, model: LSTM) -> None:
        self.model = model
        self.zeros = model.initial_state()


class SequencePlan(_LSTMPlan):
    """`Batcher.submit(x, hx=None)` for a `fastlstm.LSTM`; result `(output, (h_n, c_n))` as `model(x, hx)`."""

    def check(self, args: Tuple[Any, ...], kwargs: dict) -> Request:
        model = self.model
        x = _checked_input(args, model, "model", "submit takes one sequence (T, input_size)",
                           "the batcher takes one unbatched sequence (T, input_size) per request", 2,
                           "; submit each sequence of a batch separately")
        if x.shape[0] == 0:
            raise ValueError(f"expected a sequence length of at least 1, got input of shape {x.shape}")
        hx = _optional_state(args, kwargs, "submit", ("hx",))
        if hx is not None:
            shapes = (self.zeros[0].shape, self.zeros[1].shape)
            hx = checked_state_pair(hx, ("h0", "c0"), shapes, model.dtype, "model", True)
        # Copies: the caller may reuse its buffers as soon as submit returns.
        return Request("sequence", (np.array(x, order="C"), None if hx is None else (hx[0].copy(), hx[1].copy())))

    def run_batch(self, payloads: Sequence[Any], num_threads: int) -> List[Any]:
        model = self.model
        lengths = np.array([x.shape[0] for x, _ in payloads], dtype=np.int64)
        steps, batch = int(lengths.max()), len(payloads)
        batch_first = model.batch_first
        shape = (batch, steps, model.input_size) if batch_first else (steps, batch, model.input_size)
        merged = np.zeros(shape, model.dtype)
        for row, (x, _) in enumerate(payloads):
            if batch_first:
                merged[row, : x.shape[0]] = x
            else:
                merged[: x.shape[0], row] = x
        hx = _stack_states([state for _, state in payloads], self.zeros, axis=1)
        uneven = bool((lengths != steps).any())
        output, (h_n, c_n) = model(merged, hx, lengths=lengths if uneven else None, num_threads=num_threads)
        results = []
        for row, length in enumerate(lengths):
            rows = output[row, :length] if batch_first else output[:length, row]
            results.append((np.ascontiguousarray(rows), (np.ascontiguousarray(h_n[:, row]), np.ascontiguousarray(c_n[:, row]))))
        return results

    def run_one(self, payload: Any, num_threads: int) -> Any:
        x, hx = payload
        return self.model(x, hx, num_threads=num_threads)


class StepPlan(_LSTMPlan):
    """`Batcher.step(x_t, state)` for a `fastlstm.LSTM`; result `(output, (h, c))` as `model.step(x_t, state)`."""

    def check(self, args: Tuple[Any, ...], kwargs: dict) -> Request:
        model = self.model
        x = _checked_input(args, model, "model", "step takes one time step (input_size,) and an optional state (h, c)",
                           "the batcher's step takes one stream's step (input_size,)", 1)
        state = _optional_state(args, kwargs, "step", ("state",))
        if state is not None:
            shapes = (self.zeros[0].shape, self.zeros[1].shape)
            state = checked_state_pair(state, ("h", "c"), shapes, model.dtype, "model", True)
            state = (state[0].copy(), state[1].copy())
        return Request("step", (x.copy(), state))

    def run_batch(self, payloads: Sequence[Any], num_threads: int) -> List[Any]:
        merged = np.stack([x for x, _ in payloads])
        states = [state for _, state in payloads]
        hx = _stack_states(states, self.zeros, axis=1)
        output, (h_n, c_n) = self.model.step(merged, hx, num_threads=num_threads)
        return [(output[row].copy(), (h_n[:, row].copy(), c_n[:, row].copy())) for row in range(len(payloads))]

    def run_one(self, payload: Any, num_threads: int) -> Any:
        x, state = payload
        return self.model.step(x, state, num_threads=num_threads)


class CellPlan(Plan):
    """`Batcher.submit(x, hx=None)` or `step` for a `fastlstm.LSTMCell`; result `(h_1, c_1)` as `cell(x, hx)`."""

    def __init__(self, cell: LSTMCell, method: str) -> None:
        self.cell = cell
        self.method = method
        zero = np.zeros(cell.hidden_size, cell.dtype)
        self.zeros = (zero, zero)

    def check(self, args: Tuple[Any, ...], kwargs: dict) -> Request:
        cell = self.cell
        x = _checked_input(args, cell, "cell", f"{self.method} takes one step (input_size,) and an optional state (h, c)",
                           "the batcher takes one unbatched step (input_size,) per request", 1)
        hx = _optional_state(args, kwargs, self.method, ("hx", "state"))
        if hx is not None:
            shape = (cell.hidden_size,)
            hx = checked_state_pair(hx, ("h_0", "c_0"), (shape, shape), cell.dtype, "cell", True)
            hx = (hx[0].copy(), hx[1].copy())
        return Request("cell", (x.copy(), hx))

    def run_batch(self, payloads: Sequence[Any], num_threads: int) -> List[Any]:
        merged = np.stack([x for x, _ in payloads])
        hx = _stack_states([hx for _, hx in payloads], self.zeros, axis=0)
        h_1, c_1 = self.cell(merged, hx, num_threads=num_threads)
        return [(h_1[row].copy(), c_1[row].copy()) for row in range(len(payloads))]

    def run_one(self, payload: Any, num_threads: int) -> Any:
        x, hx = payload
        return self.cell(x, hx, num_threads=num_threads)


class ModelPlan(Plan):
    """`Batcher.submit(*inputs)` for a converted `fastlstm.Model`: one example, each input without its
    batch axis (axis 0 of every input and output); result as `model(*(x[None] for x in inputs))` with
    each output's batch axis dropped. Its calls use fastlstm.set_num_threads's cores."""

    takes_threads = False

    def __init__(self, model: Model) -> None:
        # Read-only use of the program's metadata: the specs of forward's tensor arguments and the
        # symbols and conditions on their sizes.
        program = model._program
        children = program.input_tree.get("tuple")
        if children is None or [child.get("input") for child in children] != list(range(len(program.inputs))):
            raise TypeError(
                f"the batcher merges models whose forward takes tensors only, one per argument; {program.source_name} "
                f"takes nested inputs"
            )
        batch_symbols = {symbol_of(spec.shape[0]) if spec.shape else None for spec in program.inputs}
        if len(batch_symbols) != 1 or None in batch_symbols:
            shapes = ", ".join(f"{spec.name} {describe_shape(list(spec.shape))}" for spec in program.inputs)
            raise ValueError(
                f"the batcher merges requests on axis 0, which must be the same free size (the batch) in every input "
                f"of the converted model; its inputs are {shapes}. Convert it with a batch-first example of batch >= 2"
            )
        self.model = model
        self.specs = program.inputs
        self.symbols = program.symbols
        self.conditions = program.conditions
        _check_batch_axis(model, batch_symbols.pop())

    def check(self, args: Tuple[Any, ...], kwargs: dict) -> Request:
        if kwargs:
            raise TypeError(f"submit takes the model's inputs by position, got keyword arguments {sorted(kwargs)}")
        specs = self.specs
        if len(args) != len(specs):
            names = ", ".join(spec.name for spec in specs)
            raise TypeError(f"the model takes {len(specs)} input(s) ({names}), got {len(args)}")
        arrays, shapes = [], []
        for value, spec in zip(args, specs):
            x = _array(value, spec.name)
            declared = list(spec.shape)
            if x.dtype != spec.dtype:
                raise TypeError(f"{spec.name} must have dtype {spec.dtype}, got {x.dtype}")
            if x.ndim != len(declared) - 1:
                raise ValueError(
                    f"{spec.name} must be one example of {describe_shape(declared)} without its batch axis: "
                    f"{len(declared) - 1}-D {describe_shape(declared[1:])}, got {x.ndim}-D input of shape {x.shape}"
                )
            arrays.append(np.array(x, order="C"))
            shapes.append((spec.name, (1,) + x.shape, declared))
        bind_dims(shapes, self.symbols, self.conditions)  # the model's own checks, at batch 1
        key = tuple(x.shape for x in arrays)
        return Request(key, arrays)

    def run_batch(self, payloads: Sequence[Any], num_threads: int) -> List[Any]:
        batch = len(payloads)
        merged = [np.stack(column) for column in zip(*payloads)]
        outputs = self.model(*merged)
        return [_split(outputs, row, batch) for row in range(batch)]

    def run_one(self, payload: Any, num_threads: int) -> Any:
        return _split(self.model(*(x[None] for x in payload)), 0, 1)


def _check_batch_axis(model: Model, batch_symbol: str) -> None:
    """ValueError unless axis 0 behaves as the batch: a probe of 3 random examples run together must
    give each example's lone result, bitwise, on axis 0 of every output. Shapes alone cannot tell a
    time-major model (whose axis 0 is time) from a batch-first one; results can (a step's output
    depends on the steps before it, an example's never on the others in its batch). A model whose
    code accepts none of the probe's sizes is not probed; its outputs' axis 0 is still checked
    against the batch size at every call."""
    program = model._program
    rng = np.random.default_rng(0)
    inputs = []
    try:
        bindings: Dict[str, int] = {}
        for spec in program.inputs:
            for dim in spec.shape:
                symbol = symbol_of(dim)
                if symbol is not None and symbol not in bindings:
                    low, high = program.symbols.get(symbol, (1, None))
                    wanted = 3 if symbol == batch_symbol else 5
                    bindings[symbol] = max(low, wanted if high is None else min(wanted, high))
        for spec in program.inputs:
            shape = tuple(evaluate(dim, bindings) for dim in spec.shape)
            # Integer inputs are ids (e.g. an embedding's): zeros are valid ones for any vocabulary.
            array = rng.standard_normal(shape) if spec.dtype.kind == "f" else np.zeros(shape)
            inputs.append(array.astype(spec.dtype))
        batch = bindings[batch_symbol]
        merged = model(*inputs)
        alone = [model(*(x[row: row + 1] for x in inputs)) for row in range(batch)]
    except (TypeError, ValueError):
        return
    for row, lone in enumerate(alone):
        try:
            same = _same_bits(_split(merged, row, batch), _split(lone, 0, 1))
        except ValueError:
            same = False
        if not same:
            raise ValueError(
                f"axis 0 of {program.source_name}'s inputs is not a batch: the result for one example depends on "
                f"the others stacked with it on axis 0 (a time-major model?), so the batcher cannot merge its "
                f"requests. Convert the module with batch-first inputs"
            )


def _same_bits(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_bits(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_bits(a[k], b[k]) for k in a)
    return False


def _split(value: Any, row: int, batch: int) -> Any:
    """Row `row` of every array in a model's (nested) outputs, as an owned array."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0 or value.shape[0] != batch:
            raise ValueError(
                f"the model returned an output of shape {value.shape} for a batch of {batch}: the batcher needs the "
                f"batch on axis 0 of every output"
            )
        return value[row].copy()
    if isinstance(value, tuple):
        return tuple(_split(item, row, batch) for item in value)
    if isinstance(value, list):
        return [_split(item, row, batch) for item in value]
    if isinstance(value, dict):
        return {key: _split(item, row, batch) for key, item in value.items()}
    raise ValueError(f"the model returned a {type(value).__name__}, which has no batch axis to split")


def submit_plan(model: Any) -> Plan:
    """The plan of `Batcher.submit` for `model`, or a TypeError for an unsupported object."""
    if isinstance(model, LSTM):
        return SequencePlan(model)
    if isinstance(model, LSTMCell):
        return CellPlan(model, "submit")
    if isinstance(model, Model):
        return ModelPlan(model)
    raise TypeError(f"Batcher takes a fastlstm.LSTM, LSTMCell or Model, got {type(model).__name__}")


def step_plan(model: Any) -> Optional[Plan]:
    """The plan of `Batcher.step` (streams), or None for a model without steps."""
    if isinstance(model, LSTM):
        return StepPlan(model)
    if isinstance(model, LSTMCell):
        return CellPlan(model, "step")
    return None
