"""Torch interop for the call path: tensors and PackedSequence in and out, without importing torch
unless the caller already has (a tensor can only exist if torch is loaded)."""

from __future__ import annotations

import sys
from typing import Any, Optional, Tuple

import numpy as np


def loaded_torch() -> Any:
    """The torch module if the process has imported it, else None."""
    return sys.modules.get("torch")


def is_tensor(value: Any) -> bool:
    torch = loaded_torch()
    return torch is not None and isinstance(value, torch.Tensor)


def is_packed_sequence(value: Any) -> bool:
    torch = loaded_torch()
    return torch is not None and isinstance(value, torch.nn.utils.rnn.PackedSequence)


def tensor_to_numpy(tensor: Any, name: str) -> np.ndarray:
    """A CPU tensor as a numpy view (no copy). fastlstm computes no gradients, so a tensor that
    autograd would track is refused rather than detached: a later .backward() would otherwise fail
    far from here, or silently miss this part of the graph."""
    if tensor.requires_grad and loaded_torch().is_grad_enabled():
        raise TypeError(
            f"{name} requires grad, but fastlstm is inference-only and computes no gradients: call it "
            f"under torch.no_grad() or torch.inference_mode(), or pass {name}.detach()"
        )
    if tensor.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU tensor, got a tensor on {tensor.device} (call .cpu() first)")
    if tensor.is_complex() or not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if tensor.dtype not in (loaded_torch().float32, loaded_torch().float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {tensor.dtype}")
    return tensor.detach().resolve_conj().resolve_neg().numpy()


def unpack_sequence(packed: Any) -> Tuple[Any, np.ndarray]:
    """PackedSequence -> (padded (T, B, *) tensor in the caller's batch order, lengths)."""
    torch = loaded_torch()
    padded, lengths = torch.nn.utils.rnn.pad_packed_sequence(packed, batch_first=False)
    return padded, lengths.numpy().astype(np.int64)


def repack_sequence(like: Any, padded: np.ndarray) -> Any:
    """Pack (T, B, F) outputs with the same batch_sizes and index permutations as `like`, the way
    nn.LSTM returns a PackedSequence: data ordered by step, then by sorted batch position."""
    torch = loaded_torch()
    batch_sizes = like.batch_sizes.numpy()
    sorted_indices: Optional[Any] = like.sorted_indices
    order = np.arange(padded.shape[1]) if sorted_indices is None else sorted_indices.numpy()
    running = np.arange(padded.shape[1])[None, :] < batch_sizes[:, None]  # (T, B) in sorted order
    data = padded[:, order][running]
    return torch.nn.utils.rnn.PackedSequence(
        torch.from_numpy(np.ascontiguousarray(data)),
        like.batch_sizes,
        like.sorted_indices,
        like.unsorted_indices,
    )
