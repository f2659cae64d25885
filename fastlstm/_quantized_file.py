"""Quantized LSTMs on disk: a `.safetensors` file with the weights as they are stored in memory.

bf16 matrices are BF16 tensors (safetensors' own bfloat16), int8 matrices I8 tensors with their
float32 scales beside them as `<name>.scales`, biases F32; the metadata is an LSTM file's (config,
format version) plus `fastlstm.weights_dtype` and, for int8, `fastlstm.int8_group`. numpy has no
bfloat16, and safetensors' numpy API refuses BF16, so the file is written byte by byte
(`_files.write_raw_safetensors`) and read through safetensors' own parser (which checks the header
and that the tensors tile the data exactly) before the BF16 tensors are read as raw bytes at the
offsets it accepted (`_files.read_bf16_tensors`).

Everything the file declares is checked before anything is read: the metadata against the size
limits, then every tensor's name, dtype and shape against what the config implies.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from ._config import LSTMConfig
from ._files import FORMAT_VERSION, METADATA_PREFIX, _check_regular_file, _fastlstm_metadata, _safetensors_errors
from ._files import as_path, read_bf16_tensors, write_raw_safetensors
from ._quantize import INT8_GROUP, check_stored_weights, is_matrix_name

__all__ = ["is_quantized_file", "write_quantized_safetensors", "load_quantized"]

_WEIGHTS_DTYPE_KEY = "weights_dtype"
_GROUP_KEY = "int8_group"


def write_quantized_safetensors(path: Any, weights: Dict[str, np.ndarray], scales: Dict[str, np.ndarray],
                                weights_dtype: str, config: LSTMConfig) -> None:
    """Write a quantized model's stored arrays (already checked: the model holds them)."""
    path = as_path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"fastlstm saves .safetensors files only; got {str(path)!r}: name it "
                         f"{path.stem + '.safetensors'!r}")
    tensors: Dict[str, np.ndarray] = {}
    for name in config.parameter_shapes():
        tensors[name] = weights[name]
        if name in scales:
            tensors[name + ".scales"] = scales[name]
    metadata = {METADATA_PREFIX + k: v for k, v in config.to_metadata().items()}
    metadata[METADATA_PREFIX + "format_version"] = FORMAT_VERSION
    metadata[METADATA_PREFIX + _WEIGHTS_DTYPE_KEY] = weights_dtype
    if weights_dtype == "int8":
        metadata[METADATA_PREFIX + _GROUP_KEY] = str(INT8_GROUP)

    write_raw_safetensors(path, tensors, metadata)


def is_quantized_file(path: Any) -> bool:
    """True if `path` is a regular .safetensors file whose fastlstm metadata names a reduced-precision
    weights_dtype. Reads only the header; anything unreadable is left to the regular loader."""
    try:
        path = as_path(path)
        if path.suffix.lower() != ".safetensors" or not path.is_file():
            return False
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            raw = handle.metadata() or {}
        return raw.get(METADATA_PREFIX + _WEIGHTS_DTYPE_KEY) is not None
    except Exception:
        return False


def load_quantized(path: Any, prefix: Optional[str], batch_first: Optional[bool]) -> Tuple[LSTMConfig, Dict[str, np.ndarray], Dict[str, np.ndarray], str]:
    """(config, stored weights, int8 scales, weights_dtype) of a file write_quantized_safetensors wrote."""
    from safetensors import safe_open

    path = as_path(path)
    where = repr(str(path))
    if prefix not in (None, ""):
        raise ValueError(f"{where} holds one quantized LSTM under nn.LSTM's own names: prefix does not apply")
    if batch_first is not None and not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be a bool or None, got {type(batch_first).__name__}")
    _check_regular_file(path)
    with _safetensors_errors(path):
        with safe_open(str(path), framework="np") as handle:
            metadata = _fastlstm_metadata(path, handle.metadata() or {}) or {}
            config, weights_dtype = _declared_model(where, metadata)
            if batch_first is not None:
                config = LSTMConfig(config.input_size, config.hidden_size, config.num_layers, config.bias,
                                    bool(batch_first), config.bidirectional, config.proj_size)
            expected = _expected_tensors(config, weights_dtype)
            declared = {key: (handle.get_slice(key).get_dtype(), tuple(handle.get_slice(key).get_shape()))
                        for key in handle.keys()}
            if set(declared) != set(expected):
                raise ValueError(f"{where}: the tensors do not match the {weights_dtype} model its metadata describes: "
                                 f"missing {sorted(set(expected) - set(declared))}, "
                                 f"unexpected {sorted(set(declared) - set(expected))}")
            for key, want in expected.items():
                if declared[key] != want:
                    raise ValueError(f"{where}: tensor {key!r} is declared {declared[key][0]} of shape {declared[key][1]}, "
                                     f"expected {want[0]} of shape {want[1]}")
            arrays = {key: handle.get_tensor(key) for key, (code, _) in expected.items() if code != "BF16"}
    arrays.update(read_bf16_tensors(path, {key: shape for key, (code, shape) in expected.items() if code == "BF16"}))
    weights = {name: arrays[name] for name in config.parameter_shapes()}
    scales = {name: arrays[name + ".scales"] for name in config.parameter_shapes() if name + ".scales" in arrays}
    checked, checked_scales = check_stored_weights(config.parameter_shapes(), weights, scales, weights_dtype, where)
    return config, checked, checked_scales, weights_dtype


def _declared_model(where: str, metadata: Dict[str, str]) -> Tuple[LSTMConfig, str]:
    weights_dtype = metadata.get(_WEIGHTS_DTYPE_KEY)
    if weights_dtype not in ("bfloat16", "int8"):
        raise ValueError(f"{where}: fastlstm.{_WEIGHTS_DTYPE_KEY} must be 'bfloat16' or 'int8', got {weights_dtype!r}")
    if weights_dtype == "int8" and metadata.get(_GROUP_KEY) != str(INT8_GROUP):
        raise ValueError(f"{where}: int8 weights grouped by {metadata.get(_GROUP_KEY)!r} inputs; this fastlstm "
                         f"reads groups of {INT8_GROUP}")
    try:
        config = LSTMConfig.from_metadata(metadata)
        config.check_size(1 if weights_dtype == "int8" else 2)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} has invalid or refused fastlstm metadata: {exc}") from None
    return config, weights_dtype


def _expected_tensors(config: LSTMConfig, weights_dtype: str) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
    matrix_code = "BF16" if weights_dtype == "bfloat16" else "I8"
    expected: Dict[str, Tuple[str, Tuple[int, ...]]] = {}
    for name, shape in config.parameter_shapes().items():
        if not is_matrix_name(name):
            expected[name] = ("F32", shape)
            continue
        expected[name] = (matrix_code, shape)
        if weights_dtype == "int8":
            expected[name + ".scales"] = ("F32", (shape[0], -(-shape[1] // INT8_GROUP)))
    return expected
