"""fastlstm.convert for torch modules: capture with torch.export, translate, check, build a Model.

Capture: torch.export with dynamic shapes, non-strict first (forward runs as plain Python, which
handles the widest range of code, PackedSequence included), strict (TorchDynamo) as the fallback
when that fails or fixes a size strict keeps free (Python's len(x) must return an int, so
non-strict tracing fixes the size it reads). Compared with torch.fx's symbolic_trace, export
follows real Python (len(x), shape arithmetic, `if x.dim() == 3:`, loops), records every derived
size symbolically and hands over ATen operations with their source lines; symbolic_trace fails on
len(x) and on Python control flow over a shape, and needs leaf-module lists to keep nn.LSTM
whole. What export cannot capture and fx could: forwards whose outputs are custom objects
(export needs them registered as pytrees) and forwards that only run with symbolic proxies
(export runs forward on example-shaped fake tensors, so the example must exercise the path).
The LSTMs and PackedSequence packing are kept whole by `capture_ops`. The graph is made
functional (`run_decompositions({})`: in-place updates become pure operations) without
decomposing further, so Linear, LayerNorm, GELU, softmax... stay one operation each.

Sizes: the program recomputes every shape from the actual arrays at call time, checks the
conditions the module's own code put on sizes (`size_conditions`), and size 1 on each free axis
is checked against the module at conversion (`_check_size_one`), since export assumes sizes >= 2.

Eval mode: the module is converted with eval-mode semantics (dropout off, BatchNorm's running
statistics). A module in training mode is switched to eval for the capture, switched back after,
and a UserWarning says so: a served model is an eval-mode model, and refusing would only make
the user add `.eval()`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .._errors import ConversionError
from .._program import Model
from . import aten_ops
from .capture_ops import CAPTURE_LOCK, capture_patches
from .dynamic_shapes import candidate_axes, default_dynamic_shapes, is_fixed, specialization_warnings
from .size_conditions import user_size_conditions
from .state_watch import AttributeWatch, stateful_module_problems
from .supported import SUPPORTED_SUMMARY
from .translate import TORCH_DTYPE_NAMES, Translator, Unsupported

__all__ = ["convert_module"]

# The check at conversion compares the program with the module on the example inputs; it
# catches a semantic difference, not rounding, so it is looser than the test suite's bounds.
_CHECK_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


def convert_module(module: nn.Module, example_inputs: Any, *, dynamic_shapes: Any = None,
                   check: bool = True) -> Model:
    """See fastlstm.convert."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(module).__module__}.{type(module).__name__}")
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError("convert expects the original nn.Module, not a TorchScript module (torch.jit.script/trace)")
    name = type(module).__name__
    args = _example_args(example_inputs)
    names = _signature_names(module, args)
    leaves, tree, input_names = _example_structure(args, [name for _, name in names])
    dynamic = _default_dynamic_shapes(args, names) if dynamic_shapes is None else dynamic_shapes

    with CAPTURE_LOCK, _eval_mode(module, name):
        exported, changes, failure = _capture(module, args, dynamic, leaves)
        if changes:
            problems = stateful_module_problems(changes)
            raise ConversionError(_message(name, problems, "keeps state between calls"), problems)
        if failure is not None:
            raise _export_error(name, failure) from failure
        conditions = user_size_conditions(exported)  # from the trace's shape environment
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-internal deprecations
            # functional form: in-place updates become pure operations (and buffer updates show)
            exported = exported.run_decompositions({})
        _refuse_state_updates(name, exported)
        translator = Translator(exported, input_names, tree, name, aten_ops.TRANSLATORS, aten_ops.SCALAR_FUNCTIONS,
                                conditions)
        try:
            document, weights = translator.run()
        except Unsupported as exc:
            translator.problems.append(str(exc))
            document, weights = {}, {}
        if translator.problems:
            raise ConversionError(_message(name, translator.problems), translator.problems)
        fixed = specialization_warnings(input_names, leaves, _traced_inputs(exported), _state_layer_axes(exported))
        if fixed:
            warnings.warn(f"fastlstm.convert({name}): {fixed}", UserWarning, stacklevel=3)
        model = Model(document, weights)
        if check:
            model = _checked_model(name, module, args, document, weights, model)
    return model


def _checked_model(name: str, module: nn.Module, args: Tuple[Any, ...], document: Dict[str, Any],
                   weights: Dict[str, np.ndarray], model: Model) -> Model:
    """The model after the checks against the module: refused if it differs on the example,
    rebuilt to refuse size 1 on the axes where size 1 does not reproduce the module."""
    _check_against_module(name, module, args, model)
    refused = _check_size_one(module, args, document, model)
    if not refused:
        return model
    for symbol in refused:
        document["symbols"][symbol]["min"] = 2
    warnings.warn(
        f"fastlstm.convert({name}): the converted model refuses size 1 on "
        f"{' or '.join(_describe_symbol(document, s) for s in refused)}: there the module computes "
        f"differently than at the example's size (e.g. `if x.size(0) == 1:` or a squeeze() in forward), "
        f"or size 1 could not be checked against it; convert with an example of size 1 there to serve "
        f"that size",
        UserWarning, stacklevel=4,
    )
    return Model(document, weights)


# ---------------------------------------------------------------------------------- inputs
def _example_args(example_inputs: Any) -> Tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(
        f"example_inputs must be a tensor or a tuple of forward's arguments, got {type(example_inputs).__name__}"
    )


def _signature_names(module: nn.Module, args: Tuple[Any, ...]) -> List[Tuple[str, str]]:
    """(forward's parameter name, name of this argument) per positional argument: ('x', 'x'), or
    ('inputs', 'inputs[1]') for the second of `*inputs`."""
    import inspect

    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    names: List[Tuple[str, str]] = []
    for parameter in parameters:
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            names.append((parameter.name, parameter.name))
        elif parameter.kind == parameter.VAR_POSITIONAL:
            names += [(parameter.name, f"{parameter.name}[{i}]") for i in range(len(args) - len(names))]
    names += [(f"input{i}", f"input{i}") for i in range(len(names), len(args))]
    return names[: len(args)]


def _default_dynamic_shapes(args: Tuple[Any, ...], names: List[Tuple[str, str]]) -> Any:
    """torch.export's dynamic_shapes, keyed by forward's parameters (a `*inputs` parameter takes a
    tuple with one entry per argument it collects)."""
    if all(parameter == name for parameter, name in names):
        return default_dynamic_shapes(args)
    shapes: Dict[str, Any] = {}
    for (parameter, _), arg in zip(names, args):
        if parameter in shapes:
            shapes[parameter] = shapes[parameter] + (default_dynamic_shapes(arg),)
        else:
            shapes[parameter] = (default_dynamic_shapes(arg),)
    return shapes


def _example_structure(args: Tuple[Any, ...], names: List[str]) -> Tuple[List[torch.Tensor], Dict[str, Any], List[str]]:
    """(tensor leaves in pytree order, the input tree for the program, a name per leaf)."""
    leaves: List[torch.Tensor] = []
    leaf_names: List[str] = []

    def walk(value: Any, path: str) -> Dict[str, Any]:
        if isinstance(value, torch.Tensor):
            _check_example_tensor(value, path)
            leaves.append(value)
            leaf_names.append(path)
            return {"input": len(leaves) - 1}
        if value is None:
            return {"none": None}
        if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
            kind = "tuple" if isinstance(value, tuple) else "list"
            return {kind: [walk(item, f"{path}[{i}]") for i, item in enumerate(value)]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"dict": [[key, walk(item, f"{path}[{key!r}]")] for key, item in value.items()]}
        raise TypeError(
            f"example input {path} is a {type(value).__name__}; convert takes tensors (or None), in tuples, "
            f"lists or dicts: a Python number or object would be fixed into the converted model as a "
            f"constant (pass lengths, masks and the like as tensors)"
        )

    tree = {"tuple": [walk(arg, name) for arg, name in zip(args, names)]}
    return leaves, tree, leaf_names


def _check_example_tensor(tensor: torch.Tensor, path: str) -> None:
    if tensor.device.type != "cpu":
        raise ValueError(f"example input {path} is on {tensor.device}; convert takes CPU tensors (call .cpu())")
    if tensor.dtype not in TORCH_DTYPE_NAMES:
        raise TypeError(
            f"example input {path} has dtype {tensor.dtype}; converted models take float32, float64, "
            f"integer and bool inputs"
        )


def _user_input_names(exported: Any) -> List[str]:
    from torch.export.graph_signature import InputKind

    return [s.arg.name for s in exported.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]


# ---------------------------------------------------------------------------------- capture
@contextlib.contextmanager
def _eval_mode(module: nn.Module, name: str) -> Iterator[None]:
    modes = [(m, m.training) for m in module.modules()]
    if any(training for _, training in modes):
        warnings.warn(
            f"fastlstm.convert({name}): the module is in training mode; it is converted with eval-mode "
            f"semantics (dropout off, BatchNorm running statistics), as a served model runs. The module "
            f"itself is left in training mode. Call module.eval() first to silence this warning.",
            UserWarning,
            stacklevel=5,  # _eval_mode, contextlib, convert_module, convert, the caller
        )
        module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def _capture(module: nn.Module, args: Tuple[Any, ...], dynamic: Any,
             leaves: List[torch.Tensor]) -> Tuple[Any, List, Optional[BaseException]]:
    """(exported program or None, attributes forward assigned, export's failure or None).

    Non-strict torch.export first: it runs forward as plain Python, which handles the widest range
    of code (PackedSequence included). Python's len(x) must return an int, though, so non-strict
    tracing fixes the size len() reads; when an axis that should vary ends up fixed, strict
    export (TorchDynamo, which traces len(x) symbolically) is tried as well, and kept if it
    succeeds with fewer fixed axes.
    """
    exported, changes, failure = _export(module, args, dynamic, strict=False)
    if changes:
        return None, changes, None
    if exported is not None and not _fixed_axes(exported, leaves):
        return exported, [], None
    retried, retried_changes, retried_failure = _export(module, args, dynamic, strict=True)
    if retried is not None and not retried_changes and (
            exported is None or len(_fixed_axes(retried, leaves)) < len(_fixed_axes(exported, leaves))):
        return retried, [], None
    return exported, [], failure


def _export(module: nn.Module, args: Tuple[Any, ...], dynamic: Any,
            strict: bool) -> Tuple[Any, List, Optional[BaseException]]:
    exported, failure = None, None
    with CAPTURE_LOCK, AttributeWatch(module) as watch:
        with capture_patches(), warnings.catch_warnings(), _quiet_torch_logs():
            # torch.export's own warnings (e.g. about attributes assigned in forward) are
            # restated by fastlstm in terms of what to change, or are about torch internals.
            warnings.simplefilter("ignore")
            try:
                exported = torch.export.export(module, args, dynamic_shapes=dynamic, strict=strict)
            except Exception as exc:  # anything torch.export raises is reported with its reason
                failure = exc
    return exported, watch.changes, failure


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """A failed trace makes torch log graphs and hints; fastlstm reports the failure itself."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


_KEEPS_LEADING_AXIS = {"aten.index_select.default", "aten.clone.default", "aten.contiguous.default"}


def _state_layer_axes(exported: Any) -> set:
    """(input index, 0) for inputs passed to an nn.LSTM as h0/c0: their leading axis counts
    layers and directions, fixed by the module."""
    names = _user_input_names(exported)
    axes = set()
    for node in exported.graph.nodes:
        if node.op == "call_function" and str(node.target) == "fastlstm.lstm.default":
            for state in node.args[1:3]:
                # through the reordering nn.LSTM applies to states of a packed batch
                while getattr(state, "op", None) == "call_function" and str(state.target) in _KEEPS_LEADING_AXIS:
                    state = state.args[0]
                if getattr(state, "op", None) == "placeholder" and state.name in names:
                    axes.add((names.index(state.name), 0))
    return axes


def _traced_inputs(exported: Any) -> List[Any]:
    names = set(_user_input_names(exported))
    return [n.meta["val"] for n in exported.graph.nodes if n.op == "placeholder" and n.name in names]


def _fixed_axes(exported: Any, leaves: List[torch.Tensor]) -> List[Tuple[int, int]]:
    """(input, axis) of axes that should vary (candidates of size >= 2) but were fixed."""
    fixed = []
    for index, (example, traced) in enumerate(zip(leaves, _traced_inputs(exported))):
        for axis in candidate_axes(example):
            if example.shape[axis] >= 2 and is_fixed(traced.shape[axis]):
                fixed.append((index, axis))
    return fixed


def _refuse_state_updates(name: str, exported: Any) -> None:
    signature = exported.graph_signature
    problems = [
        f"forward updates buffer {buffer!r} in place: the module keeps state between calls, which a "
        f"converted model does not; compute the new value and return it instead"
        for buffer in signature.buffers_to_mutate.values()
    ]
    mutated_inputs = list(getattr(signature, "user_inputs_to_mutate", {}).values())
    if mutated_inputs:
        warnings.warn(
            f"fastlstm.convert({name}): forward modifies its input(s) {mutated_inputs} in place; the "
            f"converted model computes the same outputs but never writes to its inputs",
            UserWarning,
            stacklevel=4,
        )
    if problems:
        raise ConversionError(_message(name, problems, "keeps state between calls"), problems)


def _export_error(name: str, failure: BaseException) -> ConversionError:
    lines = [line.rstrip() for line in str(failure).strip().splitlines() if line.strip()]
    reason = lines[0] if lines else ""
    # torch names the user's line that failed after this marker; the rest is debugging advice
    marker = next((i for i, line in enumerate(lines) if "raised this error" in line), None)
    where = [line.strip() for line in lines[marker + 1: marker + 3]] if marker is not None else []
    problem = f"torch.export could not trace forward ({type(failure).__name__}: {reason})"
    if where:
        problem += "\n      at " + " ".join(where)
    hint = (
        "\nfastlstm captures forward with torch.export: forward must run on the example inputs "
        "without branching on tensor values (if x.sum() > 0:), calling .item()/.tolist()/.numpy(), "
        "or returning objects other than tensors in tuples, lists and dicts."
    )
    return ConversionError(f"fastlstm.convert cannot convert {name}:\n  - {problem}{hint}", [problem])


def _message(name: str, problems: List[str], what: Optional[str] = None) -> str:
    count = len(problems)
    if what is None:
        head = f"fastlstm.convert cannot convert {name}: {count} operation{'s' if count != 1 else ''} not supported:"
        tail = f"\n{SUPPORTED_SUMMARY}"
    else:
        head = f"fastlstm.convert cannot convert {name}: it {what}:"
        tail = ""
    return head + "".join(f"\n  - {problem}" for problem in problems) + tail


# ---------------------------------------------------------------------------------- check
def _check_against_module(name: str, module: nn.Module, args: Tuple[Any, ...], model: Model) -> None:
    """Run the module and the program on the example inputs; refuse if they disagree."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own notes about its kernels, not the user's concern here
        expected = module(*args)
        got = model(*args)
    mismatches: List[str] = []
    _compare(expected, got, "output", mismatches)
    if mismatches:
        problems = [f"{m} (an operation fastlstm translated differs from torch here; please report it)"
                    for m in mismatches]
        raise ConversionError(
            f"fastlstm.convert cannot convert {name}: the converted program does not reproduce the module on "
            f"the example inputs:" + "".join(f"\n  - {p}" for p in problems),
            problems,
        )


def _compare(expected: Any, got: Any, path: str, mismatches: List[str]) -> None:
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            mismatches.append(f"{path}: expected a tensor, got {type(got).__name__}")
            return
        if tuple(expected.shape) != tuple(got.shape) or expected.dtype != got.dtype:
            mismatches.append(f"{path}: expected {expected.dtype} {tuple(expected.shape)}, got {got.dtype} {tuple(got.shape)}")
            return
        reference = expected.detach().numpy()
        actual = got.numpy()
        if expected.is_floating_point():
            finite = np.isfinite(reference)
            if not np.array_equal(np.isnan(reference), np.isnan(actual)) or not np.array_equal(
                    reference[~finite & ~np.isnan(reference)], actual[~finite & ~np.isnan(reference)]):
                mismatches.append(f"{path}: nan or inf where the module has none, or the reverse")
                return
            if finite.any():
                scale = max(1.0, float(np.max(np.abs(reference[finite]))))
                error = float(np.max(np.abs(reference[finite].astype(np.float64) - actual[finite])))
                if not error <= _CHECK_TOLERANCE[expected.dtype] * scale:
                    mismatches.append(f"{path}: max abs error {error:.3g} at scale {scale:.3g}")
        elif not np.array_equal(reference, actual):
            mismatches.append(f"{path}: integer values differ")
        return
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            mismatches.append(f"{path}: expected {len(expected)} items")
            return
        for i, (e, g) in enumerate(zip(expected, got)):
            _compare(e, g, f"{path}[{i}]", mismatches)
        return
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            mismatches.append(f"{path}: expected keys {sorted(expected)}")
            return
        for key in expected:
            _compare(expected[key], got[key], f"{path}[{key!r}]", mismatches)
        return
    if expected != got:
        mismatches.append(f"{path}: expected {expected!r}, got {got!r}")


# ---------------------------------------------------------------------------------- size one
def _check_size_one(module: nn.Module, args: Tuple[Any, ...], document: Dict[str, Any], model: Model) -> List[str]:
    """Input size symbols the program must not take at 1.

    torch.export traces free sizes as >= 2, so code that behaves differently at 1 (a branch on
    x.size(0) == 1, a squeeze()) leaves no trace in the graph. For each symbol, the module and
    the program are run on the example cut to size 1 along its axes (and along those of every
    symbol of the same size in the example: the batch of the tokens and of their lengths are
    one batch); a symbol is refused at 1 unless both agree. Integer inputs are clamped to 0..1
    on a second try, so that lengths fit a sequence cut to one step.
    """
    tensors = document["inputs"]["tensors"]
    example_sizes = _example_sizes(args, tensors)
    refused = []
    for symbol in document["symbols"]:
        group = {s for s, size in example_sizes.items() if size == example_sizes.get(symbol)} | {symbol}
        axes = [[axis for axis, dim in enumerate(entry["shape"]) if dim in [{"sym": s} for s in group]]
                for entry in tensors]
        derived = any(s in str(dim) and "sym" not in dim for entry in tensors for dim in entry["shape"]
                      if isinstance(dim, dict) for s in group)
        if derived or not any(axes):
            refused.append(symbol)
            continue
        agreed = False
        for clamp_integers in (False, True):
            small = _cut_to_one(args, iter(axes), clamp_integers)
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    expected = module(*small)
            except Exception:
                continue  # torch itself refuses this cut; try the next
            try:
                model._bind_inputs(small)
            except ValueError:  # a condition from the module's code refuses this size already
                agreed = True
                break
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = model(*small)
            except Exception:
                break
            mismatches: List[str] = []
            _compare(expected, got, "output", mismatches)
            agreed = not mismatches
            break
        if not agreed:
            refused.append(symbol)
    return refused


def _example_sizes(args: Tuple[Any, ...], tensors: List[Dict[str, Any]]) -> Dict[str, int]:
    leaves = [leaf for leaf in torch.utils._pytree.tree_leaves(args) if isinstance(leaf, torch.Tensor)]
    sizes: Dict[str, int] = {}
    for leaf, entry in zip(leaves, tensors):
        for axis, dim in enumerate(entry["shape"]):
            if isinstance(dim, dict) and "sym" in dim:
                sizes.setdefault(dim["sym"], int(leaf.shape[axis]))
    return sizes


def _cut_to_one(value: Any, axes: Iterator[List[int]], clamp_integers: bool) -> Any:
    if isinstance(value, torch.Tensor):
        for axis in next(axes):
            value = value.narrow(axis, 0, 1)
        if clamp_integers and not value.is_floating_point() and value.dtype != torch.bool:
            value = value.clamp(0, 1)
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_cut_to_one(item, axes, clamp_integers) for item in value)
    if isinstance(value, dict):
        return {key: _cut_to_one(item, axes, clamp_integers) for key, item in value.items()}
    return value


def _describe_symbol(document: Dict[str, Any], symbol: str) -> str:
    places = [f"{entry['name']} axis {axis}" for entry in document["inputs"]["tensors"]
              for axis, dim in enumerate(entry["shape"]) if dim == {"sym": symbol}]
    return " / ".join(places) or symbol
