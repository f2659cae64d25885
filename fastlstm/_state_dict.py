"""Finding an nn.LSTM's weights inside whatever a user saved, and checking them before packing.

Users hand us a bare ``nn.LSTM`` state_dict, a whole model's state_dict (``rnn.weight_ih_l0``
next to ``head.weight``) or a training checkpoint that nests the model under
``model_state_dict`` beside optimizer state. Rather than make them dig the weights out, we flatten
the structure, look for the one set of keys that nn.LSTM produces, infer its hyperparameters from
names and shapes, and validate everything here in Python, so that the C++ core only ever sees
well-formed, contiguous float arrays and the user sees an error that names the offending key.

This module is pure numpy: torch tensors are recognised by duck typing and converted, so that
serving from ``.safetensors``/``.npz`` files works without torch installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ._checks import DeclaredTensor, check_parameter_sizes
from ._config import PARAMETER_NAME, LSTMConfig

__all__ = [
    "flatten_state_dict",
    "find_prefixes",
    "find_lstm_prefixes",
    "choose_prefix",
    "locate_lstm",
    "extract_lstm",
    "parameter_array",
    "check_single_dtype",
    "format_keys",
]

# The key every nn.LSTM state_dict has; nn.LSTMCell's is plain "weight_ih" and must not match.
_ANCHOR = "weight_ih_l0"

# Long lists of keys make error messages unreadable; show this many and count the rest.
_MAX_KEYS_IN_MESSAGE = 12

_HALF_DTYPES = ("float16", "bfloat16")

# Checkpoints nest a few levels (checkpoint -> model -> submodule ...); far deeper is a hostile or
# broken file, and refusing it keeps error paths from needing Python's recursion limit.
MAX_NESTING = 64


def flatten_state_dict(obj: Mapping) -> Dict[str, Any]:
    """Flatten nested mappings into one level with dotted keys.

    Checkpoints nest the model's state_dict under arbitrary names (``model_state_dict``,
    ``state_dict``, ``model``...); flattening lets one prefix search find the LSTM wherever it
    is, with the prefix telling the user where it was found. Leaves that are not mappings
    (tensors, arrays, numbers, lists) are kept as they are. A mapping that contains itself (a
    pickle can hold cycles) or nesting deeper than MAX_NESTING levels is refused with a ValueError.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    flat: Dict[str, Any] = {}
    # Iterative depth-first walk, in the mappings' own order. `path` holds the ids of the mappings
    # from the root to the current one: meeting one of them again is a cycle, whereas the same
    # mapping under two names (tied weights) is not.
    stack: List[Tuple[Iterator[Tuple[Any, Any]], str]] = [(iter(obj.items()), "")]
    path: List[int] = [id(obj)]
    while stack:
        items, prefix = stack[-1]
        for key, value in items:
            name = prefix + str(key)
            if isinstance(value, Mapping):
                _check_nesting(value, name, path)
                stack.append((iter(value.items()), name + "."))
                path.append(id(value))
                break
            if name in flat:
                # e.g. {"a.b": x, "a": {"b": y}}: silently picking one could load the wrong weights.
                raise ValueError(f"state_dict key {name!r} occurs twice once nested keys are joined")
            flat[name] = value
        else:
            stack.pop()
            path.pop()
    return flat


def _check_nesting(value: Mapping, name: str, path: List[int]) -> None:
    """Refuse entering `value` (under key `name`) if it is on the current path or too deep."""
    shown = name if len(name) <= 100 else name[:100] + "..."
    if id(value) in path:
        raise ValueError(
            f"state_dict key {shown!r} refers back to a mapping that contains it (a cycle); a "
            f"state_dict must be a tree of names and tensors"
        )
    if len(path) >= MAX_NESTING:
        raise ValueError(
            f"the state_dict is nested more than {MAX_NESTING} levels deep (at key {shown!r}); "
            f"real checkpoints nest a few levels"
        )


def find_lstm_prefixes(flat: Mapping[str, Any]) -> List[str]:
    """Every prefix under which an nn.LSTM's weights sit, in the order they appear."""
    return find_prefixes(flat, _ANCHOR)


def find_prefixes(flat: Mapping[str, Any], anchor: str) -> List[str]:
    """Every prefix P with P + anchor a key, in the order they appear.

    A prefix is empty (a bare module's state_dict) or ends with "." (a submodule), because
    that is how torch names submodules; requiring the dot keeps keys such as
    ``my_weight_ih_l0`` from producing a bogus prefix ``my_``.
    """
    prefixes: List[str] = []
    for key in flat:
        if not isinstance(key, str) or not key.endswith(anchor):
            continue
        prefix = key[: -len(anchor)]
        if (prefix == "" or prefix.endswith(".")) and prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def locate_lstm(
    state_dict: Mapping,
    prefix: Optional[str] = None,
    batch_first: bool = False,
) -> Tuple[LSTMConfig, str]:
    """Find and validate one nn.LSTM's weights as extract_lstm does, copying nothing: return its
    config and the prefix its keys sit under.

    File loaders run it on zero-byte stand-ins of the arrays a file declares (their shapes and
    dtypes), so that nothing is read before the file is known to hold a loadable LSTM, and then
    read only the keys the LSTM uses.
    """
    config, found, _ = _find_and_check(state_dict, prefix, batch_first)
    return config, found


def extract_lstm(
    state_dict: Mapping,
    prefix: Optional[str] = None,
    batch_first: bool = False,
    *,
    copy: bool = True,
) -> Tuple[LSTMConfig, Dict[str, np.ndarray]]:
    """Find one nn.LSTM's weights, infer its config, and return validated read-only copies.

    ``prefix=None`` searches the (flattened) state_dict and succeeds only if exactly one LSTM is
    found, because guessing between two would silently serve the wrong network. The
    hyperparameters come from the names and shapes, since a state_dict stores no config; the
    result is then checked key by key against what nn.LSTM with that config would hold, so
    a truncated, mixed or hand-edited state_dict fails here with the offending key named.
    ``batch_first`` is not recorded in weights, so the caller supplies it.

    The returned arrays are owned, C-contiguous, read-only, all float32 or all float64, keyed
    by nn.LSTM's own names (without the prefix) in nn.LSTM's order. ``copy=False`` is for arrays
    the caller has just made (read from a file, unpickled) and nobody else holds: those already in
    native byte order and C-contiguous are then made read-only in place instead of copied, so that
    loading a model does not hold its weights twice.
    """
    config, prefix, arrays = _find_and_check(state_dict, prefix, batch_first)
    weights: Dict[str, np.ndarray] = {}
    for name in config.parameter_shapes():
        array = arrays[name]
        native = array.dtype.newbyteorder("=")
        if copy or array.dtype != native or not (array.flags.c_contiguous and array.flags.aligned):
            # A copy we own: later edits to the user's module or file buffer must not reach a
            # packed model, and the C++ side can rely on native byte order and contiguity.
            array = np.array(array, dtype=native, order="C", copy=True)
        array.flags.writeable = False
        weights[name] = array
    return config, weights


def _find_and_check(
    state_dict: Mapping, prefix: Optional[str], batch_first: bool
) -> Tuple[LSTMConfig, str, Dict[str, np.ndarray]]:
    """The config, the prefix and the arrays (views, keyed by nn.LSTM's names) of the one nn.LSTM
    in `state_dict`, after every check, the size limits included."""
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be a bool, got {type(batch_first).__name__}")
    flat = flatten_state_dict(state_dict)
    prefix = _choose_prefix(flat, prefix)

    # Only keys shaped like nn.LSTM parameter names concern us; other modules' keys
    # (head.weight, an optimizer's state) are none of our business.
    params: Dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(prefix) and PARAMETER_NAME.match(key[len(prefix):]):
            params[key[len(prefix):]] = value

    arrays = {name: parameter_array(prefix + name, value) for name, value in params.items()}
    config = _infer_config(arrays, prefix, bool(batch_first))
    expected = config.parameter_shapes()
    _check_names(expected, arrays, prefix, config)
    _check_shapes(expected, arrays, prefix, config)
    check_single_dtype(arrays, prefix, "nn.LSTM")
    # Before the copies below: a broadcast view can claim terabytes while holding one float.
    itemsize = np.dtype(next(iter(arrays.values())).dtype).itemsize
    check_parameter_sizes((DeclaredTensor(prefix + name, shape, itemsize) for name, shape in expected.items()),
                          "the nn.LSTM weights")
    return config, prefix, arrays


def _choose_prefix(flat: Mapping[str, Any], prefix: Optional[str]) -> str:
    hint = ""
    if any(str(k).endswith("weight_ih") for k in flat):
        hint = (" (keys ending in 'weight_ih' without a layer number come from nn.LSTMCell, "
                "load those with fastlstm.LSTMCell.from_state_dict)")
    return choose_prefix(flat, prefix, _ANCHOR, "nn.LSTM", hint)


def choose_prefix(flat: Mapping[str, Any], prefix: Optional[str], anchor: str, module: str, hint: str) -> str:
    """The prefix of the one `module` (keys P + anchor) to load: the given one, or the only one
    found. `hint` is added when none is found (e.g. that the keys belong to another module type)."""
    found = find_prefixes(flat, anchor)
    listing = ", ".join(repr(p) for p in found)
    if prefix is not None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str or None, got {type(prefix).__name__}")
        # An explicit prefix may use any separator (e.g. "rnn/"), so test it directly.
        if prefix + anchor in flat:
            return prefix
        # "rnn" for "rnn.": the module's name is what users know, and it is unambiguous.
        if prefix and prefix + "." in found:
            return prefix + "."
        where = (f"{module} weights were found under: {listing}" if found
                 else f"none under any other prefix; keys seen: {format_keys(flat)}")
        raise ValueError(f"no {module} weights under prefix {prefix!r} (expected a key {prefix + anchor!r}); {where}")
    if not found:
        raise ValueError(
            f"no {module} weights (keys like {anchor!r}) were found in the state_dict{hint}; "
            f"keys seen: {format_keys(flat)}"
        )
    if len(found) > 1:
        raise ValueError(
            f"the state_dict holds {len(found)} {module} modules, under prefixes {listing}; "
            f"pass prefix= to choose one, e.g. prefix={found[0]!r}"
        )
    return found[0]


def format_keys(keys: Iterable[Any]) -> str:
    """Keys quoted for an error message: the first few, then how many more, because a whole
    checkpoint's keys would bury the message."""
    keys = [str(k) for k in keys]
    if not keys:
        return "none (the state_dict is empty)"
    shown = ", ".join(repr(k) for k in keys[:_MAX_KEYS_IN_MESSAGE])
    more = len(keys) - _MAX_KEYS_IN_MESSAGE
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _is_torch_tensor(value: Any) -> bool:
    # Duck typing keeps torch an optional dependency: torch.Tensor and nn.Parameter both
    # live in torch's modules and carry a dtype and detach().
    return (
        type(value).__module__.split(".")[0] == "torch"
        and hasattr(value, "dtype")
        and hasattr(value, "detach")
    )


def parameter_array(key: str, value: Any) -> np.ndarray:
    """One parameter (`key` names it in errors) as a float32 or float64 numpy array: an array as it
    is (in any byte order), a tensor as a numpy view or torch's CPU copy; TypeError otherwise."""
    if _is_torch_tensor(value):
        dtype_name = str(value.dtype).replace("torch.", "")
        _check_dtype_name(key, dtype_name)
        try:
            # force=True detaches and moves to CPU; older torch lacks it.
            try:
                return value.numpy(force=True)
            except TypeError:
                return value.detach().cpu().numpy()
        except Exception as exc:  # sparse, meta or otherwise unconvertible tensors
            raise TypeError(
                f"{key!r} is a torch tensor that cannot be converted to a numpy array "
                f"({type(exc).__name__}: {exc}); expected a dense tensor"
            ) from exc
    if isinstance(value, np.ndarray):
        # kind/itemsize rather than equality, so big-endian float32 (e.g. from an .npz written
        # on another machine) is accepted; extract_lstm converts it to native order.
        if value.dtype.kind != "f" or value.dtype.itemsize not in (4, 8):
            name = value.dtype.name if value.dtype.kind != "V" else str(value.dtype)
            _check_dtype_name(key, name)
        return value
    raise TypeError(
        f"{key!r} must be a numpy array or torch tensor, got {type(value).__name__}"
    )


def _check_dtype_name(key: str, dtype_name: str) -> None:
    if dtype_name in ("float32", "float64"):
        return
    if dtype_name in _HALF_DTYPES:
        raise TypeError(
            f"{key!r} has dtype {dtype_name}; fastlstm loads float32 or float64 weights: "
            f"convert the module to float32/float64 first (e.g. model.float()) and save again"
        )
    raise TypeError(f"{key!r} has dtype {dtype_name}; expected float32 or float64")


def _infer_config(arrays: Dict[str, np.ndarray], prefix: str, batch_first: bool) -> LSTMConfig:
    """Read the hyperparameters off layer 0's names and shapes, as nn.LSTM would have set them."""
    weight_ih = arrays[_ANCHOR]
    if "weight_hh_l0" not in arrays:
        raise ValueError(f"missing nn.LSTM parameter {prefix + 'weight_hh_l0'!r}")
    weight_hh = arrays["weight_hh_l0"]
    for name, layout in ((_ANCHOR, "(4*hidden_size, input_size)"),
                         ("weight_hh_l0", "(4*hidden_size, hidden_size or proj_size)"),
                         ("weight_hr_l0", "(proj_size, hidden_size)")):
        if name in arrays and arrays[name].ndim != 2:
            raise ValueError(
                f"{prefix + name!r} must be 2-D {layout}, got shape {tuple(arrays[name].shape)}"
            )
    gates = weight_hh.shape[0]
    if gates == 0 or gates % 4 != 0:
        raise ValueError(
            f"{prefix + 'weight_hh_l0'!r} has shape {tuple(weight_hh.shape)}: its first "
            f"dimension must be 4*hidden_size (a positive multiple of 4), got {gates}"
        )
    # Counted, not max+1: a gap (l0, l1, l3) then shows up as l2 missing and l3 unexpected.
    num_layers = sum(1 for name in arrays if name.startswith("weight_ih_l")
                     and not name.endswith("_reverse"))
    values = dict(
        input_size=int(weight_ih.shape[1]),
        hidden_size=gates // 4,
        num_layers=num_layers,
        bias="bias_ih_l0" in arrays,
        batch_first=batch_first,
        bidirectional=any(name.endswith("_reverse") for name in arrays),
        proj_size=int(arrays["weight_hr_l0"].shape[0]) if "weight_hr_l0" in arrays else 0,
    )
    try:
        return LSTMConfig(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        where = f"under prefix {prefix!r}" if prefix else "in the state_dict"
        raise ValueError(
            f"the nn.LSTM weights {where} imply an invalid configuration ({exc}); "
            f"inferred from shapes: {values}"
        ) from None


def _describe(config: LSTMConfig) -> str:
    return (
        f"nn.LSTM(input_size={config.input_size}, hidden_size={config.hidden_size}, "
        f"num_layers={config.num_layers}, bias={config.bias}, "
        f"bidirectional={config.bidirectional}, proj_size={config.proj_size})"
    )


def _check_names(expected: Dict[str, Tuple[int, ...]], arrays: Dict[str, np.ndarray],
                 prefix: str, config: LSTMConfig) -> None:
    missing = [prefix + name for name in expected if name not in arrays]
    unexpected = [prefix + name for name in arrays if name not in expected]
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"missing {format_keys(missing)}")
    if unexpected:
        parts.append(f"unexpected {format_keys(unexpected)}")
    layers = sorted(
        int(name[len("weight_ih_l"):])
        for name in arrays
        if name.startswith("weight_ih_l") and not name.endswith("_reverse")
    )
    if layers != list(range(len(layers))):
        parts.append(f"nn.LSTM numbers its layers 0..num_layers-1, but weight_ih is present "
                     f"for layers {layers}")
    raise ValueError(
        f"the nn.LSTM weights do not form a complete {_describe(config)} "
        f"(inferred from weight_ih_l0, weight_hh_l0, bias_ih_l0, weight_hr_l0 and the "
        f"number of layers): {'; '.join(parts)}"
    )


def _check_shapes(expected: Dict[str, Tuple[int, ...]], arrays: Dict[str, np.ndarray],
                  prefix: str, config: LSTMConfig) -> None:
    for name, shape in expected.items():
        actual = tuple(arrays[name].shape)
        if actual != shape:
            raise ValueError(
                f"{prefix + name!r} has shape {actual}, but {_describe(config)} expects {shape}"
            )


def check_single_dtype(arrays: Dict[str, np.ndarray], prefix: str, module: str) -> None:
    """TypeError unless the `module`'s weights (e.g. "nn.LSTM"; keyed by name under `prefix`) share
    one dtype: the model computes in one precision and must not guess which."""
    by_dtype: Dict[str, List[str]] = {}
    for name, array in arrays.items():
        by_dtype.setdefault(np.dtype(array.dtype).newbyteorder("=").name, []).append(prefix + name)
    if len(by_dtype) > 1:
        listing = "; ".join(f"{dtype}: {format_keys(keys)}" for dtype, keys in by_dtype.items())
        raise TypeError(
            f"the {module} weights mix dtypes ({listing}); convert them all to float32 or all "
            f"to float64 first"
        )
