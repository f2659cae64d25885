"""fastlstm.LSTMCell: `torch.nn.LSTMCell` for inference, on the same kernels as fastlstm.LSTM.

An LSTM cell is one time step of a single-layer LSTM, so rather than a second implementation the
cell wraps a packed one-layer `fastlstm.LSTM` and runs `LSTM.step`: one set of kernels, one set of
accuracy tests. What lives here is the cell's own interface: nn.LSTMCell's parameter names
(``weight_ih`` rather than ``weight_ih_l0``), its 2-D (B, hidden_size) states rather than
nn.LSTM's 3-D (1, B, hidden_size) ones, and its call returning ``(h, c)``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from . import _interop
from ._checks import check_array_dtype, check_input_size, check_weights_dtype, checked_state_pair, normalize_dtype
from ._config import LSTMConfig
from ._model import LSTM, contained_modules_hint
from ._state_dict import check_single_dtype, choose_prefix, flatten_state_dict, format_keys, parameter_array
from ._torch_weights import torch_module_weights

__all__ = ["LSTMCell"]

ArrayLike = Any  # numpy.ndarray or torch.Tensor (torch stays optional)

# nn.LSTMCell's parameter names, in its order; the one-layer LSTM calls them "<name>_l0".
_CELL_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
# The key every nn.LSTMCell state_dict has. nn.LSTM's "weight_ih_l0" does not end with it.
_ANCHOR = "weight_ih"


class LSTMCell:
    """One LSTM time step with exactly `torch.nn.LSTMCell`'s arguments, shapes and results.

    ``h, c = cell(input, (h, c))``: input is (B, input_size) or unbatched (input_size,), the
    states (B, hidden_size) or (hidden_size,), zeros when ``hx`` is None. numpy arrays in give
    numpy arrays out; torch tensors in give tensors out. Gates follow PyTorch (i, f, g, o).

    The cell packs its weights once into a single-layer `fastlstm.LSTM` and runs one
    `LSTM.step` per call, so it shares that model's kernels and accuracy. It is immutable,
    safe to call from many threads at once, and pickles with its weights.

    Args:
        input_size, hidden_size, bias: as in `torch.nn.LSTMCell`.
        dtype: float32 (default) or float64; inputs and states must match it.
        weights: nn.LSTMCell parameter names (weight_ih, weight_hh, bias_ih, bias_hh) -> numpy
            arrays or tensors; None draws U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) weights,
            nn.LSTMCell's initialisation.
        seed: seed for the random weights.
    """

    __slots__ = ("_lstm",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype: Any = np.float32,
        weights: Optional[Mapping[str, Any]] = None,
        seed: Optional[int] = None,
    ) -> None:
        if weights is None:
            lstm = LSTM(input_size, hidden_size, bias=bias, dtype=dtype, seed=seed)
        else:
            LSTMConfig(input_size, hidden_size, bias=bias)  # TypeError/ValueError for bad arguments
            inferred, arrays = _extract_cell(weights, prefix="")
            if inferred != (input_size, hidden_size, bias):
                raise ValueError(
                    f"weights describe {_describe(*inferred)}, but the arguments describe "
                    f"{_describe(input_size, hidden_size, bias)}"
                )
            check_weights_dtype(next(iter(arrays.values())).dtype.newbyteorder("="), normalize_dtype(dtype))
            lstm = _lstm_from_cell_arrays(inferred, arrays)
        object.__setattr__(self, "_lstm", lstm)

    @classmethod
    def _from_lstm(cls, lstm: LSTM) -> "LSTMCell":
        cell = cls.__new__(cls)
        object.__setattr__(cell, "_lstm", lstm)
        return cell

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def from_torch(cls, module: Any) -> "LSTMCell":
        """Copy the weights of a live `torch.nn.LSTMCell` (any mode, device or float dtype); weights
        under weight or spectral normalisation are folded, as `LSTM.from_torch` does."""
        torch = _interop.loaded_torch()
        if torch is None or not isinstance(module, torch.nn.LSTMCell):
            hint = ""
            if torch is not None and isinstance(module, torch.nn.LSTM):
                hint = " (use fastlstm.LSTM.from_torch for an nn.LSTM)"
            else:
                hint = contained_modules_hint(module, "LSTMCell", "LSTMCell.from_torch")
            raise TypeError(
                f"LSTMCell.from_torch expects a torch.nn.LSTMCell, got "
                f"{type(module).__module__}.{type(module).__name__}{hint}"
            )
        # The weights the module computes (weight_norm and spectral_norm folded; meta refused).
        names = _CELL_NAMES if module.bias else _CELL_NAMES[:2]
        sizes, arrays = _extract_cell(torch_module_weights(module, names), prefix="")
        return cls._from_lstm(_lstm_from_cell_arrays(sizes, arrays))

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], prefix: Optional[str] = None) -> "LSTMCell":
        """Build from an nn.LSTMCell state_dict, or find the one LSTMCell inside a whole model's.

        Values may be torch tensors or numpy arrays; nested checkpoints are flattened with
        dotted keys. Sizes and bias are inferred from the names and shapes. ``prefix=None``
        finds the cell's prefix (e.g. "cell.") and raises if there are several; ``prefix="cell"``
        and ``prefix="cell."`` both select ``cell.weight_ih``, ...
        """
        sizes, arrays = _extract_cell(state_dict, prefix=prefix)
        return cls._from_lstm(_lstm_from_cell_arrays(sizes, arrays))

    def state_dict(self) -> Dict[str, np.ndarray]:
        """nn.LSTMCell parameter names -> read-only arrays, loadable by `nn.LSTMCell.load_state_dict`
        after `torch.from_numpy`."""
        weights = self._lstm.state_dict()
        return {name: weights[name + "_l0"] for name in _CELL_NAMES if name + "_l0" in weights}

    # ----------------------------------------------------------------------------- attributes
    @property
    def input_size(self) -> int:
        return self._lstm.input_size

    @property
    def hidden_size(self) -> int:
        return self._lstm.hidden_size

    @property
    def bias(self) -> bool:
        return self._lstm.bias

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of every input and state (and of the weights, unless quantized)."""
        return self._lstm.dtype

    @property
    def weights_dtype(self) -> str:
        """How the weight matrices are stored: "float32", "float64", "bfloat16" or "int8"."""
        return self._lstm.weights_dtype

    def quantize(self, scheme: str) -> "LSTMCell":
        """A new cell with bf16 or int8 weight matrices, as `fastlstm.LSTM.quantize`; this one is
        untouched. TypeError for a float64 cell, ValueError for an unknown scheme."""
        return LSTMCell._from_lstm(self._lstm.quantize(scheme))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"LSTMCell is immutable: cannot set attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"LSTMCell is immutable: cannot delete attribute {name!r}")

    def __repr__(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        if self.dtype != np.float32:
            text += f", dtype={self.dtype}"
        if self.weights_dtype not in ("float32", "float64"):
            text += f", weights_dtype={self.weights_dtype!r}"
        return f"LSTMCell({text})"

    def __reduce__(self) -> Tuple[Any, ...]:
        # The inner LSTM pickles its validated weights; unpickling repacks them for this CPU.
        return (LSTMCell._from_lstm, (self._lstm,))

    # ----------------------------------------------------------------------------- forward
    def __call__(self, input: ArrayLike, hx: Optional[Tuple[ArrayLike, ArrayLike]] = None, *,
                 num_threads: int = 0) -> Tuple[ArrayLike, ArrayLike]:
        """One step: ``h_1, c_1 = cell(input, (h_0, c_0))``, as nn.LSTMCell.

        input: (B, input_size) or unbatched (input_size,); a numpy array or a CPU torch tensor.
        hx: optional (h_0, c_0), each (B, hidden_size), or (hidden_size,) for unbatched input;
            numpy arrays or tensors. Missing means zeros.
        num_threads: cores this call may use; 0 means `fastlstm.get_num_threads()`.

        Returns (h_1, c_1) of the states' shapes: numpy arrays for numpy input, tensors for a
        tensor. They are new arrays; the inputs are never written.
        """
        if isinstance(input, np.ndarray):
            return self._step_numpy(input, hx, num_threads)
        if _interop.is_tensor(input):
            torch = _interop.loaded_torch()
            h, c = self._step_numpy(_interop.tensor_to_numpy(input, "input"), hx, num_threads)
            return torch.from_numpy(h), torch.from_numpy(c)
        raise TypeError(f"input must be a numpy array or a torch tensor, got {type(input).__name__}")

    forward = __call__

    def _step_numpy(self, x: np.ndarray, hx: Any, num_threads: int) -> Tuple[np.ndarray, np.ndarray]:
        lstm = self._lstm
        dtype = lstm.dtype
        if x.dtype is not dtype:
            check_array_dtype(x, "input", dtype, "cell")
        if x.ndim != 1 and x.ndim != 2:
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {x.ndim}D input of shape {x.shape}")
        check_input_size(x.shape[-1], lstm.input_size)
        if hx is None:
            state = None
        else:
            shape = (x.shape[0], lstm.hidden_size) if x.ndim == 2 else (lstm.hidden_size,)
            h0, c0 = checked_state_pair(hx, ("h_0", "c_0"), (shape, shape), dtype, "cell", x.ndim == 1)
            state = (h0[None], c0[None])  # nn.LSTM's hx shapes (1, B, H) / (1, H): views, no copy
        # One layer, no projection: the step's output is h_1 itself, already in the cell's shape.
        # LSTM.step copies an input the kernel cannot read in place.
        h_1, (_, c_n) = lstm.step(x, state, num_threads=num_threads)
        return h_1, c_n[0]


# --------------------------------------------------------------------------------- validation
def _describe(input_size: Any, hidden_size: Any, bias: Any) -> str:
    return f"nn.LSTMCell(input_size={input_size}, hidden_size={hidden_size}, bias={bias})"


def _choose_prefix(flat: Mapping[str, Any], prefix: Optional[str]) -> str:
    hint = ""
    if any(str(k).endswith("weight_ih_l0") for k in flat):
        hint = " (keys like 'weight_ih_l0' come from nn.LSTM: use fastlstm.LSTM.from_state_dict)"
    return choose_prefix(flat, prefix, _ANCHOR, "nn.LSTMCell", hint)


CellSizes = Tuple[int, int, bool]  # input_size, hidden_size, bias


def _extract_cell(state_dict: Mapping[str, Any], prefix: Optional[str]) -> Tuple[CellSizes, Dict[str, np.ndarray]]:
    """Find one nn.LSTMCell's weights and check them: ((input_size, hidden_size, bias), arrays
    keyed by nn.LSTMCell's names, in its order). The arrays may still be the caller's memory;
    the LSTM constructor copies them."""
    flat = flatten_state_dict(state_dict)
    prefix = _choose_prefix(flat, prefix)
    arrays = {
        name: parameter_array(prefix + name, flat[prefix + name]) for name in _CELL_NAMES if prefix + name in flat
    }

    missing = [prefix + name for name in ("weight_ih", "weight_hh") if name not in arrays]
    if ("bias_ih" in arrays) != ("bias_hh" in arrays):  # bias=False has neither, bias=True both
        missing += [prefix + name for name in ("bias_ih", "bias_hh") if name not in arrays]
    if missing:
        raise ValueError(
            f"the nn.LSTMCell weights under prefix {prefix!r} are incomplete: missing {format_keys(missing)}"
        )

    layouts = {"weight_ih": "(4*hidden_size, input_size)", "weight_hh": "(4*hidden_size, hidden_size)"}
    for name, layout in layouts.items():
        if arrays[name].ndim != 2:
            raise ValueError(f"{prefix + name!r} must be 2-D {layout}, got shape {tuple(arrays[name].shape)}")
    gates, input_size = arrays["weight_ih"].shape
    if gates == 0 or gates % 4 != 0:
        raise ValueError(
            f"{prefix + 'weight_ih'!r} has shape {tuple(arrays['weight_ih'].shape)}: its first dimension "
            f"must be 4*hidden_size (a positive multiple of 4), got {gates}"
        )
    if input_size == 0:
        raise ValueError(
            f"{prefix + 'weight_ih'!r} has shape {tuple(arrays['weight_ih'].shape)}: input_size must be positive"
        )
    hidden_size, bias = gates // 4, "bias_ih" in arrays
    expected = {
        "weight_ih": (gates, input_size),
        "weight_hh": (gates, hidden_size),
        "bias_ih": (gates,),
        "bias_hh": (gates,),
    }
    for name, array in arrays.items():
        if tuple(array.shape) != expected[name]:
            raise ValueError(
                f"{prefix + name!r} has shape {tuple(array.shape)}, but "
                f"{_describe(input_size, hidden_size, bias)} expects {expected[name]}"
            )

    check_single_dtype(arrays, prefix, "nn.LSTMCell")
    return (int(input_size), int(hidden_size), bool(bias)), arrays


def _lstm_from_cell_arrays(sizes: CellSizes, arrays: Dict[str, np.ndarray]) -> LSTM:
    input_size, hidden_size, bias = sizes
    dtype = np.dtype(next(iter(arrays.values())).dtype).newbyteorder("=")
    return LSTM(
        input_size,
        hidden_size,
        bias=bias,
        dtype=dtype,
        weights={name + "_l0": array for name, array in arrays.items()},
    )
