"""Sizes and scalars computed per call, and the checks torch.export records.

`x.size(0)`, `len(x)`, `seq_len * batch` are steps here too: `size` reads the actual array's
shape, and `scalar` applies one Python operator, so every size is computed from the actual inputs
of the call. `assert` enforces what the module's code relied on when it was traced (torch.export
records such conditions as runtime assertions); a call that breaks one fails with the condition
named instead of computing something the module never would.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Dict

import numpy as np

from ._ops_base import Builder, StepArgs, StepFn
from ._program_format import DTYPES

__all__ = ["BUILDERS", "SCALAR_FUNCTIONS"]

SCALAR_FUNCTIONS: Dict[str, Callable[..., Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "floordiv": operator.floordiv,
    "truediv": operator.truediv,
    "mod": operator.mod,
    "pow": operator.pow,
    "neg": operator.neg,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "and": lambda x, y: bool(x) and bool(y),
    "or": lambda x, y: bool(x) or bool(y),
    "not": operator.not_,
    "max": max,
    "min": min,
    "abs": abs,
    "float": float,
    "int": int,
    "floor": math.floor,
    "ceil": math.ceil,
    "sqrt": math.sqrt,
    "ite": lambda condition, x, y: x if condition else y,
}


def _build_size(a: StepArgs) -> StepFn:
    x, dim, out = a.tensor("input"), a.optional_int("dim"), a.out

    if dim is None:  # numel
        def run_numel(env):
            env[out] = int(np.size(x(env)))
        return run_numel

    def run(env):
        env[out] = int(np.shape(x(env))[dim])
    return run


def _build_scalar(a: StepArgs) -> StepFn:
    name = a.choice("fn", sorted(SCALAR_FUNCTIONS))
    fn, operands, out = SCALAR_FUNCTIONS[name], a.value("operands"), a.out

    def run(env):
        env[out] = fn(*operands(env))
    return run


def _build_assert(a: StepArgs) -> StepFn:
    condition, message = a.value("condition"), a.raw("message", "")
    source = a.step.source

    def run(env):
        if not condition(env):
            where = f" (from {source})" if source else ""
            raise ValueError(
                f"the inputs break a condition the module's code relies on{where}: {message}"
            )
    return run


def _build_check_dtype(a: StepArgs) -> StepFn:
    x = a.tensor("input")
    name = a.choice("dtype", sorted(DTYPES))
    expected = DTYPES[name]

    def run(env):
        actual = np.asarray(x(env)).dtype
        if actual != expected:
            raise TypeError(f"a value of dtype {expected} was expected here, got {actual}")
    return run


def _build_item(a: StepArgs) -> StepFn:
    x, out = a.tensor("input"), a.out

    def run(env):
        env[out] = np.asarray(x(env)).item()
    return run


BUILDERS: Dict[str, Builder] = {
    "size": _build_size,
    "scalar": _build_scalar,
    "assert": _build_assert,
    "check_dtype": _build_check_dtype,
    "item": _build_item,
}
