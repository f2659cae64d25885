"""ATen operation -> fastlstm program operation, one small translator each.

Translators receive the node's arguments by schema name (`translate.normalized_arguments`) and
emit program steps through the Translator. Dtypes come from the traced values, never from the
arguments, so a step always produces exactly the dtype torch did.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Dict, List

import torch
from torch import fx

from .capture_ops import CAPTURE_OPS
from .translate import Translator, Unsupported

__all__ = ["TRANSLATORS", "SCALAR_FUNCTIONS"]

Args = Dict[str, Any]
Translate = Callable[[Translator, fx.Node, Args], None]
TRANSLATORS: Dict[str, Translate] = {}


def _register(names: str, translate: Translate) -> None:
    for name in names.split():
        TRANSLATORS[name if name.startswith(("aten.", "fastlstm.")) else "aten." + name] = translate


def _ndim(value: Any) -> int:
    return value.meta["val"].dim()


def _dtype(value: Any) -> Any:
    return value.meta["val"].dtype if isinstance(value, fx.Node) else None


# ---------------------------------------------------------------------------------- identity
def _identity(t: Translator, node: fx.Node, a: Args) -> None:
    t.alias(node, a.get("self", a.get("input")))


def _dropout(t: Translator, node: fx.Node, a: Args) -> None:
    if a.get("train"):
        raise Unsupported("dropout in training mode (put the module in eval mode)")
    t.alias(node, a["input"])


def _cast(t: Translator, node: fx.Node, a: Args) -> None:
    source = a["self"]
    device = a.get("device")
    if device is not None and torch.device(device).type != "cpu":
        raise Unsupported(f"moving a value to {device}")
    if _dtype(source) == node.meta["val"].dtype:
        t.alias(node, source)
    else:
        t.emit("to_dtype", node, {"input": source})


_register("clone.default alias.default detach.default lift_fresh_copy.default contiguous.default", _identity)
_register("_to_copy.default to.dtype to.dtype_layout to.device to.other type_as.default", _cast)
_register("dropout.default feature_dropout.default alpha_dropout.default feature_alpha_dropout.default", _dropout)


# ---------------------------------------------------------------------------------- elementwise
def _unary(op: str, **attributes: str) -> Translate:
    def translate(t: Translator, node: fx.Node, a: Args) -> None:
        t.emit(op, node, {"input": a["self"], **{k: a[v] for k, v in attributes.items()}})
    return translate


for _op in ("relu tanh sigmoid silu exp expm1 log log1p sqrt rsqrt reciprocal abs neg sign floor ceil "
            "sin cos erf logical_not isnan").split():
    _register(f"{_op}.default", _unary(_op))
_register("round.default", _unary("round"))
_register("gelu.default", _unary("gelu", approximate="approximate"))
_register("leaky_relu.default", _unary("leaky_relu", negative_slope="negative_slope"))
_register("elu.default", _unary("elu", alpha="alpha", scale="scale", input_scale="input_scale"))
_register("softplus.default", _unary("softplus", beta="beta", threshold="threshold"))
_register("hardtanh.default", _unary("hardtanh", min_val="min_val", max_val="max_val"))
_register("relu6.default", lambda t, node, a: t.emit("hardtanh", node, {"input": a["self"], "min_val": 0.0, "max_val": 6.0}))
_register("clamp.default clamp.Tensor", _unary("clamp", min="min", max="max"))
_register("clamp_min.default clamp_min.Tensor", _unary("clamp", min="min"))
_register("clamp_max.default clamp_max.Tensor", _unary("clamp", max="max"))


def _binary(op: str, other: str = "other") -> Translate:
    def translate(t: Translator, node: fx.Node, a: Args) -> None:
        args = {"input": a["self"], "other": a[other]}
        if "alpha" in a and a["alpha"] != 1:
            args["alpha"] = a["alpha"]
        t.emit(op, node, args)
    return translate


def _reverse_sub(t: Translator, node: fx.Node, a: Args) -> None:
    t.emit("sub", node, {"input": a["other"], "other": a["self"], "alpha": a.get("alpha", 1)})


def _div(t: Translator, node: fx.Node, a: Args) -> None:
    t.emit("div", node, {"input": a["self"], "other": a["other"], "rounding_mode": a.get("rounding_mode") or "true"})


def _bitwise_on_bools(op: str) -> Translate:
    def translate(t: Translator, node: fx.Node, a: Args) -> None:
        if node.meta["val"].dtype != torch.bool:
            raise Unsupported(f"{node.target} on integers (only on bool masks)")
        t.emit(op, node, {"input": a["self"], "other": a["other"]})
    return translate


_register("add.Tensor add.Scalar", _binary("add"))
_register("sub.Tensor sub.Scalar", _binary("sub"))
_register("rsub.Tensor rsub.Scalar", _reverse_sub)
_register("mul.Tensor mul.Scalar", _binary("mul"))
_register("div.Tensor div.Scalar div.Tensor_mode div.Scalar_mode", _div)
_register("floor_divide.default floor_divide.Scalar",
          lambda t, node, a: t.emit("div", node, {"input": a["self"], "other": a["other"], "rounding_mode": "floor"}))
_register("remainder.Tensor remainder.Scalar", _binary("remainder"))
_register("pow.Tensor_Scalar pow.Tensor_Tensor pow.Scalar", _binary("pow", other="exponent"))
for _op in "maximum minimum".split():
    _register(f"{_op}.default", _binary(_op))
for _op in "eq ne lt le gt ge".split():
    _register(f"{_op}.Tensor {_op}.Scalar", _binary(_op))
for _op in "logical_and logical_or logical_xor".split():
    _register(f"{_op}.default", _binary(_op))
for _op in "and or xor".split():
    _register(f"bitwise_{_op}.Tensor bitwise_{_op}.Scalar __{_op}__.Tensor __{_op}__.Scalar", _bitwise_on_bools(f"logical_{_op}"))


def _bitwise_not(t: Translator, node: fx.Node, a: Args) -> None:
    if node.meta["val"].dtype != torch.bool:
        raise Unsupported(f"{node.target} on integers (only on bool masks)")
    t.emit("logical_not", node, {"input": a["self"]})


_register("bitwise_not.default", _bitwise_not)
_register("where.self where.ScalarOther where.ScalarSelf where.Scalar",
          lambda t, node, a: t.emit("where", node, {"condition": a["condition"], "input": a["self"], "other": a["other"]}))
_register("masked_fill.Scalar masked_fill.Tensor",
          lambda t, node, a: t.emit("masked_fill", node, {"input": a["self"], "mask": a["mask"], "value": a["value"]}))


# ---------------------------------------------------------------------------------- reductions
def _reduce(op: str, dim_key: str = "dim", all_axes: bool = False) -> Translate:
    def translate(t: Translator, node: fx.Node, a: Args) -> None:
        if a.get("dtype") is not None and a["dtype"] != node.meta["val"].dtype:
            raise Unsupported(f"{node.target} with dtype={a['dtype']}")
        dim = None if all_axes else a.get(dim_key)
        t.emit(op, node, {"input": a["self"], "dim": [dim] if isinstance(dim, int) else dim,
                          "keepdim": bool(a.get("keepdim", False))})
    return translate


_register("sum.dim_IntList", _reduce("sum"))
_register("sum.default", _reduce("sum", all_axes=True))
_register("mean.dim", _reduce("mean"))
_register("mean.default", _reduce("mean", all_axes=True))
_register("amax.default", _reduce("amax"))
_register("amin.default", _reduce("amin"))
_register("max.default", _reduce("amax", all_axes=True))
_register("min.default", _reduce("amin", all_axes=True))
_register("prod.dim_int", _reduce("prod"))
_register("prod.default", _reduce("prod", all_axes=True))
for _op in "any all".split():
    _register(f"{_op}.dim {_op}.dims", _reduce(_op))
    _register(f"{_op}.default", _reduce(_op, all_axes=True))
_register("logsumexp.default", _reduce("logsumexp"))


def _arg_reduce(op: str) -> Translate:
    def translate(t: Translator, node: fx.Node, a: Args) -> None:
        t.emit(op, node, {"input": a["self"], "dim": a.get("dim"), "keepdim": bool(a.get("keepdim", False))})
    return translate


_register("argmax.default", _arg_reduce("argmax"))
_register("argmin.default", _arg_reduce("argmin"))
_register("max.dim", lambda t, node, a: t.emit("max_dim", node, {"input": a["self"], "dim": a["dim"], "keepdim": a["keepdim"]}))
_register("min.dim", lambda t, node, a: t.emit("min_dim", node, {"input": a["self"], "dim": a["dim"], "keepdim": a["keepdim"]}))


def _vector_norm(t: Translator, node: fx.Node, a: Args) -> None:
    order = a.get("ord", a.get("p"))
    order = 2 if order is None else order
    if a.get("dtype") is not None and a["dtype"] != node.meta["val"].dtype:
        raise Unsupported(f"{node.target} with dtype={a['dtype']}")
    dim = a.get("dim")
    t.emit("vector_norm", node, {"input": a["self"], "ord": float(order), "dim": [dim] if isinstance(dim, int) else dim,
                                 "keepdim": bool(a.get("keepdim", False))})


_register("linalg_vector_norm.default norm.ScalarOpt_dim", _vector_norm)
_register("norm.Scalar norm.ScalarOpt_dtype", lambda t, node, a: _vector_norm(t, node, {**a, "dim": None, "keepdim": False}))


def _variance(op: str) -> Translate:
    def translate(t: Translator, node: fx.Node, a: Args) -> None:
        correction = a.get("correction")
        if "unbiased" in a:
            correction = 1 if a["unbiased"] else 0
        dim = a.get("dim")
        t.emit(op, node, {"input": a["self"], "dim": [dim] if isinstance(dim, int) else dim,
                          "correction": 1 if correction is None else correction, "keepdim": bool(a.get("keepdim", False))})
    return translate


_register("var.correction var.dim", _variance("var"))
_register("std.correction std.dim", _variance("std"))
_register("cumsum.default", lambda t, node, a: t.emit("cumsum", node, {"input": a["self"], "dim": a["dim"]}))
_register("softmax.int _softmax.default", lambda t, node, a: t.emit("softmax", node, {"input": a["self"], "dim": a["dim"]}))
_register("log_softmax.int _log_softmax.default",
          lambda t, node, a: t.emit("log_softmax", node, {"input": a["self"], "dim": a["dim"]}))
_register("layer_norm.default", lambda t, node, a: t.emit("layer_norm", node, {
    "input": a["input"], "normalized_ndim": len(a["normalized_shape"]), "weight": a["weight"],
    "bias": a["bias"], "eps": a["eps"]}))
_register("rms_norm.default", lambda t, node, a: t.emit("rms_norm", node, {
    "input": a["input"], "normalized_ndim": len(a["normalized_shape"]), "weight": a["weight"], "eps": a["eps"]}))


def _batch_norm(t: Translator, node: fx.Node, a: Args) -> None:
    if a.get("training") or a["running_mean"] is None or a["running_var"] is None:
        raise Unsupported("batch norm with batch statistics (training mode, or track_running_stats=False)")
    for name in ("running_mean", "running_var", "weight", "bias"):
        if a[name] is not None and not t.is_weight(a[name]):
            raise Unsupported(f"batch norm whose {name} is computed in forward")
    args = {k: a[k] for k in ("input", "weight", "bias", "running_mean", "running_var", "eps")}
    multi = isinstance(node.meta["val"], (tuple, list))
    t.emit("batch_norm", node, args, computed=[0] if multi else None)


_register("_native_batch_norm_legit_no_training.default batch_norm.default", _batch_norm)


# ---------------------------------------------------------------------------------- products
_register("linear.default", lambda t, node, a: t.emit("linear", node, {"input": a["input"], "weight": a["weight"], "bias": a["bias"]}))
_register("matmul.default", _binary("matmul"))
_register("mm.default bmm.default", _binary("matmul", other="mat2"))
_register("addmm.default", lambda t, node, a: t.emit("addmm", node, {
    "input": a["self"], "mat1": a["mat1"], "mat2": a["mat2"], "beta": a["beta"], "alpha": a["alpha"]}))
_register("einsum.default", lambda t, node, a: t.emit("einsum", node, {"equation": a["equation"], "tensors": a["tensors"]}))


def _embedding(t: Translator, node: fx.Node, a: Args) -> None:
    t.emit("embedding", node, {"weight": a["weight"], "indices": a["indices"]})


_register("embedding.default", _embedding)


# ---------------------------------------------------------------------------------- shapes
_register("view.default _unsafe_view.default", lambda t, node, a: t.emit("reshape", node, {"input": a["self"], "shape": a["size"]}))
_register("reshape.default", lambda t, node, a: t.emit("reshape", node, {"input": a["self"], "shape": a["shape"]}))
_register("permute.default", lambda t, node, a: t.emit("permute", node, {"input": a["self"], "dims": a["dims"]}))
_register("transpose.int", lambda t, node, a: t.emit("transpose", node, {"input": a["self"], "dim0": a["dim0"], "dim1": a["dim1"]}))


def _t(t: Translator, node: fx.Node, a: Args) -> None:
    if _ndim(a["self"]) < 2:
        t.alias(node, a["self"])
    else:
        t.emit("transpose", node, {"input": a["self"], "dim0": 0, "dim1": 1})


_register("t.default", _t)
_register("numpy_T.default", lambda t, node, a: t.emit("permute", node, {
    "input": a["self"], "dims": list(reversed(range(_ndim(a["self"]))))}))
_register("unsqueeze.default", lambda t, node, a: t.emit("unsqueeze", node, {"input": a["self"], "dim": a["dim"]}))
_register("squeeze.default", lambda t, node, a: t.emit("squeeze", node, {"input": a["self"], "dims": None}))
_register("squeeze.dim", lambda t, node, a: t.emit("squeeze", node, {"input": a["self"], "dims": [a["dim"]]}))
_register("squeeze.dims", lambda t, node, a: t.emit("squeeze", node, {"input": a["self"], "dims": list(a["dim"])}))
_register("expand.default", lambda t, node, a: t.emit("expand", node, {"input": a["self"], "size": a["size"]}))
_register("select.int", lambda t, node, a: t.emit("select", node, {"input": a["self"], "dim": a["dim"], "index": a["index"]}))
def _slice(t: Translator, node: fx.Node, a: Args) -> None:
    whole = a["start"] in (None, 0) and a["step"] in (None, 1) and (
        a["end"] is None or (isinstance(a["end"], int) and a["end"] >= 2**62))
    if whole:  # x[:, -1] slices axis 0 whole first: nothing to do
        t.alias(node, a["self"])
    else:
        t.emit("slice", node, {"input": a["self"], "dim": a["dim"], "start": a["start"], "end": a["end"], "step": a["step"]})


_register("slice.Tensor", _slice)
_register("index.Tensor", lambda t, node, a: t.emit("index", node, {"input": a["self"], "indices": list(a["indices"])}))
_register("index_select.default", lambda t, node, a: t.emit("index_select", node, {"input": a["self"], "dim": a["dim"], "index": a["index"]}))
_register("gather.default", lambda t, node, a: t.emit("gather", node, {"input": a["self"], "dim": a["dim"], "index": a["index"]}))
_register("cat.default", lambda t, node, a: t.emit("cat", node, {"tensors": list(a["tensors"]), "dim": a["dim"]}))
_register("stack.default", lambda t, node, a: t.emit("stack", node, {"tensors": list(a["tensors"]), "dim": a["dim"]}))
_register("split.Tensor", lambda t, node, a: t.emit("split", node, {"input": a["self"], "split_size": a["split_size"], "dim": a["dim"]}))
_register("split_with_sizes.default", lambda t, node, a: t.emit("split", node, {
    "input": a["self"], "split_size": list(a["split_sizes"]), "dim": a["dim"]}))
_register("unbind.int", lambda t, node, a: t.emit("unbind", node, {"input": a["self"], "dim": a["dim"]}))
_register("flip.default", lambda t, node, a: t.emit("flip", node, {"input": a["self"], "dims": a["dims"]}))
_register("repeat.default", lambda t, node, a: t.emit("repeat", node, {"input": a["self"], "repeats": a["repeats"]}))
_register("constant_pad_nd.default", lambda t, node, a: t.emit("constant_pad", node, {
    "input": a["self"], "pad": a["pad"], "value": a["value"]}))


def _pad(t: Translator, node: fx.Node, a: Args) -> None:
    if a.get("mode", "constant") != "constant":
        raise Unsupported(f"F.pad with mode={a['mode']!r} (only 'constant')")
    t.emit("constant_pad", node, {"input": a["self"], "pad": a["pad"], "value": a.get("value") or 0.0})


_register("pad.default", _pad)


# ---------------------------------------------------------------------------------- creation
def _full(fill: Any = None, size_key: str = "size") -> Translate:
    def translate(t: Translator, node: fx.Node, a: Args) -> None:
        _cpu_only(a)
        t.emit("full", node, {"size": a[size_key], "fill_value": a["fill_value"] if fill is None else fill})
    return translate


def _full_like(fill: Any = None) -> Translate:
    def translate(t: Translator, node: fx.Node, a: Args) -> None:
        _cpu_only(a)
        t.emit("full_like", node, {"input": a["self"], "fill_value": a["fill_value"] if fill is None else fill})
    return translate


def _cpu_only(a: Args) -> None:
    device = a.get("device")
    if device is not None and torch.device(device).type != "cpu":
        raise Unsupported(f"creating a tensor on {device}")


_register("zeros.default new_zeros.default empty.memory_format new_empty.default", _full(0))
_register("ones.default new_ones.default", _full(1))
_register("full.default new_full.default", _full())
_register("zeros_like.default empty_like.default", _full_like(0))
_register("ones_like.default", _full_like(1))
_register("full_like.default", _full_like())
_register("fill.Scalar", lambda t, node, a: t.emit("full_like", node, {"input": a["self"], "fill_value": a["value"]}))
_register("fill.Tensor", lambda t, node, a: t.emit("copy", node, {"input": a["self"], "src": a["value"]}))
_register("copy.default", lambda t, node, a: t.emit("copy", node, {"input": a["self"], "src": a["src"]}))
_register("arange.default", lambda t, node, a: (_cpu_only(a), t.emit("arange", node, {"start": 0, "end": a["end"], "step": 1})))
_register("arange.start", lambda t, node, a: (_cpu_only(a), t.emit("arange", node, {"start": a["start"], "end": a["end"], "step": 1})))
_register("arange.start_step", lambda t, node, a: (_cpu_only(a), t.emit("arange", node, {
    "start": a["start"], "end": a["end"], "step": a["step"]})))
_register("scalar_tensor.default", lambda t, node, a: t.emit("scalar_tensor", node, {"value": a["s"]}))


# ---------------------------------------------------------------------------------- scatter, sort
_register("scatter.src", lambda t, node, a: t.emit("scatter", node, {"input": a["self"], "dim": a["dim"], "index": a["index"], "src": a["src"]}))
_register("scatter.value", lambda t, node, a: t.emit("scatter", node, {"input": a["self"], "dim": a["dim"], "index": a["index"], "src": a["value"]}))
_register("sort.default sort.stable", lambda t, node, a: t.emit("sort", node, {
    "input": a["self"], "dim": a["dim"], "descending": bool(a["descending"])}))
_register("select_scatter.default", lambda t, node, a: t.emit("select_scatter", node, {
    "input": a["self"], "src": a["src"], "dim": a["dim"], "index": a["index"]}))
_register("slice_scatter.default", lambda t, node, a: t.emit("slice_scatter", node, {
    "input": a["self"], "src": a["src"], "dim": a["dim"], "start": a["start"], "end": a["end"], "step": a["step"]}))
_register("index_put.default", lambda t, node, a: t.emit("index_put", node, {
    "input": a["self"], "indices": list(a["indices"]), "values": a["values"], "accumulate": bool(a["accumulate"])}))


# ---------------------------------------------------------------------------------- sizes, checks
_register("sym_size.int", lambda t, node, a: t.emit("size", node, {"input": a["self"], "dim": a["dim"]}))
_register("sym_numel.default", lambda t, node, a: t.emit("size", node, {"input": a["self"], "dim": None}))
_register("_local_scalar_dense.default", lambda t, node, a: t.emit("item", node, {"input": a["self"]}))
_register("_assert_scalar.default", lambda t, node, a: t.emit("assert", node, {"condition": a["self"], "message": a["assert_msg"]}))

SCALAR_FUNCTIONS: Dict[Any, str] = {
    operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.floordiv: "floordiv",
    operator.truediv: "truediv", operator.mod: "mod", operator.pow: "pow", operator.neg: "neg",
    operator.eq: "eq", operator.ne: "ne", operator.lt: "lt", operator.le: "le", operator.gt: "gt",
    operator.ge: "ge", operator.and_: "and", operator.or_: "or", operator.not_: "not",
    torch.sym_not: "not", torch.sym_max: "max", torch.sym_min: "min", torch.sym_float: "float",
    torch.sym_int: "int", torch.sym_ite: "ite", math.floor: "floor", math.ceil: "ceil", abs: "abs",
}
if hasattr(torch, "_sym_sqrt"):
    SCALAR_FUNCTIONS[torch._sym_sqrt] = "sqrt"


# ---------------------------------------------------------------------------------- recurrent
def _stored_weights(t: Translator, weights: List[Any], module: str) -> List[Any]:
    for weight in weights:
        if not t.is_weight(weight):
            raise Unsupported(
                f"{module} whose weights are computed in forward (e.g. weight_norm or another "
                f"parametrization); remove it first (torch.nn.utils.parametrize.remove_parametrizations)"
            )
        if weight.meta["val"].dtype not in (torch.float32, torch.float64):
            raise Unsupported(f"{module} with {weight.meta['val'].dtype} weights (fastlstm runs float32 and float64)")
    return list(weights)


def _lstm(t: Translator, node: fx.Node, a: Args) -> None:
    weights = _stored_weights(t, a["weights"], "an nn.LSTM")
    packed = a["batch_sizes"] is not None
    t.emit("lstm", node, {
        "input": a["input"], "h0": a["h0"], "c0": a["c0"], "batch_sizes": a["batch_sizes"], "weights": weights,
        **{k: a[k] for k in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional", "proj_size")},
    }, packed_args=("input",), packed_outputs=(0,) if packed else ())


def _lstm_cell(t: Translator, node: fx.Node, a: Args) -> None:
    weights = _stored_weights(t, a["weights"], "an nn.LSTMCell")
    t.emit("lstm_cell", node, {"input": a["input"], "h0": a["h0"], "c0": a["c0"], "weights": weights,
                               "input_size": a["input_size"], "hidden_size": a["hidden_size"], "bias": a["bias"]})


_register("fastlstm.lstm.default", _lstm)
_register("fastlstm.lstm_cell.default", _lstm_cell)
_register("fastlstm.pack_padded.default", lambda t, node, a: t.emit("pack_padded", node, {
    "input": a["input"], "lengths": a["lengths"], "batch_first": a["batch_first"]}, packed_outputs=(0,)))
_register("fastlstm.pad_packed.default", lambda t, node, a: t.emit("pad_packed", node, {
    "input": a["input"], "batch_sizes": a["batch_sizes"], "batch_first": a["batch_first"],
    "padding_value": a["padding_value"], "total_length": a["total_length"]}, packed_args=("input",)))

assert set(CAPTURE_OPS) <= set(TRANSLATORS)
