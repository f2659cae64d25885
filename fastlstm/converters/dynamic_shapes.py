"""Which sizes of the example inputs may vary, and warnings when the module's code fixed one.

Default: every axis of size >= 2 of every tensor is marked `Dim.AUTO`, except the last axis of a
floating tensor of 2 or more dimensions (its features). Integer tensors (token ids (B, T),
lengths (B,)) have no feature axis. AUTO rather than DYNAMIC because AUTO lets the trace decide:
an axis the module's code ties to a constant (the feature size of an h0, a hard-coded
`view(-1, 7 * 16)`) quietly becomes fixed instead of failing the export; `specialization_warnings`
then tells the user about the axes they probably wanted free but got fixed. Axes of size 1 in
the example cannot be kept free (torch.export specialises sizes 0 and 1), hence the advice to
give an example of batch >= 2 and length >= 2.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import torch
from torch.export import Dim

__all__ = ["default_dynamic_shapes", "candidate_axes", "is_fixed", "specialization_warnings"]


def candidate_axes(tensor: torch.Tensor) -> List[int]:
    """Axes that are batch or sequence axes by convention."""
    if tensor.is_floating_point():
        if tensor.dim() == 1:
            return [0]  # a 1-D float input is a sequence (the tutorial's input_seq) more often than not
        return list(range(tensor.dim() - 1))
    return list(range(tensor.dim()))


def is_fixed(size: Any) -> bool:
    """True for a traced size that is a constant (an int, or a symbol export replaced by one)."""
    return isinstance(size, int) or bool(size.node.expr.is_number)


def default_dynamic_shapes(example: Any) -> Any:
    """The dynamic_shapes argument of torch.export for `example`, mirroring its nesting."""
    if isinstance(example, torch.Tensor):
        return {axis: Dim.AUTO for axis in candidate_axes(example) if example.shape[axis] >= 2} or None
    if isinstance(example, (tuple, list)):
        return type(example)(default_dynamic_shapes(item) for item in example)
    if isinstance(example, dict):
        return {key: default_dynamic_shapes(value) for key, value in example.items()}
    return None


def specialization_warnings(names: Sequence[str], examples: Sequence[torch.Tensor],
                            traced: Sequence[Any], expected_fixed: Any = frozenset()) -> str:
    """One message listing the axes that should vary but that the converted model will only
    accept at one size, or '' if there are none. `expected_fixed` holds (input index, axis)
    pairs known to be fixed by design (the layers axis of an LSTM state passed in)."""
    too_small, fixed_by_code = [], []
    for index, (name, example, fake) in enumerate(zip(names, examples, traced)):
        for axis in candidate_axes(example):
            if not is_fixed(fake.shape[axis]) or (index, axis) in expected_fixed:
                continue  # stays free, or is meant to be fixed
            size = int(example.shape[axis])
            if size < 2:
                too_small.append(f"{name} axis {axis}")
            elif example.dim() > 1 or not example.is_floating_point():
                fixed_by_code.append(f"{name} axis {axis} = {size}")
    parts = []
    if fixed_by_code:
        parts.append(
            f"the module's code fixes {', '.join(fixed_by_code)} (the example's sizes), so the converted "
            f"model accepts only those sizes there; if one should vary, look for a size written as a "
            f"constant in forward (e.g. view(-1, 7 * 16)) and derive it from the input (x.size(1))"
        )
    if too_small:
        parts.append(
            f"{', '.join(too_small)} had size 1 in the example and stay fixed at 1 (torch.export fixes "
            f"sizes 0 and 1); if one should vary, convert with an example of size >= 2 there (e.g. batch 2, "
            f"length 7)"
        )
    return "; ".join(parts)
