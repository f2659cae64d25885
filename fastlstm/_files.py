"""Reading and writing LSTM weight files.

Three formats, because users arrive with what they have: ``.pt``/``.pth`` (``torch.save`` of a
state_dict or checkpoint; needs torch), ``.safetensors`` (no torch needed, no pickle, and the
format fastlstm writes, with its config in the file's metadata) and ``.npz`` (numpy only).
Every failure to read a file becomes an error that names the path and says what was expected,
because the underlying libraries' messages (miniz, pickle, zipfile) rarely do.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ._config import SUPPORTED_DTYPES, LSTMConfig
from ._state_dict import check_parameter_sizes, extract_lstm

__all__ = [
    "FORMAT_VERSION",
    "METADATA_PREFIX",
    "SUPPORTED_SUFFIXES",
    "read_weights_file",
    "write_safetensors",
    "write_npz",
    "load_config_and_weights",
]

# Safetensors metadata keys are namespaced so ours never collide with other tools' ("format").
METADATA_PREFIX = "fastlstm."
# Bumped only if the meaning of stored tensors or metadata changes incompatibly.
FORMAT_VERSION = "1"
SUPPORTED_SUFFIXES = (".pt", ".pth", ".safetensors", ".npz")

# torch's messages carry terminal bold codes that garble ours.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

PathLike = Union[str, "os.PathLike[str]"]


def read_weights_file(path: PathLike) -> Tuple[Mapping, Optional[Dict[str, str]]]:
    """Read a weights file into a state_dict-like mapping and fastlstm's metadata, if any.

    The mapping is returned as stored (possibly a nested checkpoint) so that
    :func:`extract_lstm` does the finding and validation in one place for every format.
    Metadata is only ever present in ``.safetensors`` files written by fastlstm.
    """
    path = _as_path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"cannot read {str(path)!r}: unsupported file suffix {path.suffix!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"expected a weights file, got a directory: {str(path)!r}")
    if suffix in (".pt", ".pth"):
        return _read_torch(path), None
    if suffix == ".safetensors":
        return _read_safetensors(path)
    return _read_npz(path), None


def _as_path(path: Any) -> Path:
    if isinstance(path, (str, os.PathLike)):
        return Path(os.fsdecode(os.fspath(path)))
    raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")


def _first_line(exc: BaseException) -> str:
    text = _ANSI_ESCAPE.sub("", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _torch_load_reason(exc: BaseException) -> str:
    """The useful part of torch.load's error, whose first lines are generic advice."""
    text = _ANSI_ESCAPE.sub("", str(exc))
    if "Weights only load failed" not in text:
        return _first_line(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return f"it contains a pickled {unsupported.group(1)}, which is not plain tensor data"
    detail = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    return f"not a weights pickle: {detail.group(1).strip() if detail else 'unreadable'}"


def _read_torch(path: Path) -> Mapping:
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"reading {str(path)!r} (a .pt/.pth file) needs PyTorch: pip install fastlstm[torch]. "
            f"Or export the weights once where torch is installed to .safetensors, which "
            f"fastlstm reads without torch",
            name="torch",
        ) from exc
    try:
        # weights_only: a pickle can run arbitrary code; a state_dict needs none of that.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{str(path)!r} could not be read as a PyTorch state_dict ({_torch_load_reason(exc)}). "
            f"fastlstm expects a file written by torch.save(model.state_dict(), path) or a "
            f"checkpoint dict of tensors. If the file holds a whole pickled model "
            f"(torch.save(model, path)), load it where you trust it with "
            f"torch.load(path, weights_only=False) and save model.state_dict() instead"
        ) from exc
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict; fastlstm expects a "
            f"file written by torch.save(model.state_dict(), path)"
        )
    return obj


def _read_safetensors(path: Path) -> Tuple[Dict[str, np.ndarray], Optional[Dict[str, str]]]:
    try:
        from safetensors import safe_open
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"reading {str(path)!r} needs the safetensors package: pip install safetensors",
            name="safetensors",
        ) from exc
    tensors: Dict[str, np.ndarray] = {}
    unsupported: Optional[Tuple[str, str]] = None
    try:
        with safe_open(str(path), framework="np") as handle:
            # Everything the header declares is checked before any tensor is read: the file is
            # memory-mapped, so a sparse file of a few kilobytes can declare terabytes.
            metadata = _fastlstm_metadata(path, handle.metadata() or {})
            _check_declared_config(path, metadata)
            declared = []
            for key in handle.keys():
                view = handle.get_slice(key)
                dtype = view.get_dtype()
                if unsupported is None and (dtype == "BF16" or dtype.startswith("F8")):
                    unsupported = (key, dtype)
                declared.append((key, view.get_shape(), _SAFETENSORS_ITEMSIZE.get(dtype, 8)))
            check_parameter_sizes(declared, f"{str(path)!r}: the tensors")
            if unsupported is None:
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
    except BaseException as exc:
        # pyo3 reports a panic inside safetensors (e.g. a failed allocation) as PanicException,
        # which derives from BaseException; it is still a file we cannot read, not an exit.
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        if isinstance(exc, ValueError) and str(exc).startswith(repr(str(path))):
            raise  # our own error, already naming the file
        raise ValueError(
            f"{str(path)!r} could not be read as a safetensors file ({_first_line(exc)}); "
            f"it may be truncated or corrupted"
        ) from exc
    if unsupported is not None:
        # numpy has no such dtype; say how to fix it rather than fail inside numpy.
        key, dtype = unsupported
        raise TypeError(
            f"{str(path)!r}: tensor {key!r} has dtype {dtype}; fastlstm loads float32 or "
            f"float64 weights: convert the module to float32/float64 first (e.g. model.float()) "
            f"and save again"
        )
    return tensors, metadata


# Bytes per element of safetensors dtypes (unknown ones count as 8, the widest, for size limits).
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}


def _check_declared_config(path: Path, metadata: Optional[Dict[str, str]]) -> None:
    """Refuse fastlstm metadata describing a model over the size limits, by arithmetic alone.

    Metadata that does not parse is left to load_config_and_weights, which reports it; this
    only stops a file from claiming, say, hidden_size=10**12 or num_layers=10**9, before the
    tensors are read (weights are at least 4 bytes per element).
    """
    if metadata is None:
        return
    try:
        config = LSTMConfig.from_metadata(metadata)
    except (TypeError, ValueError):
        return
    try:
        config.check_size(4)  # weights take at least 4 bytes per element
    except ValueError as exc:
        raise ValueError(
            f"{str(path)!r}: the model its fastlstm metadata describes is refused ({exc}); "
            f"the file's metadata is corrupt or hostile"
        ) from None


def _fastlstm_metadata(path: Path, raw: Mapping[str, str]) -> Optional[Dict[str, str]]:
    ours = {k[len(METADATA_PREFIX):]: v for k, v in raw.items() if k.startswith(METADATA_PREFIX)}
    if not ours:
        return None
    version = ours.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written in fastlstm format version {version!r}; this version of "
            f"fastlstm reads version {FORMAT_VERSION!r}: upgrade fastlstm"
        )
    return ours


def _read_npz(path: Path) -> Dict[str, np.ndarray]:
    with open(path, "rb") as handle:
        magic = handle.read(6)
    # Checked first because np.load falls back to pickle for unknown bytes, and its refusal
    # message (suggesting allow_pickle) is the wrong advice for a corrupt file.
    if magic.startswith(b"\x93NUMPY"):
        raise ValueError(
            f"{str(path)!r} holds a single .npy array, not an .npz archive of named arrays; "
            f"fastlstm expects np.savez(path, **named_arrays)"
        )
    if not magic.startswith(b"PK"):
        raise ValueError(
            f"{str(path)!r} is not an .npz archive (it does not start with a zip header); "
            f"fastlstm expects np.savez(path, **named_arrays)"
        )
    try:
        # allow_pickle=False: a pickle (or an object array) could run arbitrary code.
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _npz_error(path, exc) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):  # unreachable after the magic check
        raise ValueError(f"{str(path)!r} is not an .npz archive")
    arrays: Dict[str, np.ndarray] = {}
    with archive:
        # numpy allocates what each member's header declares before reading (or inflating) its
        # data, so a small or compressed archive can claim any size: check the headers first.
        check_parameter_sizes(_npz_declared_sizes(path, archive), f"{str(path)!r}: the arrays")
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "allow_pickle" not in str(exc):
                    raise _npz_error(path, exc) from exc
                raise ValueError(
                    f"{str(path)!r}: array {key!r} is an object array, which fastlstm does not "
                    f"load (it would need pickle); save numeric arrays only"
                ) from None
            except Exception as exc:  # truncated or corrupt members: zlib, zipfile, EOF errors
                raise _npz_error(path, exc) from exc
    return arrays


def _npz_declared_sizes(path: Path, archive: Any) -> list:
    """(name, shape, itemsize) from each .npy member's header, reading no array data."""
    from numpy.lib import format as npy_format

    declared = []
    try:
        for name in archive.zip.namelist():
            with archive.zip.open(name) as member:
                if member.read(6) != npy_format.MAGIC_PREFIX:
                    continue  # not an array; np.load returns such members as bytes
                version = tuple(member.read(2))
                if version == (1, 0):
                    shape, _, dtype = npy_format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = npy_format.read_array_header_2_0(member)
                else:
                    continue  # left for np.load to read or reject
            declared.append((name[:-4] if name.endswith(".npy") else name, shape, dtype.itemsize))
    except Exception as exc:  # corrupt headers or members: reported like any unreadable archive
        raise _npz_error(path, exc) from exc
    return declared


def _npz_error(path: Path, exc: BaseException) -> ValueError:
    return ValueError(
        f"{str(path)!r} could not be read as an .npz archive ({_first_line(exc)}); it may be "
        f"truncated or corrupted. fastlstm expects np.savez(path, **named_arrays)"
    )


def _checked_weights(
    weights: Mapping[str, np.ndarray], config: LSTMConfig
) -> Dict[str, np.ndarray]:
    """The weights in nn.LSTM's order, refusing anything that would write an unloadable file."""
    expected = config.parameter_shapes()
    if set(weights) != set(expected):
        missing = sorted(set(expected) - set(weights))
        extra = sorted(set(weights) - set(expected))
        raise ValueError(
            f"weights do not match the config: missing {missing}, unexpected {extra}"
        )
    out: Dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        array = np.ascontiguousarray(weights[name])
        if tuple(array.shape) != shape:
            raise ValueError(f"weight {name!r} has shape {tuple(array.shape)}, expected {shape}")
        out[name] = array
    dtypes = {array.dtype.newbyteorder("=") for array in out.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in SUPPORTED_DTYPES:
        raise TypeError(
            f"weights must all be float32 or all float64, got {sorted(map(str, dtypes))}"
        )
    return out


def write_safetensors(
    path: PathLike, weights: Mapping[str, np.ndarray], config: LSTMConfig
) -> None:
    """Write weights under nn.LSTM's names with the config in the metadata.

    Storing the config (batch_first in particular, which no state_dict records) makes the file
    self-describing; writing to a temporary file and renaming means a service reloading the
    path never sees a half-written file.
    """
    from safetensors.numpy import save_file

    path = _as_path(path)
    tensors = _checked_weights(weights, config)
    metadata = {METADATA_PREFIX + k: v for k, v in config.to_metadata().items()}
    metadata[METADATA_PREFIX + "format_version"] = FORMAT_VERSION
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_npz(path: PathLike, weights: Mapping[str, np.ndarray]) -> None:
    """Write weights as an uncompressed .npz (no config: numpy has nowhere standard to put it)."""
    path = _as_path(path)
    # An open file stops np.savez from appending ".npz" to a path that lacks it.
    with open(path, "wb") as handle:
        np.savez(handle, **{name: np.asarray(array) for name, array in weights.items()})


def load_config_and_weights(
    path: PathLike,
    prefix: Optional[str] = None,
    batch_first: Optional[bool] = None,
) -> Tuple[LSTMConfig, Dict[str, np.ndarray]]:
    """Read a weights file and return its LSTM config and validated weights.

    A file fastlstm wrote carries its config; the tensors are still inferred and checked,
    and must agree with it, so a file edited or assembled by hand cannot pair one config with
    another's weights. ``batch_first=None`` takes the file's value (False when the file has
    none, as nn.LSTM defaults); an explicit bool overrides it.
    """
    if batch_first is not None and not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be a bool or None, got {type(batch_first).__name__}")
    mapping, metadata = read_weights_file(path)
    where = str(_as_path(path))
    if metadata is None:
        chosen = False if batch_first is None else bool(batch_first)
        return _extract(where, mapping, prefix, chosen)

    try:
        declared = LSTMConfig.from_metadata(metadata)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where!r} has invalid fastlstm metadata: {exc}") from None
    chosen = declared.batch_first if batch_first is None else bool(batch_first)
    declared = dataclasses.replace(declared, batch_first=chosen)
    config, weights = _extract(where, mapping, prefix, chosen)
    if config != declared:
        differing = ", ".join(
            f"{f.name}: metadata {getattr(declared, f.name)!r}, tensors {getattr(config, f.name)!r}"
            for f in dataclasses.fields(LSTMConfig)
            if getattr(declared, f.name) != getattr(config, f.name)
        )
        raise ValueError(
            f"{where!r}: the fastlstm metadata describes {declared} but the tensors describe "
            f"{config} ({differing}); the file was edited or assembled by hand, or is corrupt"
        )
    return config, weights


def _extract(where: str, mapping: Mapping, prefix: Optional[str],
             batch_first: bool) -> Tuple[LSTMConfig, Dict[str, np.ndarray]]:
    try:
        return extract_lstm(mapping, prefix=prefix, batch_first=batch_first)
    except (TypeError, ValueError) as exc:
        if type(exc) not in (TypeError, ValueError):
            raise
        # Same error type, with the file named: the state_dict error alone does not say which
        # of a service's files was at fault.
        raise type(exc)(f"{where!r}: {exc}") from None
