"""Symbolic sizes of a program's inputs, as tiny JSON-able expressions evaluated per call.

A converted model's input shapes are partly fixed (the feature size) and partly free (batch,
sequence length). torch.export names each free size with a symbol (s0, s1, ...) and may relate
them (a dimension `2*s0`, two inputs sharing `s0`). The converter writes each input dimension
as one of:

    7                          a fixed size
    {"sym": "s0"}              a free size, named
    {"add": [e, ...]}          sum,       {"mul": [e, ...]}  product
    {"floordiv": [a, b]}       a // b,    {"mod": [a, b]}    a % b (Python's sign rules)
    {"max": [e, ...]}          maximum,   {"min": [e, ...]}  minimum

and the runtime binds each symbol from the first dimension that is exactly that symbol, then
checks every other dimension and each symbol's range. Conditions the module's code relied on
(`if x.size(1) != 7:`) use the same forms plus {"eq"|"ne"|"lt"|"le"|"gt"|"ge": [a, b]},
{"and"|"or": [...]}, {"not": [a]} and {"const": true|false}, and are checked after binding.
No sympy at run time, nothing to parse: a handful of integer operations per call.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["DimExpr", "check_dim_expr", "evaluate", "symbol_of", "describe"]

DimExpr = Any  # int or a dict as above

_NARY = ("add", "mul", "max", "min", "and", "or")
_BINARY = ("floordiv", "mod", "eq", "ne", "lt", "le", "gt", "ge")
_RELATIONS = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
}
# Hostile or corrupt files could nest expressions without end; real ones are a few levels deep.
_MAX_DEPTH = 32


def check_dim_expr(expr: Any, depth: int = 0) -> None:
    """ValueError unless `expr` is a well-formed dimension expression."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"dimension expression nested deeper than {_MAX_DEPTH} levels")
    if isinstance(expr, bool):
        raise ValueError(f"a dimension must be an int or an expression, got {expr!r}")
    if isinstance(expr, int):
        if expr < 0:
            raise ValueError(f"a fixed dimension must be >= 0, got {expr}")
        return
    if not isinstance(expr, dict) or len(expr) != 1:
        raise ValueError(f"a dimension must be an int or a one-key expression, got {expr!r}")
    (kind, operands), = expr.items()
    if kind == "sym":
        if not isinstance(operands, str) or not operands:
            raise ValueError(f"a symbol must be a non-empty string, got {operands!r}")
        return
    if kind == "const":
        if not isinstance(operands, bool):
            raise ValueError(f"'const' holds true or false, got {operands!r}")
        return
    if kind == "not":
        if not isinstance(operands, list) or len(operands) != 1:
            raise ValueError(f"'not' takes one operand, got {operands!r}")
    elif kind in _NARY:
        if not isinstance(operands, list) or not operands:
            raise ValueError(f"{kind!r} takes a non-empty list of operands, got {operands!r}")
    elif kind in _BINARY:
        if not isinstance(operands, list) or len(operands) != 2:
            raise ValueError(f"{kind!r} takes two operands, got {operands!r}")
    else:
        raise ValueError(f"unknown dimension expression {kind!r}")
    for operand in operands:
        check_dim_expr(operand, depth + 1)


def symbol_of(expr: DimExpr) -> Optional[str]:
    """The symbol's name if `expr` is exactly one symbol, else None."""
    if isinstance(expr, dict) and "sym" in expr:
        return expr["sym"]
    return None


def evaluate(expr: DimExpr, bindings: Mapping[str, int]) -> Optional[int]:
    """The value of `expr`, or None if it names a symbol not bound yet."""
    if isinstance(expr, int):
        return expr
    (kind, operands), = expr.items()
    if kind == "sym":
        return bindings.get(operands)
    if kind == "const":
        return operands
    values: List[int] = []
    for operand in operands:
        value = evaluate(operand, bindings)
        if value is None:
            return None
        values.append(value)
    if kind == "add":
        return sum(values)
    if kind == "mul":
        product = 1
        for value in values:
            product *= value
        return product
    if kind == "max":
        return max(values)
    if kind == "min":
        return min(values)
    if kind == "and":
        return all(values)
    if kind == "or":
        return any(values)
    if kind == "not":
        return not values[0]
    if kind in _RELATIONS:
        return _RELATIONS[kind](values[0], values[1])
    if values[1] == 0:
        return None  # cannot hold for any input; leave it to the program's own checks
    if kind == "floordiv":
        return values[0] // values[1]
    return values[0] % values[1]


def describe(expr: DimExpr, names: Optional[Mapping[str, str]] = None) -> str:
    """Readable form for error messages: 7, s0, s0*2, ...; `names` renames symbols (s1 ->
    x.shape[1])."""
    if isinstance(expr, int):
        return str(expr)
    (kind, operands), = expr.items()
    if kind == "sym":
        return (names or {}).get(operands, operands)
    if kind == "const":
        return str(operands)
    parts = [describe(o, names) for o in operands]
    if kind == "add":
        return "(" + " + ".join(parts) + ")"
    if kind == "mul":
        return "*".join(parts)
    symbols = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
    if kind in symbols:
        return f"{parts[0]} {symbols[kind]} {parts[1]}"
    if kind in ("and", "or"):
        return "(" + f" {kind} ".join(parts) + ")"
    if kind == "not":
        return f"not ({parts[0]})"
    if kind == "floordiv":
        return f"({parts[0]} // {parts[1]})"
    if kind == "mod":
        return f"({parts[0]} % {parts[1]})"
    return f"{kind}({', '.join(parts)})"


def bind_dims(
    shapes: List[Tuple[str, Tuple[int, ...], List[DimExpr]]],
    ranges: Mapping[str, Tuple[int, Optional[int]]],
    conditions: Sequence[Tuple[DimExpr, str]] = (),
) -> Dict[str, int]:
    """Bind every symbol from the actual shapes and check all dimensions, ranges and conditions.

    shapes: (input name, actual shape, declared dims) per input tensor (ndim already checked).
    ranges: symbol -> (min, max or None).
    conditions: (condition, the source line that relied on it).
    Raises ValueError naming the input and dimension, or the condition and its line.
    """
    bindings: Dict[str, int] = {}
    for name, actual, declared in shapes:
        for axis, (size, expr) in enumerate(zip(actual, declared)):
            symbol = symbol_of(expr)
            if symbol is None or symbol in bindings:
                continue
            low, high = ranges.get(symbol, (1, None))
            if size < low or (high is not None and size > high):
                bound = f"at least {low}" if high is None else f"between {low} and {high}"
                raise ValueError(
                    f"{name} has size {size} on axis {axis}, but the converted model accepts sizes "
                    f"{bound} there (shape {describe_shape(declared)})"
                )
            bindings[symbol] = size
    for name, actual, declared in shapes:
        for axis, (size, expr) in enumerate(zip(actual, declared)):
            expected = evaluate(expr, bindings)
            if expected is not None and expected != size:
                raise ValueError(
                    f"{name} has shape {tuple(actual)}, but the converted model expects "
                    f"{describe_shape(declared)} with these inputs: axis {axis} must be {expected}"
                    + _hint(expr)
                )
    for condition, source in conditions:
        if evaluate(condition, bindings) is False:
            places: Dict[str, str] = {}
            for name, _, declared in shapes:
                for axis, expr in enumerate(declared):
                    symbol = symbol_of(expr)
                    if symbol is not None:
                        places.setdefault(symbol, f"{name}.shape[{axis}]")
            sizes = ", ".join(f"{places.get(symbol, symbol)} = {value}" for symbol, value in bindings.items())
            raise ValueError(
                f"these input sizes ({sizes}) take another path through the module's code than the "
                f"example it was converted with: the code at {source} relied on {describe(condition, places)}. "
                f"Convert the module again with an example of these sizes to serve them"
            )
    return bindings


def describe_shape(declared: List[DimExpr]) -> str:
    return "(" + ", ".join(describe(d) for d in declared) + ("," if len(declared) == 1 else "") + ")"


def _hint(expr: DimExpr) -> str:
    if isinstance(expr, int):
        return (
            " (the module was converted with that size fixed; a size the module's code fixes, or one "
            "that was 1 in the example input, cannot vary)"
        )
    return " (the same symbol names sizes that must agree)"


def compile_shape_check(
    declared: Sequence[Sequence[DimExpr]],
    ranges: Mapping[str, Tuple[int, Optional[int]]],
    conditions: Sequence[Tuple[DimExpr, str]] = (),
) -> Any:
    """A fast `shapes -> bindings or None` for the inputs' declared shapes (in input order):
    None means some check fails, and `bind_dims` then says which. The plan is worked out once,
    at load, so a call only compares a few integers."""
    binders: List[Tuple[int, int, str, int, Optional[int]]] = []
    fixed: List[Tuple[int, int, int]] = []
    repeats: List[Tuple[int, int, str]] = []
    derived: List[Tuple[int, int, DimExpr]] = []
    seen = set()
    for index, dims in enumerate(declared):
        for axis, expr in enumerate(dims):
            symbol = symbol_of(expr)
            if isinstance(expr, int):
                fixed.append((index, axis, expr))
            elif symbol is None:
                derived.append((index, axis, expr))
            elif symbol in seen:
                repeats.append((index, axis, symbol))
            else:
                seen.add(symbol)
                low, high = ranges.get(symbol, (1, None))
                binders.append((index, axis, symbol, low, high))
    checks = [condition for condition, _ in conditions]

    def check(shapes: Sequence[Tuple[int, ...]]) -> Optional[Dict[str, int]]:
        bindings: Dict[str, int] = {}
        for index, axis, symbol, low, high in binders:
            size = shapes[index][axis]
            if size < low or (high is not None and size > high):
                return None
            bindings[symbol] = size
        for index, axis, value in fixed:
            if shapes[index][axis] != value:
                return None
        for index, axis, symbol in repeats:
            if shapes[index][axis] != bindings[symbol]:
                return None
        for index, axis, expr in derived:
            value = evaluate(expr, bindings)
            if value is not None and value != shapes[index][axis]:
                return None
        for condition in checks:
            if evaluate(condition, bindings) is False:
                return None
        return bindings

    return check
