"""How the LSTMs and PackedSequences of a module are captured whole by torch.export.

torch.export traces `nn.LSTM` through its decomposition into one cell per time step, which fixes
the sequence length to the example's; PackedSequence is worse, its data has a size that depends
on the lengths' values. So while a module is captured, fastlstm swaps in operations of its own
(torch custom ops in the `fastlstm` namespace) whose shape rules keep every size symbolic:

* `nn.LSTM.forward` and `nn.LSTMCell.forward` call `fastlstm::lstm` / `fastlstm::lstm_cell` with
  the module's parameters and hyperparameters (batch_first included), so the whole recurrence is
  one node of the graph, with the states that were passed in and the (h_n, c_n) that come out.
* torch's `_VF._pack_padded_sequence` / `_VF._pad_packed_sequence`, which pack_padded_sequence
  and pad_packed_sequence call whatever name the user imported them under, become
  `fastlstm::pack_padded` / `fastlstm::pad_packed`. The "packed data" is the padded batch,
  time-major, and `batch_sizes` is torch's own (its length, the longest sequence, is a size only
  known per call: an unbacked symbol). The rest of torch's packing code (sorting by length,
  restoring the order of h_n) is traced as ordinary operations.

The patches are class-level and last only for the capture (`capture_patches`), under CAPTURE_LOCK.
They act only in the capturing thread: another thread running torch models meanwhile gets
torch's own code. torch.export only runs the custom ops' shape rules; the LSTM and LSTMCell
kernels compute torch's result anyway, the packing ones refuse to run.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["capture_patches", "capturing", "CAPTURE_LOCK", "CAPTURE_OPS"]

# One conversion at a time per process: the patches (here and in state_watch) and the warning
# filters a conversion sets are global. Held by torch_module for a whole conversion.
CAPTURE_LOCK = threading.RLock()
_PACKED_CAPTURE_ONLY = "fastlstm's packed-sequence operations only run inside fastlstm.convert (torch.export)"

# The patches are class-level, but act only in the thread that is capturing: any other thread
# running torch models meanwhile gets torch's own code.
_capture_thread = threading.local()
_TORCH_LSTM_FORWARD = nn.LSTM.forward
_TORCH_LSTM_CELL_FORWARD = nn.LSTMCell.forward
_VARIABLE_FUNCTIONS = torch._C._VariableFunctions


def capturing() -> bool:
    """True in the thread running fastlstm.convert's capture (and while TorchDynamo traces, which
    is constant-folded first so that Dynamo never reads the thread-local)."""
    return torch.compiler.is_compiling() or getattr(_capture_thread, "active", False)


# ----------------------------------------------------------------------------------- LSTM
@torch.library.custom_op("fastlstm::lstm", mutates_args=())
def lstm_op(
    input: Tensor,
    h0: Optional[Tensor],
    c0: Optional[Tensor],
    batch_sizes: Optional[Tensor],
    weights: List[Tensor],
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bias: bool,
    batch_first: bool,
    bidirectional: bool,
    proj_size: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    """nn.LSTM's forward; with batch_sizes, over a padded time-major batch (see module docstring).
    Captures only run the shape rules; this kernel computes torch's result for unpacked input."""
    if batch_sizes is not None:
        raise NotImplementedError(_PACKED_CAPTURE_ONLY)
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(0 if batch_first else 1)
    if h0 is None:
        batch = x.shape[0] if batch_first else x.shape[1]
        directions = 2 if bidirectional else 1
        h0 = x.new_zeros(num_layers * directions, batch, proj_size or hidden_size)
        c0 = x.new_zeros(num_layers * directions, batch, hidden_size)
    elif not batched:
        h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
    output, h_n, c_n = _VARIABLE_FUNCTIONS.lstm(x, (h0, c0), weights, bias, num_layers, 0.0, False, bidirectional,
                                                batch_first)
    if not batched:
        output, h_n, c_n = output.squeeze(0 if batch_first else 1), h_n.squeeze(1), c_n.squeeze(1)
    return output.clone(), h_n.clone(), c_n.clone()


@lstm_op.register_fake
def _lstm_shapes(input, h0, c0, batch_sizes, weights, input_size, hidden_size, num_layers, bias,
                 batch_first, bidirectional, proj_size):
    directions = 2 if bidirectional else 1
    h_out = proj_size if proj_size > 0 else hidden_size
    torch._check(input.dim() in (2, 3), lambda: f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
    torch._check(input.shape[-1] == input_size,
                 lambda: f"input.size(-1) must be equal to input_size. Expected {input_size}, got {input.shape[-1]}")
    if input.dim() == 2:  # unbatched (T, input_size)
        steps = input.shape[0]
        output = input.new_empty((steps, directions * h_out))
        state_lead: Tuple = (num_layers * directions,)
    else:
        steps, batch = (input.shape[1], input.shape[0]) if batch_first else (input.shape[0], input.shape[1])
        output = input.new_empty((batch, steps, directions * h_out) if batch_first else (steps, batch, directions * h_out))
        state_lead = (num_layers * directions, batch)
    if h0 is not None:
        # the states' sizes must agree with the input's and the module's (this ties their batch
        # symbol to the input's and fixes the others)
        for state, size, name in ((h0, h_out, "h0"), (c0, hidden_size, "c0")):
            torch._check(state.dim() == len(state_lead) + 1, lambda: f"{name} must be {len(state_lead) + 1}-D")
            torch._check(state.shape[0] == num_layers * directions,
                         lambda: f"{name}.size(0) must be num_layers * num_directions = {num_layers * directions}")
            if len(state_lead) == 2:
                torch._check(state.shape[1] == state_lead[1], lambda: f"{name}'s batch size must match the input's")
            torch._check(state.shape[-1] == size, lambda: f"{name}.size(-1) must be {size}")
    return output, input.new_empty(state_lead + (h_out,)), input.new_empty(state_lead + (hidden_size,))


def _lstm_forward(self: nn.LSTM, input, hx=None):
    """nn.LSTM.forward during a capture: one fastlstm::lstm node."""
    if not capturing():
        return _TORCH_LSTM_FORWARD(self, input, hx)
    weights = [getattr(self, name) for name in self._flat_weights_names]
    hyper = (self.input_size, self.hidden_size, self.num_layers, self.bias)
    if isinstance(input, PackedSequence):
        data, batch_sizes, sorted_indices, unsorted_indices = input
        h0 = c0 = None
        if hx is not None:
            h0, c0 = hx
            if sorted_indices is not None:  # as nn.LSTM.permute_hidden
                h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        output, h_n, c_n = torch.ops.fastlstm.lstm(
            data, h0, c0, batch_sizes, weights, *hyper, False, self.bidirectional, self.proj_size)
        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)
    h0, c0 = (None, None) if hx is None else hx
    output, h_n, c_n = torch.ops.fastlstm.lstm(
        input, h0, c0, None, weights, *hyper, self.batch_first, self.bidirectional, self.proj_size)
    return output, (h_n, c_n)


# ----------------------------------------------------------------------------------- LSTMCell
@torch.library.custom_op("fastlstm::lstm_cell", mutates_args=())
def lstm_cell_op(
    input: Tensor,
    h0: Optional[Tensor],
    c0: Optional[Tensor],
    weights: List[Tensor],
    input_size: int,
    hidden_size: int,
    bias: bool,
) -> Tuple[Tensor, Tensor]:
    """nn.LSTMCell's forward (captures only run the shape rules; this computes torch's result)."""
    batched = input.dim() == 2
    x = input if batched else input.unsqueeze(0)
    if h0 is None:
        h0 = c0 = x.new_zeros(x.shape[0], hidden_size)
    elif not batched:
        h0, c0 = h0.unsqueeze(0), c0.unsqueeze(0)
    biases = weights[2:] if bias else [None, None]
    h, c = _VARIABLE_FUNCTIONS.lstm_cell(x, (h0, c0), weights[0], weights[1], *biases)
    if not batched:
        h, c = h.squeeze(0), c.squeeze(0)
    return h.clone(), c.clone()


@lstm_cell_op.register_fake
def _lstm_cell_shapes(input, h0, c0, weights, input_size, hidden_size, bias):
    torch._check(input.dim() in (1, 2), lambda: f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
    torch._check(input.shape[-1] == input_size,
                 lambda: f"input has inconsistent input_size: got {input.shape[-1]} expected {input_size}")
    shape = tuple(input.shape[:-1]) + (hidden_size,)
    if h0 is not None:
        for state in (h0, c0):
            torch._check(state.dim() == input.dim(), lambda: "LSTMCell: states must have the input's rank")
            for axis in range(input.dim()):
                torch._check(state.shape[axis] == shape[axis], lambda: "LSTMCell: states must be (batch, hidden_size)")
    return input.new_empty(shape), input.new_empty(shape)


def _lstm_cell_forward(self: nn.LSTMCell, input, hx=None):
    if not capturing():
        return _TORCH_LSTM_CELL_FORWARD(self, input, hx)
    weights = [self.weight_ih, self.weight_hh] + ([self.bias_ih, self.bias_hh] if self.bias else [])
    h0, c0 = (None, None) if hx is None else hx
    h, c = torch.ops.fastlstm.lstm_cell(input, h0, c0, weights, self.input_size, self.hidden_size, self.bias)
    return h, c


# ----------------------------------------------------------------------------------- packing
@torch.library.custom_op("fastlstm::pack_padded", mutates_args=())
def pack_padded_op(input: Tensor, lengths: Tensor, batch_first: bool) -> Tuple[Tensor, Tensor]:
    """(padded data, time-major; torch's batch_sizes) for pack_padded_sequence."""
    raise NotImplementedError(_PACKED_CAPTURE_ONLY)


@pack_padded_op.register_fake
def _pack_padded_shapes(input, lengths, batch_first):
    torch._check(input.dim() >= 2, lambda: "pack_padded_sequence needs input of at least 2 dimensions")
    steps = input.shape[1] if batch_first else input.shape[0]
    batch = input.shape[0] if batch_first else input.shape[1]
    longest = torch.library.get_ctx().new_dynamic_size()
    # batch_sizes has one entry per step of the longest sequence: at most the padded length
    torch._check(longest <= steps)
    data = input.new_empty((steps, batch) + tuple(input.shape[2:]))
    return data, lengths.new_empty((longest,), dtype=torch.int64)


@torch.library.custom_op("fastlstm::pad_packed", mutates_args=())
def pad_packed_op(
    input: Tensor, batch_sizes: Tensor, batch_first: bool, padding_value: float, total_length: int
) -> Tuple[Tensor, Tensor]:
    """pad_packed_sequence of our packed representation."""
    raise NotImplementedError(_PACKED_CAPTURE_ONLY)


@pad_packed_op.register_fake
def _pad_packed_shapes(input, batch_sizes, batch_first, padding_value, total_length):
    batch = input.shape[1]
    rest = tuple(input.shape[2:])
    shape = (batch, total_length) + rest if batch_first else (total_length, batch) + rest
    return input.new_empty(shape), batch_sizes.new_empty((batch,), dtype=torch.int64)


def _pack_padded(input, lengths, batch_first):
    if not capturing():
        return _VARIABLE_FUNCTIONS._pack_padded_sequence(input, lengths, batch_first)
    return torch.ops.fastlstm.pack_padded(input, lengths, batch_first)


def _pad_packed(data, batch_sizes, batch_first, padding_value, total_length):
    if not capturing():
        return _VARIABLE_FUNCTIONS._pad_packed_sequence(data, batch_sizes, batch_first, padding_value, total_length)
    return torch.ops.fastlstm.pad_packed(data, batch_sizes, batch_first, float(padding_value), total_length)


CAPTURE_OPS = {
    "fastlstm.lstm.default": "lstm",
    "fastlstm.lstm_cell.default": "lstm_cell",
    "fastlstm.pack_padded.default": "pack_padded",
    "fastlstm.pad_packed.default": "pad_packed",
}

_MISSING = object()


@contextlib.contextmanager
def capture_patches() -> Iterator[None]:
    """Route nn.LSTM, nn.LSTMCell and PackedSequence packing through fastlstm's ops for the
    duration of one capture. The caller holds CAPTURE_LOCK."""
    vf = torch._VF
    _capture_thread.active = True
    saved_lstm, saved_cell = nn.LSTM.forward, nn.LSTMCell.forward
    saved_vf = {name: vars(vf).get(name, _MISSING) for name in ("_pack_padded_sequence", "_pad_packed_sequence")}
    nn.LSTM.forward, nn.LSTMCell.forward = _lstm_forward, _lstm_cell_forward
    setattr(vf, "_pack_padded_sequence", _pack_padded)
    setattr(vf, "_pad_packed_sequence", _pad_packed)
    try:
        yield
    finally:
        _capture_thread.active = False
        nn.LSTM.forward, nn.LSTMCell.forward = saved_lstm, saved_cell
        for name, value in saved_vf.items():
            if value is _MISSING:
                vars(vf).pop(name, None)
            else:
                setattr(vf, name, value)
