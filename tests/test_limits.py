"""Limits: absurd sizes are refused by arithmetic before anything is allocated, and extreme values
(±1e30, ±Inf, NaN, denormals) flow through exactly as they do in nn.LSTM.

The size policy these tests hold fastlstm to (fastlstm/_checks.py: MAX_PARAMETER_ELEMENTS,
MAX_MODEL_BYTES and check_parameter_sizes, which LSTMConfig.check_size runs for the constructor and
the loaders run on what they would read or copy):
  * any parameter tensor with more than 2**31 elements is refused,
  * any model whose parameters take more than 2**34 bytes (16 GiB) is refused,
with a ValueError whose message says "too large", computed in exact integer arithmetic (products
of declared sizes overflow 64 bits) and without iterating over absurd layer counts.

Calls that could allocate if a check regressed run in a child process whose heap is capped
(RLIMIT_DATA), so that a regression fails the test instead of exhausting a shared CI machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastlstm  # noqa: E402

# Children import the fastlstm under test (source tree or installed), and run from a neutral
# directory so a source checkout in the working directory cannot shadow it.
PACKAGE_PARENT = Path(fastlstm.__file__).resolve().parent.parent

MAX_PARAMETER_ELEMENTS = 2**31
MAX_MODEL_BYTES = 2**34
CHILD_HEAP_LIMIT = 1 << 30  # 1 GiB: far above what a refused call needs, far below the sizes tried
CHILD_RSS_BUDGET = 256 * 2**20  # the child itself (Python, numpy, fastlstm) takes about 30 MiB

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, traceback
    limit = int(sys.argv[1])
    if limit:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import numpy as np
    import fastlstm
    from fastlstm import _core

    def peak_rss():
        # VmHWM belongs to this process's own memory map; ru_maxrss would start from the parent's
        # peak, which Linux carries across fork and exec.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    outcomes = []
    for source in json.loads(sys.argv[2]):
        result = None
        try:
            result = eval(source)
            outcome = {"source": source, "type": None, "message": repr(type(result))}
        except BaseException as exc:
            outcome = {"source": source, "type": type(exc).__name__, "message": str(exc)[:500]}
        del result
        outcome["peak_rss"] = peak_rss()
        outcomes.append(outcome)
    peak = peak_rss()
    print(json.dumps({"outcomes": outcomes, "peak_rss": peak}))
    """
)


def capped_child_env() -> Tuple[dict, int]:
    """The environment and RLIMIT_DATA for a child whose allocations are capped. Under
    AddressSanitizer (.ci/sanitize preloads it) RLIMIT_DATA breaks the sanitizer's own mappings,
    so the cap is ASan's instead: any single allocation over 1 GiB fails (returns NULL, which
    numpy and C++ report as MemoryError/bad_alloc) rather than being made."""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if "libasan" in env.get("LD_PRELOAD", ""):
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":allocator_may_return_null=1:max_allocation_size_mb=1024"
        return env, 0
    return env, CHILD_HEAP_LIMIT


def run_capped(sources: List[str], timeout: float = 120) -> dict:
    """Evaluate each expression in a child with a capped heap; report what each raised."""
    env, limit = capped_child_env()
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(limit), json.dumps(sources)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=tempfile.gettempdir(),
    )
    assert result.returncode == 0, f"the child crashed (rc {result.returncode}): {result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_all_refused(report: dict, types=("ValueError",), pattern: str = "too large") -> None:
    problems = []
    for outcome in report["outcomes"]:
        if outcome["type"] not in types or pattern.lower() not in outcome["message"].lower():
            problems.append(f"{outcome['source']}: {outcome['type']}: {outcome['message'][:300]}")
    assert not problems, "not refused with " + "/".join(types) + f" mentioning {pattern!r}:\n  " + "\n  ".join(problems)
    assert report["peak_rss"] < CHILD_RSS_BUDGET, f"peak RSS {report['peak_rss'] / 2**20:.0f} MiB: something was allocated"


# ------------------------------------------------------------------------------------------ constructor
ABSURD_CONSTRUCTIONS = [
    "fastlstm.LSTM(input_size=2**40, hidden_size=8)",
    "fastlstm.LSTM(input_size=8, hidden_size=2**40)",
    "fastlstm.LSTM(input_size=2**62, hidden_size=2**62)",  # products overflow 64 bits
    "fastlstm.LSTM(input_size=8, hidden_size=2**16)",  # weight_hh: 2**34 elements
    "fastlstm.LSTM(input_size=2**26 + 1, hidden_size=8)",  # weight_ih: just over 2**31 elements
    "fastlstm.LSTM(input_size=8, hidden_size=2**40, proj_size=1)",
    "fastlstm.LSTM(input_size=2**13, hidden_size=2**13, num_layers=9)",  # 18 GiB of fp32, each tensor fine
    "fastlstm.LSTM(input_size=2**13, hidden_size=2**13, num_layers=5, dtype=np.float64)",  # 20 GiB of fp64
    "fastlstm.LSTM(input_size=2**13, hidden_size=2**13, num_layers=5, bidirectional=True)",  # 20 GiB
    "fastlstm.LSTM(input_size=8, hidden_size=8, num_layers=2**40)",  # must not loop over 2**40 layers
    "fastlstm.LSTM(input_size=8, hidden_size=8, num_layers=10**30, bidirectional=True)",
]


def test_constructor_refuses_absurd_sizes_before_allocating():
    """Before the limit in LSTMConfig.check_size, these drew the random weights first
    (np.random.Generator.uniform, float64): MemoryError for the absurd ones, tens of GiB actually
    allocated for those that fit in RAM, and a loop over 2**40 layers for the last two."""
    assert_all_refused(run_capped(ABSURD_CONSTRUCTIONS))


def test_the_package_states_the_same_policy():
    from fastlstm import _checks

    assert _checks.MAX_PARAMETER_ELEMENTS == MAX_PARAMETER_ELEMENTS
    assert _checks.MAX_MODEL_BYTES == MAX_MODEL_BYTES


def test_constructor_accepts_sizes_at_the_edge_of_reason():
    """Big but legitimate models must still build (hidden 2048: 32 MiB per W_hh)."""
    model = fastlstm.LSTM(64, 2048, seed=0)
    output, (h_n, c_n) = model(np.zeros((1, 1, 64), np.float32))
    assert output.shape == (1, 1, 2048) and np.isfinite(output).all()


BROADCAST_STATE_DICTS = [
    # Zero-stride views: a few bytes of memory, absurd shapes. Copying them is what must not happen.
    "fastlstm.LSTM.from_state_dict({'weight_ih_l0': np.broadcast_to(np.float32(0), (32, 2**31)),"
    " 'weight_hh_l0': np.zeros((32, 8), np.float32)})",
    "fastlstm.LSTM.from_state_dict({'weight_ih_l0': np.broadcast_to(np.float32(0), (2**18, 8)),"
    " 'weight_hh_l0': np.broadcast_to(np.float32(0), (2**18, 2**16))})",
    "fastlstm.LSTM(8, 2**16, weights={'weight_ih_l0': np.broadcast_to(np.float32(0), (2**18, 8)),"
    " 'weight_hh_l0': np.broadcast_to(np.float32(0), (2**18, 2**16))})",
    "fastlstm.LSTM.from_state_dict({f'{kind}_l{layer}': np.broadcast_to(np.float64(0), (2**15, 2**13))"
    " for layer in range(5) for kind in ('weight_ih', 'weight_hh')})",  # 5 x 2 x 2 GiB of fp64
]


def test_state_dict_of_broadcast_views_is_refused_before_copying():
    assert_all_refused(run_capped(BROADCAST_STATE_DICTS))


# ------------------------------------------------------------------------------------------ _core
def test_core_constructor_refuses_absurd_dims():
    """The extension validates its own arguments (it must be safe to call directly): absurd dims
    are refused before any weight is read or any packed buffer allocated."""
    calls = [
        "_core.PackedLstmF32(2**40, 8, 1, True, False, 0, [])",
        "_core.PackedLstmF32(8, 2**40, 1, True, False, 0, [])",
        "_core.PackedLstmF64(8, 8, 2**40, True, False, 0, [])",
        "_core.PackedLstmF32(8, 2**62, 1, True, True, 2**61, [])",
    ]
    assert_all_refused(run_capped(calls))
    # Within the core's per-dimension caps (2**24, 1024 layers) the products are still absurd
    # (2**50 elements per weight): refused because no such weight arrays exist, before packing.
    report = run_capped(["_core.PackedLstmF32(2**24, 2**24, 1024, True, True, 2**23, [])"])
    assert_all_refused(report, pattern="weight")


def test_core_constructor_refuses_arrays_that_do_not_match_or_are_not_real():
    calls = [
        # Arrays of the claimed absurd shapes that hold no memory (broadcast): not C-contiguous.
        "_core.PackedLstmF32(2**24, 2**22, 1, False, False, 0, "
        "[np.broadcast_to(np.float32(0), (2**24, 2**24)), np.broadcast_to(np.float32(0), (2**24, 2**22))])",
        # Within the dims' caps, but the arrays are small: shapes disagree.
        "_core.PackedLstmF32(2**24, 2**24, 1, False, False, 0, [np.zeros((4, 4), np.float32)] * 2)",
        # Right shapes, wrong dtype; and arrays with negative strides.
        "_core.PackedLstmF32(3, 2, 1, False, False, 0, [np.zeros((8, 3)), np.zeros((8, 2))])",
        "_core.PackedLstmF32(3, 2, 1, False, False, 0, [np.zeros((8, 3), np.float32)[::-1], np.zeros((8, 2), np.float32)])",
        "_core.PackedLstmF32(3, 2, 1, False, False, 0, [np.zeros((8, 3), np.float32)])",  # too few
        "_core.PackedLstmF32(3, 2, 1, False, False, 0, [np.zeros((8, 3), np.float32)] * 3)",  # too many
        "_core.PackedLstmF32(-3, 2, 1, False, False, 0, [])",
        "_core.PackedLstmF32(3, 2, 0, False, False, 0, [])",
        "_core.PackedLstmF32(3, 2, 1, False, False, 2, [])",  # proj_size == hidden_size
        "_core.PackedLstmF32(3, 2, 1, False, False, -1, [])",
        "_core.PackedLstmF32(2**63, 2, 1, False, False, 0, [])",  # does not fit int64: a TypeError
        "_core.PackedLstmF32(3, 2, 1, False, False, 0, [[0.0] * 3] * 8)",
        "_core.PackedLstmF32(3, 2, 1, False, False, 0, None)",
    ]
    report = run_capped(calls)
    problems = [o for o in report["outcomes"] if o["type"] not in ("ValueError", "TypeError")]
    assert not problems, problems
    assert report["peak_rss"] < CHILD_RSS_BUDGET


def test_calls_with_absurd_batch_or_length_fail_cleanly():
    """Broadcast inputs declare (T, B) of 2**31 x 2**31 in a few bytes. The output alone would take
    exabytes: the call must fail with ValueError or MemoryError (numpy's refusal to allocate it),
    promptly, never crash or write out of bounds; the same for step() and for states."""
    setup = "fastlstm.LSTM(4, 8, seed=0)"
    calls = [
        f"{setup}(np.broadcast_to(np.zeros(4, np.float32), (2**31, 2**31, 4)))",
        f"{setup}(np.broadcast_to(np.zeros(4, np.float32), (2**40, 2**21, 4)))",  # out: 2**61 x 8 floats
        f"{setup}(np.broadcast_to(np.zeros(4, np.float32), (2**20, 4)))",  # unbatched, 32 MiB out: fine
        f"{setup}(np.broadcast_to(np.zeros(4, np.float32), (3, 2**40, 4)), (np.broadcast_to(np.float32(0), (1, 2**40, 8)),)*2)",
        f"{setup}.step(np.broadcast_to(np.zeros(4, np.float32), (2**40, 4)))",
        f"{setup}(np.broadcast_to(np.zeros(4, np.float32), (2, 2**33, 4)), lengths=np.broadcast_to(np.int64(1), (2**33,)))",
        "fastlstm.LSTM(4, 8, seed=0, bidirectional=True, num_layers=2)(np.broadcast_to(np.zeros(4, np.float32), (2**31, 2**31, 4)))",
    ]
    report = run_capped(calls)
    problems = []
    for outcome in report["outcomes"]:
        if outcome["source"].endswith("(2**20, 4)))"):
            if outcome["type"] is not None:
                problems.append(outcome)  # 2**20 steps of batch 1 is a legitimate call
        elif outcome["type"] not in ("ValueError", "MemoryError"):
            problems.append(outcome)
    assert not problems, problems


# ------------------------------------------------------------------------------------------ values
TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}
DENORMAL = {np.float32: 1e-40, np.float64: 1e-310}
EXTREMES = ["1e30", "-1e30", "inf", "-inf", "nan", "denormal", "mixed"]
PLACES = ["input", "h0", "c0", "weight_ih", "weight_hh", "bias", "weight_hr"]


def assert_same_values(got: np.ndarray, want: np.ndarray, dtype, what: str) -> None:
    """NaN exactly where torch has NaN, the same infinities, finite values within tolerance
    (relative to their magnitude: c can carry 1e30 through the forget gate)."""
    assert got.shape == want.shape, what
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    assert np.array_equal(nan_got, nan_want), (
        f"{what}: NaN at {np.argwhere(nan_got & ~nan_want)[:5].tolist()} where torch has none, "
        f"missing at {np.argwhere(nan_want & ~nan_got)[:5].tolist()}"
    )
    inf_got, inf_want = np.isinf(got), np.isinf(want)
    assert np.array_equal(inf_got, inf_want) and np.array_equal(got[inf_got], want[inf_want]), f"{what}: infinities differ"
    finite = np.isfinite(want)
    if finite.any():
        # Rounding scales with the terms summed, not with the result: 1e30-sized weights can cancel
        # to 1e27, and both engines then carry ~1e30 * eps of error.
        scale = max(1.0, float(np.max(np.abs(want[finite]))))
        error = float(np.max(np.abs(got[finite].astype(np.float64) - want[finite])))
        assert error <= TOLERANCE[dtype] * scale, f"{what}: max abs error {error:.3g} > {TOLERANCE[dtype]:g} x {scale:.3g}"


def extreme_values(rng: np.random.Generator, shape, name: str, dtype) -> np.ndarray:
    """An array of `shape` with about a fifth of its entries (at least one) set to the extreme."""
    values = {"1e30": 1e30, "-1e30": -1e30, "inf": np.inf, "-inf": -np.inf, "nan": np.nan}
    if name == "denormal":
        return (np.sign(rng.standard_normal(shape)) * DENORMAL[dtype]).astype(dtype)
    mask = rng.random(shape) < 0.2
    mask.flat[rng.integers(mask.size)] = True
    if name == "mixed":
        pool = np.array([1e30, -1e30, np.inf, -np.inf, np.nan, DENORMAL[dtype]], dtype)
        fill = pool[rng.integers(len(pool), size=shape)]
    else:
        fill = np.full(shape, values[name], dtype)
    return np.where(mask, fill, (rng.standard_normal(shape) * 0.5).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("extreme", EXTREMES)
def test_extreme_values_behave_like_torch(dtype, place, extreme):
    """Batch 2 (the fused step) and 7 (the GEMM path), with and without lengths, every kernel set."""
    seed = (PLACES.index(place) * 31 + EXTREMES.index(extreme)) * 2 + (dtype is np.float64)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    proj = 3 if place == "weight_hr" else 0
    module = nn.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=proj, dtype=TORCH_DTYPES[dtype]).eval()
    if place.startswith("weight") or place == "bias":
        with torch.no_grad():
            for name, parameter in module.named_parameters():
                if name.startswith(place if place != "bias" else "bias_ih") and name.endswith("l0"):
                    parameter.copy_(torch.from_numpy(extreme_values(rng, tuple(parameter.shape), extreme, dtype)))
    model = fastlstm.LSTM.from_torch(module)
    h_out = proj or 6
    for batch in (2, 7):
        x = (rng.standard_normal((4, batch, 5))).astype(dtype)
        h0 = (rng.standard_normal((4, batch, h_out)) * 0.5).astype(dtype)
        c0 = (rng.standard_normal((4, batch, 6)) * 0.5).astype(dtype)
        if place == "input":
            x = extreme_values(rng, x.shape, extreme, dtype)
        elif place == "h0":
            h0 = extreme_values(rng, h0.shape, extreme, dtype)
        elif place == "c0":
            c0 = extreme_values(rng, c0.shape, extreme, dtype)
        lengths = rng.integers(1, 5, size=batch)
        lengths[0] = 4
        for use_lengths in (False, True):
            with torch.no_grad():
                hx_t = (torch.from_numpy(h0.copy()), torch.from_numpy(c0.copy()))
                if use_lengths:
                    packed = nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x.copy()), torch.from_numpy(lengths),
                                                               enforce_sorted=False)
                    out_t, (h_t, c_t) = module(packed, hx_t)
                    out_t, _ = nn.utils.rnn.pad_packed_sequence(out_t, total_length=4)
                else:
                    out_t, (h_t, c_t) = module(torch.from_numpy(x.copy()), hx_t)
            want = (out_t.numpy(), h_t.numpy(), c_t.numpy())
            for isa in fastlstm.cpu_info()["supported_isas"]:
                previous = fastlstm.cpu_info()["isa"]
                fastlstm.set_isa(isa)
                try:
                    got = model(x, (h0, c0), lengths=lengths if use_lengths else None)
                finally:
                    fastlstm.set_isa(previous)
                got = (got[0], got[1][0], got[1][1])
                for name, g, w in zip(("output", "h_n", "c_n"), got, want):
                    assert_same_values(g, w, dtype, f"{name}, {extreme} in {place}, batch {batch}, "
                                                    f"lengths={use_lengths}, isa {isa}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["fp32", "fp64"])
def test_huge_finite_inputs_never_make_nan(dtype):
    """Saturated gates: sigmoid(±1e30) is 0 or 1 and tanh(±1e30) is ±1 in every kernel, never
    NaN from an overflowing exp (torch has no NaN here, so neither may fastlstm)."""
    torch.manual_seed(0)
    module = nn.LSTM(3, 40, dtype=TORCH_DTYPES[dtype]).eval()
    model = fastlstm.LSTM.from_torch(module)
    big = np.finfo(dtype).max / 16
    x = np.array([[[big, -big, 0]], [[-big, big, big]], [[1e30, -1e30, 1e-30]], [[0, 0, 0]]], dtype)
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    assert np.isfinite(want).all()
    for isa in fastlstm.cpu_info()["supported_isas"]:
        previous = fastlstm.cpu_info()["isa"]
        fastlstm.set_isa(isa)
        try:
            got = model(x)[0]
        finally:
            fastlstm.set_isa(previous)
        assert np.isfinite(got).all(), f"{isa}: non-finite output for huge finite input"
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE[dtype], err_msg=isa)
