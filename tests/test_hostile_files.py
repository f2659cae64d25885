"""Hostile and damaged weight files: `fastlstm.load` must answer every one with a clear ValueError or
TypeError naming the file, never run code from it, never crash, and never allocate what a forged
header claims.

Files are damaged the ways they are in the wild (truncated downloads, flipped bits) and the ways an
attacker would (pickles with a payload, safetensors headers and fastlstm metadata that lie about
sizes, sparse files that declare terabytes in a few kilobytes).
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
from safetensors import safe_open  # noqa: E402

import fastlstm  # noqa: E402

# Children import the fastlstm under test (source tree or installed), and run from a neutral
# directory so a source checkout in the working directory cannot shadow it.
PACKAGE_PARENT = Path(fastlstm.__file__).resolve().parent.parent

# A small model with every kind of parameter: 2 layers, both directions, biases, projections.
CONFIG = dict(input_size=5, hidden_size=6, num_layers=2, bidirectional=True, proj_size=3)
SUFFIXES = [".safetensors", ".npz", ".pt"]
ERRORS = (ValueError, TypeError)


@pytest.fixture(scope="module")
def module():
    torch.manual_seed(0)
    return torch.nn.LSTM(**CONFIG).eval()


@pytest.fixture(scope="module")
def reference(module):
    return fastlstm.LSTM.from_torch(module)


def write_valid(path: Path, module, reference) -> bytes:
    """A valid file of path's suffix: fastlstm's own .safetensors, a torch .pt, a numpy .npz."""
    if path.suffix == ".safetensors":
        reference.save(path)
    elif path.suffix == ".pt":
        torch.save(module.state_dict(), path)
    else:
        np.savez(path, **{k: v.detach().numpy() for k, v in module.state_dict().items()})
    return path.read_bytes()


def same_model(model: fastlstm.LSTM, reference: fastlstm.LSTM) -> bool:
    if model.config != reference.config or model.dtype != reference.dtype:
        return False
    return all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def load_outcome(path: Path):
    """The loaded model, or the ValueError/TypeError raised; anything else fails the test."""
    try:
        return fastlstm.load(path)
    except ERRORS as exc:
        assert path.name in str(exc), f"the error does not name the file: {exc}"
        assert "\x1b" not in str(exc)
        return exc


class PeakMemory:
    """Growth of this process's peak RSS over a block: VmHWM, reset on entry where Linux allows
    (/proc/self/clear_refs), so an earlier peak (torch's) cannot hide an allocation."""

    def __enter__(self) -> "PeakMemory":
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            pass
        self.before = _vm_hwm()
        return self

    def __exit__(self, *exc_info) -> None:
        self.growth = _vm_hwm() - self.before


def _vm_hwm() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------------------------------ truncated
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncated_files_are_rejected(tmp_path, module, reference, suffix):
    data = write_valid(tmp_path / f"valid{suffix}", module, reference)
    cuts = sorted(set([0, 1, 4, 7, 8, 9, 16, 64, 100] + list(range(0, len(data), max(1, len(data) // 60)))
                      + [len(data) // 2, len(data) - 8, len(data) - 1]))
    path = tmp_path / f"truncated{suffix}"
    for cut in cuts:
        path.write_bytes(data[:cut])
        outcome = load_outcome(path)
        assert isinstance(outcome, ERRORS), f"a file cut to {cut} of {len(data)} bytes loaded"


# ------------------------------------------------------------------------------------------ corrupted
def test_safetensors_header_flips(tmp_path, module, reference):
    """Every flipped byte of the length prefix and the JSON header either makes the file unreadable
    (ValueError/TypeError) or changes nothing the model depends on (whitespace, padding)."""
    data = write_valid(tmp_path / "valid.safetensors", module, reference)
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    path = tmp_path / "flipped.safetensors"
    loaded = 0
    for position in range(header_end):
        for mask in (0xFF, 0x01) if position < 8 or position % 5 == 0 else (0x20,):
            corrupt = bytearray(data)
            corrupt[position] ^= mask
            path.write_bytes(bytes(corrupt))
            outcome = load_outcome(path)
            if isinstance(outcome, fastlstm.LSTM):
                loaded += 1
                assert same_model(outcome, reference), f"flip at byte {position} (^{mask:#x}) loaded another model"
    assert loaded < header_end // 4  # most flips must be caught, or the test is not testing anything


def test_safetensors_data_flips_load_exactly_the_stored_values(tmp_path, module, reference):
    """safetensors has no checksum, so a flipped bit in tensor data is undetectable; fastlstm must then
    serve exactly the stored (NaN, Inf or denormal included) values, as safetensors itself reads them."""
    data = write_valid(tmp_path / "valid.safetensors", module, reference)
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    path = tmp_path / "flipped.safetensors"
    rng = np.random.default_rng(0)
    for position in rng.integers(header_end, len(data), 40):
        corrupt = bytearray(data)
        corrupt[position] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(corrupt))
        stored = safetensors_numpy.load_file(str(path))
        model = fastlstm.load(path)
        assert model.config == reference.config
        for name, array in model.state_dict().items():
            np.testing.assert_array_equal(array, stored[name])
        model(np.zeros((2, 1, CONFIG["input_size"]), np.float32))  # still callable


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # a flipped protocol byte, as intended
@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_zip_based_files_with_flipped_bytes(tmp_path, module, reference, suffix):
    """.npz and .pt are zip archives: flips anywhere (local headers, pickle, data, central directory)
    raise ValueError/TypeError or load a model of the same architecture (.pt stores no checksum)."""
    data = write_valid(tmp_path / f"valid{suffix}", module, reference)
    path = tmp_path / f"flipped{suffix}"
    errors = 0
    positions = sorted(set(range(0, 200)) | set(range(200, len(data), 23)) | set(range(len(data) - 120, len(data))))
    for position in positions:
        corrupt = bytearray(data)
        corrupt[position] ^= 0xFF
        path.write_bytes(bytes(corrupt))
        outcome = load_outcome(path)
        if isinstance(outcome, fastlstm.LSTM):
            assert outcome.config == reference.config, f"flip at byte {position} changed the architecture"
            if suffix == ".npz":  # zip members carry a CRC-32, which numpy checks
                assert same_model(outcome, reference), f"flip at byte {position} changed an .npz array silently"
        else:
            errors += 1
    assert errors > len(positions) // 4


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_garbage_and_empty_files(tmp_path, suffix):
    rng = np.random.default_rng(1)
    path = tmp_path / f"garbage{suffix}"
    for blob in (b"", b"\0", b"PK\x03\x04", b"\x93NUMPY", b"{}", rng.bytes(7), rng.bytes(4096),
                 b"PK\x05\x06" + b"\0" * 18):
        path.write_bytes(blob)
        assert isinstance(load_outcome(path), ERRORS), blob[:16]


# ------------------------------------------------------------------------------------------ oversized
@pytest.mark.parametrize("claimed", [2**60, 2**64 - 1, 2**63, 100_000_001, 10**8, "file+1", "file*2", 0, 1, 2])
def test_safetensors_header_length_that_lies(tmp_path, module, reference, claimed):
    data = write_valid(tmp_path / "valid.safetensors", module, reference)
    if claimed == "file+1":
        claimed = len(data) - 8 + 1
    elif claimed == "file*2":
        claimed = 2 * len(data)
    path = tmp_path / "lying.safetensors"
    path.write_bytes(struct.pack("<Q", claimed) + data[8:])
    start = time.perf_counter()
    with PeakMemory() as peak:
        outcome = load_outcome(path)
    assert isinstance(outcome, ERRORS)
    assert time.perf_counter() - start < 2.0
    assert peak.growth < 64 * 2**20, "a lying header length was allocated"


def write_raw_safetensors(path: Path, entries, metadata=None, data_size=None) -> None:
    """A safetensors file from a hand-written header: entries are (name, dtype, shape, nbytes).
    The data region is a hole (a sparse file), so declaring gigabytes costs nothing on disk."""
    header, offset = {}, 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata is not None:
        header["__metadata__"] = metadata
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        handle.truncate(8 + len(blob) + (offset if data_size is None else data_size))


@pytest.mark.parametrize(
    "shape,nbytes",
    [
        ([2**40, 2**40], 16),  # shape and byte range disagree
        ([2**32, 2**32, 2**32], 16),  # element count overflows 64 bits
        ([2**62, 4], 0),  # bytes overflow 64 bits
        ([-1, 4], 16),  # negative dimension
        ([4, 4], 2**63),  # data range far past the end of the file
    ],
    ids=["mismatch", "count-overflow", "bytes-overflow", "negative", "range-past-eof"],
)
def test_safetensors_header_with_impossible_tensor(tmp_path, shape, nbytes):
    path = tmp_path / "impossible.safetensors"
    header = {"weight_ih_l0": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 64)
    with PeakMemory() as peak:
        assert isinstance(load_outcome(path), ERRORS)
    assert peak.growth < 64 * 2**20


# Run in a child with its heap capped (RLIMIT_DATA counts malloc/anonymous mmap, not the file
# mapping safetensors reads through): should a regression make the loader read what a sparse file
# declares, the child fails to allocate instead of taking this machine's memory with it.
# (Under ASan, which RLIMIT_DATA breaks, ASan's max_allocation_size_mb caps it instead.)
_CAPPED_LOAD = textwrap.dedent(
    """
    import json, os, resource, sys
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):  # under ASan, its own cap (below) applies
        resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))
    import fastlstm
    try:
        fastlstm.load(sys.argv[1])
        outcome = {"type": None, "message": "loaded"}
    except BaseException as exc:
        outcome = {"type": type(exc).__name__, "message": str(exc)}
    outcome["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open("/proc/self/status") as status:  # this process's own peak (ru_maxrss starts at the parent's)
        outcome["peak_rss"] = next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:"))
    print(json.dumps(outcome))
    """
)


def load_in_capped_child(path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if "libasan" in env.get("LD_PRELOAD", ""):
        # RLIMIT_DATA breaks AddressSanitizer's own mappings; cap single allocations through it instead.
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":allocator_may_return_null=1:max_allocation_size_mb=1024"
    result = subprocess.run([sys.executable, "-c", _CAPPED_LOAD, str(path)], capture_output=True, text=True,
                            timeout=120, env=env, cwd=tempfile.gettempdir())
    assert result.returncode == 0, f"the loader crashed (rc {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sparse_safetensors_declaring_a_36_gib_tensor_is_refused_unread(tmp_path):
    """A 4 KB file whose header honestly describes a 2**33-element weight_ih_l0 (the data region is a
    hole): safetensors would read it all; fastlstm must refuse by the declared shape, 'too large'."""
    hidden, inputs = 2**14, 2**17
    path = tmp_path / "sparse.safetensors"
    write_raw_safetensors(path, [("weight_ih_l0", "F32", [4 * hidden, inputs], 16 * hidden * inputs),
                                 ("weight_hh_l0", "F32", [4 * hidden, hidden], 16 * hidden * hidden)])
    assert os.stat(path).st_blocks * 512 < 2**20  # really sparse: nothing of it is on disk
    outcome = load_in_capped_child(path)
    assert outcome["type"] == "ValueError" and "too large" in outcome["message"], outcome
    assert "sparse.safetensors" in outcome["message"]
    assert outcome["peak_rss"] < 512 * 2**20


def test_sparse_safetensors_whose_total_is_too_large_is_refused_unread(tmp_path):
    """Each tensor within the per-tensor limit (2**31 elements), together over 2**34 bytes."""
    path = tmp_path / "sparse_total.safetensors"
    elements = 2**31
    entries = [(f"weight_ih_l{layer}", "F64", [2**16, 2**15], elements * 8) for layer in range(2)]
    write_raw_safetensors(path, entries)
    outcome = load_in_capped_child(path)
    assert outcome["type"] == "ValueError" and "too large" in outcome["message"], outcome
    assert outcome["peak_rss"] < 512 * 2**20


def test_npz_member_declaring_an_absurd_shape_is_refused_unread(tmp_path):
    """An .npz whose .npy header claims 2**40 floats but holds 16 bytes."""
    path = tmp_path / "absurd.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**20, 2**20)}
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("weight_ih_l0.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, header)
            member.write(b"\0" * 16)
    with PeakMemory() as peak, pytest.raises(ValueError, match="too large") as info:
        fastlstm.load(path)
    assert "absurd.npz" in str(info.value)
    assert peak.growth < 64 * 2**20


def test_compressed_npz_bomb_is_refused_before_inflating(tmp_path):
    """A deflated member of 2**31 + 1 zero floats (8 GiB inflated) is ~8 MB on disk; only its
    header may be read. Built by streaming zeros through the compressor, never holding them."""
    path = tmp_path / "bomb.npz"
    count = 2**31 + 16
    header = {"descr": "<f4", "fortran_order": False, "shape": (count,)}
    zeros = bytes(2**22)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("weight_ih_l0.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            # Only the first 64 MiB of data is real; the rest would be cut short at EOF.
            for _ in range(16):
                member.write(zeros)
    outcome = load_in_capped_child(path)
    assert outcome["type"] == "ValueError" and "too large" in outcome["message"], outcome
    assert outcome["peak_rss"] < 512 * 2**20


# ------------------------------------------------------------------------------ small files, big claims
# Each file below is a few megabytes (or a sparse hole) that declares gigabytes. The loader's peak
# memory is measured in a child process against a baseline child that imports the same modules and
# loads nothing: the difference may not exceed the parameter bytes of the model it accepts (tiny here)
# plus LOAD_SLACK. The child's heap is capped, so a regression fails instead of exhausting the machine.
LOAD_SLACK = 64 * 2**20
_MIB = 2**20

_PEAK_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys
    path, mode, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cap:
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    import zipfile, numpy, fastlstm
    if path.endswith((".pt", ".pth")):
        import torch
    if path.endswith(".safetensors"):
        import safetensors.numpy
    outcome = {"type": None, "message": "", "accepted_bytes": 0}
    if mode == "load":
        try:
            model = fastlstm.load(path)
            outcome["message"] = "loaded"
            outcome["accepted_bytes"] = sum(a.nbytes for a in model.state_dict().values())
        except BaseException as exc:
            outcome.update(type=type(exc).__name__, message=str(exc)[:2000])
    outcome["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    outcome["peak_rss"] = outcome["ru_maxrss"]
    try:  # this process's own peak: ru_maxrss can start from the parent's, carried across exec
        with open("/proc/self/status") as status:
            outcome["peak_rss"] = next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    print(json.dumps(outcome))
    """
)


def _run_peak_child(path: Path, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cap = 2 << 30
    if "libasan" in env.get("LD_PRELOAD", ""):  # RLIMIT_DATA breaks ASan; cap single allocations instead
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":allocator_may_return_null=1:max_allocation_size_mb=2048"
        cap = 0
    result = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(path), mode, str(cap)], capture_output=True,
                            text=True, timeout=120, env=env, cwd=tempfile.gettempdir())
    assert result.returncode == 0, f"the child crashed (rc {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


_BASELINES: dict = {}


def load_peak_growth(path: Path) -> dict:
    """What loading `path` raised (type None if it loaded) and its peak RSS growth over a baseline
    child importing the same modules (measured once per suffix)."""
    if path.suffix not in _BASELINES:
        _BASELINES[path.suffix] = _run_peak_child(path, "baseline")["peak_rss"]
    outcome = _run_peak_child(path, "load")
    outcome["growth"] = outcome["peak_rss"] - _BASELINES[path.suffix]
    return outcome


def assert_within_budget(outcome: dict) -> None:
    budget = outcome["accepted_bytes"] + LOAD_SLACK
    assert outcome["growth"] <= budget, (
        f"peak RSS grew by {outcome['growth'] / _MIB:.0f} MiB (budget {budget / _MIB:.0f} MiB): {outcome}")


def deflated(prefix: bytes, zeros: int):
    """(raw deflate stream, CRC-32, size) of `prefix` followed by `zeros` zero bytes. After a full
    flush deflate forgets its history, so every MiB of zeros compresses to the same block: the
    stream is built by repetition in milliseconds instead of compressing gigabytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [compressor.compress(prefix), compressor.flush(zlib.Z_FULL_FLUSH)]
    chunk = bytes(_MIB)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(zeros, _MIB)
    parts.append(block * whole)
    parts.append(compressor.compress(bytes(rest)) + compressor.flush())
    crc = zlib.crc32(prefix)
    for _ in range(whole):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(bytes(rest), crc)
    return b"".join(parts), crc, len(prefix) + zeros


def stored(data: bytes):
    return data, zlib.crc32(data), len(data)


def write_zip(path: Path, members) -> None:
    """A zip archive from (name, method, (data, crc, size)) members, written as given: method 0 is
    stored, 8 deflated (data already compressed). zipfile would refuse duplicate names or recompress."""
    central = []
    with open(path, "wb") as handle:
        for name, method, (data, crc, size) in members:
            offset, encoded = handle.tell(), name.encode()
            handle.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size,
                                     len(encoded), 0) + encoded)
            handle.write(data)
            central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data),
                                       size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
        start = handle.tell()
        handle.write(b"".join(central))
        handle.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central),
                                 handle.tell() - start, start, 0))


def npy_header(shape, descr: str = "<f4", version=(1, 0)) -> bytes:
    """A .npy header of any version (3.0 is 2.0 with a UTF-8 header; others are made up)."""
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("utf-8")
    length_format = "<H" if version[0] < 2 else "<I"
    fixed = 8 + struct.calcsize(length_format)
    text += b" " * (-(fixed + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(length_format, len(text)) + text


def npz_members(arrays: dict, version=(1, 0)):
    return [(f"{name}.npy", 0, stored(npy_header(a.shape, a.dtype.str, version) + a.tobytes()))
            for name, a in arrays.items()]


@pytest.fixture(scope="module")
def arrays(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def test_npz_member_that_is_not_an_array_is_refused_unread(tmp_path, arrays):
    """Valid weights beside notes.txt, 1 GiB of zeros deflated to 1 MB: numpy reads such a member
    whole, as bytes (2.1 GB peak, and the file then loaded)."""
    path = tmp_path / "notes.npz"
    write_zip(path, npz_members(arrays) + [("notes.txt", 8, deflated(b"", 2**30))])
    outcome = load_peak_growth(path)
    assert outcome["type"] == "ValueError" and "'notes.txt'" in outcome["message"], outcome
    assert "notes.npz" in outcome["message"]
    assert_within_budget(outcome)


GIB3 = 3 * 2**30


@pytest.mark.parametrize(
    "case",
    ["v3-weight-1d", "v3-unused-member", "v1-unused-member"],
)
def test_npz_declaring_3_gib_is_not_read(tmp_path, arrays, case):
    """A 3 MB .npz whose member declares (and holds, deflated) 3 GiB of float32: as weight_ih_l0
    with a 1-D shape no LSTM has, or as a member the LSTM does not use. Nothing of it may be read:
    the first is refused by its declared shape, the others load without it. (A version 3.0 header
    used to skip the size check: 3.1 GB before the refusal.)"""
    version = (1, 0) if case.startswith("v1") else (3, 0)
    big = npy_header((GIB3 // 4,), "<f4", version)
    members = npz_members(arrays)
    if case == "v3-weight-1d":
        members = [m for m in members if m[0] != "weight_ih_l0.npy"]
        members.append(("weight_ih_l0.npy", 8, deflated(big, GIB3)))
    else:
        members.append(("embedding.npy", 8, deflated(big, GIB3)))
    path = tmp_path / f"{case}.npz"
    write_zip(path, members)
    assert path.stat().st_size < 8 * _MIB
    outcome = load_peak_growth(path)
    if case == "v3-weight-1d":
        assert outcome["type"] == "ValueError" and "weight_ih_l0" in outcome["message"], outcome
    else:
        assert outcome["type"] is None, outcome
    assert_within_budget(outcome)


def test_pt_with_deflated_records_is_refused_uninflated(tmp_path, module):
    """torch.save stores records uncompressed; a re-packed file can deflate them, and torch.load
    inflates each record whole before looking at it: a 1 MB file took 1.2 GB. Here an extra tensor's
    record is 1 GiB of deflated zeros (the pickle still says one float)."""
    source = tmp_path / "source.pt"
    torch.save(dict(module.state_dict(), extra=torch.zeros(1)), source)
    members = []
    with zipfile.ZipFile(source) as archive:
        last = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.header_offset)
        for info in archive.infolist():
            if info.filename == last.filename:
                members.append((info.filename, 8, deflated(b"", 2**30)))
            else:
                compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
                raw = archive.read(info)
                members.append((info.filename, 8, (compressor.compress(raw) + compressor.flush(), info.CRC,
                                                   info.file_size)))
    path = tmp_path / "deflated.pt"
    write_zip(path, members)
    assert path.stat().st_size < 2 * _MIB
    outcome = load_peak_growth(path)
    assert outcome["type"] == "ValueError" and "compressed" in outcome["message"], outcome
    assert "deflated.pt" in outcome["message"] and "tensor record 'source/data/" in outcome["message"]
    assert_within_budget(outcome)


def test_sparse_safetensors_with_an_unused_3_gib_tensor_reads_only_the_lstm(tmp_path, arrays):
    """A 4 KB sparse file: the LSTM's weights and a 3 GiB tensor the LSTM does not use, all declared
    honestly. Only the LSTM's weights may be read, never the whole file."""
    path = tmp_path / "junk.safetensors"
    header, offset, blobs = {}, 0, []
    for name, array in arrays.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        blobs.append(array.tobytes())
        offset += array.nbytes
    header["embedding.weight"] = {"dtype": "F32", "shape": [GIB3 // 4], "data_offsets": [offset, offset + GIB3]}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob + b"".join(blobs))
        handle.truncate(8 + len(blob) + offset + GIB3)
    outcome = load_peak_growth(path)
    assert outcome["type"] is None, outcome
    assert_within_budget(outcome)


# ------------------------------------------------------------------------------------------ .npz members
def test_npz_with_version_3_headers_loads(tmp_path, arrays, reference):
    path = tmp_path / "v3.npz"
    write_zip(path, npz_members(arrays, version=(3, 0)))
    assert same_model(fastlstm.load(path), reference)


@pytest.mark.parametrize("version", [(0, 0), (1, 1), (2, 1), (4, 0), (255, 255)])
def test_npz_with_unknown_npy_version_is_refused(tmp_path, arrays, version):
    path = tmp_path / "future.npz"
    members = npz_members(arrays)
    members[1] = (members[1][0], 0, stored(npy_header(arrays["weight_hh_l0"].shape, "<f4", version)
                                            + arrays["weight_hh_l0"].tobytes()))
    write_zip(path, members)
    with pytest.raises(ValueError, match=rf"'weight_hh_l0\.npy'.*version {version[0]}\.{version[1]}") as info:
        fastlstm.load(path)
    assert "future.npz" in str(info.value)


@pytest.mark.parametrize("names", [("weight_hh_l0.npy", "weight_hh_l0.npy"), ("weight_hh_l0", "weight_hh_l0.npy"),
                                   ("weight_hh_l0.npy", "weight_hh_l0")])
def test_npz_with_a_member_name_twice_is_refused(tmp_path, arrays, names):
    """zip allows duplicate names and np.load silently serves the last (or prefers 'w.npy' to 'w')."""
    members = [m for m in npz_members(arrays) if m[0] != "weight_hh_l0.npy"]
    for name, scale in zip(names, (1, -1)):
        data = arrays["weight_hh_l0"] * scale
        members.append((name, 0, stored(npy_header(data.shape) + data.tobytes())))
    path = tmp_path / "twice.npz"
    write_zip(path, members)
    with pytest.raises(ValueError, match=r"'weight_hh_l0'.*twice") as info:
        fastlstm.load(path)
    assert "twice.npz" in str(info.value)


@pytest.mark.parametrize("name,content", [("README", b"weights for..."), ("weight_hh_l0.npy", b"not an array"),
                                          ("nested/", b""), ("meta.json", b"{}")])
def test_npz_member_that_is_not_an_npy_array_is_refused(tmp_path, arrays, name, content):
    members = npz_members(arrays)
    if name == "weight_hh_l0.npy":
        members = [m for m in members if m[0] != name]
    path = tmp_path / "extra.npz"
    write_zip(path, members + [(name, 0, stored(content))])
    with pytest.raises(ValueError, match=f"{name!r}.*not an? .npy array") as info:
        fastlstm.load(path)
    assert "extra.npz" in str(info.value)


# ------------------------------------------------------------------------------------------ dtypes
WRONG_DTYPES = ["int32", "float16", "int64", "uint8", "int8", "bool"]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", WRONG_DTYPES)
def test_wrong_dtype_tensors(tmp_path, module, suffix, dtype):
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    everything = {k: v.astype(dtype) for k, v in state.items()}
    one = dict(state, weight_hh_l1=state["weight_hh_l1"].astype(dtype))
    for variant, arrays in (("all", everything), ("one", one)):
        path = tmp_path / f"{dtype}_{variant}{suffix}"
        if suffix == ".safetensors":
            safetensors_numpy.save_file(arrays, str(path))
        elif suffix == ".npz":
            np.savez(path, **arrays)
        else:
            torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
        with pytest.raises(TypeError) as info:
            fastlstm.load(path)
        assert path.name in str(info.value) and dtype in str(info.value), str(info.value)


def test_mixed_float_precisions(tmp_path, module):
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    state["bias_ih_l0"] = state["bias_ih_l0"].astype(np.float64)
    path = tmp_path / "mixed.safetensors"
    safetensors_numpy.save_file(state, str(path))
    with pytest.raises(TypeError, match="mix dtypes"):
        fastlstm.load(path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's deprecation notices for quantized tensors
@pytest.mark.parametrize("kind", ["quantized", "sparse", "complex", "string", "list", "nested-list"])
def test_pt_values_that_are_not_dense_float_tensors(tmp_path, module, kind):
    state = dict(module.state_dict())
    weight = state["weight_ih_l0"]
    state["weight_ih_l0"] = {
        "quantized": lambda: torch.quantize_per_tensor(weight, 0.1, 0, torch.qint8),
        "sparse": lambda: weight.to_sparse(),
        "complex": lambda: weight.to(torch.complex64),
        "string": lambda: "weights",
        "list": lambda: weight.tolist(),
        "nested-list": lambda: [weight],
    }[kind]()
    path = tmp_path / f"{kind}.pt"
    torch.save(state, path)
    assert isinstance(load_outcome(path), ERRORS)


# ------------------------------------------------------------------------------------------ pickles
class _Payload:
    """Unpickling this runs a shell command (os.system) that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload:
    """Unpickling this runs Python source through builtins.exec."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _payloads(marker: Path):
    return {
        "os.system": _Payload(marker),
        "exec": _ExecPayload(marker),
        # A real-looking state_dict with the payload as one more entry.
        "inside-state-dict": {"weight_ih_l0": torch.zeros(24, 5), "x": _Payload(marker)},
        # ...and nested as a checkpoint would nest it.
        "inside-checkpoint": {"model_state_dict": {"rnn.weight_ih_l0": torch.zeros(24, 5)},
                              "optimizer": _ExecPayload(marker)},
    }


def test_payloads_are_live(tmp_path):
    """Control: a plain unpickle of each payload does run it, so the tests below test something."""
    for name, payload in _payloads(tmp_path / "marker").items():
        marker = tmp_path / f"control-{name.replace('.', '_')}"
        blob = pickle.dumps(_payloads(marker)[name])
        pickle.loads(blob)  # noqa: S301 - the point of the control
        assert marker.exists(), name
        marker.unlink()


@pytest.mark.parametrize("container", ["torch.save", "torch.save-legacy", "pickle-protocol-2", "pickle-protocol-0"])
@pytest.mark.parametrize("payload", ["os.system", "exec", "inside-state-dict", "inside-checkpoint"])
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_malicious_pickle_is_not_executed(tmp_path, container, payload, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    obj = _payloads(marker)[payload]
    if container == "torch.save":
        torch.save(obj, path)
    elif container == "torch.save-legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as handle:
            pickle.dump(obj, handle, protocol=int(container[-1]))
    assert not marker.exists()
    with pytest.raises(ValueError) as info:
        fastlstm.load(path)
    assert path.name in str(info.value)
    assert not marker.exists(), "loading the file ran its pickle payload"


def test_npz_with_pickled_object_array_is_not_executed(tmp_path, module):
    marker = tmp_path / "pwned"
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    path = tmp_path / "evil.npz"
    np.savez(path, evil=evil, **state)  # np.savez pickles object arrays
    with pytest.raises(ValueError, match="object array"):
        fastlstm.load(path)
    assert not marker.exists()
    # The same archive under another key name that looks like a weight.
    path2 = tmp_path / "evil2.npz"
    np.savez(path2, **dict(state, weight_ih_l0=evil))
    with pytest.raises(ValueError):
        fastlstm.load(path2)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_pickle_disguised_as_another_format_is_not_executed(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"disguised{suffix}"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError):
        fastlstm.load(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ metadata
def rewrite_metadata(path: Path, out: Path, **changes) -> None:
    """Copy a fastlstm .safetensors with its fastlstm.* metadata changed (None deletes a key)."""
    with safe_open(str(path), framework="np") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for key, value in changes.items():
        if value is None:
            metadata.pop(f"fastlstm.{key}", None)
        else:
            metadata[f"fastlstm.{key}"] = value
    safetensors_numpy.save_file(tensors, str(out), metadata=metadata)


@pytest.fixture()
def saved(tmp_path, reference):
    path = tmp_path / "model.safetensors"
    reference.save(path)
    assert same_model(fastlstm.load(path), reference)
    return path


@pytest.mark.parametrize(
    "changes,pattern",
    [
        (dict(hidden_size="7"), r"hidden_size: metadata 7, tensors 6"),
        (dict(hidden_size="12"), r"hidden_size: metadata 12, tensors 6"),
        (dict(input_size="4"), r"input_size: metadata 4, tensors 5"),
        (dict(num_layers="1"), r"num_layers: metadata 1, tensors 2"),
        (dict(num_layers="3"), r"num_layers: metadata 3, tensors 2"),
        (dict(bidirectional="False"), r"bidirectional: metadata False, tensors True"),
        (dict(proj_size="0"), r"proj_size: metadata 0, tensors 3"),
        (dict(proj_size="2"), r"proj_size: metadata 2, tensors 3"),
        (dict(bias="False"), r"bias: metadata False, tensors True"),
        (dict(hidden_size="7", num_layers="3", bidirectional="False"), r"hidden_size.*num_layers.*bidirectional"),
    ],
    ids=["hidden-7", "hidden-12", "input", "layers-1", "layers-3", "unidirectional", "no-proj", "proj-2",
         "no-bias", "several"],
)
def test_metadata_disagreeing_with_tensors(tmp_path, saved, changes, pattern):
    out = tmp_path / "tampered.safetensors"
    rewrite_metadata(saved, out, **changes)
    with pytest.raises(ValueError, match=pattern) as info:
        fastlstm.load(out)
    assert "tampered.safetensors" in str(info.value)


@pytest.mark.parametrize(
    "key,value",
    [
        ("hidden_size", "6.0"), ("hidden_size", "six"), ("hidden_size", ""), ("hidden_size", "0x6"),
        ("hidden_size", "1e1"), ("hidden_size", "None"), ("hidden_size", "[6]"), ("hidden_size", "9" * 5000),
        ("hidden_size", "-6"), ("hidden_size", "0"), ("input_size", "-5"), ("num_layers", "-2"),
        ("num_layers", "0"), ("proj_size", "-3"), ("proj_size", "6"), ("proj_size", "3.5"),
        ("bidirectional", "true"), ("bidirectional", "1"), ("bidirectional", ""), ("bias", "yes"),
        ("batch_first", "maybe"), ("hidden_size", None), ("num_layers", None), ("bias", None),
        ("format_version", "2"), ("format_version", ""),
        # int() accepts these; metadata is plain ASCII digits only.
        ("hidden_size", " 6"), ("hidden_size", "+6"), ("hidden_size", "\u0666"), ("input_size", "0_5"),
    ],
)
def test_invalid_metadata_values(tmp_path, saved, key, value):
    out = tmp_path / "invalid.safetensors"
    rewrite_metadata(saved, out, **{key: value})
    with pytest.raises(ValueError) as info:
        fastlstm.load(out)
    assert "invalid.safetensors" in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [dict(hidden_size=str(10**12)), dict(input_size=str(10**12)), dict(hidden_size=str(10**30), proj_size="1"),
     dict(num_layers=str(10**9)), dict(num_layers=str(10**18), hidden_size="8"), dict(input_size=str(2**62))],
    ids=["hidden-1e12", "input-1e12", "hidden-1e30", "layers-1e9", "layers-1e18", "input-2^62"],
)
def test_metadata_claiming_absurd_sizes_is_rejected_before_allocating(tmp_path, saved, changes):
    out = tmp_path / "absurd.safetensors"
    rewrite_metadata(saved, out, **changes)
    start = time.perf_counter()
    with PeakMemory() as peak, pytest.raises(ValueError, match="too large") as info:
        fastlstm.load(out)
    assert "absurd.safetensors" in str(info.value)
    assert time.perf_counter() - start < 2.0  # no loop over 10**9 layers either
    assert peak.growth < 64 * 2**20


def test_batch_first_in_metadata_is_honoured_and_overridable(tmp_path, saved, reference):
    """batch_first is the one setting no tensor records: a changed value is not a contradiction."""
    out = tmp_path / "bf.safetensors"
    rewrite_metadata(saved, out, batch_first="True")
    assert fastlstm.load(out).batch_first is True
    assert fastlstm.load(out, batch_first=False).batch_first is False


def test_foreign_metadata_is_ignored(tmp_path, saved, reference):
    out = tmp_path / "foreign.safetensors"
    with safe_open(str(saved), framework="np") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    safetensors_numpy.save_file(tensors, str(out), metadata={"format": "pt", "hidden_size": "999"})
    assert same_model(fastlstm.load(out), reference)
