"""Shape, indexing, joining and creation operations.

Sizes and indices may be computed at call time (from `x.size(0)` and the like), so every such
argument is read through a getter. Values in a program are never modified after they are
written (the converter hands us torch.export's functional graph), so numpy views are safe to
return wherever torch would return a view or a copy.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from ._ops_base import Builder, StepArgs, StepFn, as_dtype

__all__ = ["BUILDERS"]


def axis_index(dim: int, index: Any) -> Tuple[Any, ...]:
    """The indexing tuple selecting `index` (an int or slice) on axis `dim` (negative counts from
    the end, so the tuple works whatever the value's rank)."""
    if dim >= 0:
        return (slice(None),) * dim + (index,)
    return (Ellipsis, index) + (slice(None),) * (-dim - 1)


def _build_reshape(a: StepArgs) -> StepFn:
    x, shape, out = a.tensor("input"), a.value("shape"), a.out

    def run(env):
        env[out] = np.reshape(x(env), tuple(shape(env)))
    return run


def _build_permute(a: StepArgs) -> StepFn:
    x, dims, out = a.tensor("input"), tuple(a.ints("dims")), a.out

    def run(env):
        env[out] = np.transpose(x(env), dims)
    return run


def _build_transpose(a: StepArgs) -> StepFn:
    x, first, second, out = a.tensor("input"), a.integer("dim0"), a.integer("dim1"), a.out

    def run(env):
        value = x(env)
        env[out] = np.swapaxes(value, first, second) if value.ndim else value
    return run


def _build_unsqueeze(a: StepArgs) -> StepFn:
    x, dim, out = a.tensor("input"), a.integer("dim"), a.out

    def run(env):
        env[out] = np.expand_dims(x(env), dim)
    return run


def _build_squeeze(a: StepArgs) -> StepFn:
    x, dims, out = a.tensor("input"), a.ints("dims", None), a.out

    def run(env):
        value = x(env)
        if value.ndim == 0:
            env[out] = value
        elif dims is None:
            env[out] = np.squeeze(value)
        else:
            # torch ignores listed axes that are not of size 1
            env[out] = np.squeeze(value, axis=tuple(d for d in dims if value.shape[d] == 1))
    return run


def _build_expand(a: StepArgs) -> StepFn:
    x, size, out = a.tensor("input"), a.value("size"), a.out

    def run(env):
        value, target = x(env), list(size(env))
        offset = len(target) - value.ndim
        for axis in range(value.ndim):
            if target[offset + axis] == -1:
                target[offset + axis] = value.shape[axis]
        env[out] = np.broadcast_to(value, tuple(target))
    return run


def _build_select(a: StepArgs) -> StepFn:
    x, dim, index, out = a.tensor("input"), a.integer("dim"), a.value("index"), a.out

    def run(env):
        env[out] = x(env)[axis_index(dim, index(env))]
    return run


def _build_slice(a: StepArgs) -> StepFn:
    x, dim, out = a.tensor("input"), a.integer("dim"), a.out
    start, end, step = a.value("start"), a.value("end"), a.value("step")

    def run(env):
        stride = step(env)
        if stride is not None and stride < 1:
            raise ValueError(f"slice step must be positive, got {stride}")
        env[out] = x(env)[axis_index(dim, slice(start(env), end(env), stride))]
    return run


def _build_index(a: StepArgs) -> StepFn:
    """x[i0, i1, ...] with index arrays (None entries keep the whole axis), numpy's rules = torch's."""
    x, out = a.tensor("input"), a.out
    indices = a.value("indices")

    def run(env):
        key = tuple(slice(None) if index is None else index for index in indices(env))
        env[out] = x(env)[key]
    return run


def _build_index_select(a: StepArgs) -> StepFn:
    x, dim, index, out = a.tensor("input"), a.integer("dim"), a.tensor("index"), a.out

    def run(env):
        value, chosen = x(env), index(env)
        size = value.shape[dim] if value.ndim else 1
        if chosen.size and (chosen.min() < 0 or chosen.max() >= size):
            raise IndexError(f"index_select: index out of range for axis {dim} of size {size}")
        env[out] = np.take(value, chosen, axis=dim) if value.ndim else value[chosen]
    return run


def _build_gather(a: StepArgs) -> StepFn:
    x, dim, index, out = a.tensor("input"), a.integer("dim"), a.tensor("index"), a.out

    def run(env):
        value, chosen = x(env), index(env)
        # torch allows an index smaller than the input on the other axes: trim the input to it
        trimmed = value[tuple(slice(0, n) if axis != dim % value.ndim else slice(None)
                              for axis, n in enumerate(chosen.shape))]
        env[out] = np.take_along_axis(trimmed, chosen, axis=dim)
    return run


def _build_cat(a: StepArgs) -> StepFn:
    parts, dim, out, dtype = a.tensors("tensors"), a.integer("dim", 0), a.out, a.dtype()

    def run(env):
        values = [part(env) for part in parts]
        # torch skips legacy empty 1-D tensors in cat
        kept = [v for v in values if not (v.ndim == 1 and v.shape[0] == 0)] or values
        env[out] = as_dtype(np.concatenate(kept, axis=dim), dtype)
    return run


def _build_stack(a: StepArgs) -> StepFn:
    parts, dim, out, dtype = a.tensors("tensors"), a.integer("dim", 0), a.out, a.dtype()

    def run(env):
        env[out] = as_dtype(np.stack([part(env) for part in parts], axis=dim), dtype)
    return run


def _build_split(a: StepArgs) -> StepFn:
    x, dim, sizes, outs = a.tensor("input"), a.integer("dim", 0), a.value("split_size"), a.outs()

    def run(env):
        value, size = x(env), sizes(env)
        length = value.shape[dim]
        if isinstance(size, list):
            bounds = list(np.cumsum(size)[:-1])
        else:
            bounds = list(range(size, length, size)) if size > 0 else []
        pieces = np.split(value, bounds, axis=dim)
        if len(pieces) != len(outs):
            raise ValueError(
                f"split gives {len(pieces)} pieces for an axis of size {length}, but the module was "
                f"converted with {len(outs)}"
            )
        for slot, piece in zip(outs, pieces):
            env[slot] = piece
    return run


def _build_unbind(a: StepArgs) -> StepFn:
    x, dim, outs = a.tensor("input"), a.integer("dim", 0), a.outs()

    def run(env):
        value = x(env)
        if value.shape[dim] != len(outs):
            raise ValueError(f"unbind of an axis of size {value.shape[dim]}, but the module was converted with {len(outs)}")
        for i, slot in enumerate(outs):
            env[slot] = value[axis_index(dim, i)]
    return run


def _build_flip(a: StepArgs) -> StepFn:
    x, dims, out = a.tensor("input"), tuple(a.ints("dims")), a.out

    def run(env):
        env[out] = np.flip(x(env), axis=dims)
    return run


def _build_repeat(a: StepArgs) -> StepFn:
    x, repeats, out = a.tensor("input"), a.value("repeats"), a.out

    def run(env):
        env[out] = np.tile(x(env), tuple(repeats(env)))
    return run


def _build_constant_pad(a: StepArgs) -> StepFn:
    x, pad, value, out, dtype = a.tensor("input"), a.value("pad"), a.number("value", 0), a.out, a.dtype()

    def run(env):
        data, amounts = x(env), list(pad(env))
        widths = [(0, 0)] * data.ndim
        for k in range(len(amounts) // 2):  # pairs from the last axis backwards, as F.pad
            widths[data.ndim - 1 - k] = (amounts[2 * k], amounts[2 * k + 1])
        if any(before < 0 or after < 0 for before, after in widths):
            index = tuple(slice(max(-b, 0), data.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(widths))
            data = data[index]
            widths = [(max(b, 0), max(e, 0)) for b, e in widths]
        env[out] = as_dtype(np.pad(data, widths, constant_values=value), dtype)
    return run


def _build_full(a: StepArgs) -> StepFn:
    size, fill, out, dtype = a.value("size"), a.value("fill_value"), a.out, a.dtype()

    def run(env):
        env[out] = np.full(tuple(size(env)), fill(env), dtype)
    return run


def _build_full_like(a: StepArgs) -> StepFn:
    x, fill, out, dtype = a.tensor("input"), a.value("fill_value"), a.out, a.dtype()

    def run(env):
        env[out] = np.full(np.shape(x(env)), fill(env), dtype)
    return run


def _build_arange(a: StepArgs) -> StepFn:
    start, end, step, out, dtype = a.value("start"), a.value("end"), a.value("step"), a.out, a.dtype()

    def run(env):
        env[out] = np.arange(start(env), end(env), step(env)).astype(dtype, copy=False)
    return run


def _build_scalar_tensor(a: StepArgs) -> StepFn:
    value, out, dtype = a.value("value"), a.out, a.dtype()

    def run(env):
        env[out] = np.asarray(value(env), dtype)
    return run


def _build_to_dtype(a: StepArgs) -> StepFn:
    x, out, dtype = a.tensor("input"), a.out, a.dtype()

    def run(env):
        env[out] = np.asarray(x(env)).astype(dtype, copy=False)
    return run


def _build_copy(a: StepArgs) -> StepFn:
    """`dst.copy_(src)` made functional: src broadcast to dst's shape, in dst's dtype."""
    dst, src, out, dtype = a.tensor("input"), a.tensor("src"), a.out, a.dtype()

    def run(env):
        env[out] = np.array(np.broadcast_to(src(env), np.shape(dst(env))), dtype)
    return run


def _build_scatter(a: StepArgs) -> StepFn:
    x, dim, index, src, out, dtype = a.tensor("input"), a.integer("dim"), a.tensor("index"), a.value("src"), a.out, a.dtype()

    def run(env):
        result = np.array(x(env), dtype)
        chosen, source = index(env), src(env)
        if isinstance(source, np.ndarray) and source.ndim:
            source = source[tuple(slice(0, n) for n in chosen.shape)]
        np.put_along_axis(result, chosen, source, axis=dim)
        env[out] = result
    return run


def _build_sort(a: StepArgs) -> StepFn:
    x, dim, descending = a.tensor("input"), a.integer("dim", -1), a.flag("descending", False)
    values_slot, indices_slot = a.outs(2)

    def run(env):
        value = x(env)
        if value.ndim == 0:
            env[values_slot], env[indices_slot] = value, np.zeros((), np.int64)
            return
        # stable, so ties keep their order (what torch gives for the lengths of a packed batch);
        # descending = the stable ascending order of the reversed axis, read backwards
        if descending:
            order = np.flip(np.argsort(np.flip(value, axis=dim), axis=dim, kind="stable"), axis=dim)
            order = value.shape[dim] - 1 - order
        else:
            order = np.argsort(value, axis=dim, kind="stable")
        env[values_slot] = np.take_along_axis(value, order, axis=dim)
        env[indices_slot] = order.astype(np.int64, copy=False)
    return run


def _build_select_scatter(a: StepArgs) -> StepFn:
    x, src, dim, index, out = a.tensor("input"), a.tensor("src"), a.integer("dim"), a.value("index"), a.out

    def run(env):
        result = np.array(x(env))
        result[axis_index(dim, index(env))] = src(env)
        env[out] = result
    return run


def _build_slice_scatter(a: StepArgs) -> StepFn:
    x, src, dim, out = a.tensor("input"), a.tensor("src"), a.integer("dim", 0), a.out
    start, end, step = a.value("start"), a.value("end"), a.value("step")

    def run(env):
        result = np.array(x(env))
        result[axis_index(dim, slice(start(env), end(env), step(env)))] = src(env)
        env[out] = result
    return run


def _build_index_put(a: StepArgs) -> StepFn:
    x, indices, values, accumulate, out = a.tensor("input"), a.value("indices"), a.tensor("values"), a.flag("accumulate", False), a.out

    def run(env):
        result = np.array(x(env))
        key = tuple(slice(None) if index is None else index for index in indices(env))
        if accumulate:
            np.add.at(result, key, values(env))
        else:
            result[key] = values(env)
        env[out] = result
    return run


BUILDERS: Dict[str, Builder] = {
    "reshape": _build_reshape,
    "permute": _build_permute,
    "transpose": _build_transpose,
    "unsqueeze": _build_unsqueeze,
    "squeeze": _build_squeeze,
    "expand": _build_expand,
    "select": _build_select,
    "slice": _build_slice,
    "index": _build_index,
    "index_select": _build_index_select,
    "gather": _build_gather,
    "cat": _build_cat,
    "stack": _build_stack,
    "split": _build_split,
    "unbind": _build_unbind,
    "flip": _build_flip,
    "repeat": _build_repeat,
    "constant_pad": _build_constant_pad,
    "full": _build_full,
    "full_like": _build_full_like,
    "arange": _build_arange,
    "scalar_tensor": _build_scalar_tensor,
    "to_dtype": _build_to_dtype,
    "copy": _build_copy,
    "scatter": _build_scatter,
    "sort": _build_sort,
    "select_scatter": _build_select_scatter,
    "slice_scatter": _build_slice_scatter,
    "index_put": _build_index_put,
}
