"""Reading and writing LSTM weight files.

Three formats, because users arrive with what they have: ``.pt``/``.pth`` (``torch.save`` of a
state_dict or checkpoint; needs torch), ``.safetensors`` (no torch needed, no pickle, and the
format fastlstm writes, with its config in the file's metadata) and ``.npz`` (numpy only).
Every failure to read a file becomes an error that names the path and says what was expected,
because the underlying libraries' messages (miniz, pickle, zipfile) rarely do.

A weights file can declare far more than it holds (a sparse file, a deflated member, a header
that lies), so loading reads nothing big before it is known to be needed: the declared names,
shapes and dtypes are checked first (against the size limits, then as an nn.LSTM), and only the
LSTM's own arrays are then read. ``.pt`` files are memory-mapped for the same reason, after their
zip records have been checked.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import errno
import json
import os
import pickle
import re
import stat
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from ._checks import MAX_MODEL_BYTES, MAX_PICKLE_BYTES, SUPPORTED_DTYPES, DeclaredTensor, check_parameter_sizes
from ._config import LSTMConfig
from ._state_dict import _is_torch_tensor, extract_lstm, format_keys, locate_lstm

__all__ = [
    "FORMAT_VERSION",
    "METADATA_PREFIX",
    "SUPPORTED_SUFFIXES",
    "as_path",
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
Declared = Tuple[Tuple[int, ...], np.dtype]  # shape and dtype of an array, as its file states them


def read_weights_file(path: PathLike, allow_bf16: bool = False) -> Tuple[Mapping, Optional[Dict[str, str]]]:
    """Read a weights file into a state_dict-like mapping and fastlstm's metadata, if any.

    The mapping is returned as stored (possibly a nested checkpoint) so that
    :func:`extract_lstm` does the finding and validation in one place for every format.
    For ``.safetensors`` and ``.npz`` files it is a :class:`FileArrays`, which has checked every
    declared array and reads one only when it is asked for. Metadata is only ever present in
    ``.safetensors`` files written by fastlstm. `allow_bf16`: BF16 tensors (a quantized converted
    model's) are read as their 16 bits, uint16 arrays, instead of being refused.
    """
    path = as_path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"cannot read {str(path)!r}: unsupported file suffix {path.suffix!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    _check_regular_file(path)
    if suffix in (".pt", ".pth"):
        return _read_torch(path), None
    if suffix == ".safetensors":
        return _open_safetensors(path, allow_bf16)
    return _open_npz(path), None


def as_path(path: Any) -> Path:
    """`path`, a str or os.PathLike, as a Path; TypeError for anything else."""
    if isinstance(path, (str, os.PathLike)):
        return Path(os.fsdecode(os.fspath(path)))
    raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")


def _check_regular_file(path: Path) -> None:
    """Refuse anything but a regular file before opening it: opening a FIFO blocks until a writer
    appears, and a device can be read forever. Path.exists() would call a symlink loop missing."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                errno.ENOENT,
                f"weights file not found: {str(path)!r} is a symbolic link to "
                f"{os.readlink(path)!r}, which does not exist",
            ) from None
        raise FileNotFoundError(errno.ENOENT, f"weights file not found: {str(path)!r}") from None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise OSError(
            errno.ELOOP,
            f"cannot read {str(path)!r}: it is a symlink loop (symbolic links that lead back to "
            f"each other, never to a file)",
        ) from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"expected a weights file, got a directory: {str(path)!r}")
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"cannot read {str(path)!r}: it is a {_file_kind(mode)}, not a regular file; fastlstm "
            f"reads weights only from regular files"
        )


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _first_line(exc: BaseException) -> str:
    text = _ANSI_ESCAPE.sub("", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class FileArrays(Mapping):
    """The arrays of an ``.npz`` or ``.safetensors`` file, each read only when asked for.

    Opening checks what the file declares of every array (name, shape, dtype) and reads no
    array data. :meth:`stand_ins` gives zero-byte arrays of the declared shapes and dtypes, enough
    to find and validate an LSTM; :meth:`read` then reads just the arrays named, checking that
    each is what was declared (the file may have been replaced in between).
    """

    def __init__(self, path: Path, declared: Dict[str, Declared],
                 reader: Callable[[Path, Sequence[str]], Dict[str, np.ndarray]]) -> None:
        self.path = path
        self._declared = declared
        self._reader = reader

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._declared:
            raise KeyError(key)
        return self.read([key])[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._declared)

    def __len__(self) -> int:
        return len(self._declared)

    def stand_ins(self) -> Dict[str, np.ndarray]:
        """Each array as a read-only broadcast of one zero element: its shape and dtype, no memory."""
        return {key: _stand_in(*declared) for key, declared in self._declared.items()}

    def read(self, keys: Sequence[str]) -> Dict[str, np.ndarray]:
        arrays = self._reader(self.path, keys)
        for key, array in arrays.items():
            expected = _stand_in(*self._declared[key])
            if array.shape != expected.shape or array.dtype != expected.dtype:
                raise ValueError(
                    f"{str(self.path)!r}: array {key!r} was declared as {expected.dtype} "
                    f"{expected.shape} but read as {array.dtype} {array.shape}; the file changed "
                    f"while it was being read"
                )
        return arrays


def _stand_in(shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    element = np.zeros((), dtype)  # a subarray dtype ("(2,)f4") adds its own trailing dimensions
    return np.broadcast_to(element, shape + element.shape)


# ----------------------------------------------------------------------------------------- .pt
def _torch_load_reason(exc: BaseException) -> str:
    """The useful part of torch.load's error, whose first lines are generic advice."""
    text = _ANSI_ESCAPE.sub("", str(exc))
    if "Weights only load failed" not in text:
        return _first_line(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return f"it contains a pickled {unsupported.group(1)}, which is not plain tensor data"
    # The unpickler's own reason follows on a later line, after blank ones.
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    cause = exc.__cause__ or exc.__context__
    reason = detail.group(1).strip() if detail else (_first_line(cause) if cause else "unreadable")
    return f"not a weights pickle: {reason}"


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
    # The zip format is memory-mapped once its records are checked, so tensors the LSTM does not
    # use are never read. The legacy format (torch < 1.6) cannot be mapped; torch reads it whole.
    mmap = _check_torch_file(path, torch)
    try:
        # weights_only: a pickle can run arbitrary code; a state_dict needs none of that.
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
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


def _torch_error(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{str(path)!r} could not be read as a PyTorch state_dict ({reason}). fastlstm expects a "
        f"file written by torch.save(model.state_dict(), path)"
    )


def _check_torch_file(path: Path, torch: Any) -> bool:
    """Check a .pt file's layout and sizes before torch.load; True if it is a zip (mmap-able)."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(b"PK\x03\x04"):
        _check_torch_zip(path)
        return True
    if _is_legacy_torch_file(head, torch):
        size = os.stat(path).st_size
        if size > MAX_MODEL_BYTES + MAX_PICKLE_BYTES:
            raise ValueError(
                f"{str(path)!r} is a legacy (torch < 1.6) .pt file of {size} bytes, too large: "
                f"torch reads such files whole, and fastlstm accepts at most "
                f"{MAX_MODEL_BYTES + MAX_PICKLE_BYTES}; re-save it with a current torch.save"
            )
        return False
    raise _torch_error(
        path, f"not a zip archive or legacy torch pickle, which torch.save writes: it starts with "
              f"{head[:16]!r}")


def _is_legacy_torch_file(head: bytes, torch: Any) -> bool:
    """The legacy format opens with torch's magic number, pickled with the protocol of the save."""
    magic = torch.serialization.MAGIC_NUMBER
    return any(head.startswith(pickle.dumps(magic, protocol=protocol))
               for protocol in range(pickle.HIGHEST_PROTOCOL + 1))


def _is_torch_data_record(name: str) -> bool:
    # torch.save names tensor data "<archive>/data/<key>"; its other records are the pickle
    # ("<archive>/data.pkl") and a few bytes of version and byte-order information.
    parts = name.split("/")
    return len(parts) == 3 and parts[1] == "data"


def _check_torch_zip(path: Path) -> None:
    """Refuse a .pt zip whose records torch would inflate or map beyond reason.

    torch.save stores every record uncompressed, and torch.load reads each whole (inflating a
    compressed one first: a deflated gigabyte of zeros is a megabyte on disk). Tensor data must
    therefore be stored, lie inside the file (it is memory-mapped: reading past the end of the
    file would fault) and total at most MAX_MODEL_BYTES; the other records, at most
    MAX_PICKLE_BYTES together.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except Exception as exc:  # BadZipFile, truncated central directory, bad offsets...
        raise _torch_error(path, f"not a readable zip archive: {_first_line(exc)}; it may be "
                                 f"truncated or corrupted") from exc
    size = os.stat(path).st_size
    data_bytes = other_bytes = 0
    with open(path, "rb") as handle:
        for info in infos:
            name = info.filename
            if not _is_torch_data_record(name):
                other_bytes += info.file_size
                if other_bytes > MAX_PICKLE_BYTES:
                    raise _torch_error(path, f"its records other than tensor data, up to {name!r}, "
                                             f"declare {other_bytes} bytes, and fastlstm accepts at "
                                             f"most {MAX_PICKLE_BYTES}")
                continue
            if info.compress_type != zipfile.ZIP_STORED:
                raise _torch_error(path, f"tensor record {name!r} is compressed, which torch.save "
                                         f"never does, and torch would inflate all of it "
                                         f"({info.file_size} bytes declared) first; re-save the "
                                         f"weights with torch.save")
            if info.compress_size != info.file_size:
                raise _torch_error(path, f"tensor record {name!r} is stored but its sizes "
                                         f"disagree ({info.compress_size} and {info.file_size} "
                                         f"bytes); the file is corrupt")
            end = _record_data_end(handle, info)
            if end is None or end > size:
                raise _torch_error(path, f"tensor record {name!r} ({info.file_size} bytes) extends "
                                         f"past the end of the file ({size} bytes); the file is "
                                         f"truncated or corrupt")
            data_bytes += info.file_size
            if data_bytes > MAX_MODEL_BYTES:
                raise _torch_error(path, f"its tensor data is too large: {data_bytes} bytes or "
                                         f"more, and fastlstm accepts at most {MAX_MODEL_BYTES} "
                                         f"(2**34) in all")


def _record_data_end(handle: Any, info: zipfile.ZipInfo) -> Optional[int]:
    """Offset just past a record's data, from its local header (whose extra field, where
    torch.save pads for alignment, may differ from the central directory's); None if the local
    header is not where the central directory says."""
    if info.header_offset < 0:  # zipfile's adjustment for bytes before the archive, gone wrong
        return None
    handle.seek(info.header_offset)
    header = handle.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        return None
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length + info.compress_size


# ---------------------------------------------------------------------------------- .safetensors
# numpy dtypes of the safetensors dtypes numpy has; the others (BF16, F8_*, F4...) are refused.
_SAFETENSORS_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
    "F16": np.float16, "U32": np.uint32, "I32": np.int32, "F32": np.float32, "U64": np.uint64,
    "I64": np.int64, "F64": np.float64, "C64": np.complex64,
}


def _open_safetensors(path: Path, allow_bf16: bool = False) -> Tuple[FileArrays, Optional[Dict[str, str]]]:
    try:
        from safetensors import safe_open  # noqa: F401 - only to report a missing package here
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"reading {str(path)!r} needs the safetensors package: pip install safetensors",
            name="safetensors",
        ) from exc
    declared: Dict[str, Declared] = {}
    bf16_keys: Set[str] = set()
    unsupported: Optional[Tuple[str, str]] = None
    with _safetensors_errors(path):
        with safe_open(str(path), framework="np") as handle:
            # Everything the header declares is checked before any tensor is read: the file is
            # memory-mapped, so a sparse file of a few kilobytes can declare terabytes.
            metadata = _fastlstm_metadata(path, handle.metadata() or {})
            _check_declared_config(path, metadata)
            for key in handle.keys():
                view = handle.get_slice(key)
                dtype = view.get_dtype()
                if dtype == "BF16" and allow_bf16:
                    bf16_keys.add(key)
                    dtype = "U16"
                if dtype not in _SAFETENSORS_DTYPES and unsupported is None:
                    unsupported = (key, dtype)
                declared[key] = (tuple(int(d) for d in view.get_shape()),
                                 np.dtype(_SAFETENSORS_DTYPES.get(dtype, np.float64)))
    if unsupported is not None:
        # numpy has no such dtype; say how to fix it rather than fail inside numpy.
        key, dtype = unsupported
        raise TypeError(
            f"{str(path)!r}: tensor {key!r} has dtype {dtype}; fastlstm loads float32 or "
            f"float64 weights: convert the module to float32/float64 first (e.g. model.float()) "
            f"and save again"
        )
    check_parameter_sizes((DeclaredTensor(key, shape, dtype.itemsize) for key, (shape, dtype) in declared.items()),
                          f"{str(path)!r}: the tensors")
    if not bf16_keys:
        return FileArrays(path, declared, _read_safetensors_tensors), metadata
    shapes = {key: declared[key][0] for key in bf16_keys}

    def read(path: Path, keys: Sequence[str]) -> Dict[str, np.ndarray]:
        arrays = _read_safetensors_tensors(path, [key for key in keys if key not in bf16_keys])
        arrays.update(read_bf16_tensors(path, {key: shapes[key] for key in keys if key in bf16_keys}))
        return arrays

    return FileArrays(path, declared, read), metadata


def _read_safetensors_tensors(path: Path, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    from safetensors import safe_open

    with _safetensors_errors(path):
        with safe_open(str(path), framework="np") as handle:
            return {key: handle.get_tensor(key) for key in keys}


_MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own limit


def read_bf16_tensors(path: Path, shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, np.ndarray]:
    """BF16 tensors of a safetensors file whose header safetensors has accepted, as uint16 arrays of
    their bits (numpy has no bfloat16, and safetensors' numpy API refuses it). The header is read
    again and every offset checked: the file could have changed since."""
    if not shapes:
        return {}
    where = repr(str(path))
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise ValueError(f"{where} is truncated")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_SAFETENSORS_HEADER:
            raise ValueError(f"{where}: the safetensors header is too large")
        try:
            header = json.loads(handle.read(length))
        except (ValueError, RecursionError):
            raise ValueError(f"{where}: the safetensors header is not JSON") from None
        size = handle.seek(0, 2)
        arrays = {}
        for key, shape in shapes.items():
            entry = header.get(key) if isinstance(header, dict) else None
            count = int(np.prod(shape, dtype=np.int64))
            offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
            if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                    or offsets[0] < 0 or offsets[1] - offsets[0] != 2 * count or 8 + length + offsets[1] > size
                    or entry.get("dtype") != "BF16" or entry.get("shape") != list(shape)):
                raise ValueError(f"{where}: tensor {key!r} changed or is inconsistent with its header")
            handle.seek(8 + length + offsets[0])
            data = handle.read(2 * count)
            if len(data) != 2 * count:
                raise ValueError(f"{where} is truncated")
            arrays[key] = np.frombuffer(data, dtype="<u2").astype(np.uint16).reshape(shape)
    return arrays


# safetensors dtype of each numpy dtype write_raw_safetensors writes; uint16 stands for bfloat16 bits.
_FILE_DTYPES = {np.dtype(numpy_type): code for code, numpy_type in _SAFETENSORS_DTYPES.items() if code != "U16"}
_FILE_DTYPES[np.dtype(np.uint16)] = "BF16"


def write_raw_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file byte by byte (atomically, as _write_atomically), for what safetensors'
    numpy API cannot write: uint16 arrays are written as BF16, the bits of bfloat16 values."""
    if "__metadata__" in tensors:
        raise ValueError("a tensor cannot be named '__metadata__' in a safetensors file (the header's metadata key)")
    header: Dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, array in tensors.items():
        code = _FILE_DTYPES.get(array.dtype.newbyteorder("="))
        if code is None:
            raise TypeError(f"cannot write tensor {name!r} of dtype {array.dtype} to a safetensors file")
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes with spaces

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(struct.pack("<Q", len(text)) + text)
            for array in tensors.values():
                handle.write(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())

    _write_atomically(path, write)


@contextlib.contextmanager
def _safetensors_errors(path: Path) -> Iterator[None]:
    """Report safetensors' failures as a ValueError naming the file (ours pass through)."""
    try:
        yield
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


def _check_declared_config(path: Path, metadata: Optional[Dict[str, str]]) -> None:
    """Refuse fastlstm metadata describing a model over the size limits, by arithmetic alone.

    Metadata that does not parse (or is not an LSTM's: a converted program's) is left to its
    reader, load_config_and_weights or _program_file, which reports it before reading tensors;
    this only stops a file from claiming, say, num_layers=1000 with hidden_size=2**20 (each within
    its own limit) before anything else is done.
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


# ------------------------------------------------------------------------------------------ .npz
# .npy format versions numpy writes: 2.0 for headers over 64 KiB, 3.0 for UTF-8 field names.
_NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))
_NPY_MAX_HEADER = 10_000  # numpy's own default limit on header length


def _open_npz(path: Path) -> FileArrays:
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
        archive = zipfile.ZipFile(path)
    except Exception as exc:
        raise _npz_error(path, exc) from exc
    with archive:
        infos = _npz_members(path, archive.infolist())
        # numpy allocates what each member's header declares before reading (or inflating) its
        # data, so a small or compressed archive can claim any size: only headers are read here.
        declared = {key: _npy_declaration(path, archive, info) for key, info in infos.items()}
    check_parameter_sizes((DeclaredTensor(key, shape, dtype.itemsize) for key, (shape, dtype) in declared.items()),
                          f"{str(path)!r}: the arrays")
    return FileArrays(path, declared, _read_npz_arrays)


def _npz_members(path: Path, infos: List[zipfile.ZipInfo]) -> Dict[str, zipfile.ZipInfo]:
    """Array name -> member, refusing names that occur twice (zip allows it, and np.load would
    serve one of them silently) and members that are not .npy arrays (np.load reads those whole,
    as bytes, whatever their size)."""
    members: Dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in members:
            raise ValueError(
                f"{str(path)!r} holds array {key!r} twice (members {members[key].filename!r} and "
                f"{info.filename!r}); refusing to guess which one is meant"
            )
        members[key] = info
    for key, info in members.items():
        if not info.filename.endswith(".npy"):
            raise ValueError(
                f"{str(path)!r}: member {info.filename!r} is not a .npy array; an .npz of weights "
                f"holds only .npy members, as np.savez(path, **named_arrays) writes"
            )
    return members


def _npy_declaration(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Declared:
    """The shape and dtype a .npy member's header declares, reading nothing past the header."""
    from numpy.lib import format as npy_format

    key = info.filename[:-4]
    try:
        with archive.open(info) as member:
            magic = member.read(8)
            if len(magic) < 8 or magic[:6] != npy_format.MAGIC_PREFIX:
                problem = "is not a .npy array (it does not start with numpy's magic bytes)"
                shape, dtype = None, None
            elif (magic[6], magic[7]) not in _NPY_VERSIONS:
                problem = (f"uses .npy format version {magic[6]}.{magic[7]}, and fastlstm reads "
                           f"versions 1.0, 2.0 and 3.0 (those numpy writes)")
                shape, dtype = None, None
            else:
                problem = ""
                shape, dtype = _read_npy_header(member, (magic[6], magic[7]))
    except Exception as exc:  # corrupt headers or members: reported like any unreadable archive
        raise _npz_error(path, exc) from exc
    if problem:
        raise ValueError(
            f"{str(path)!r}: member {info.filename!r} {problem}; fastlstm expects "
            f"np.savez(path, **named_arrays)"
        )
    if any(dim < 0 for dim in shape):
        raise _npz_error(path, ValueError(f"member {info.filename!r} declares shape {shape}"))
    if dtype.hasobject:
        raise ValueError(
            f"{str(path)!r}: array {key!r} is an object array, which fastlstm does not load (it "
            f"would need pickle); save numeric arrays only"
        )
    return tuple(shape), dtype


def _read_npy_header(member: Any, version: Tuple[int, int]) -> Tuple[Tuple[int, ...], np.dtype]:
    from numpy.lib import format as npy_format

    if version == (1, 0):
        shape, _, dtype = npy_format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = npy_format.read_array_header_2_0(member)
    else:
        # 3.0 is 2.0 with a UTF-8 header; numpy has no public reader for it alone.
        shape, dtype = _read_npy_header_3_0(member)
    return shape, dtype


def _read_npy_header_3_0(member: Any) -> Tuple[Tuple[int, ...], np.dtype]:
    from numpy.lib import format as npy_format

    (length,) = struct.unpack("<I", _read_exactly(member, 4))
    if length > _NPY_MAX_HEADER:
        raise ValueError(f".npy header of {length} bytes is too large (at most {_NPY_MAX_HEADER})")
    header = ast.literal_eval(_read_exactly(member, length).decode("utf-8"))
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f".npy header is not a dict of descr, fortran_order and shape: {header!r}")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(type(dim) is int for dim in shape):
        raise ValueError(f".npy header shape is not a tuple of ints: {shape!r}")
    if not isinstance(header["fortran_order"], bool):
        raise ValueError(f".npy header fortran_order is not a bool: {header['fortran_order']!r}")
    return shape, npy_format.descr_to_dtype(header["descr"])


def _read_exactly(member: Any, count: int) -> bytes:
    data = member.read(count)
    if len(data) != count:
        raise ValueError(f"the .npy header ends early ({len(data)} of {count} bytes)")
    return data


def _read_npz_arrays(path: Path, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    from numpy.lib import format as npy_format

    arrays: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for key in keys:
                with archive.open(key + ".npy") as member:
                    # allow_pickle=False: a pickle (or an object array) could run arbitrary code.
                    arrays[key] = npy_format.read_array(member, allow_pickle=False)
    except Exception as exc:  # truncated or corrupt members: zlib, zipfile, EOF errors
        raise _npz_error(path, exc) from exc
    return arrays


def _npz_error(path: Path, exc: BaseException) -> ValueError:
    return ValueError(
        f"{str(path)!r} could not be read as an .npz archive ({_first_line(exc)}); it may be "
        f"truncated or corrupted. fastlstm expects np.savez(path, **named_arrays)"
    )


# ---------------------------------------------------------------------------------------- writing
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
    self-describing. The name must end in ``.safetensors`` (any case): under another suffix the
    file would be misread by :func:`read_weights_file`. The file is written to a temporary file
    beside it and renamed into place, so that a service reloading the path never sees a
    half-written file and concurrent writers never collide.
    """
    from safetensors.numpy import save_file

    path = as_path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(
            f"fastlstm saves .safetensors files only, the one format that keeps the model's "
            f"hyperparameters (batch_first too) and loads without torch; got {str(path)!r}: name it "
            f"{path.stem + '.safetensors'!r}. For a PyTorch state_dict (.pt), use "
            f"torch.save({{k: torch.from_numpy(v) for k, v in model.state_dict().items()}}, path); "
            f"for .npz, np.savez(path, **model.state_dict()) (neither records batch_first)"
        )
    tensors = _checked_weights(weights, config)
    metadata = {METADATA_PREFIX + k: v for k, v in config.to_metadata().items()}
    metadata[METADATA_PREFIX + "format_version"] = FORMAT_VERSION
    _write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def write_npz(path: PathLike, weights: Mapping[str, np.ndarray]) -> None:
    """Write weights as an uncompressed .npz (no config: numpy has nowhere standard to put it).

    The name must end in ``.npz``; like :func:`write_safetensors`, the file appears atomically.
    """
    path = as_path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"write_npz writes .npz files; got {str(path)!r}: name it {path.stem + '.npz'!r}")
    arrays = {name: np.asarray(array) for name, array in weights.items()}

    def write(tmp: str) -> None:
        # An open file stops np.savez from appending ".npz" to the temporary name.
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    _write_atomically(path, write)


def _write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Run write(temporary name) for a new file beside `path`, then rename it over `path`.

    The temporary file is unique (mkstemp), so threads and processes saving to one path at once
    each write their own and the last rename wins whole. mkstemp creates it 0600; it is given
    the mode any other new file would have (0666 less the umask) before it takes the path.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask. Linux reports it in /proc/self/status; elsewhere the only way is to set
    it and restore it, which is process-wide and so briefly racy with other threads creating files."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------- loading
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
    where = str(as_path(path))
    if metadata is None:
        chosen = False if batch_first is None else bool(batch_first)
        return _extract_from_file(where, mapping, prefix, chosen)

    try:
        declared = LSTMConfig.from_metadata(metadata)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where!r} has invalid fastlstm metadata: {exc}") from None
    chosen = declared.batch_first if batch_first is None else bool(batch_first)
    declared = dataclasses.replace(declared, batch_first=chosen)
    config, weights = _extract_from_file(where, mapping, prefix, chosen)
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


def _extract_from_file(where: str, mapping: Mapping, prefix: Optional[str],
                       batch_first: bool) -> Tuple[LSTMConfig, Dict[str, np.ndarray]]:
    """extract_lstm on what a file holds, with errors naming the file (`where`), warning about
    the model parameters it leaves out (see :func:`_warn_ignored`)."""
    copy = True
    contents = mapping.stand_ins() if isinstance(mapping, FileArrays) else mapping
    planned, prefix = _call_naming_file(where, locate_lstm, contents, prefix, batch_first)
    if isinstance(mapping, FileArrays):
        # Validate on what the file declares, then read only the LSTM's arrays, which are fresh
        # and ours: no copy of them is needed.
        mapping = mapping.read([prefix + name for name in planned.parameter_shapes()])
        copy = False
    result = _call_naming_file(where, extract_lstm, mapping, prefix, batch_first, copy=copy)
    _warn_ignored(where, contents, {prefix + name for name in planned.parameter_shapes()}, prefix)
    return result


def _warn_ignored(where: str, contents: Mapping, used: Set[str], prefix: str) -> None:
    """A UserWarning when the file holds model tensors besides the LSTM's (a whole model's
    state_dict): `fastlstm.load` serves the LSTM alone, and silently dropping a Linear head is how
    users end up serving half a model. The ignored tensors are named (the first
    _MAX_KEYS_IN_MESSAGE, then a count). A training checkpoint's other entries (optimizer or
    scheduler state: mappings with "param_groups"; numbers, strings and lists such as "epoch")
    are not model parameters: they are counted and named by their top-level entry only, and on
    their own (an LSTM-only model's checkpoint) they cause no warning."""
    tensors: List[str] = []
    others: List[str] = []
    stack: List[Tuple[Iterator[Tuple[Any, Any]], str]] = [(iter(contents.items()), "")]
    while stack:  # iterative, in the mapping's order: flatten_state_dict has bounded the depth
        items, path = stack[-1]
        for key, value in items:
            name = path + str(key)
            if isinstance(value, Mapping):
                if "param_groups" in value:  # torch.optim state: never listed key by key
                    others.append(name)
                else:
                    stack.append((iter(value.items()), name + "."))
                    break
            elif isinstance(value, np.ndarray) or _is_torch_tensor(value):
                if name not in used:
                    tensors.append(name)
            else:
                top = name.split(".", 1)[0]
                label = name if prefix.startswith(top + ".") else top  # beside the LSTM: in full
                if label not in others:
                    others.append(label)
        else:
            stack.pop()
    if not tensors:
        return
    where_lstm = f"the nn.LSTM under {prefix!r}" if prefix else "the nn.LSTM"
    rest = ""
    if others:
        rest = (f"; {len(others)} other checkpoint {'entry' if len(others) == 1 else 'entries'} "
                f"(optimizer state, counters...) ignored too: {format_keys(others)}")
    warnings.warn(
        f"{where!r}: loaded {where_lstm} and ignored {len(tensors)} other model "
        f"{'tensor' if len(tensors) == 1 else 'tensors'}: {format_keys(tensors)}{rest}. "
        f"fastlstm.load serves the LSTM alone; to serve the whole model, convert it where torch "
        f"is installed with model = fastlstm.convert(module, example) and model.save(path) "
        f"(fastlstm.load then loads the whole model)",
        UserWarning,
        stacklevel=5,  # _warn_ignored <- _extract_from_file <- load_config_and_weights <- load <- caller
    )


def _call_naming_file(where: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """function(*args, **kwargs), with its TypeError/ValueError naming the file: the state_dict
    error alone does not say which of a service's files was at fault."""
    try:
        return function(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        if type(exc) not in (TypeError, ValueError):
            raise
        raise type(exc)(f"{where!r}: {exc}") from None
