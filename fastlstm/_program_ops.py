"""The operations a fastlstm program may use, and building a program's steps into closures."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

import numpy as np

from . import _ops_elementwise, _ops_linear, _ops_recurrent, _ops_reduce, _ops_scalar, _ops_shape
from ._ops_base import Builder, StepArgs, StepFn
from ._program_format import Program

__all__ = ["OPERATIONS", "build_steps"]

OPERATIONS: Dict[str, Builder] = {}
for _module in (_ops_elementwise, _ops_reduce, _ops_shape, _ops_linear, _ops_recurrent, _ops_scalar):
    for _name, _builder in _module.BUILDERS.items():
        assert _name not in OPERATIONS, f"operation {_name!r} is defined twice"
        OPERATIONS[_name] = _builder


def build_steps(program: Program, weights: Mapping[str, np.ndarray]) -> List[StepFn]:
    """One closure per step, every argument checked and every weight prepared; ValueError
    naming the step for anything a program must not hold."""
    cache: Dict[Any, Any] = {}
    steps: List[StepFn] = []
    for step in program.steps:
        builder = OPERATIONS.get(step.op)
        if builder is None:
            raise ValueError(
                f"step {step.index} uses operation {step.op!r}, which this version of fastlstm does not "
                f"know; upgrade fastlstm (known: {', '.join(sorted(OPERATIONS))})"
            )
        steps.append(builder(StepArgs(step, weights, cache)))
    return steps
