"""From torch.export's graph to a fastlstm program (the JSON of `_program_format`) and its weights.

Walks the graph once, in order. Placeholders become input slots or stored weights; each ATen
operation that the outputs depend on is handed to its translator (`aten_ops.TRANSLATORS`), which
emits zero or more program steps; `getitem` on a multi-output operation just names one of its
slots; identity operations (clone, dropout in eval, ...) reuse their input's slot. Operations
nothing depends on are skipped. Every operation that cannot be translated is collected with its
source line, so the user sees all of them at once.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from .._program_format import PROGRAM_FORMAT, PROGRAM_VERSION
from .source_lines import module_path, user_source

__all__ = ["Unsupported", "Translator", "TORCH_DTYPE_NAMES"]

TORCH_DTYPE_NAMES: Dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.uint8: "uint8",
    torch.bool: "bool",
}

# Checks torch.export adds that a program need not repeat (input dtypes are checked on entry).
_IGNORED_TARGETS = {
    "aten._assert_tensor_metadata.default",
    "aten.sym_constrain_range_for_size.default",
    "aten.sym_constrain_range.default",
}
_ASSERT_TARGET = "aten._assert_scalar.default"


class Unsupported(Exception):
    """Raised by a translator: this node cannot be part of a program (the message says why)."""


class _DependencyFailed(Exception):
    """A node's input could not be translated; that input was reported already."""


class Translator:
    """One graph's translation; `problems` collects what could not be translated."""

    def __init__(self, exported: ExportedProgram, input_names: Sequence[str], input_tree: Any,
                 source_name: str, translators: Dict[str, Callable[..., None]],
                 scalar_functions: Dict[Any, str], conditions: Sequence[Tuple[Any, str]] = ()) -> None:
        self.exported = exported
        self.graph = exported.graph
        self.input_names = list(input_names)
        self.input_tree = input_tree
        self.source_name = source_name
        self.translators = translators
        self.scalar_functions = scalar_functions
        self.conditions = list(conditions)  # (sympy condition on sizes, source line)
        self.slots: Dict[fx.Node, Any] = {}  # node -> slot, or list of slots (None: not computed)
        self.packed_slots: Set[int] = set()
        self.num_slots = 0
        self.steps: List[Dict[str, Any]] = []
        self.weights: Dict[str, np.ndarray] = {}
        self.weight_names: Dict[fx.Node, str] = {}
        self._weight_sources: Dict[fx.Node, Tuple[str, Any]] = {}
        self._folded: Dict[fx.Node, torch.Tensor] = {}
        self.problems: List[str] = []
        self.inputs: List[Dict[str, Any]] = []

    # ------------------------------------------------------------------------------ driver
    def run(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        """(program document, weights); check `problems` first."""
        self._placeholders()
        live = self._live_nodes()
        self._fold_constants(live)
        for node in self.graph.nodes:
            if node.op != "call_function" or node not in live or node in self._folded:
                continue
            try:
                self._translate(node)
            except _DependencyFailed:
                pass
            except Unsupported as exc:
                self._report(node, str(exc))
        outputs = self._outputs()
        document = {
            "format": PROGRAM_FORMAT,
            "version": PROGRAM_VERSION,
            "source": self.source_name,
            "num_slots": self.num_slots,
            "inputs": {"tree": self.input_tree, "tensors": self.inputs, "conditions": self._conditions()},
            "symbols": self._symbols(),
            "steps": self.steps,
            "outputs": outputs,
        }
        return document, self.weights

    def _report(self, node: fx.Node, reason: str) -> None:
        where = user_source(node)
        owner = module_path(node)
        text = reason
        if where:
            text += f"\n      at {where}"
        if owner:
            text += f"  [{owner}]"
        self.problems.append(text)

    # ------------------------------------------------------------------------------ placeholders
    def _placeholders(self) -> None:
        specs = {spec.arg.name: spec for spec in self.exported.graph_signature.input_specs}
        user_index = 0
        for node in self.graph.nodes:
            if node.op != "placeholder":
                continue
            spec = specs[node.name]
            if spec.kind == InputKind.USER_INPUT:
                if user_index >= len(self.input_names):
                    raise Unsupported("the exported graph has more inputs than the example")
                val = node.meta.get("val")
                name = self.input_names[user_index]
                slot = self._new_slot()
                self.slots[node] = slot
                self.inputs.append({
                    "name": name,
                    "slot": slot,
                    "dtype": self._dtype_name(val, f"input {name}"),
                    "shape": [dim_expression(d) for d in val.shape],
                })
                user_index += 1
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                self._weight_sources[node] = (spec.target, spec.kind)
            else:
                self._report(node, f"the module holds a {spec.kind.name} ({spec.target}), which a program cannot")
        # torch's symbol names (s77, s27) become s0, s1, ... in order of appearance
        self._symbol_names: Dict[str, str] = {}
        for entry in self.inputs:
            entry["shape"] = [self._renamed(dim) for dim in entry["shape"]]

    def _renamed(self, expr: Any) -> Any:
        if isinstance(expr, int):
            return expr
        (kind, operands), = expr.items()
        if kind == "sym":
            return {"sym": self._symbol_names.setdefault(operands, f"s{len(self._symbol_names)}")}
        return {kind: [self._renamed(operand) for operand in operands]}

    def weight(self, node: fx.Node) -> str:
        """The stored name of a parameter/buffer/constant placeholder, storing it on first use."""
        if node in self.weight_names:
            return self.weight_names[node]
        target, _ = self._weight_sources[node]
        tensor = self._weight_tensor(node)
        if not isinstance(tensor, torch.Tensor):
            raise Unsupported(f"{target} is a {type(tensor).__name__}, not a tensor")
        if tensor.dtype not in TORCH_DTYPE_NAMES:
            raise Unsupported(
                f"{target} has dtype {tensor.dtype}; fastlstm programs hold float32, float64, integer "
                f"and bool tensors (convert the module with module.float() or module.double())"
            )
        name = target if target not in self.weights else f"{target}#{len(self.weights)}"
        array = tensor.detach().cpu().contiguous().numpy()
        self.weights[name] = np.array(array, copy=True)
        self.weight_names[node] = name
        return name

    def is_weight(self, value: Any) -> bool:
        return isinstance(value, fx.Node) and value in self._weight_sources

    def _weight_tensor(self, node: fx.Node) -> Any:
        if node in self._folded:
            return self._folded[node]
        target, kind = self._weight_sources[node]
        if kind == InputKind.CONSTANT_TENSOR or target not in self.exported.state_dict:
            return self.exported.constants[target]
        return self.exported.state_dict[target]

    def _fold_constants(self, live: Set[fx.Node]) -> None:
        """Compute now, once, what forward computes from weights alone (weight_norm's g * v / |v|,
        a transposed or scaled parameter), and store the result as a weight: the program then
        sees stored weights where the kernels need them (an nn.LSTM's), and does less per call."""
        for node in self.graph.nodes:
            if node.op != "call_function" or node not in live:
                continue
            target = node.target
            if not isinstance(target, torch._ops.OpOverload) or target.namespace != "aten":
                continue
            inputs = node.all_input_nodes
            if not inputs or not all(n in self._weight_sources for n in inputs):
                continue
            if not isinstance(node.meta.get("val"), torch.Tensor) or torch.Tag.nondeterministic_seeded in target.tags:
                continue
            materialize = lambda v: self._weight_tensor(v) if isinstance(v, fx.Node) else v  # noqa: E731
            try:
                args = torch.utils._pytree.tree_map(materialize, node.args)
                kwargs = torch.utils._pytree.tree_map(materialize, dict(node.kwargs))
                with torch.no_grad():
                    value = target(*args, **kwargs)
            except Exception:
                continue  # left to the program, which reports what it cannot do
            if isinstance(value, torch.Tensor):
                self._folded[node] = value.detach()
                first = self._weight_sources[inputs[0]][0]
                self._weight_sources[node] = (f"{first}:{node.name}", None)

    # ------------------------------------------------------------------------------ liveness
    def _live_nodes(self) -> Set[fx.Node]:
        """Nodes the outputs depend on, plus the runtime assertions about them."""
        live: Set[fx.Node] = set()
        stack = [n for n in self.graph.nodes if n.op == "output"]
        while stack:
            node = stack.pop()
            if node in live:
                continue
            live.add(node)
            stack.extend(node.all_input_nodes)
        for node in self.graph.nodes:
            if node.op == "call_function" and str(node.target) == _ASSERT_TARGET:
                needed = _scalar_ancestors(node)
                tensors = [n for n in needed if _is_tensor_node(n)]
                if all(t in live for t in tensors):
                    live.update(needed)
        return live

    # ------------------------------------------------------------------------------ nodes
    def _translate(self, node: fx.Node) -> None:
        target = node.target
        if target is operator.getitem:
            self._getitem(node)
            return
        if target in self.scalar_functions:
            self.emit("scalar", node, {"fn": self.scalar_functions[target], "operands": list(node.args)})
            return
        name = str(target)
        if name in _IGNORED_TARGETS:
            return
        translate = self.translators.get(name)
        if translate is None:
            raise Unsupported(_unsupported_name(target))
        translate(self, node, normalized_arguments(node))

    def _getitem(self, node: fx.Node) -> None:
        source, index = node.args
        slots = self.slots.get(source)
        if slots is None:
            raise _DependencyFailed()
        if not isinstance(slots, list):
            raise Unsupported(f"indexing a value of {_unsupported_name(source.target)} with [{index}]")
        slot = slots[index]
        if slot is None:
            raise Unsupported(f"output {index} of {source.target} (only its first output is supported)")
        self.slots[node] = slot

    def alias(self, node: fx.Node, source: Any) -> None:
        """`node` is `source` (clone, dropout in eval, a no-op cast)."""
        if not isinstance(source, fx.Node):
            raise Unsupported(f"{node.target} of a constant")
        if self.is_weight(source):
            self.weight(source)
            self.weight_names[node] = self.weight_names[source]
            self._weight_sources[node] = self._weight_sources[source]
            return
        if source not in self.slots:
            raise _DependencyFailed()
        self.slots[node] = self.slots[source]

    def emit(self, op: str, node: fx.Node, args: Dict[str, Any], *, computed: Optional[Sequence[int]] = None,
             packed_args: Sequence[str] = (), packed_outputs: Sequence[int] = ()) -> None:
        """Add one step computing `node` (all its outputs, or those listed in `computed`)."""
        encoded = {name: self.arg(value, allow_packed=name in packed_args) for name, value in args.items()}
        val = node.meta.get("val")
        if isinstance(val, (tuple, list)):
            wanted = range(len(val)) if computed is None else computed
            slots: Any = [self._new_slot() if i in wanted else None for i in range(len(val))]
            dtypes = [self._dtype_name(val[i], str(node.target)) for i in range(len(val)) if i in wanted]
            out = [s for s in slots if s is not None]
            for i in packed_outputs:
                self.packed_slots.add(slots[i])
        else:
            slots = self._new_slot()
            out = [slots]
            dtypes = [self._dtype_name(val, str(node.target))]
            if packed_outputs:
                self.packed_slots.add(slots)
        self.steps.append({"op": op, "args": encoded, "out": out, "dtypes": dtypes, "source": user_source(node)})
        self.slots[node] = slots

    def arg(self, value: Any, allow_packed: bool = False) -> Any:
        """A graph argument as a program argument."""
        if isinstance(value, fx.Node):
            if self.is_weight(value):
                return {"weight": self.weight(value)}
            slot = self.slots.get(value)
            if slot is None:
                raise _DependencyFailed()
            if isinstance(slot, list):
                raise Unsupported(f"uses the tuple returned by {value.target} as one value")
            if slot in self.packed_slots and not allow_packed:
                raise Unsupported(
                    "uses a PackedSequence's data directly; unpack it with pad_packed_sequence first "
                    "(fastlstm keeps packed data in padded form, so only nn.LSTM and pad_packed_sequence "
                    "may read it)"
                )
            return {"slot": slot}
        if isinstance(value, (list, tuple)):
            return {"list": [self.arg(item, allow_packed) for item in value]}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            if math.isnan(value):
                return {"float": "nan"}
            if math.isinf(value):
                return {"float": "inf" if value > 0 else "-inf"}
            return value
        if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            raise Unsupported(f"a symbolic size that is not a graph value ({value})")
        raise Unsupported(f"an argument of type {type(value).__name__} ({value!r:.60})")

    def _new_slot(self) -> int:
        self.num_slots += 1
        return self.num_slots - 1

    def _dtype_name(self, val: Any, what: str) -> Optional[str]:
        if not isinstance(val, torch.Tensor):
            return None
        name = TORCH_DTYPE_NAMES.get(val.dtype)
        if name is None:
            raise Unsupported(
                f"{what} computes a {val.dtype} tensor; fastlstm programs compute in float32, float64, "
                f"integers and bool (convert the module with module.float() or module.double())"
            )
        return name

    # ------------------------------------------------------------------------------ outputs
    def _outputs(self) -> Any:
        from torch.export.graph_signature import OutputKind

        output_node = next(n for n in self.graph.nodes if n.op == "output")
        kinds = [spec.kind for spec in self.exported.graph_signature.output_specs]
        # the graph also returns updated buffers and inputs; the module's results are the rest
        user_outputs = [value for value, kind in zip(output_node.args[0], kinds) if kind == OutputKind.USER_OUTPUT]
        spec = self.exported.call_spec.out_spec
        leaves = iter(user_outputs)
        return self._output_tree(spec, leaves, output_node)

    def _output_tree(self, spec: Any, leaves: Any, output_node: fx.Node) -> Any:
        if spec.is_leaf():
            return self._output_leaf(next(leaves), output_node)
        children = [self._output_tree(child, leaves, output_node) for child in spec.children()]
        kind = spec.type
        if kind is list:
            return {"list": children}
        if kind is dict:
            keys = list(spec.context)
            if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in keys):
                self.problems.append(f"forward returns a dict with keys {keys!r}; only str and int keys are supported")
            return {"dict": [[k, c] for k, c in zip(keys, children)]}
        if getattr(kind, "__name__", "") == "namedtuple":  # the class itself is the context
            kind = spec.context
        if kind is tuple or (isinstance(kind, type) and issubclass(kind, tuple)):
            if kind.__name__ == "PackedSequence":
                self.problems.append(
                    "forward returns a PackedSequence; return pad_packed_sequence(...)'s padded tensor "
                    "(and lengths) instead"
                )
            return {"tuple": children}
        if kind is type(None):
            return {"const": None}
        self.problems.append(f"forward returns a {getattr(kind, '__name__', kind)}; return tensors in tuples, lists or dicts")
        return {"tuple": children}

    def _output_leaf(self, value: Any, output_node: fx.Node) -> Any:
        if isinstance(value, fx.Node):
            if self.is_weight(value):
                try:
                    name = self.weight(value)
                except Unsupported as exc:
                    self.problems.append(str(exc))
                    return {"const": None}
                slot = self._new_slot()
                self.steps.append({"op": "to_dtype", "args": {"input": {"weight": name}}, "out": [slot],
                                   "dtypes": [self._dtype_name(value.meta.get("val"), "output")], "source": ""})
                return {"slot": slot}
            slot = self.slots.get(value)
            if slot is None:
                return {"const": None}  # its problem is reported already
            if slot in self.packed_slots:
                return {"const": None}  # reported with the PackedSequence it belongs to
            if isinstance(slot, list):
                self.problems.append(f"forward returns the tuple of {value.target} as one value")
                return {"const": None}
            return {"slot": slot}
        if value is None or isinstance(value, (bool, int, str)):
            return {"const": value}
        if isinstance(value, float) and math.isfinite(value):
            return {"const": value}
        self.problems.append(f"forward returns {value!r:.60}, which is not a tensor")
        return {"const": None}

    # ------------------------------------------------------------------------------ symbols
    def _symbols(self) -> Dict[str, Dict[str, Optional[int]]]:
        """Every input size may be >= 1. torch.export's ranges are not kept: their lower bounds
        come from its assumption that free sizes are >= 2 and from how torch computes shapes and
        strides (a slice x[:, 1:5] asks for length >= 5), neither of which changes what the
        program computes, since every shape is recomputed from the actual arrays. What the
        module's code decided on sizes is checked by the conditions; size 1 is checked against
        the module at conversion (torch_module._check_size_one)."""
        return {name: {"min": 1, "max": None} for name in self._symbol_names.values()}

    def _conditions(self) -> List[Dict[str, Any]]:
        from .size_conditions import condition_expression

        encoded = []
        for condition, source in self.conditions:
            try:
                check = condition_expression(condition, self._symbol_names)
            except KeyError:
                continue  # about sizes known only per call (unbacked); the graph checks those itself
            except ValueError as exc:
                self.problems.append(f"the module's code relies on {exc} at {source}, which fastlstm cannot check per call")
                continue
            encoded.append({"check": check, "source": source})
        return encoded


# ---------------------------------------------------------------------------------- helpers
def normalized_arguments(node: fx.Node) -> Dict[str, Any]:
    """An ATen node's arguments by schema name, defaults filled in."""
    schema = node.target._schema  # type: ignore[union-attr]
    values: Dict[str, Any] = {}
    for i, argument in enumerate(schema.arguments):
        if i < len(node.args):
            values[argument.name] = node.args[i]
        elif argument.name in node.kwargs:
            values[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            values[argument.name] = argument.default_value
        else:
            values[argument.name] = None
    return values


def dim_expression(size: Any) -> Any:
    """An input's size as a `_symbolic` expression (int, {"sym": "s0"}, {"mul": [...]}, ...)."""
    if isinstance(size, int):
        return int(size)
    return _sympy_to_expression(size.node.expr)


def _sympy_to_expression(expr: Any) -> Any:
    import sympy

    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return {"sym": str(expr)}
    if isinstance(expr, sympy.Add):
        return {"add": [_sympy_to_expression(a) for a in expr.args]}
    if isinstance(expr, sympy.Mul):
        return {"mul": [_sympy_to_expression(a) for a in expr.args]}
    name = type(expr).__name__
    if name == "FloorDiv":
        return {"floordiv": [_sympy_to_expression(a) for a in expr.args]}
    if name in ("PythonMod", "Mod"):
        return {"mod": [_sympy_to_expression(a) for a in expr.args]}
    if name == "Max":
        return {"max": [_sympy_to_expression(a) for a in expr.args]}
    if name == "Min":
        return {"min": [_sympy_to_expression(a) for a in expr.args]}
    raise Unsupported(f"an input size of the form {expr}")


def _is_tensor_node(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)


def _scalar_ancestors(node: fx.Node) -> Set[fx.Node]:
    """The node and its ancestors up to (and including) the first tensors."""
    seen: Set[fx.Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current is node or not _is_tensor_node(current):
            stack.extend(current.all_input_nodes)
    return seen


_FRIENDLY = {
    "aten.gru.input": "nn.GRU", "aten.gru.data": "nn.GRU on a PackedSequence",
    "aten.rnn_tanh.input": "nn.RNN", "aten.rnn_relu.input": "nn.RNN (relu)",
    "aten.rnn_tanh.data": "nn.RNN on a PackedSequence", "aten.rnn_relu.data": "nn.RNN on a PackedSequence",
    "aten.gru_cell.default": "nn.GRUCell", "aten.rnn_tanh_cell.default": "nn.RNNCell",
    "aten.conv1d.default": "nn.Conv1d / F.conv1d", "aten.conv2d.default": "nn.Conv2d / F.conv2d",
    "aten.lstm.input": "an LSTM fastlstm could not capture", "aten.lstm.data": "an LSTM fastlstm could not capture",
    "aten._native_batch_norm_legit.no_stats": "batch norm with batch statistics (track_running_stats=False)",
    "aten._native_batch_norm_legit.default": "batch norm with batch statistics (track_running_stats=False)",
    "aten._native_batch_norm_legit_functional.default": "batch norm with batch statistics (training mode)",
    "aten.native_dropout.default": "dropout in training mode (F.dropout(..., training=True))",
}


def _unsupported_name(target: Any) -> str:
    name = str(target)
    friendly = _FRIENDLY.get(name)
    label = f"{friendly} ({name})" if friendly else name
    return f"{label} is not supported"
