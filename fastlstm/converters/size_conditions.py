"""The conditions on input sizes that the module's own code relied on while it was traced.

`if x.size(1) != 7:` or `if len(x) > 5:` in forward is decided once, at trace time, for the example's
sizes; the graph holds only the branch that was taken. torch.export records the decision as a
guard on the size symbols (`Ne(s1, 7)`) but does not check it when the program runs, so another
size could silently take the wrong branch. fastlstm translates every such guard from the user's
code (or torch.nn's Python code) into a condition the converted model checks on each call, and
refuses inputs that break one, naming the line.

Guards torch's internals add while computing shapes and strides (slicing, contiguity, broadcasting)
are left out: the converted model recomputes every shape from the actual arrays, as eager torch
does. The same goes for fastlstm's own shape rules (capture_ops).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import torch

from .source_lines import short_path

__all__ = ["user_size_conditions", "condition_expression"]

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_TORCH_NN_DIR = _TORCH_DIR + "nn" + os.sep  # torch.nn's Python code makes decisions like user code
_CAPTURE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _is_user_guard(guard: Any) -> Optional[str]:
    """The source line if the guard comes from the user's code (or torch.nn's), else None."""
    location = getattr(guard, "sloc", None)
    if location is None:
        return None
    user = getattr(location, "maybe_user_loc", None)
    if user:  # strict export names the user's line separately
        return str(user)
    frame = getattr(location, "framework_loc", None)
    path = os.path.abspath(getattr(frame, "filename", "") or "")
    if not path or path.startswith(_CAPTURE_DIR):
        return None
    if path.startswith(_TORCH_DIR) and not path.startswith(_TORCH_NN_DIR):
        return None
    return f"{short_path(path)}:{frame.lineno} in {frame.name}"


def user_size_conditions(exported: Any) -> List[Tuple[Any, str]]:
    """(sympy boolean expression, source line) for each guard the user's code put on sizes."""
    shape_env = None
    for node in exported.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and getattr(val, "fake_mode", None) is not None:
            shape_env = val.fake_mode.shape_env
            break
    if shape_env is None:
        return []
    conditions = []
    seen = set()
    for guard in getattr(shape_env, "guards", []):
        source = _is_user_guard(guard)
        if source is None:
            continue
        expr = shape_env.simplify(guard.expr) if hasattr(shape_env, "simplify") else guard.expr
        if expr in seen or getattr(expr, "is_Boolean", False) and expr in (True, False):
            continue
        seen.add(expr)
        conditions.append((expr, source))
    return conditions


def condition_expression(expr: Any, rename: Dict[str, str]) -> Any:
    """A sympy relation/boolean over size symbols as a `_symbolic` expression; symbols renamed.
    Raises KeyError for a symbol that is not an input size, ValueError for an unknown form."""
    import sympy

    if expr is sympy.true or expr is True:
        return {"const": True}
    if expr is sympy.false or expr is False:
        return {"const": False}
    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return {"sym": rename[str(expr)]}
    relations = {sympy.Eq: "eq", sympy.Ne: "ne", sympy.Lt: "lt", sympy.Le: "le", sympy.Gt: "gt", sympy.Ge: "ge"}
    for kind, name in relations.items():
        if isinstance(expr, kind):
            return {name: [condition_expression(a, rename) for a in expr.args]}
    if isinstance(expr, sympy.And):
        return {"and": [condition_expression(a, rename) for a in expr.args]}
    if isinstance(expr, sympy.Or):
        return {"or": [condition_expression(a, rename) for a in expr.args]}
    if isinstance(expr, sympy.Not):
        return {"not": [condition_expression(expr.args[0], rename)]}
    if isinstance(expr, sympy.Add):
        return {"add": [condition_expression(a, rename) for a in expr.args]}
    if isinstance(expr, sympy.Mul):
        return {"mul": [condition_expression(a, rename) for a in expr.args]}
    name = type(expr).__name__
    forms = {"FloorDiv": "floordiv", "PythonMod": "mod", "Mod": "mod", "Max": "max", "Min": "min"}
    if name in forms:
        return {forms[name]: [condition_expression(a, rename) for a in expr.args]}
    raise ValueError(f"a size condition of the form {expr}")
