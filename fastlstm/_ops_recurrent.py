"""Recurrent operations on fastlstm's kernels: nn.LSTM, nn.LSTMCell and PackedSequence.

Each distinct set of weights is packed once, when the program is loaded, into a fastlstm.LSTM or
LSTMCell shared by every step that uses it (an LSTMCell decoder unrolled for 20 steps packs its
cell once). A PackedSequence is never materialised: the converter replaces it by the padded,
time-major data plus torch's own `batch_sizes`, so

    pack_padded  (input, lengths)          -> (data (T, B, *), batch_sizes)
    lstm         (data, batch_sizes, ...)  -> outputs zero past each sequence's end
    pad_packed   (data, batch_sizes, ...)  -> torch's padded output and lengths

give exactly what torch's pack_padded_sequence / nn.LSTM / pad_packed_sequence give, and the
LSTM runs each sequence to its own length with per-sequence lengths in the kernel.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np

from ._cell import LSTMCell
from ._config import LSTMConfig
from ._model import LSTM
from ._ops_base import Builder, StepArgs, StepFn
from ._quantize import QUANTIZED_DTYPES, check_stored_weights, is_matrix_name

__all__ = ["BUILDERS"]


def _stored_weights(a: StepArgs) -> List[np.ndarray]:
    weights = a.raw("weights")
    if not isinstance(weights, list) or not all(isinstance(w, np.ndarray) for w in weights):
        raise a.fail("weights must be a list of stored weights")
    return weights


def _packed_parameters(a: StepArgs, names: List[str], weights: List[np.ndarray]) -> Tuple[str, Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(weights_dtype, nn.LSTM-named arrays, int8 scales by name) of an LSTM step's stored weights:
    float32 or float64 throughout, or a quantized model's matrices (bf16 bits or int8 with their
    scales, checked against the config) beside float32 biases."""
    arrays = dict(zip(names, weights))
    matrix_dtypes = {arrays[n].dtype for n in names if is_matrix_name(n)}
    quantized = [QUANTIZED_DTYPES[d] for d in matrix_dtypes if d in QUANTIZED_DTYPES]
    if not quantized:
        dtypes = {w.dtype for w in weights}
        if len(dtypes) != 1:
            raise a.fail(f"weights must share one dtype, got {sorted(map(str, dtypes))}")
        return str(weights[0].dtype), arrays, {}
    if len(matrix_dtypes) != 1:
        raise a.fail(f"the weight matrices must share one format, got {sorted(map(str, matrix_dtypes))}")
    weights_dtype = quantized[0]
    stored_names = a.stored_names("weights")
    scales = {n: a.scales_of(stored) for n, stored in zip(names, stored_names)
              if weights_dtype == "int8" and is_matrix_name(n) and stored is not None}
    return weights_dtype, arrays, scales


def _packed_lstm(a: StepArgs, config: LSTMConfig, names: List[str], weights: List[np.ndarray]) -> LSTM:
    weights_dtype, arrays, scales = _packed_parameters(a, names, weights)
    if weights_dtype in ("float32", "float64"):
        return LSTM(
            config.input_size, config.hidden_size, config.num_layers, config.bias, config.batch_first,
            bidirectional=config.bidirectional, proj_size=config.proj_size, dtype=weights[0].dtype, weights=arrays)
    checked, checked_scales = check_stored_weights(config.parameter_shapes(), arrays, scales, weights_dtype, a.where)
    return LSTM._from_quantized(config, checked, checked_scales, weights_dtype)


def _shared(a: StepArgs, key: Any, make: Any) -> Any:
    if key not in a.cache:
        try:
            a.cache[key] = make()
        except (TypeError, ValueError) as exc:
            raise a.fail(f"invalid weights: {exc}") from None
    return a.cache[key]


def _checked_config(a: StepArgs, make: Any) -> LSTMConfig:
    try:
        return make()
    except (TypeError, ValueError) as exc:
        raise a.fail(str(exc)) from None


def lengths_from_batch_sizes(batch_sizes: np.ndarray, batch: int) -> np.ndarray:
    """Per-sequence lengths (in the packed, sorted order) from torch's batch_sizes: sequence b
    runs for as many steps as have more than b sequences."""
    return np.count_nonzero(batch_sizes[:, None] > np.arange(batch)[None, :], axis=0).astype(np.int64)


def _build_lstm(a: StepArgs) -> StepFn:
    weights = _stored_weights(a)
    batch_first = a.flag("batch_first")
    config = _checked_config(a, lambda: LSTMConfig(
        a.integer("input_size"), a.integer("hidden_size"), a.integer("num_layers"), a.flag("bias"),
        batch_first, a.flag("bidirectional"), a.integer("proj_size"),
    ))
    names = list(config.parameter_shapes())
    if len(names) != len(weights):
        raise a.fail(f"{config} takes {len(names)} weights, got {len(weights)}")
    key = ("lstm", tuple(id(w) for w in weights), config)
    lstm = _shared(a, key, lambda: _packed_lstm(a, config, names, weights))
    x = a.tensor("input")
    h0, c0 = a.optional_tensor("h0"), a.optional_tensor("c0")
    if (h0 is None) != (c0 is None):
        raise a.fail("h0 and c0 must both be given or both be absent")
    batch_sizes = a.optional_tensor("batch_sizes")
    output_slot, h_slot, c_slot = a.outs(3)

    if batch_sizes is None:
        def run(env):
            state = None if h0 is None else (h0(env), c0(env))
            env[output_slot], (env[h_slot], env[c_slot]) = lstm(x(env), state)
        return run

    if batch_first:
        raise a.fail("a packed sequence's data is time-major: batch_first must be False")

    def run_packed(env):
        data = x(env)
        state = None if h0 is None else (h0(env), c0(env))
        lengths = lengths_from_batch_sizes(batch_sizes(env), data.shape[1])
        env[output_slot], (env[h_slot], env[c_slot]) = lstm(data, state, lengths=lengths)
    return run_packed


def _build_lstm_cell(a: StepArgs) -> StepFn:
    weights = _stored_weights(a)
    input_size, hidden_size, bias = a.integer("input_size"), a.integer("hidden_size"), a.flag("bias")
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    if len(names) != len(weights):
        raise a.fail(f"an LSTMCell with bias={bias} takes {len(names)} weights, got {len(weights)}")
    key = ("lstm_cell", tuple(id(w) for w in weights))
    # A cell is a one-layer LSTM under the cell's parameter names (weight_ih -> weight_ih_l0).
    config = _checked_config(a, lambda: LSTMConfig(input_size, hidden_size, 1, bias))
    cell = _shared(a, key, lambda: LSTMCell._from_lstm(
        _packed_lstm(a, config, [f"{name}_l0" for name in names], weights)))
    x = a.tensor("input")
    h0, c0 = a.optional_tensor("h0"), a.optional_tensor("c0")
    if (h0 is None) != (c0 is None):
        raise a.fail("h0 and c0 must both be given or both be absent")
    h_slot, c_slot = a.outs(2)

    def run(env):
        env[h_slot], env[c_slot] = cell(x(env), None if h0 is None else (h0(env), c0(env)))
    return run


def _build_pack_padded(a: StepArgs) -> StepFn:
    x, get_lengths, batch_first = a.tensor("input"), a.tensor("lengths"), a.flag("batch_first")
    data_slot, sizes_slot = a.outs(2)

    def run(env):
        padded, lengths = x(env), np.asarray(get_lengths(env))
        if padded.ndim < 2:
            raise ValueError(f"pack_padded_sequence needs input of at least 2 dimensions, got shape {padded.shape}")
        steps, batch = (padded.shape[1], padded.shape[0]) if batch_first else padded.shape[:2]
        if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
            raise ValueError(f"lengths must be a 1-D integer array, got shape {lengths.shape} and dtype {lengths.dtype}")
        # torch's own checks and messages (aten/src/ATen/native/PackedSequence.cpp)
        if lengths.shape[0] != batch:
            raise ValueError(f"Expected `len(lengths)` to be equal to batch_size, but got {lengths.shape[0]} (batch_size={batch})")
        if batch and lengths[-1] <= 0:
            raise ValueError("Length of all samples has to be greater than 0, but found an element in 'lengths' that is <= 0")
        if np.any(lengths[1:] > lengths[:-1]):
            raise ValueError(
                "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can "
                "pass `enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this "
                "requirement if you do not need ONNX exportability."
            )
        if batch and lengths[0] > steps:
            raise ValueError(f"lengths must not exceed the sequence length {steps}, got {int(lengths[0])}")
        longest = int(lengths[0]) if batch else 0
        env[data_slot] = np.swapaxes(padded, 0, 1) if batch_first else padded
        env[sizes_slot] = np.count_nonzero(lengths[None, :] > np.arange(longest)[:, None], axis=1).astype(np.int64)
    return run


def _build_pad_packed(a: StepArgs) -> StepFn:
    x, get_sizes, batch_first = a.tensor("input"), a.tensor("batch_sizes"), a.flag("batch_first")
    padding_value, total_length = a.number("padding_value", 0.0), a.value("total_length")
    padded_slot, lengths_slot = a.outs(2)

    def run(env):
        data, batch_sizes, steps = x(env), get_sizes(env), total_length(env)
        if steps < batch_sizes.shape[0]:
            raise ValueError(
                f"Expected total_length to be at least the length of the longest sequence in input, but got "
                f"total_length={steps} and max sequence length being {batch_sizes.shape[0]}"
            )
        batch = data.shape[1]
        lengths = lengths_from_batch_sizes(batch_sizes, batch)
        if steps <= data.shape[0]:
            data = data[:steps]
        else:
            extra = np.zeros((steps - data.shape[0],) + data.shape[1:], data.dtype)
            data = np.concatenate([data, extra], axis=0)
        valid = np.arange(steps)[:, None] < lengths[None, :]
        valid = valid.reshape(valid.shape + (1,) * (data.ndim - 2))
        padded = np.where(valid, data, np.asarray(padding_value, data.dtype))
        env[padded_slot] = np.swapaxes(padded, 0, 1) if batch_first else padded
        env[lengths_slot] = lengths
    return run


BUILDERS: Dict[str, Builder] = {
    "lstm": _build_lstm,
    "lstm_cell": _build_lstm_cell,
    "pack_padded": _build_pack_padded,
    "pad_packed": _build_pad_packed,
}
