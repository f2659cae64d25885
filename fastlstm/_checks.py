"""The checks of what callers hand fastlstm, each written once: dtypes, states, lengths, arrays the
kernel reads in place, and the size limits.

The model, the cell, the config, the state_dict reader and the file readers run these, so that
the same mistake gets the same error wherever it is made. The fast paths of `LSTM.__call__` and
`LSTM.step(out=)` call none of them: the extension checks their arrays, and only when it refuses
does the checked path come here to raise the precise error.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Sequence, Tuple

import numpy as np

from . import _interop

__all__ = [
    "SUPPORTED_DTYPES",
    "MAX_DIMENSION",
    "MAX_NUM_LAYERS",
    "MAX_PARAMETER_ELEMENTS",
    "MAX_MODEL_BYTES",
    "MAX_PICKLE_BYTES",
    "DeclaredTensor",
    "normalize_dtype",
    "check_array_dtype",
    "check_weights_dtype",
    "check_dropout",
    "check_input_size",
    "checked_state_pair",
    "checked_lengths",
    "as_kernel_readable",
    "check_dimension_limits",
    "check_parameter_sizes",
]

Shape = Tuple[int, ...]

# ----------------------------------------------------------------------------------------- dtypes
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def normalize_dtype(dtype: object) -> np.dtype:
    """A model's dtype argument as float32 or float64: numpy dtypes, their names and torch dtypes
    are accepted, anything else is a TypeError."""
    try:
        # torch dtypes are not numpy dtypes; their names ("torch.float32") map over.
        resolved = np.dtype(str(dtype).replace("torch.", "") if type(dtype).__module__ == "torch" else dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if resolved not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {resolved}")
    return resolved


def check_array_dtype(array: np.ndarray, name: str, dtype: np.dtype, owner: str) -> None:
    """TypeError unless `array` (an input or a state, called `name`) has the dtype of the model or
    cell (the `owner`): fastlstm never casts, because a silent cast hides a costly copy or lost
    precision."""
    if array.dtype == dtype:
        return
    if array.dtype.kind == "f":
        raise TypeError(
            f"{name} has dtype {array.dtype} but the {owner} is {dtype}; convert one of them explicitly "
            f"(fastlstm never casts silently)"
        )
    raise TypeError(f"{name} must be a floating array of dtype {dtype}, got dtype {array.dtype}")


def check_weights_dtype(given: np.dtype, requested: np.dtype) -> None:
    """TypeError unless weights of dtype `given` suit a constructor asked for `requested`."""
    if given != requested:
        raise TypeError(f"weights have dtype {given} but dtype={requested} was requested")


# ---------------------------------------------------------------------------- other arguments
def check_dropout(dropout: Any) -> None:
    """ValueError unless `dropout` is a number in [0, 1], as nn.LSTM requires (it is kept for the
    model's attributes and inert at inference)."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")


# ----------------------------------------------------------------------------------- call inputs
def check_input_size(features: int, input_size: int) -> None:
    """ValueError, in torch's words, unless an input's last dimension is the model's input_size."""
    if features != input_size:
        raise ValueError(f"input.size(-1) must be equal to input_size. Expected {input_size}, got {features}")


def checked_state_pair(
    hx: Any, names: Tuple[str, str], shapes: Tuple[Shape, Shape], dtype: np.dtype, owner: str, unbatched: bool
) -> Tuple[np.ndarray, np.ndarray]:
    """The two states of `hx` (named `names`: ("h0", "c0") for nn.LSTM, ("h_0", "c_0") for
    nn.LSTMCell) as arrays of exactly `shapes`, C-contiguous and aligned for the kernel, or a clear
    error. Tensors become numpy views; other arrays are copied only if the kernel cannot read them.
    `unbatched` says the input had no batch axis, so that a batched state is named as the mistake."""
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be a tuple ({names[0]}, {names[1]}), got {type(hx).__name__}")
    return (
        _state_array(hx[0], names[0], shapes[0], dtype, owner, unbatched),
        _state_array(hx[1], names[1], shapes[1], dtype, owner, unbatched),
    )


def _state_array(value: Any, name: str, expected: Shape, dtype: np.dtype, owner: str, unbatched: bool) -> np.ndarray:
    if type(value) is not np.ndarray:
        if _interop.is_tensor(value):
            value = _interop.tensor_to_numpy(value, name)
        elif not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(value).__name__}")
    if value.dtype is not dtype:
        check_array_dtype(value, name, dtype, owner)
    if value.shape != expected:
        ndim = len(expected)
        if unbatched and value.ndim != ndim:
            raise ValueError(
                f"for unbatched {ndim}-D input, {name} must also be {ndim}-D {expected}, got {value.ndim}-D {value.shape}"
            )
        raise ValueError(f"Expected {name} of shape {expected}, got {value.shape}")
    if not (value.flags.c_contiguous and value.flags.aligned):
        value = np.array(value, order="C")  # a fresh array is contiguous and aligned
    return value


def checked_lengths(lengths: Any, batch: int, steps: int, unbatched: bool) -> np.ndarray:
    """Per-sequence valid lengths as a C-contiguous int64 array of `batch` values in [1, steps], or
    a clear error. A tensor, a list or an array is accepted; unbatched input takes one scalar."""
    if _interop.is_tensor(lengths):
        lengths = lengths.detach().cpu().numpy()
    if unbatched and np.ndim(lengths) == 0:
        lengths = [lengths]
    array = np.asarray(lengths)
    if array.size == 0:
        array = array.astype(np.int64)  # [] is float64 to numpy; its count is what is wrong
    if array.dtype.kind not in "iu" or array.dtype == np.bool_:
        raise TypeError(f"lengths must be integers, got dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != batch:
        raise ValueError(f"lengths must hold one length per sequence ({batch}), got shape {array.shape}")
    if batch and (array.min() < 1 or array.max() > steps):
        raise ValueError(f"lengths must lie in [1, {steps}] (the sequence length), got values from {array.min()} to {array.max()}")
    return np.require(array, np.int64, ["C", "A"])


def as_kernel_readable(x: np.ndarray) -> np.ndarray:
    """`x` itself when the kernel can read it in place (each row contiguous, strides whole items,
    aligned), else a C-contiguous copy. Transposed and sliced views usually pass as they are, which
    saves a copy of the whole input."""
    itemsize = x.itemsize
    if x.size == 0:
        return x
    readable = x.flags.aligned and all(
        n == 1 or (s == itemsize if axis == x.ndim - 1 else s % itemsize == 0)
        for axis, (n, s) in enumerate(zip(x.shape, x.strides))
    )
    if readable:
        return x
    return np.array(x, order="C")


# ------------------------------------------------------------------------------------ size limits
# Far beyond any real LSTM; refusing larger sizes up front turns a typo or a hostile file into a
# clear error instead of a MemoryError or an index overflow.
MAX_PARAMETER_ELEMENTS = 2**31
MAX_MODEL_BYTES = 2**34
# Per-dimension caps, the same as the C++ core's (csrc/bindings.cc, make_dims): checked here too so
# that the error names the dimension and its limit. 2**24 keeps every product of sizes in int64.
MAX_DIMENSION = 2**24
MAX_NUM_LAYERS = 1024
# The pickle and other small records of a .pt file (not its tensor data), which torch reads whole:
# a 1024-layer bidirectional LSTM checkpoint with Adam state pickles to 3.5 MB.
MAX_PICKLE_BYTES = 2**24

_DIMENSION_LIMITS = {
    "input_size": (MAX_DIMENSION, "2**24"),
    "hidden_size": (MAX_DIMENSION, "2**24"),
    "num_layers": (MAX_NUM_LAYERS, "2**10"),
    "proj_size": (MAX_DIMENSION, "2**24"),
}


def check_dimension_limits(**sizes: int) -> None:
    """ValueError naming the first of `sizes` (input_size, hidden_size, num_layers, proj_size) over
    its limit."""
    for name, value in sizes.items():
        limit, power = _DIMENSION_LIMITS[name]
        if value > limit:
            raise ValueError(f"{name}={value} is too large: fastlstm accepts {name} of at most {limit} ({power})")


class DeclaredTensor(NamedTuple):
    """A tensor as its source declares it, before any of it is read or allocated: `copies` tensors
    of this shape, counted rather than listed (a config may declare an absurd number of layers)."""

    name: str
    shape: Sequence[int]
    itemsize: int
    copies: int = 1


def check_parameter_sizes(tensors: Iterable[DeclaredTensor], what: str) -> None:
    """Refuse tensors over MAX_PARAMETER_ELEMENTS each or MAX_MODEL_BYTES together, with a
    ValueError that says "too large". `what` names them in the message ("the nn.LSTM weights").

    Run on declared shapes, so that an absurd config or a hostile or corrupt file or array (a
    sparse file, a broadcast view, a compressed .npz) is refused before anything of that size is
    read, copied or allocated. Exact integer arithmetic: products of declared dimensions may not
    fit in 64 bits."""
    total_bytes = 0
    for name, shape, itemsize, copies in tensors:
        elements = 1
        for dim in shape:
            elements *= int(dim)
        if elements > MAX_PARAMETER_ELEMENTS:
            raise ValueError(
                f"{what}: {name!r} of shape {tuple(int(d) for d in shape)} is too large "
                f"({elements} elements; fastlstm accepts at most {MAX_PARAMETER_ELEMENTS} per tensor)"
            )
        total_bytes += int(copies) * elements * int(itemsize)
        if total_bytes > MAX_MODEL_BYTES:
            raise ValueError(
                f"{what} are too large: {total_bytes} bytes or more, and fastlstm accepts at most "
                f"{MAX_MODEL_BYTES} (2**34) in all"
            )
