"""A converted model's inputs and outputs: the nesting of forward's arguments and results, numpy
or torch on the way in and the same on the way out, and the checks of dtypes and shapes."""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np

from . import _interop
from ._program_format import InputSpec
from ._symbolic import describe_shape

__all__ = ["flatten_inputs", "input_array", "build_outputs"]


def flatten_inputs(tree: Any, value: Any, path: str, leaves: List[Any]) -> None:
    """Append the leaves of `value` (forward's arguments) to `leaves` in the input tree's order,
    checking that the nesting matches the example the model was converted with."""
    (kind, spec), = tree.items()
    if kind == "input":
        leaves.append((spec, value, path))
        return
    if kind == "none":
        if value is not None:
            raise TypeError(f"{path} must be None, as in the example the model was converted with, got {type(value).__name__}")
        return
    if kind in ("tuple", "list"):
        if not isinstance(value, (tuple, list)) or _is_array(value):
            raise TypeError(f"{path} must be a {kind} of {len(spec)} items, got {type(value).__name__}")
        if len(value) != len(spec):
            raise TypeError(f"{path} must have {len(spec)} items, as in the example the model was converted with, got {len(value)}")
        for i, (child, item) in enumerate(zip(spec, value)):
            flatten_inputs(child, item, f"{path}[{i}]", leaves)
        return
    # dict
    if not isinstance(value, Mapping):
        raise TypeError(f"{path} must be a dict, got {type(value).__name__}")
    keys = [key for key, _ in spec]
    if sorted(map(str, value.keys())) != sorted(map(str, keys)):
        raise TypeError(f"{path} must have the keys {keys}, got {list(value.keys())}")
    for key, child in spec:
        flatten_inputs(child, value[key], f"{path}[{key!r}]", leaves)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or _interop.is_tensor(value)


def input_array(value: Any, spec: InputSpec) -> Tuple[np.ndarray, bool]:
    """(the input as a numpy array, whether it was a torch tensor), or a TypeError/ValueError
    naming the input as forward's signature does (x, state[0], ...)."""
    name = spec.name
    was_tensor = False
    if type(value) is not np.ndarray:
        if _interop.is_tensor(value):
            was_tensor = True
            value = _tensor_to_numpy(value, name)
        elif not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    if value.dtype != spec.dtype:
        value = _matching_dtype(value, spec)
    if value.ndim != len(spec.shape):
        raise ValueError(
            f"{name} must be {len(spec.shape)}-D {describe_shape(list(spec.shape))}, "
            f"got {value.ndim}-D input of shape {value.shape}"
        )
    return value, was_tensor


def _tensor_to_numpy(tensor: Any, path: str) -> np.ndarray:
    if tensor.is_floating_point():
        return _interop.tensor_to_numpy(tensor, path)  # refuses grad-tracking, non-CPU and half tensors
    if tensor.device.type != "cpu":
        raise ValueError(f"{path} must be a CPU tensor, got a tensor on {tensor.device} (call .cpu() first)")
    if tensor.is_complex():
        raise TypeError(f"{path} must not be complex, got dtype {tensor.dtype}")
    return tensor.detach().numpy()


def _matching_dtype(value: np.ndarray, spec: InputSpec) -> np.ndarray:
    expected = spec.dtype
    # Integer ids and lengths come as int32 or int64 depending on who made them; any integer
    # type that converts exactly is accepted. Floats never are: fastlstm never casts them silently.
    if expected.kind in "iu" and value.dtype.kind in "iu" and np.can_cast(value.dtype, expected, "safe"):
        return value.astype(expected)
    if value.dtype.kind == "f" and expected.kind == "f":
        raise TypeError(
            f"{spec.name} has dtype {value.dtype} but the model takes {expected}; convert one "
            f"of them explicitly (fastlstm never casts silently)"
        )
    raise TypeError(f"{spec.name} must have dtype {expected}, got {value.dtype}")


def build_outputs(tree: Any, env: Sequence[Any], as_torch: bool) -> Any:
    """Forward's result, in its nesting, from the slots."""
    (kind, spec), = tree.items()
    if kind == "slot":
        return _output_value(env[spec], as_torch)
    if kind == "const":
        return spec
    if kind == "tuple":
        return tuple(build_outputs(child, env, as_torch) for child in spec)
    if kind == "list":
        return [build_outputs(child, env, as_torch) for child in spec]
    return {key: build_outputs(child, env, as_torch) for key, child in spec}


def _output_value(value: Any, as_torch: bool) -> Any:
    if not isinstance(value, np.ndarray):
        if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
            return value  # a size or other Python scalar forward returned
        value = np.asarray(value)  # numpy scalars from full reductions
    if not value.flags.writeable or any(stride < 0 for stride in value.strides):
        value = value.copy()  # never hand out (or wrap) a read-only weight or broadcast view
    if as_torch:
        return _interop.loaded_torch().from_numpy(value)
    return value
