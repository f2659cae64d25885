"""What every program operation is built from: decoded arguments and the per-step build context.

Each operation is a *builder*: called once when a program is loaded, it checks its arguments and
returns a closure `run(env)` that reads input slots from the list `env` and writes its outputs.
A call of a converted model is then one loop over prebuilt closures; all parsing, validation and
weight preparation happen at load time.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ._program_format import StepSpec

__all__ = ["Ref", "ListArg", "StepArgs", "StepFn", "Builder", "const_getter"]

StepFn = Callable[[List[Any]], None]
Getter = Callable[[List[Any]], Any]


class Ref:
    """A value computed at call time: the content of one slot."""

    __slots__ = ("slot",)

    def __init__(self, slot: int) -> None:
        self.slot = slot

    def __repr__(self) -> str:
        return f"Ref({self.slot})"


class ListArg:
    """A list with at least one value computed at call time (e.g. view sizes from x.size(0))."""

    __slots__ = ("items",)

    def __init__(self, items: List[Any]) -> None:
        self.items = items


def decode_arg(arg: Any, weights: Mapping[str, np.ndarray], where: str) -> Any:
    """JSON argument -> Ref, ListArg, a weight array or a Python constant."""
    if not isinstance(arg, dict):
        return arg
    (kind, value), = arg.items()
    if kind == "slot":
        return Ref(value)
    if kind == "weight":
        if value not in weights:
            raise ValueError(f"{where} uses weight {value!r}, which the file does not hold")
        return weights[value]
    if kind == "float":
        return float(value)
    items = [decode_arg(item, weights, where) for item in value]
    if any(isinstance(item, (Ref, ListArg)) for item in items):
        return ListArg(items)
    return items


def const_getter(value: Any) -> Getter:
    return lambda env: value


def getter(value: Any) -> Getter:
    """A function env -> the argument's value at call time."""
    if isinstance(value, Ref):
        return operator.itemgetter(value.slot)
    if isinstance(value, ListArg):
        parts = [getter(item) for item in value.items]
        return lambda env: [part(env) for part in parts]
    return const_getter(value)


class StepArgs:
    """One step's decoded arguments, with accessors that check kinds and name the step on error."""

    def __init__(self, step: StepSpec, weights: Mapping[str, np.ndarray], cache: Dict[Any, Any]) -> None:
        self.step = step
        self.stored = weights  # every stored array by name (a quantized matrix's scales are found by name)
        self.where = f"step {step.index} ({step.op})"
        self.cache = cache  # shared by all steps of one model: e.g. one packed LSTM per nn.LSTM
        self._args = {name: decode_arg(arg, weights, f"{self.where}, argument {name!r}")
                      for name, arg in step.args.items()}

    # ------------------------------------------------------------------------ outputs
    @property
    def out(self) -> int:
        """The single output slot (error if the step declares another number of outputs)."""
        return self.outs(1)[0]

    def outs(self, count: Optional[int] = None) -> Tuple[int, ...]:
        if count is not None and len(self.step.out) != count:
            raise ValueError(f"{self.where} must have {count} output(s), got {len(self.step.out)}")
        return self.step.out

    def dtype(self, index: int = 0) -> np.dtype:
        dtypes = self.step.dtypes
        if index >= len(dtypes) or dtypes[index] is None:
            raise ValueError(f"{self.where}: output {index} needs a dtype")
        return dtypes[index]

    # ------------------------------------------------------------------------ arguments
    def has(self, name: str) -> bool:
        return name in self._args and self._args[name] is not None

    def raw(self, name: str, default: Any = None) -> Any:
        return self._args.get(name, default)

    def value(self, name: str) -> Getter:
        """Any argument, computed or constant."""
        if name not in self._args:
            raise ValueError(f"{self.where} is missing argument {name!r}")
        return getter(self._args[name])

    def tensor(self, name: str) -> Getter:
        """An array argument: a slot, or a stored weight."""
        value = self._args.get(name)
        if isinstance(value, Ref):
            return operator.itemgetter(value.slot)
        if isinstance(value, np.ndarray):
            return const_getter(value)
        raise ValueError(f"{self.where}: argument {name!r} must be a value or a weight, got {value!r:.80}")

    def optional_tensor(self, name: str) -> Optional[Getter]:
        return self.tensor(name) if self.has(name) else None

    def tensors(self, name: str) -> List[Getter]:
        value = self._args.get(name)
        items = value.items if isinstance(value, ListArg) else value
        if not isinstance(items, list):
            raise ValueError(f"{self.where}: argument {name!r} must be a list of values")
        getters = []
        for item in items:
            if not isinstance(item, (Ref, np.ndarray)):
                raise ValueError(f"{self.where}: argument {name!r} must list values or weights, got {item!r:.80}")
            getters.append(getter(item))
        return getters

    def weight(self, name: str) -> Optional[np.ndarray]:
        """The argument if it is a stored weight (so it can be prepared once), else None."""
        value = self._args.get(name)
        return value if isinstance(value, np.ndarray) else None

    def stored_names(self, name: str) -> List[Optional[str]]:
        """The stored weight name behind argument `name` (a list: each item's; None where an item is
        computed at call time)."""
        raw = self.step.args.get(name)
        items = raw["list"] if isinstance(raw, dict) and "list" in raw else [raw]
        return [item["weight"] if isinstance(item, dict) and "weight" in item else None for item in items]

    def scales_of(self, stored_name: str) -> np.ndarray:
        """The float32 scales stored beside an int8 matrix (as `<name>.scales`)."""
        scales = self.stored.get(f"{stored_name}.scales")
        if scales is None:
            raise self.fail(f"the int8 weight {stored_name!r} has no scales (expected {stored_name + '.scales'!r})")
        return scales

    def integer(self, name: str, default: Any = ...) -> int:
        value = self._args.get(name, default)
        if value is ...:
            raise ValueError(f"{self.where} is missing argument {name!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{self.where}: argument {name!r} must be an int, got {value!r:.80}")
        return value

    def optional_int(self, name: str) -> Optional[int]:
        return None if self._args.get(name) is None else self.integer(name)

    def ints(self, name: str, default: Any = ...) -> Optional[List[int]]:
        value = self._args.get(name, default)
        if value is ...:
            raise ValueError(f"{self.where} is missing argument {name!r}")
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ValueError(f"{self.where}: argument {name!r} must be a list of ints, got {value!r:.80}")
        return list(value)

    def number(self, name: str, default: Any = ...) -> float:
        value = self._args.get(name, default)
        if value is ...:
            raise ValueError(f"{self.where} is missing argument {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{self.where}: argument {name!r} must be a number, got {value!r:.80}")
        return value

    def optional_number(self, name: str) -> Optional[float]:
        return None if self._args.get(name) is None else self.number(name)

    def flag(self, name: str, default: Any = ...) -> bool:
        value = self._args.get(name, default)
        if not isinstance(value, bool):
            raise ValueError(f"{self.where}: argument {name!r} must be a bool, got {value!r:.80}")
        return value

    def choice(self, name: str, choices: Sequence[str], default: Any = ...) -> str:
        value = self._args.get(name, default)
        if value not in choices:
            raise ValueError(f"{self.where}: argument {name!r} must be one of {list(choices)}, got {value!r:.80}")
        return value

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.where}: {message}")


Builder = Callable[[StepArgs], StepFn]


def as_dtype(result: Any, dtype: np.dtype) -> Any:
    """numpy's promotion can differ from torch's (an int tensor / 2 is float32 in torch, float64
    in numpy): results are cast to the dtype torch computed at conversion."""
    if result.dtype != dtype:
        return np.asarray(result).astype(dtype)
    return result


def normalize_axis(axis: int, ndim: int, where: str) -> int:
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise IndexError(f"{where}: dimension {axis} is out of range for a {ndim}-D value")
    return axis % max(ndim, 1)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
