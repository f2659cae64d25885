"""fastlstm against nn.LSTM on the same weights (the README's accuracy policy, fp32 1e-5 / fp64 1e-12,
held here to the tighter bounds of conftest.held_bound: fp32 2e-6, fp64 2e-14 x max(1, max |reference|)).

* A sampled grid over every hyperparameter and call mode: max abs error of output, h_n and c_n
  within the held bound. The full grid runs under the best ISA; every 6th case also runs
  under each other supported ISA.
* Long sequences (T=1000) at nn.LSTM's own init scale, same bounds, under every ISA.
* Trained-like weights with large cell states (|c| in the tens): fp32 judged against a float64
  reference; fastlstm's fp32 error must stay within 2x torch's own fp32 error.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import zlib
from typing import List

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastlstm  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

from conftest import (  # noqa: E402
    assert_matches_torch,
    isa_params,
    make_torch_lstm,
    max_abs_error,
    random_input,
    random_state,
    record_error,
    run_fast,
    run_torch,
    to_numpy,
)


# ----------------------------------------------------------------------------------- the grid
@dataclasses.dataclass(frozen=True)
class Case:
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int
    bias: bool
    batch_first: bool
    batch: int
    steps: int
    with_hx: bool
    mode: str  # "dense" | "lengths" | "packed" | "unbatched"
    lengths_kind: str  # "mixed" | "equal" | "equal_short" | "ones" (lengths/packed modes only)
    container: str  # "numpy" | "tensor"
    dtype: type

    @property
    def id(self) -> str:
        parts = [
            f"I{self.input_size}",
            f"H{self.hidden_size}",
            f"L{self.num_layers}",
            "bi" if self.bidirectional else "uni",
            f"P{self.proj_size}",
            "bias" if self.bias else "nobias",
            "bf" if self.batch_first else "tm",
            f"B{self.batch}",
            f"T{self.steps}",
            "hx" if self.with_hx else "nohx",
            self.mode + (f"-{self.lengths_kind}" if self.mode in ("lengths", "packed") else ""),
            self.container,
            np.dtype(self.dtype).name,
        ]
        return "-".join(parts)


INPUT_SIZES = [1, 5, 16, 33, 64]
HIDDEN_SIZES = [1, 7, 16, 33, 64, 128]
LAYERS = [1, 2, 3]
BATCHES = [1, 3, 8]
STEPS = [1, 5, 50]
MODES = ["dense", "lengths", "packed", "unbatched"]
LENGTH_KINDS = ["mixed", "equal", "equal_short", "ones"]
DTYPES = [np.float32, np.float64]


def _proj_choices(hidden: int) -> List[int]:
    return [0] if hidden == 1 else [0, max(1, hidden // 3)]


def _sample_cases(count: int, seed: int) -> List[Case]:
    rng = random.Random(seed)
    cases: List[Case] = []
    seen = set()
    while len(cases) < count:
        hidden = rng.choice(HIDDEN_SIZES)
        mode = rng.choice(MODES)
        steps = rng.choice(STEPS)
        # Deep, wide and long together is slow under torch for little extra coverage.
        layers = rng.choice(LAYERS if hidden <= 64 or steps < 50 else [1, 2])
        case = Case(
            input_size=rng.choice(INPUT_SIZES),
            hidden_size=hidden,
            num_layers=layers,
            bidirectional=rng.random() < 0.5,
            proj_size=rng.choice(_proj_choices(hidden)),
            bias=rng.random() < 0.7,
            batch_first=rng.random() < 0.5,
            batch=1 if mode == "unbatched" else rng.choice(BATCHES),
            steps=steps,
            with_hx=rng.random() < 0.5,
            mode=mode,
            lengths_kind=rng.choice(LENGTH_KINDS) if mode in ("lengths", "packed") else "-",
            container="tensor" if mode == "packed" else rng.choice(["numpy", "tensor"]),
            dtype=rng.choice(DTYPES),
        )
        if case not in seen:
            seen.add(case)
            cases.append(case)
    return cases


def _required_cases() -> List[Case]:
    """Hand-picked corners the sampler might miss: the smallest shapes, all options at once."""
    base = dict(input_size=7, hidden_size=33, num_layers=2, bidirectional=True, proj_size=0, bias=True,
                batch_first=False, batch=3, steps=5, with_hx=True, mode="dense", lengths_kind="-",
                container="numpy", dtype=np.float32)
    out = []
    for dtype in DTYPES:
        out += [
            Case(**{**base, "dtype": dtype, "input_size": 1, "hidden_size": 1, "num_layers": 1,
                    "bidirectional": False, "batch": 1, "steps": 1}),
            Case(**{**base, "dtype": dtype, "num_layers": 3, "proj_size": 11, "bias": False, "batch_first": True,
                    "batch": 8, "steps": 50, "mode": "lengths", "lengths_kind": "mixed"}),
            Case(**{**base, "dtype": dtype, "num_layers": 3, "proj_size": 11, "batch": 8, "steps": 50,
                    "mode": "packed", "lengths_kind": "mixed", "container": "tensor"}),
            Case(**{**base, "dtype": dtype, "hidden_size": 128, "input_size": 64, "num_layers": 1, "batch": 1,
                    "steps": 50, "mode": "unbatched", "with_hx": True}),
            Case(**{**base, "dtype": dtype, "hidden_size": 128, "input_size": 64, "num_layers": 1, "batch": 1,
                    "steps": 50, "mode": "unbatched", "with_hx": False}),
        ]
    # Paths the sampled sizes reach rarely: several hidden panels and the threaded split (H=256,
    # 300), batches either side of the fused-step/GEMM switch (4/5 rows), more than 3 layers
    # (scratch ping-pong), a projection much smaller than hidden.
    big = dict(base, input_size=20, hidden_size=256, num_layers=1, bidirectional=False, steps=12)
    out += [
        Case(**{**big, "batch": 4, "with_hx": True}),
        Case(**{**big, "batch": 5, "mode": "lengths", "lengths_kind": "mixed"}),
        Case(**{**big, "hidden_size": 300, "proj_size": 100, "batch": 5, "bidirectional": True,
                "dtype": np.float64}),
        Case(**{**big, "hidden_size": 300, "proj_size": 7, "batch": 8, "batch_first": True, "mode": "packed",
                "lengths_kind": "mixed", "container": "tensor"}),
        Case(**{**base, "num_layers": 5, "batch": 4, "steps": 9, "mode": "lengths", "lengths_kind": "mixed"}),
        Case(**{**base, "num_layers": 4, "proj_size": 5, "batch": 5, "steps": 9, "dtype": np.float64}),
    ]
    return out


CASES: List[Case] = _required_cases() + _sample_cases(300, seed=20240611)


def _check_coverage() -> None:
    """The sampler is seeded, so this is a fixed property of CASES; it guards future edits."""
    for field, values in [
        ("input_size", INPUT_SIZES), ("hidden_size", HIDDEN_SIZES), ("num_layers", LAYERS),
        ("batch", BATCHES), ("steps", STEPS), ("mode", MODES), ("dtype", DTYPES),
        ("bidirectional", [False, True]), ("bias", [False, True]), ("batch_first", [False, True]),
        ("with_hx", [False, True]), ("container", ["numpy", "tensor"]),
    ]:
        missing = set(values) - {getattr(c, field) for c in CASES}
        assert not missing, f"grid misses {field}={missing}"
    for mode, kind in itertools.product(["lengths", "packed"], LENGTH_KINDS):
        assert any(c.mode == mode and c.lengths_kind == kind for c in CASES), (mode, kind)
    assert any(c.proj_size > 0 and c.bidirectional and c.num_layers > 1 for c in CASES)
    assert any(c.mode == "unbatched" and c.with_hx for c in CASES)
    assert any(c.mode == "unbatched" and not c.with_hx for c in CASES)


_check_coverage()

GRID, GRID_IDS = isa_params(CASES, reduced=range(0, len(CASES), 6), ids=[c.id for c in CASES])


def _make_lengths(rng: np.random.Generator, kind: str, batch: int, steps: int) -> np.ndarray:
    if kind == "equal":
        return np.full(batch, steps, np.int64)
    if kind == "equal_short":
        return np.full(batch, max(1, steps // 2), np.int64)
    if kind == "ones":
        return np.ones(batch, np.int64)
    # mixed: unsorted, with a length-1 entry and a full-length one whenever the batch allows
    lengths = rng.integers(1, steps + 1, size=batch)
    if batch >= 2:
        lengths[rng.integers(batch)] = 1
        free = [b for b in range(batch) if lengths[b] != 1] or [0]
        lengths[free[0]] = steps
    if batch >= 3 and np.all(np.diff(lengths) <= 0):  # make sure it is not already sorted
        lengths = lengths[::-1].copy()
    return lengths.astype(np.int64)


@pytest.mark.parametrize("isa,case", GRID, ids=GRID_IDS, indirect=["isa"])
def test_matches_torch(isa: str, case: Case) -> None:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    module = make_torch_lstm(
        case.input_size, case.hidden_size, case.num_layers, case.bias, case.batch_first,
        bidirectional=case.bidirectional, proj_size=case.proj_size, dtype=case.dtype, seed=len(case.id),
    )
    model = fastlstm.LSTM.from_torch(module)
    assert model.dtype == np.dtype(case.dtype)
    where = f"{isa} {case.id}"

    if case.mode == "unbatched":
        x = random_input(rng, (case.steps, case.input_size), case.dtype)
        hx = random_state(rng, module, None, case.dtype) if case.with_hx else None
        if case.container == "tensor":
            x = torch.from_numpy(x)
            hx = None if hx is None else (torch.from_numpy(hx[0]), torch.from_numpy(hx[1]))
        fast = run_fast(model, x, hx)
        assert fast[0].ndim == 2 and fast[1].ndim == 2 and fast[2].ndim == 2
        assert_matches_torch(fast, run_torch(module, x, hx), case.dtype, where)
        return

    shape = (case.batch, case.steps, case.input_size) if case.batch_first else (case.steps, case.batch, case.input_size)
    x = random_input(rng, shape, case.dtype)
    hx = random_state(rng, module, case.batch, case.dtype) if case.with_hx else None
    if case.container == "tensor":
        x = torch.from_numpy(x)
        hx = None if hx is None else (torch.from_numpy(hx[0]), torch.from_numpy(hx[1]))

    if case.mode == "dense":
        output, (h_n, c_n) = model(x, hx)
        assert isinstance(output, np.ndarray if case.container == "numpy" else torch.Tensor)
        fast = (to_numpy(output), to_numpy(h_n), to_numpy(c_n))
        assert_matches_torch(fast, run_torch(module, x, hx), case.dtype, where)
        return

    lengths = _make_lengths(rng, case.lengths_kind, case.batch, case.steps)
    reference = run_torch(module, x, hx, lengths=lengths)
    if case.mode == "lengths":
        given = lengths if case.container == "numpy" else torch.from_numpy(lengths)
        fast = run_fast(model, x, hx, lengths=given)
        assert_matches_torch(fast, reference, case.dtype, where)
        # Past each sequence's end the output is exactly zero, as pad_packed_sequence gives.
        out = fast[0] if not case.batch_first else fast[0].transpose(1, 0, 2)
        for b, n in enumerate(lengths):
            assert not np.any(out[n:, b]), f"non-zero output past length {n} of sequence {b}"
        return

    # PackedSequence in, PackedSequence out
    packed = pack_padded_sequence(x, torch.from_numpy(lengths), batch_first=case.batch_first, enforce_sorted=False)
    with torch.no_grad():
        torch_packed, (t_h, t_c) = module(packed, hx)
    fast_packed, (f_h, f_c) = model(packed, hx)
    assert isinstance(fast_packed, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(fast_packed.batch_sizes, torch_packed.batch_sizes)
    assert torch.equal(fast_packed.sorted_indices, torch_packed.sorted_indices)
    assert torch.equal(fast_packed.unsorted_indices, torch_packed.unsorted_indices)
    assert_matches_torch(
        (to_numpy(fast_packed.data), to_numpy(f_h), to_numpy(f_c)),
        (to_numpy(torch_packed.data), to_numpy(t_h), to_numpy(t_c)),
        case.dtype, where,
    )
    # Unpacked, it is the padded output of the same call with lengths=: zeros past each end.
    padded, _ = pad_packed_sequence(fast_packed, batch_first=case.batch_first, total_length=case.steps)
    assert_matches_torch((to_numpy(padded), to_numpy(f_h), to_numpy(f_c)), reference, case.dtype, where)


# ----------------------------------------------------------------------------- threads
THREAD_CASES = [
    # (hidden, batch, bidirectional, proj, with lengths): big enough for the split heuristics
    (256, 4, False, 0, False),
    (256, 8, False, 0, True),
    (320, 2, False, 64, False),
    (64, 4, True, 0, False),
    (64, 6, True, 0, True),
]


@pytest.mark.parametrize("hidden,batch,bidirectional,proj_size,with_lengths", THREAD_CASES,
                         ids=[f"H{h}-B{b}-{'bi' if bi else 'uni'}-P{p}-{'len' if ln else 'dense'}"
                              for h, b, bi, p, ln in THREAD_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_thread_count_does_not_change_results(isa, hidden, batch, bidirectional, proj_size, with_lengths, dtype):
    """Splitting hidden units (or directions) across threads changes no arithmetic: results are
    bitwise equal for 1 and 2 threads and match torch. Teams form only if workers join in time,
    so the threaded call is repeated."""
    module = make_torch_lstm(24, hidden, 2, bidirectional=bidirectional, proj_size=proj_size, dtype=dtype, seed=hidden)
    model = fastlstm.LSTM.from_torch(module)
    rng = np.random.default_rng(hidden + batch)
    x = random_input(rng, (30, batch, 24), dtype)
    hx = random_state(rng, module, batch, dtype)
    lengths = rng.integers(1, 31, size=batch) if with_lengths else None
    single = model(x, hx, lengths=lengths, num_threads=1)
    assert_matches_torch((single[0], *single[1]), run_torch(module, x, hx, lengths=lengths), dtype,
                         f"{isa} threads=1 H{hidden}")
    for _ in range(3):
        multi = model(x, hx, lengths=lengths, num_threads=2)
        for got, want in zip((multi[0], *multi[1]), (single[0], *single[1])):
            np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- many-row GEMM path
@pytest.mark.parametrize("batch", [5, 7, 13, 32, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_gemm_row_tiles_match_torch_and_each_row_alone(isa, batch, dtype):
    """Batches above four rows (two with AVX2) take the GEMM step, in row tiles of near-equal height (13 rows: 4,4,5
    with AVX2 fp32), on weights packed in reduction blocks of 256 (H_out = 300 spans a whole block
    and a partial one; the projection GEMM has one gate). Each row must match torch and equal its
    own one-row run bitwise, whatever tile it fell in."""
    x = random_input(np.random.default_rng(batch), (6, batch, 20), dtype)
    for proj_size in (0, 270):
        module = make_torch_lstm(20, 300, 1, proj_size=proj_size, dtype=dtype, seed=batch + proj_size)
        fast = fastlstm.LSTM.from_torch(module)
        output, (h_n, c_n) = fast(x, num_threads=1)
        assert_matches_torch((output, h_n, c_n), run_torch(module, x), dtype, f"{isa} GEMM step B{batch} P{proj_size}")
        for row in (0, batch // 2, batch - 1):
            alone, _ = fast(np.ascontiguousarray(x[:, row : row + 1]), num_threads=1)
            np.testing.assert_array_equal(output[:, row : row + 1], alone)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_input_spanning_two_reduction_blocks(isa, dtype):
    """W_ih with input_size = 300: a whole 256-k block and a partial one, read by the projection GEMM
    (a sequence, at batch 1 and 6) and by the fused single step, which adds x W_ih itself."""
    module = make_torch_lstm(300, 40, 1, dtype=dtype, seed=7)
    fast = fastlstm.LSTM.from_torch(module)
    for batch in (1, 6):
        x = random_input(np.random.default_rng(batch), (5, batch, 300), dtype)
        output, (h_n, c_n) = fast(x, num_threads=1)
        assert_matches_torch((output, h_n, c_n), run_torch(module, x), dtype, f"{isa} I300 B{batch}")
        step_output, (step_h, step_c) = fast.step(x[0])
        assert_matches_torch((step_output[None], step_h, step_c), run_torch(module, x[:1]), dtype,
                             f"{isa} I300 B{batch} step")


# ----------------------------------------------------------------------------- long sequences
LONG_CASES = [
    # (batch, dtype, num_layers, bidirectional, proj_size)
    (1, np.float32, 1, False, 0),
    (4, np.float32, 2, True, 0),
    (1, np.float64, 1, False, 0),
    (4, np.float64, 2, True, 0),
    (4, np.float32, 1, False, 20),
    (4, np.float64, 1, False, 20),
]


@pytest.mark.parametrize(
    "batch,dtype,num_layers,bidirectional,proj_size", LONG_CASES,
    ids=[f"B{b}-{np.dtype(d).name}-L{n}-{'bi' if bi else 'uni'}-P{p}" for b, d, n, bi, p in LONG_CASES],
)
def test_long_sequence_at_init_scale(isa, batch, dtype, num_layers, bidirectional, proj_size) -> None:
    """T=1000 at nn.LSTM's own init scale: the accuracy policy's bound holds over the whole run."""
    steps = 1000
    module = make_torch_lstm(16, 64, num_layers, bidirectional=bidirectional, proj_size=proj_size, dtype=dtype,
                             seed=batch + num_layers)
    model = fastlstm.LSTM.from_torch(module)
    rng = np.random.default_rng(7)
    x = random_input(rng, (steps, batch, 16), dtype)
    hx = random_state(rng, module, batch, dtype)
    assert_matches_torch(run_fast(model, x, hx), run_torch(module, x, hx), dtype, f"{isa} long T={steps} B={batch}")


def test_long_sequence_with_lengths(isa) -> None:
    """T=1000 with variable lengths, bidirectional: the reverse direction starts deep inside."""
    module = make_torch_lstm(8, 33, 1, bidirectional=True, dtype=np.float32, seed=3)
    model = fastlstm.LSTM.from_torch(module)
    rng = np.random.default_rng(8)
    x = random_input(rng, (1000, 4, 8), np.float32)
    lengths = np.array([700, 1000, 1, 333], np.int64)
    assert_matches_torch(run_fast(model, x, lengths=lengths), run_torch(module, x, lengths=lengths), np.float32,
                         f"{isa} long lengths")


# ------------------------------------------------------------------ large cell states (trained-like)
def _trained_like_lstm(seed: int, dtype, hidden: int = 64, input_size: int = 16, num_layers: int = 3,
                       bidirectional: bool = False, proj_size: int = 0):
    """nn.LSTM init with input weights x4 and the forget gate biased +4: the cells integrate their
    input over hundreds of steps, so |c| reaches tens (as in trained speech models) while the
    recurrence stays non-chaotic; torch's own fp32 error is then ~1e-5..1e-4."""
    module = make_torch_lstm(input_size, hidden, num_layers, bidirectional=bidirectional, proj_size=proj_size,
                             dtype=dtype, seed=seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("weight_ih"):
                p.mul_(4.0)
            if name.startswith("bias_ih"):
                p[hidden: 2 * hidden] += 4.0  # gate order i, f, g, o
    return module


LARGE_STATE_CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(proj_size=16),
    dict(hidden=33, input_size=7),
]


@pytest.mark.parametrize("config", LARGE_STATE_CONFIGS, ids=["L3", "L2-bi", "L3-proj16", "L3-H33-I7"])
def test_large_cell_states_fp32_within_2x_torch(isa, config) -> None:
    """Judge fp32 against a float64 torch reference on the same weights: fastlstm's fp32 error must
    not exceed 2x torch's own fp32 error. In this regime both errors are sums of many roundings that
    the recurrence carries along, so for one sequence the ratio scatters (0.3..2 observed); the test
    compares the errors summed over four independent seeds, which is what "2x torch's error" means
    for a noisy quantity."""
    steps, batch = 300, 2
    torch_errors, fast_errors, largest_c = [], [], 0.0
    for seed in range(4):
        reference_module = _trained_like_lstm(seed, np.float64, **config)
        module32 = _trained_like_lstm(seed, np.float64, **config).float()
        model = fastlstm.LSTM.from_torch(module32)
        rng = np.random.default_rng(100 + seed)
        x64 = rng.standard_normal((steps, batch, reference_module.input_size))
        x32 = x64.astype(np.float32)
        reference = run_torch(reference_module, x32.astype(np.float64))
        torch32 = run_torch(module32, x32)
        fast32 = run_fast(model, x32)
        largest_c = max(largest_c, float(np.abs(reference[2]).max()))
        torch_errors.append(max(max_abs_error(a, b) for a, b in zip(torch32, reference)))
        fast_errors.append(max(max_abs_error(a, b) for a, b in zip(fast32, reference)))
        assert fast_errors[-1] < 1e-2, f"fp32 error {fast_errors[-1]} against float64 is far off"
    assert largest_c > 10, f"the weights did not reach the large-state regime (max |c| = {largest_c})"
    record_error("float32", max(fast_errors), f"{isa} large |c| {config}; torch fp32 worst {max(torch_errors):.2e}",
                 against="float64 torch, large |c|")
    assert sum(fast_errors) <= 2 * sum(torch_errors) + 1e-6, (
        f"fastlstm fp32 errors {fast_errors} vs torch fp32 errors {torch_errors} (max |c| {largest_c:.1f})"
    )


def test_large_cell_states_fp64_matches_torch(isa) -> None:
    """The same large-state weights in float64: fastlstm and torch agree to the held bound, which
    scales with |c| (c reaches ~90, where an ulp is 1.4e-14): 2e-14 x 87 = 1.7e-12, against a
    measured 1.7e-13 (a zeroed 1/11! in the fp64 exp polynomial gave 1.2e-11 here)."""
    module = _trained_like_lstm(0, np.float64)
    model = fastlstm.LSTM.from_torch(module)
    x = np.random.default_rng(0).standard_normal((300, 2, 16))
    reference = run_torch(module, x)
    assert np.abs(reference[2]).max() > 10
    assert_matches_torch(run_fast(model, x), reference, np.float64,
                         f"{isa} max |c| {np.abs(reference[2]).max():.1f}", against="nn.LSTM, same dtype, large |c|")


# ----------------------------------------------------------------------------- property-based
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _random_call(draw):
    hidden = draw(st.integers(1, 40))
    batch = draw(st.integers(1, 9))
    steps = draw(st.integers(1, 12))
    config = dict(
        input_size=draw(st.integers(1, 20)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 3)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        proj_size=draw(st.integers(0, hidden - 1)) if hidden > 1 and draw(st.booleans()) else 0,
    )
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(1, steps), min_size=batch, max_size=batch)))
    return config, batch, steps, lengths, draw(st.booleans()), draw(st.sampled_from(["float32", "float64"]))


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_random_call())
def test_random_configurations_match_torch(call) -> None:
    """Odd sizes the grid does not list (hidden 17, input 1, proj 1, ...), with or without lengths
    and states, under the default (best) ISA."""
    config, batch, steps, lengths, with_hx, dtype_name = call
    dtype = np.dtype(dtype_name).type
    module = make_torch_lstm(**config, dtype=dtype, seed=batch * 31 + steps)
    model = fastlstm.LSTM.from_torch(module)
    rng = np.random.default_rng(steps)
    shape = (batch, steps, config["input_size"]) if config["batch_first"] else (steps, batch, config["input_size"])
    x = random_input(rng, shape, dtype)
    hx = random_state(rng, module, batch, dtype) if with_hx else None
    assert_matches_torch(run_fast(model, x, hx, lengths=lengths), run_torch(module, x, hx, lengths=lengths), dtype,
                         f"hypothesis {config} B{batch} T{steps} lengths={lengths}")
