"""fastlstm.Model: a whole converted model (embedding, LSTMs, head) run without torch."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ._ops_base import StepFn
from ._program_format import DTYPES, Program, parse_program
from ._program_io import build_outputs, flatten_inputs, input_array
from ._program_ops import build_steps
from ._program_quantize import check_bf16_uses, program_weights_dtype, quantize_program
from ._quantize import QUANTIZED_DTYPES
from ._symbolic import bind_dims, compile_shape_check, describe_shape

__all__ = ["Model"]

_MAX_ACCEPTED_SHAPES = 256  # distinct input shapes remembered as checked, per model


def _single_output_slot(tree: Any) -> Optional[int]:
    """The slot of forward's result when it is a single value, else None."""
    (kind, spec), = tree.items()
    return spec if kind == "slot" else None


class Model:
    """A whole PyTorch model converted by `fastlstm.convert`: ``outputs = model(*inputs)``.

    Takes the arguments of the module's forward (numpy arrays or CPU torch tensors, nested the
    same way) and returns its results in the same nesting: numpy arrays for numpy inputs, torch
    tensors if any input was a tensor. Batch size and sequence length may differ from the example
    the model was converted with; fixed sizes (features, vocabulary) may not.

    The program (a list of operations) and the weights are checked and prepared once, when the
    model is built or loaded: LSTMs are packed for fastlstm's kernels, everything else is a short
    list of numpy steps. The model is immutable and safe to call from many threads at once.

    Build one with `fastlstm.convert(module, example_inputs)` or `fastlstm.load(path)`; write it
    with `save`. `Model(program, weights)` builds one from a program document (a dict or its
    JSON text) and its named weight arrays.
    """

    __slots__ = ("_program", "_weights", "_steps", "_inputs", "_num_slots", "_symbols", "_op_names",
                 "_flat_inputs", "_check_shapes", "_accepted_shapes", "_output_slot")

    def __init__(self, program: Union[str, Mapping[str, Any]], weights: Mapping[str, np.ndarray]) -> None:
        parsed = parse_program(program if isinstance(program, (str, bytes)) else dict(program))
        checked = _checked_weights(weights)
        check_bf16_uses(parsed.document, checked)
        fields = {
            "_program": parsed,
            "_weights": checked,
            "_steps": build_steps(parsed, checked),
            "_inputs": parsed.inputs,
            "_num_slots": parsed.num_slots,
            "_symbols": parsed.symbols,
            "_op_names": [(step.op, step.source) for step in parsed.steps],
            "_flat_inputs": _flat_inputs(parsed),
            "_check_shapes": compile_shape_check([spec.shape for spec in parsed.inputs], parsed.symbols,
                                                 parsed.conditions),
            # Input shapes that passed _check_shapes: a service sends the same few shapes again and
            # again, and the check is a visible share of a small model's call.
            "_accepted_shapes": {},
            # forward's result when it is one array, returned without walking the output tree.
            "_output_slot": _single_output_slot(parsed.output_tree),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    # ----------------------------------------------------------------------------- calling
    def __call__(self, *inputs: Any) -> Any:
        """Run the model on forward's arguments; see the class docstring."""
        env, as_torch = self._bind_inputs(inputs)
        program = self._program
        run: StepFn
        index = 0
        try:
            for run in self._steps:
                run(env)
                index += 1
        except (ValueError, TypeError, IndexError) as exc:
            op, source = self._op_names[index]
            where = f" ({source})" if source else ""
            raise type(exc)(f"{program.source_name}: operation {index} ({op}){where} failed: {exc}") from exc
        slot = self._output_slot
        if slot is not None and not as_torch:
            value = env[slot]
            # What build_outputs would return as it is: never a read-only weight or a reversed view.
            if type(value) is np.ndarray and value.flags.writeable and min(value.strides, default=0) >= 0:
                return value
        return build_outputs(program.output_tree, env, as_torch)

    forward = __call__

    def _bind_inputs(self, inputs: Tuple[Any, ...]) -> Tuple[List[Any], bool]:
        """(the value slots with the inputs in place, whether any input was a torch tensor), after
        checking every input's nesting, dtype and shape, and the conditions on sizes."""
        specs = self._flat_inputs
        if specs is not None and len(inputs) == len(specs):
            # The common call: numpy arrays of the right dtype and rank as forward's arguments.
            env: List[Any] = [None] * self._num_slots
            shapes = []
            for value, (slot, dtype, ndim) in zip(inputs, specs):
                if type(value) is not np.ndarray or value.dtype != dtype or value.ndim != ndim:
                    break
                env[slot] = value
                shapes.append(value.shape)
            else:
                key = tuple(shapes)
                if key in self._accepted_shapes:
                    return env, False
                if self._check_shapes(shapes) is not None:
                    if len(self._accepted_shapes) < _MAX_ACCEPTED_SHAPES:
                        self._accepted_shapes[key] = True
                    return env, False
        return self._bind_inputs_checked(inputs)

    def _bind_inputs_checked(self, inputs: Tuple[Any, ...]) -> Tuple[List[Any], bool]:
        """_bind_inputs for any call, with the precise error for any input that is refused."""
        program = self._program
        leaves: List[Tuple[int, Any, str]] = []
        flatten_inputs(program.input_tree, inputs, "inputs", leaves)
        env: List[Any] = [None] * self._num_slots
        as_torch = False
        shapes = []
        for index, value, _ in leaves:
            spec = self._inputs[index]
            array, was_tensor = input_array(value, spec)
            as_torch = as_torch or was_tensor
            env[spec.slot] = array
            shapes.append((spec.name, array.shape, list(spec.shape)))
        bind_dims(shapes, self._symbols, program.conditions)
        return env, as_torch

    # ----------------------------------------------------------------------------- precision
    @property
    def weights_dtype(self) -> str:
        """How the LSTM, LSTMCell and Linear weight matrices are stored: "float32", "float64",
        "bfloat16" or "int8" (see `quantize`)."""
        return program_weights_dtype(self._program.document, self._weights)

    def quantize(self, scheme: str) -> "Model":
        """A new model whose LSTM, LSTMCell and Linear weight matrices are in reduced precision:
        "bf16" (bfloat16) or "int8" (a float32 scale per row and group of 64 inputs), as
        `fastlstm.LSTM.quantize`. Inputs, outputs, states and all arithmetic stay float32; other
        weights (embeddings, biases, norms) are unchanged. `save` keeps the quantized weights as
        they are. This model is untouched.

        Raises TypeError for a float64 model, ValueError for an unknown scheme, a model already
        quantized, or one without LSTM, LSTMCell or Linear weights."""
        document, weights = quantize_program(self._program.document, self._weights, scheme)
        return Model(document, weights)

    # ----------------------------------------------------------------------------- files
    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write one `.safetensors` file: the weights as tensors, the program as JSON in the
        metadata. `fastlstm.load(path)` reads it back, without torch."""
        from ._program_file import save_program

        save_program(path, self._program.document, self._weights)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (Model, (self._program.document, self._weights))

    # ----------------------------------------------------------------------------- description
    @property
    def inputs(self) -> List[Dict[str, Any]]:
        """Each tensor input: name, dtype and shape (free sizes as symbols, e.g. '(s0, s1, 1)')."""
        return [
            {"name": spec.name, "dtype": spec.dtype, "shape": describe_shape(list(spec.shape))}
            for spec in self._inputs
        ]

    @property
    def operations(self) -> List[str]:
        """The program's operations, in order."""
        return [op for op, _ in self._op_names]

    def program(self) -> Dict[str, Any]:
        """A copy of the program document (what `save` writes as JSON)."""
        import copy

        return copy.deepcopy(self._program.document)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Stored weight name -> read-only array."""
        return dict(self._weights)

    def __repr__(self) -> str:
        counts: Dict[str, int] = {}
        for op, _ in self._op_names:
            if op not in ("size", "scalar", "assert", "check_dtype"):
                counts[op] = counts.get(op, 0) + 1
        ops = ", ".join(op if n == 1 else f"{op} x{n}" for op, n in counts.items())
        inputs = ", ".join(f"{s['name']}: {s['dtype']} {s['shape']}" for s in self.inputs)
        return f"fastlstm.Model({self._program.source_name}; inputs {inputs}; {ops})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"fastlstm.Model is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"fastlstm.Model is immutable; cannot delete {name!r}")


def _flat_inputs(program: Program) -> Optional[List[Tuple[int, np.dtype, int]]]:
    """(slot, dtype, ndim) per argument when forward takes tensors only, unnested and in input
    order (the fast path of a call); None otherwise."""
    children = program.input_tree.get("tuple")
    if children is None or [child.get("input") for child in children] != list(range(len(program.inputs))):
        return None
    return [(spec.slot, spec.dtype, len(spec.shape)) for spec in program.inputs]


def _checked_weights(weights: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Owned, read-only, C-contiguous, native-byte-order copies of arrays of program dtypes."""
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping of names to numpy arrays, got {type(weights).__name__}")
    checked: Dict[str, np.ndarray] = {}
    for name, array in weights.items():
        if not isinstance(name, str) or not isinstance(array, np.ndarray):
            raise TypeError(f"weights must map names (str) to numpy arrays, got {name!r}: {type(array).__name__}")
        dtype = array.dtype.newbyteorder("=")
        if dtype not in DTYPES.values() and dtype not in QUANTIZED_DTYPES:
            raise ValueError(f"weight {name!r} has dtype {array.dtype}; a program holds {sorted(DTYPES)}, "
                             f"or bfloat16 matrices as the uint16 of their bits")
        copy = np.array(array, dtype=dtype, order="C", copy=True)
        copy.flags.writeable = False
        checked[name] = copy
    return checked
