"""What `fastlstm.convert` supports, in the words a user would look for (torch-free, for docs and
error messages). The precise list of ATen operations is `aten_ops.TRANSLATORS`."""

from __future__ import annotations

__all__ = ["SUPPORTED_MODULES", "SUPPORTED_FUNCTIONS", "SUPPORTED_SUMMARY"]

SUPPORTED_MODULES = (
    "nn.LSTM (every option; with or without (h0, c0); PackedSequence via pack_padded_sequence / "
    "pad_packed_sequence with a lengths input)",
    "nn.LSTMCell (also in Python loops over a fixed range)",
    "nn.Linear", "nn.Embedding", "nn.Dropout / nn.Identity (inert)", "nn.ReLU", "nn.ReLU6", "nn.Tanh",
    "nn.Sigmoid", "nn.GELU (both approximations)", "nn.LeakyReLU", "nn.ELU", "nn.SiLU", "nn.Softplus",
    "nn.Hardtanh", "nn.Softmax", "nn.LogSoftmax", "nn.LayerNorm", "nn.RMSNorm", "nn.BatchNorm1d (eval)",
    "nn.Flatten", "nn.Sequential / nn.ModuleList / nested submodules",
)

SUPPORTED_FUNCTIONS = (
    "the functional and method forms of the above (F.relu, torch.tanh, x.sigmoid(), F.normalize, "
    "torch.norm, softmax(dim=...), F.log_softmax, ...)",
    "indexing and slicing (out[:, -1, :], h_n[-1], x[mask], index_select, gather)",
    "view, reshape, flatten, squeeze, unsqueeze, permute, transpose, t, contiguous, expand, flip, "
    "repeat, F.pad (constant)",
    "cat, stack, split, chunk, unbind",
    "arithmetic with tensors and scalars (+ - * / // % **, broadcasting), comparisons, where, "
    "masked_fill, clamp, exp, log, sqrt, abs, ...",
    "matmul / @, mm, bmm, addmm, einsum",
    "sum, mean, amax, amin, max/min (with or without dim), argmax, argmin, any, all, logsumexp, "
    "var, std, cumsum, norms",
    "torch.zeros / ones / full / arange and the *_like forms, sized from the input (x.size(0), len(x))",
    "sizes computed from inputs (x.size(0), x.shape, len(x), arithmetic on them), .to(dtype)",
)

SUPPORTED_SUMMARY = (
    "Supported: " + "; ".join(SUPPORTED_MODULES) + ". Also: " + "; ".join(SUPPORTED_FUNCTIONS) + "."
)
