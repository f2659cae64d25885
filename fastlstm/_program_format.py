"""The program format: what `fastlstm.convert` writes and `fastlstm.Model` runs, as plain JSON.

A program is a list of steps over numbered value slots. Slots 0..n-1 hold the inputs; each step
reads slots (or constants, or stored weights) and writes its outputs to new slots; the outputs
are slots arranged in the nesting of the module's forward. The JSON travels in the metadata of
the `.safetensors` file that holds the weights, under PROGRAM_METADATA_KEY:

    {"format": "fastlstm.program", "version": 1, "source": "Forecaster",
     "num_slots": 9,
     "inputs": {"tree": {"tuple": [{"input": 0}]},
                "tensors": [{"name": "x", "slot": 0, "dtype": "float32",
                             "shape": [{"sym": "s0"}, {"sym": "s1"}, 1]}],
                "conditions": [{"check": {"ne": [{"sym": "s1"}, 7]}, "source": "model.py:9 ..."}]},
     "symbols": {"s0": {"min": 1, "max": null}, "s1": {"min": 1, "max": null}},
     "steps": [{"op": "lstm", "args": {...}, "out": [1, 2, 3],
                "dtypes": ["float32", "float32", "float32"], "source": "model.py:14 ..."}, ...],
     "outputs": {"slot": 8}}

An argument is a JSON literal, {"slot": i} (a value), {"weight": "name"} (a stored tensor),
{"list": [...]} (a list of arguments) or {"float": "inf" | "-inf" | "nan"}. Everything is
checked on load: a file is data, and a corrupt or hostile one must fail with a ValueError
naming what is wrong, never run something else.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ._symbolic import DimExpr, check_dim_expr

__all__ = [
    "PROGRAM_METADATA_KEY",
    "PROGRAM_FORMAT",
    "PROGRAM_VERSION",
    "DTYPES",
    "Program",
    "InputSpec",
    "StepSpec",
    "parse_program",
]

PROGRAM_METADATA_KEY = "fastlstm_program"  # outside the "fastlstm." namespace of LSTM configs
PROGRAM_FORMAT = "fastlstm.program"
# Bumped when a program's meaning changes incompatibly; readers refuse versions they do not know.
PROGRAM_VERSION = 1

# Value dtypes a program may hold: what numpy computes exactly as torch does.
DTYPES: Dict[str, np.dtype] = {
    name: np.dtype(name) for name in ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
}

# Far beyond real programs (a 1000-step unrolled decoder has a few thousand steps).
MAX_SLOTS = 10_000_000
MAX_STEPS = 1_000_000
_MAX_TREE_DEPTH = 64


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One tensor input: its name in forward's signature, slot, dtype and declared shape."""

    name: str
    slot: int
    dtype: np.dtype
    shape: Tuple[DimExpr, ...]


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """One step: `op` applied to `args`, writing `out` slots of `dtypes` (None: not a tensor)."""

    index: int
    op: str
    args: Dict[str, Any]
    out: Tuple[int, ...]
    dtypes: Tuple[Optional[np.dtype], ...]
    source: str


@dataclasses.dataclass(frozen=True)
class Program:
    """A checked program; `document` is the JSON it came from (what `save` writes back)."""

    document: Dict[str, Any]
    source_name: str
    num_slots: int
    input_tree: Any
    inputs: Tuple[InputSpec, ...]
    conditions: Tuple[Tuple[Any, str], ...]
    symbols: Dict[str, Tuple[int, Optional[int]]]
    steps: Tuple[StepSpec, ...]
    output_tree: Any


def parse_program(text: Any) -> Program:
    """Parse and check a program's JSON text (or an already-decoded dict)."""
    if isinstance(text, (str, bytes)):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"the program is not valid JSON ({type(exc).__name__}: {exc})") from None
    else:
        document = text
    if not isinstance(document, dict):
        raise ValueError(f"the program must be a JSON object, got {type(document).__name__}")
    if document.get("format") != PROGRAM_FORMAT:
        raise ValueError(f"not a fastlstm program (format {document.get('format')!r}, expected {PROGRAM_FORMAT!r})")
    version = document.get("version")
    if version != PROGRAM_VERSION:
        raise ValueError(
            f"the program has format version {version!r}; this fastlstm reads version {PROGRAM_VERSION}: "
            f"upgrade fastlstm, or convert the module again with this version"
        )
    num_slots = _int_field(document, "num_slots", 0, MAX_SLOTS)
    source_name = document.get("source", "module")
    if not isinstance(source_name, str):
        raise ValueError("the program's 'source' must be a string")

    inputs_doc = _field(document, "inputs", dict)
    tensors_doc = _field(inputs_doc, "tensors", list)
    inputs: List[InputSpec] = []
    defined = set()
    for i, entry in enumerate(tensors_doc):
        where = f"input {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object")
        name = _field(entry, "name", str)
        slot = _slot(entry.get("slot"), num_slots, where)
        dtype = _dtype(entry.get("dtype"), where)
        shape = _field(entry, "shape", list)
        for dim in shape:
            try:
                check_dim_expr(dim)
            except ValueError as exc:
                raise ValueError(f"{where} ({name}): {exc}") from None
        if slot in defined:
            raise ValueError(f"{where}: slot {slot} is used twice")
        defined.add(slot)
        inputs.append(InputSpec(name, slot, dtype, tuple(shape)))
    input_tree = inputs_doc.get("tree")
    _check_tree(input_tree, "input", len(inputs), num_slots, 0)
    conditions: List[Tuple[Any, str]] = []
    for i, entry in enumerate(inputs_doc.get("conditions", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("source", ""), str):
            raise ValueError(f"input condition {i} must be an object with a 'check' and a 'source' string")
        try:
            check_dim_expr(entry.get("check"))
        except ValueError as exc:
            raise ValueError(f"input condition {i}: {exc}") from None
        conditions.append((entry["check"], entry.get("source", "")))

    symbols: Dict[str, Tuple[int, Optional[int]]] = {}
    for name, bounds in _field(document, "symbols", dict).items():
        if not isinstance(bounds, dict):
            raise ValueError(f"symbol {name!r}: bounds must be an object")
        low = bounds.get("min", 1)
        high = bounds.get("max")
        if isinstance(low, bool) or not isinstance(low, int) or low < 0:
            raise ValueError(f"symbol {name!r}: min must be an int >= 0, got {low!r}")
        if high is not None and (isinstance(high, bool) or not isinstance(high, int) or high < low):
            raise ValueError(f"symbol {name!r}: max must be null or an int >= min, got {high!r}")
        symbols[name] = (low, high)

    steps_doc = _field(document, "steps", list)
    if len(steps_doc) > MAX_STEPS:
        raise ValueError(f"the program has {len(steps_doc)} steps; at most {MAX_STEPS} are accepted")
    steps: List[StepSpec] = []
    for index, entry in enumerate(steps_doc):
        where = f"step {index}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object")
        op = _field(entry, "op", str)
        args = _field(entry, "args", dict)
        for name, arg in args.items():
            _check_arg(arg, num_slots, defined, f"{where} ({op}), argument {name!r}", 0)
        out = _field(entry, "out", list)
        for slot in out:
            slot = _slot(slot, num_slots, f"{where} ({op}) output")
            if slot in defined:
                raise ValueError(f"{where} ({op}) writes slot {slot}, which already holds a value")
            defined.add(slot)
        dtypes_doc = entry.get("dtypes", [None] * len(out))
        if not isinstance(dtypes_doc, list) or len(dtypes_doc) != len(out):
            raise ValueError(f"{where} ({op}): 'dtypes' must list one dtype (or null) per output")
        dtypes = tuple(None if d is None else _dtype(d, where) for d in dtypes_doc)
        source = entry.get("source", "")
        if not isinstance(source, str):
            raise ValueError(f"{where} ({op}): 'source' must be a string")
        steps.append(StepSpec(index, op, args, tuple(out), dtypes, source))

    output_tree = document.get("outputs")
    _check_tree(output_tree, "output", 0, num_slots, 0, defined)
    return Program(
        document=document,
        source_name=source_name,
        num_slots=num_slots,
        input_tree=input_tree,
        inputs=tuple(inputs),
        conditions=tuple(conditions),
        symbols=symbols,
        steps=tuple(steps),
        output_tree=output_tree,
    )


# ------------------------------------------------------------------------------------- pieces
def _field(document: Mapping[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"the program's {name!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _int_field(document: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"the program's {name!r} must be an int in [{low}, {high}], got {value!r}")
    return value


def _slot(value: Any, num_slots: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_slots:
        raise ValueError(f"{where}: slot must be an int in [0, {num_slots}), got {value!r}")
    return value


def _dtype(value: Any, where: str) -> np.dtype:
    if value not in DTYPES:
        raise ValueError(f"{where}: dtype must be one of {sorted(DTYPES)}, got {value!r}")
    return DTYPES[value]


def _check_arg(arg: Any, num_slots: int, defined: set, where: str, depth: int) -> None:
    if depth > _MAX_TREE_DEPTH:
        raise ValueError(f"{where}: nested too deeply")
    if arg is None or isinstance(arg, (bool, int, str)):
        return
    if isinstance(arg, float):
        if not math.isfinite(arg):
            raise ValueError(f"{where}: non-finite floats are written as {{'float': 'inf'}}")
        return
    if not isinstance(arg, dict) or len(arg) != 1:
        raise ValueError(f"{where}: an argument must be a literal or a one-key object, got {arg!r:.80}")
    (kind, value), = arg.items()
    if kind == "slot":
        slot = _slot(value, num_slots, where)
        if slot not in defined:
            raise ValueError(f"{where} reads slot {slot} before any step writes it")
    elif kind == "weight":
        if not isinstance(value, str):
            raise ValueError(f"{where}: a weight is named by a string, got {value!r:.80}")
    elif kind == "list":
        if not isinstance(value, list):
            raise ValueError(f"{where}: 'list' must hold a list")
        for item in value:
            _check_arg(item, num_slots, defined, where, depth + 1)
    elif kind == "float":
        if value not in ("inf", "-inf", "nan"):
            raise ValueError(f"{where}: 'float' must be 'inf', '-inf' or 'nan', got {value!r:.80}")
    else:
        raise ValueError(f"{where}: unknown argument kind {kind!r:.80}")


def _check_tree(tree: Any, kind: str, num_inputs: int, num_slots: int, depth: int,
                defined: Optional[set] = None) -> None:
    where = f"the {kind} structure"
    if depth > _MAX_TREE_DEPTH:
        raise ValueError(f"{where} is nested too deeply")
    if not isinstance(tree, dict) or len(tree) != 1:
        raise ValueError(f"{where}: each node must be a one-key object, got {tree!r:.80}")
    (key, value), = tree.items()
    if key in ("tuple", "list"):
        if not isinstance(value, list):
            raise ValueError(f"{where}: {key!r} must hold a list")
        for item in value:
            _check_tree(item, kind, num_inputs, num_slots, depth + 1, defined)
    elif key == "dict":
        if not isinstance(value, list):
            raise ValueError(f"{where}: 'dict' must hold a list of [key, node] pairs")
        for pair in value:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))
                    and not isinstance(pair[0], bool)):
                raise ValueError(f"{where}: 'dict' entries must be [key, node] with a str or int key")
            _check_tree(pair[1], kind, num_inputs, num_slots, depth + 1, defined)
    elif kind == "input" and key == "input":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_inputs:
            raise ValueError(f"{where}: input index must be an int in [0, {num_inputs}), got {value!r}")
    elif kind == "input" and key == "none":
        return
    elif kind == "output" and key == "slot":
        slot = _slot(value, num_slots, where)
        if defined is not None and slot not in defined:
            raise ValueError(f"{where} reads slot {slot}, which no step writes")
    elif kind == "output" and key == "const":
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise ValueError(f"{where}: a constant output must be a JSON literal")
    else:
        raise ValueError(f"{where}: unknown node {key!r:.80}")
