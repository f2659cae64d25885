"""Converted models on disk: one `.safetensors` file, the weights as tensors and the program as
JSON in the metadata (key PROGRAM_METADATA_KEY), readable without torch.

The tensors are read through `_files.read_weights_file`, so a program file gets the same
defences as an LSTM weights file (regular files only, every declared size checked against the
limits before any tensor is read, errors that name the file); the program is then parsed and
checked by `_program_format`. The key sits outside the "fastlstm." metadata namespace on purpose:
that namespace describes a single LSTM's configuration, and its reader validates it as one.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

import numpy as np

from ._files import as_path as _as_path, read_weights_file, write_raw_safetensors
from ._program import Model
from ._program_format import PROGRAM_METADATA_KEY

__all__ = ["is_program_file", "load_program", "save_program"]


def is_program_file(path: Any) -> bool:
    """True if `path` is a regular .safetensors file whose metadata holds a fastlstm program.
    Reads only the header; anything unreadable is left to the regular loader to report."""
    try:
        path = _as_path(path)
        if path.suffix.lower() != ".safetensors" or not path.is_file():
            return False
        return _read_metadata(str(path)).get(PROGRAM_METADATA_KEY) is not None
    except Exception:
        return False


def _read_metadata(path: str) -> Dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, framework="np") as handle:
        return dict(handle.metadata() or {})


def load_program(path: Any, prefix: Optional[str] = None, batch_first: Optional[bool] = None) -> Model:
    """Read a converted model written by `Model.save`."""
    path = _as_path(path)
    if prefix is not None or batch_first is not None:
        raise TypeError(
            f"{str(path)!r} holds a whole converted model (fastlstm.Model): prefix and batch_first "
            f"apply only to LSTM weight files"
        )
    arrays, _ = read_weights_file(path, allow_bf16=True)  # checks the file and every declared tensor size first
    read = getattr(arrays, "read", None)
    tensors = read(list(arrays)) if read is not None else {key: np.asarray(arrays[key]) for key in arrays}
    try:
        text = _read_metadata(str(path)).get(PROGRAM_METADATA_KEY)
    except Exception as exc:
        raise ValueError(f"{str(path)!r} could not be read as a safetensors file ({type(exc).__name__}: {exc})") from None
    if text is None:
        raise ValueError(f"{str(path)!r} holds no fastlstm program (metadata key {PROGRAM_METADATA_KEY!r})")
    try:
        return Model(text, tensors)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} holds an invalid fastlstm program: {exc}") from None


def save_program(path: Any, document: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
    """Write the program and its weights (a quantized model's bf16 matrices as BF16 tensors). The
    file is written beside `path` under a unique temporary name and renamed into place, so a service
    reloading the path never reads a half-written file and concurrent writers never collide."""
    path = _as_path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"a converted model is saved as .safetensors; got {str(path)!r}: name it {path.stem + '.safetensors'!r}")
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    write_raw_safetensors(path, weights, {PROGRAM_METADATA_KEY: text})
