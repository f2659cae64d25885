"""fastlstm.LSTM: an immutable, packed nn.LSTM for CPU inference."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # the program module imports this one
    from ._program import Model

from . import _core, _interop, _quantize
from ._checks import (
    as_kernel_readable,
    check_array_dtype,
    check_dropout,
    check_input_size,
    check_weights_dtype,
    checked_lengths,
    checked_state_pair,
    normalize_dtype,
)
from ._config import LSTMConfig
from ._files import load_config_and_weights, write_safetensors
from ._quantized_file import is_quantized_file, load_quantized, write_quantized_safetensors
from ._state_dict import extract_lstm
from ._torch_weights import torch_module_weights

ArrayLike = Any  # numpy.ndarray or torch.Tensor (torch stays optional)
State = Tuple[ArrayLike, ArrayLike]

_PACKED_CLASSES = {np.dtype(np.float32): _core.PackedLstmF32, np.dtype(np.float64): _core.PackedLstmF64}
# Quantized models by weights_dtype (their activations are float32).
_QUANTIZED_CLASSES = {"bfloat16": _core.PackedLstmBf16, "int8": _core.PackedLstmI8}


class LSTM:
    """A multi-layer LSTM with exactly `torch.nn.LSTM`'s arguments, shapes and results.

    Build one from trained weights with `from_torch`, `from_state_dict` or `fastlstm.load`, or
    directly with random weights drawn like nn.LSTM's initialisation (handy for benchmarks).
    The weights are validated and packed once; the model is then immutable and safe to call from
    many threads at once (the C++ forward pass releases the GIL).

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size:
            as in `torch.nn.LSTM` (dropout only applies to training and is inert here).
        dtype: float32 (default) or float64; inputs must match it.
        weights: nn.LSTM parameter names -> arrays; None draws U(-1/sqrt(hidden_size), ...) weights.
        seed: seed for the random weights.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        dtype: Any = np.float32,
        weights: Optional[Mapping[str, Any]] = None,
        seed: Optional[int] = None,
    ) -> None:
        config = LSTMConfig(input_size, hidden_size, num_layers, bias, batch_first, bidirectional, proj_size)
        check_dropout(dropout)
        dtype = normalize_dtype(dtype)
        config.check_size(dtype.itemsize)
        if weights is None:
            weights = _random_weights(config, dtype, seed)
        else:
            inferred, weights = extract_lstm(weights, prefix="", batch_first=config.batch_first)
            if inferred != config:
                raise ValueError(f"weights describe {inferred}, but the arguments describe {config}")
            check_weights_dtype(next(iter(weights.values())).dtype, dtype)
        self._setup(config, float(dropout), weights)

    def _setup(self, config: LSTMConfig, dropout: float, weights: Dict[str, np.ndarray],
               weights_dtype: str = "float32", scales: Optional[Dict[str, np.ndarray]] = None) -> None:
        """`weights` in `weights_dtype` ("float32"/"float64" arrays, or a quantized model's stored
        arrays, already checked by _quantize) and, for int8, the scales of each matrix."""
        names = list(config.parameter_shapes())
        if set(weights) != set(names):
            raise ValueError(
                f"the weights do not match {config}: missing {sorted(set(names) - set(weights))}, "
                f"unexpected {sorted(set(weights) - set(names))}"
            )
        scales = scales or {}
        if weights_dtype in _QUANTIZED_CLASSES:
            dtype = np.dtype(np.float32)
            packed_class = _QUANTIZED_CLASSES[weights_dtype]
        else:
            dtype = weights[names[0]].dtype
            packed_class = _PACKED_CLASSES[dtype]
            weights_dtype = str(dtype)
        # By name, in nn.LSTM's order: the core takes them by position, and a mapping's own order
        # (an unpickled or hand-made dict) is not to be trusted. An int8 matrix is followed by its scales.
        arrays = []
        for name in names:
            arrays.append(weights[name])
            if name in scales:
                arrays.append(scales[name])
        packed = packed_class(
            config.input_size,
            config.hidden_size,
            config.num_layers,
            config.bias,
            config.bidirectional,
            config.proj_size,
            arrays,
        )
        fields = {
            "_config": config,
            "_dropout": dropout,
            "_weights": weights,
            "_scales": scales,
            "_weights_dtype": weights_dtype,
            "_dtype": dtype,
            "_packed": packed,
            "_packed_step": packed.step,  # bound once: the streaming fast path counts its lookups
            "_packed_forward": packed.forward,  # likewise for a plain call
            "_batch_first": config.batch_first,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @classmethod
    def _from_validated(cls, config: LSTMConfig, weights: Dict[str, np.ndarray], dropout: float = 0.0) -> "LSTM":
        """From weights extract_lstm has validated for `config` (pickles written by earlier versions
        also rebuild through here; _setup packs by name whatever the dict's order)."""
        model = cls.__new__(cls)
        model._setup(config, dropout, weights)
        return model

    @classmethod
    def _from_quantized(cls, config: LSTMConfig, weights: Dict[str, np.ndarray], scales: Dict[str, np.ndarray],
                        weights_dtype: str, dropout: float = 0.0) -> "LSTM":
        """From quantized weights _quantize made or checked (check_stored_weights)."""
        model = cls.__new__(cls)
        model._setup(config, dropout, weights, weights_dtype, scales)
        return model

    @classmethod
    def _from_pickle(cls, config: Any, weights: Any, dropout: Any = 0.0, weights_dtype: Any = "float32",
                     scales: Any = None) -> "LSTM":
        """Unpickle: validate the weights by name against the pickled config, as any other
        constructor does, rather than trust a pickle that may have been edited or assembled by hand."""
        if not isinstance(config, LSTMConfig):
            raise TypeError(f"cannot unpickle fastlstm.LSTM: expected an LSTMConfig, got {type(config).__name__}")
        if not isinstance(weights, Mapping):
            raise TypeError(f"cannot unpickle fastlstm.LSTM: expected a mapping of weights, got {type(weights).__name__}")
        if weights_dtype != "float32" and weights_dtype != "float64":
            if not isinstance(scales, Mapping):
                raise TypeError(f"cannot unpickle fastlstm.LSTM: expected a mapping of scales, got {type(scales).__name__}")
            check_dropout(dropout)
            checked, checked_scales = _quantize.check_stored_weights(
                config.parameter_shapes(), weights, scales, weights_dtype, "cannot unpickle fastlstm.LSTM")
            return cls._from_quantized(config, checked, checked_scales, weights_dtype, float(dropout))
        try:
            check_dropout(dropout)
            # prefix="": the names must be nn.LSTM's own; copy=False: the arrays are the pickle's.
            inferred, checked = extract_lstm(weights, prefix="", batch_first=config.batch_first, copy=False)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"cannot unpickle fastlstm.LSTM: {exc}") from None
        if inferred != config:
            raise ValueError(f"cannot unpickle fastlstm.LSTM: the pickled weights describe {inferred}, "
                             f"but its config is {config}")
        return cls._from_validated(config, checked, float(dropout))

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def from_torch(cls, module: Any) -> "LSTM":
        """Copy the weights of a live `torch.nn.LSTM` (any mode, device or float dtype).

        Weights under weight or spectral normalisation (`torch.nn.utils.parametrizations` or the
        older `torch.nn.utils.weight_norm`/`spectral_norm` hooks) are folded: what is copied is the
        weight the module computes in eval mode. The module itself is left as it was.
        """
        torch = _interop.loaded_torch()
        if torch is None or not isinstance(module, torch.nn.LSTM):
            hint = contained_modules_hint(module, "LSTM", "LSTM.from_torch")
            raise TypeError(f"from_torch expects a torch.nn.LSTM, got {type(module).__module__}.{type(module).__name__}{hint}")
        config = LSTMConfig(module.input_size, module.hidden_size, module.num_layers, bool(module.bias),
                            bool(module.batch_first), bool(module.bidirectional), module.proj_size)
        state = torch_module_weights(module, config.parameter_shapes())
        config, weights = extract_lstm(state, prefix="", batch_first=config.batch_first)
        return cls._from_validated(config, weights, float(module.dropout))

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, Any], prefix: Optional[str] = None, batch_first: bool = False
    ) -> "LSTM":
        """Build from an nn.LSTM state_dict, or find the one LSTM inside a whole model's.

        Values may be torch tensors or numpy arrays. Hyperparameters are inferred from the key
        names and shapes; `prefix=None` finds the LSTM's prefix (e.g. "rnn.") and raises if there
        are several. `batch_first` is not stored in weights, so say it here.
        """
        config, weights = extract_lstm(state_dict, prefix=prefix, batch_first=batch_first)
        return cls._from_validated(config, weights)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write a torch-free `.safetensors` file (nn.LSTM names + hyperparameters) for `fastlstm.load`.

        The path must end in `.safetensors` (any case): it is the one format that keeps every
        hyperparameter (batch_first too) and loads without torch or pickle, and writing it under
        another name would give a file that `load` misreads, so any other suffix raises ValueError.
        For a PyTorch state_dict, save `{k: torch.from_numpy(v) for k, v in model.state_dict().items()}`
        with `torch.save`. The file is written beside the path and renamed into place: readers
        never see half a file, and concurrent saves to one path each succeed (the last one wins).
        """
        if self._weights_dtype in _QUANTIZED_CLASSES:
            write_quantized_safetensors(path, self._weights, self._scales, self._weights_dtype, self._config)
        else:
            write_safetensors(path, self._weights, self._config)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """nn.LSTM parameter names -> read-only arrays, loadable by `nn.LSTM.load_state_dict`
        after `torch.from_numpy`. A quantized model gives the float32 weights it computes with
        (its bf16 or int8 weights widened)."""
        if self._weights_dtype not in _QUANTIZED_CLASSES:
            return dict(self._weights)
        result = {}
        for name, array in self._weights.items():
            if _quantize.is_matrix_name(name):
                array = _quantize.dequantize_matrix(array, self._scales.get(name))
                array.flags.writeable = False
            result[name] = array
        return result

    def quantize(self, scheme: str) -> "LSTM":
        """A new model with its weight matrices in reduced precision: "bf16" (bfloat16) or "int8"
        (with a float32 scale per row and group of 64 inputs). Inputs, outputs, states, biases and
        all arithmetic stay float32, so only the weights' rounding changes the results (see
        docs/reduced_precision.md for the measured errors and speed). This model is untouched.

        Raises TypeError for a float64 model, ValueError for an unknown scheme or a model already
        quantized."""
        scheme = _quantize.check_scheme(scheme, self._dtype, self._weights_dtype)
        weights, scales = _quantize.quantize_weights(self._weights, scheme)
        return LSTM._from_quantized(self._config, weights, scales, _quantize.WEIGHTS_DTYPES[scheme], self._dropout)

    # ----------------------------------------------------------------------------- attributes
    input_size = property(lambda self: self._config.input_size)
    hidden_size = property(lambda self: self._config.hidden_size)
    num_layers = property(lambda self: self._config.num_layers)
    bias = property(lambda self: self._config.bias)
    batch_first = property(lambda self: self._config.batch_first)
    bidirectional = property(lambda self: self._config.bidirectional)
    proj_size = property(lambda self: self._config.proj_size)
    dropout = property(lambda self: self._dropout)
    dtype = property(lambda self: self._dtype, doc="numpy dtype of every input, output and state (and of the "
                                                   "weights, unless quantized)")
    weights_dtype = property(lambda self: self._weights_dtype,
                             doc='how the weight matrices are stored: "float32", "float64", "bfloat16" or "int8"')
    config = property(lambda self: self._config, doc="the hyperparameters as an LSTMConfig")

    def __repr__(self) -> str:
        c = self._config
        text = f"{c.input_size}, {c.hidden_size}"
        if c.proj_size != 0:
            text += f", proj_size={c.proj_size}"
        if c.num_layers != 1:
            text += f", num_layers={c.num_layers}"
        if c.bias is not True:
            text += f", bias={c.bias}"
        if c.batch_first is not False:
            text += f", batch_first={c.batch_first}"
        if self._dropout != 0:
            text += f", dropout={self._dropout}"
        if c.bidirectional is not False:
            text += f", bidirectional={c.bidirectional}"
        if self._dtype != np.float32:
            text += f", dtype={self._dtype}"
        if self._weights_dtype in _QUANTIZED_CLASSES:
            text += f", weights_dtype={self._weights_dtype!r}"
        return f"LSTM({text})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"fastlstm.LSTM is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"fastlstm.LSTM is immutable; cannot delete {name!r}")

    def __reduce__(self) -> Tuple[Any, ...]:
        if self._weights_dtype in _QUANTIZED_CLASSES:
            return (LSTM._from_pickle, (self._config, self._weights, self._dropout, self._weights_dtype, self._scales))
        return (LSTM._from_pickle, (self._config, self._weights, self._dropout))

    # ----------------------------------------------------------------------------- forward
    def __call__(
        self, input: Any, hx: Optional[State] = None, *, lengths: Optional[Any] = None, num_threads: int = 0
    ) -> Tuple[Any, State]:
        """Run the LSTM: `output, (h_n, c_n) = model(input, (h0, c0))`, as nn.LSTM.

        input: (T, B, input_size), (B, T, input_size) with batch_first, or unbatched (T, input_size);
            a numpy array, a CPU torch tensor, or a torch PackedSequence.
        hx: optional (h0, c0) of shapes (num_layers * D, B, H_out) and (num_layers * D, B, hidden_size)
            whatever batch_first says; 2-D for unbatched input. Missing means zeros.
        lengths: optional valid length of each sequence (PackedSequence semantics): outputs past a
            sequence's end are zero and h_n/c_n hold its state at its own last step.

        num_threads: cores this call may use; 0 means `fastlstm.get_num_threads()`. Small work
            runs on the calling thread whatever this says.

        Returns numpy arrays for numpy input, tensors for tensors, a PackedSequence for one.
        """
        if type(input) is np.ndarray:
            if lengths is None and input.ndim == 3 and (hx is None or _is_numpy_array_pair(hx)):
                # The hot path of a service, kept to one Python frame. The extension checks every
                # shape, dtype, stride and alignment itself and refuses before computing anything;
                # _forward_numpy then raises nn.LSTM's message (or copies an array the kernel cannot
                # read in place).
                h0, c0 = (None, None) if hx is None else hx
                try:
                    output, h_n, c_n = self._packed_forward(input, self._batch_first, h0, c0, None, None, None, None, num_threads)
                    return output, (h_n, c_n)
                except (TypeError, ValueError):
                    pass
            return self._forward_numpy(input, hx, lengths, num_threads)
        if _interop.is_packed_sequence(input):
            return self._forward_packed(input, hx, lengths, num_threads)
        if _interop.is_tensor(input):
            torch = _interop.loaded_torch()
            output, (h_n, c_n) = self(_interop.tensor_to_numpy(input, "input"), hx, lengths=lengths, num_threads=num_threads)
            return torch.from_numpy(output), (torch.from_numpy(h_n), torch.from_numpy(c_n))
        if isinstance(input, np.ndarray):  # a subclass: the checked path
            return self._forward_numpy(input, hx, lengths, num_threads)
        raise TypeError(f"input must be a numpy array, a torch tensor or a PackedSequence, got {type(input).__name__}")

    forward = __call__

    def initial_state(self, batch_size: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Zero (h0, c0) in nn.LSTM's hx shapes, to start a stream: `output, state = model(chunk, state)`
        over consecutive chunks gives the same result as one call over the whole sequence.
        `batch_size=None` gives the 2-D states of unbatched input."""
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 0):
            raise ValueError(f"batch_size must be a non-negative int or None, got {batch_size!r}")
        return (
            np.zeros(self._config.state_shape(batch_size, cell=False), self._dtype),
            np.zeros(self._config.state_shape(batch_size, cell=True), self._dtype),
        )

    def step(
        self,
        input: np.ndarray,
        state: Optional[Tuple[np.ndarray, np.ndarray]] = None,
        *,
        out: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
        num_threads: int = 0,
    ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """One time step for streaming, on numpy arrays: `input` is (B, input_size) or unbatched
        (input_size,); `state` is (h, c) as nn.LSTM's hx (2-D for unbatched), None for zeros.
        Returns `(output, (h_n, c_n))` with output (B, D * H_out) or (D * H_out,).

        `out=(output, h_n, c_n)` writes into caller-owned C-contiguous arrays and allocates nothing;
        h_n/c_n may be the very arrays of `state`, updating the stream's state in place.
        Same as `model(input[None], state)` with the time axis dropped."""
        if out is not None and type(input) is np.ndarray:
            # The streaming fast path. The extension checks every shape, dtype, contiguity and
            # overlap; if it refuses anything, the checked path below runs and raises the precise
            # error (or copies an input the kernel cannot read in place). Nothing is written before
            # the checks pass, so trying first is safe.
            try:
                h0, c0 = state  # type: ignore[misc]
                output, h_n, c_n = out
                self._packed_step(input, h0, c0, output, h_n, c_n, num_threads)
                return output, (h_n, c_n)
            except (TypeError, ValueError):
                pass
        return self._checked_step(input, state, out, num_threads)

    def _checked_step(
        self,
        input: Any,
        state: Optional[Tuple[np.ndarray, np.ndarray]],
        out: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]],
        num_threads: int,
    ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        if not isinstance(input, np.ndarray):
            raise TypeError(f"step takes a numpy array, got {type(input).__name__}; use model(...) for tensors")
        if input.dtype is not self._dtype:
            check_array_dtype(input, "input", self._dtype, "model")
        h0, c0 = (None, None) if state is None else state
        if not input.flags.carray:
            input = as_kernel_readable(input)
        if out is None:
            output, h_n, c_n = self._packed.step(input, h0, c0, num_threads=num_threads)
            return output, (h_n, c_n)
        if not isinstance(out, (tuple, list)):
            raise TypeError(f"out must be a tuple (output, h_n, c_n) of numpy arrays, got {type(out).__name__}")
        if len(out) != 3:
            raise TypeError(f"out must be a tuple of 3 arrays (output, h_n, c_n), got {len(out)} items")
        output, h_n, c_n = out
        self._packed.step(input, h0, c0, output, h_n, c_n, num_threads)
        return output, (h_n, c_n)

    def _forward_packed(self, packed: Any, hx: Optional[State], lengths: Optional[Any], num_threads: int) -> Tuple[Any, State]:
        if lengths is not None:
            raise ValueError("lengths must not be given with a PackedSequence, which carries its own")
        padded, seq_lengths = _interop.unpack_sequence(packed)
        x = _interop.tensor_to_numpy(padded, "input")
        output, (h_n, c_n) = self._forward_numpy(x, hx, seq_lengths, num_threads, time_major=True)
        torch = _interop.loaded_torch()
        return _interop.repack_sequence(packed, output), (torch.from_numpy(h_n), torch.from_numpy(c_n))

    def _forward_numpy(
        self, x: np.ndarray, hx: Optional[State], lengths: Optional[Any], num_threads: int = 0, time_major: bool = False
    ) -> Tuple[np.ndarray, State]:
        """The checked path (the fast one is in __call__). `time_major` overrides batch_first (a
        PackedSequence unpacks time-major)."""
        batch_first = self._batch_first and not time_major
        if x.dtype is not self._dtype:
            check_array_dtype(x, "input", self._dtype, "model")
        config = self._config
        unbatched = x.ndim == 2
        if unbatched:
            x = x[:, None, :]
            batch_first = False
        elif x.ndim != 3:
            raise ValueError(
                f"LSTM: expected input to be 2-D (unbatched) or 3-D (batched), got {x.ndim}-D input of shape {x.shape}"
            )
        check_input_size(x.shape[2], config.input_size)
        steps, batch = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
        if steps == 0:
            raise ValueError(f"expected a sequence length of at least 1, got input of shape {x.shape}")
        x = as_kernel_readable(x)
        h0 = c0 = None
        if hx is not None:
            state_batch = None if unbatched else batch
            shapes = (config.state_shape(state_batch, cell=False), config.state_shape(state_batch, cell=True))
            h0, c0 = checked_state_pair(hx, ("h0", "c0"), shapes, self._dtype, "model", unbatched)
            if unbatched:
                h0, c0 = h0[:, None, :], c0[:, None, :]  # the kernel's batched shapes, as views
        seq_lengths = None if lengths is None else checked_lengths(lengths, batch, steps, unbatched)
        output, h_n, c_n = self._packed.forward(x, batch_first, h0, c0, seq_lengths, None, None, None, num_threads)
        if unbatched:
            return output[:, 0], (h_n[:, 0], c_n[:, 0])
        return output, (h_n, c_n)


def contained_modules_hint(module: Any, kind: str, method: str) -> str:
    """For `method` given a whole model: ": net.lstm is an nn.LSTM: pass it, or
    fastlstm.convert(net, example) for the whole model", naming every nn.`kind` inside `module` by
    its attribute path ("net" standing for the model; list items as net.layers[0]). Empty if
    `module` is no torch module or holds none."""
    torch = _interop.loaded_torch()
    if torch is None or not isinstance(module, torch.nn.Module):
        return ""
    wanted = getattr(torch.nn, kind)
    paths = []
    for name, child in module.named_modules():
        if name and isinstance(child, wanted):
            parts = name.split(".")
            paths.append("net" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts))
    if not paths:
        return ""
    whole = "or fastlstm.convert(net, example) for the whole model"
    if len(paths) == 1:
        return f": {paths[0]} is an nn.{kind}: pass it, {whole}"
    shown = ", ".join(paths[:12]) + (f", ... ({len(paths) - 12} more)" if len(paths) > 12 else "")
    return (f": the model holds {len(paths)} nn.{kind} modules ({shown}): pass one of them, e.g. "
            f"{method}({paths[0]}), {whole}")


def _is_numpy_array_pair(hx: Any) -> bool:
    """Whether hx is a tuple of exactly two numpy arrays (not subclasses), which the extension
    checks itself: only such states may take the fast path of a call."""
    return type(hx) is tuple and len(hx) == 2 and type(hx[0]) is np.ndarray and type(hx[1]) is np.ndarray


def _random_weights(config: LSTMConfig, dtype: np.dtype, seed: Optional[int]) -> Dict[str, np.ndarray]:
    """nn.LSTM's initialisation: every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(config.hidden_size)
    weights = {}
    for name, shape in config.parameter_shapes().items():
        array = rng.uniform(-bound, bound, size=shape).astype(dtype)
        array.flags.writeable = False
        weights[name] = array
    return weights


def load(
    path: Union[str, os.PathLike], prefix: Optional[str] = None, batch_first: Optional[bool] = None
) -> Union[LSTM, "Model"]:
    """Load an LSTM from a weights file: `.safetensors` or `.npz` (torch-free) or `.pt`/`.pth`
    (via `torch.load(..., weights_only=True)`; a state_dict, a whole model's, or a checkpoint
    nesting one). `batch_first=None` uses the file's own setting (fastlstm files) or False.
    A whole model saved by `fastlstm.convert(...).save` loads as a `fastlstm.Model`.

    A weights file is served as its LSTM alone: if it holds other model tensors (a whole model's
    state_dict: `linear.weight`...), a UserWarning names them (the first 12, then a count) and
    points at `fastlstm.convert(module, example)` for the whole model. A training checkpoint's
    other entries (optimizer or scheduler state, `epoch`, `loss`...) are not model parameters:
    the warning only counts them, by their top-level names, and they alone cause no warning."""
    from ._program_file import is_program_file, load_program  # here: _program_file imports this module

    if is_program_file(path):
        return load_program(path, prefix, batch_first)
    if is_quantized_file(path):
        config, weights, scales, weights_dtype = load_quantized(path, prefix, batch_first)
        return LSTM._from_quantized(config, weights, scales, weights_dtype)
    config, weights = load_config_and_weights(path, prefix=prefix, batch_first=batch_first)
    return LSTM._from_validated(config, weights)
