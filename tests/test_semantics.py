"""nn.LSTM's semantics beyond raw accuracy: types, shapes, states, lengths, memory layouts, edge
cases, attributes, pickling and non-finite values. torch is the oracle throughout."""

from __future__ import annotations

import copy
import pickle
from typing import Any, Dict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import (  # noqa: E402
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
)

import fastlstm  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

from conftest import (  # noqa: E402
    assert_matches_torch,
    held_bound,
    make_torch_lstm,
    max_abs_error,
    random_input,
    random_state,
    reference_scale,
    run_fast,
    run_torch,
    to_numpy,
)

# A few configurations that change the shapes (each with a short id).
CONFIGS: Dict[str, Dict[str, Any]] = {
    "plain": dict(input_size=4, hidden_size=6),
    "deep-bi": dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True),
    "proj-bf": dict(input_size=5, hidden_size=9, num_layers=2, proj_size=3, batch_first=True),
    "all": dict(input_size=3, hidden_size=8, num_layers=3, bidirectional=True, proj_size=5, bias=False,
                batch_first=True),
}


def _pair(name: str, dtype=np.float32, seed: int = 0):
    module = make_torch_lstm(**CONFIGS[name], dtype=dtype, seed=seed)
    return module, fastlstm.LSTM.from_torch(module)


def _input(module, batch: int, steps: int, dtype=np.float32, seed: int = 0) -> np.ndarray:
    shape = (batch, steps, module.input_size) if module.batch_first else (steps, batch, module.input_size)
    return random_input(np.random.default_rng(seed), shape, dtype)


def _expected_shapes(module, batch, steps):
    d = 2 if module.bidirectional else 1
    h_out = module.proj_size or module.hidden_size
    lead = module.num_layers * d
    if batch is None:
        return (steps, d * h_out), (lead, h_out), (lead, module.hidden_size)
    out = (batch, steps, d * h_out) if module.batch_first else (steps, batch, d * h_out)
    return out, (lead, batch, h_out), (lead, batch, module.hidden_size)


# ------------------------------------------------------------------------------ types and shapes
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_numpy_in_numpy_out(name, dtype):
    module, model = _pair(name, dtype)
    x = _input(module, 3, 4, dtype)
    output, (h_n, c_n) = model(x)
    for value in (output, h_n, c_n):
        assert type(value) is np.ndarray
        assert value.dtype == np.dtype(dtype)
    assert (output.shape, h_n.shape, c_n.shape) == _expected_shapes(module, 3, 4)
    assert_matches_torch((output, h_n, c_n), run_torch(module, x), dtype, "numpy in/out")


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_tensor_in_tensor_out(name, dtype):
    module, model = _pair(name, dtype)
    x = torch.from_numpy(_input(module, 2, 3, dtype))
    output, (h_n, c_n) = model(x)
    with torch.no_grad():
        t_out, (t_h, t_c) = module(x)
    for got, want in ((output, t_out), (h_n, t_h), (c_n, t_c)):
        assert isinstance(got, torch.Tensor)
        assert got.dtype == want.dtype and got.shape == want.shape and got.device.type == "cpu"
    assert_matches_torch(tuple(map(to_numpy, (output, h_n, c_n))), tuple(map(to_numpy, (t_out, t_h, t_c))), dtype)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_unbatched_shapes(name):
    module, model = _pair(name)
    x = random_input(np.random.default_rng(0), (5, module.input_size), np.float32)
    fast = run_fast(model, x)
    assert tuple(a.shape for a in fast) == _expected_shapes(module, None, 5)
    assert_matches_torch(fast, run_torch(module, x), np.float32)
    hx = random_state(np.random.default_rng(1), module, None, np.float32)
    fast = run_fast(model, x, hx)
    assert tuple(a.shape for a in fast) == _expected_shapes(module, None, 5)
    assert_matches_torch(fast, run_torch(module, x, hx), np.float32)
    # tensors too
    output, (h_n, c_n) = model(torch.from_numpy(x), (torch.from_numpy(hx[0]), torch.from_numpy(hx[1])))
    assert isinstance(output, torch.Tensor) and output.shape == _expected_shapes(module, None, 5)[0]


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("enforce_sorted", [False, True], ids=["unsorted", "sorted"])
def test_packed_sequence_in_packed_out(name, enforce_sorted):
    module, model = _pair(name)
    rng = np.random.default_rng(3)
    lengths = [6, 4, 4, 1] if enforce_sorted else [2, 6, 1, 4]
    seqs = [torch.from_numpy(random_input(rng, (n, module.input_size), np.float32)) for n in lengths]
    packed = pack_sequence(seqs, enforce_sorted=enforce_sorted)
    hx = random_state(rng, module, len(lengths), np.float32)
    hx = (torch.from_numpy(hx[0]), torch.from_numpy(hx[1]))
    for state in (None, hx):
        with torch.no_grad():
            t_out, (t_h, t_c) = module(packed, state)
        f_out, (f_h, f_c) = model(packed, state)
        assert isinstance(f_out, PackedSequence)
        assert isinstance(f_h, torch.Tensor) and isinstance(f_c, torch.Tensor)
        assert torch.equal(f_out.batch_sizes, t_out.batch_sizes)
        for attr in ("sorted_indices", "unsorted_indices"):
            got, want = getattr(f_out, attr), getattr(t_out, attr)
            assert (got is None) == (want is None), attr
            if want is not None:
                assert torch.equal(got, want), attr
        assert f_out.data.shape == t_out.data.shape and f_out.data.dtype == t_out.data.dtype
        assert_matches_torch(tuple(map(to_numpy, (f_out.data, f_h, f_c))),
                             tuple(map(to_numpy, (t_out.data, t_h, t_c))), np.float32, "packed")


def test_packed_sequence_float64_and_batch_first_padding():
    module, model = _pair("all", np.float64)  # batch_first=True module: packing is layout-free
    x = torch.from_numpy(_input(module, 3, 7, np.float64))
    packed = pack_padded_sequence(x, torch.tensor([3, 7, 5]), batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        t_out, (t_h, t_c) = module(packed)
    f_out, (f_h, f_c) = model(packed)
    assert f_out.data.dtype == torch.float64
    assert_matches_torch(tuple(map(to_numpy, (f_out.data, f_h, f_c))),
                         tuple(map(to_numpy, (t_out.data, t_h, t_c))), np.float64)


def test_mixed_containers():
    """numpy input with tensor states and the reverse: the input decides the output container."""
    module, model = _pair("deep-bi")
    x = _input(module, 2, 3)
    h0, c0 = random_state(np.random.default_rng(0), module, 2, np.float32)
    reference = run_torch(module, x, (h0, c0))
    output, (h_n, c_n) = model(x, (torch.from_numpy(h0), torch.from_numpy(c0)))
    assert type(output) is np.ndarray and type(h_n) is np.ndarray
    assert_matches_torch((output, h_n, c_n), reference, np.float32)
    output, (h_n, c_n) = model(torch.from_numpy(x), (h0, c0))
    assert isinstance(output, torch.Tensor) and isinstance(h_n, torch.Tensor)
    assert_matches_torch(tuple(map(to_numpy, (output, h_n, c_n))), reference, np.float32)


# ------------------------------------------------------------------------------ states and hx
def test_hx_is_never_batch_first():
    """batch_first only changes the input/output layout; h0/c0 stay (layers*D, B, H)."""
    module = make_torch_lstm(4, 6, num_layers=2, bidirectional=True, batch_first=True, seed=1)  # layers*D = 4
    model = fastlstm.LSTM.from_torch(module)
    batch = 3
    x = _input(module, batch, 5)
    h0, c0 = random_state(np.random.default_rng(0), module, batch, np.float32)
    assert h0.shape == (4, batch, 6)
    fast = run_fast(model, x, (h0, c0))
    assert fast[1].shape == (4, batch, 6) and fast[2].shape == (4, batch, 6)
    assert_matches_torch(fast, run_torch(module, x, (h0, c0)), np.float32)
    # The "batch-first" layout of the states, (B, layers*D, H), is rejected like torch rejects it.
    with pytest.raises(ValueError, match="h0"):
        model(x, (np.ascontiguousarray(h0.transpose(1, 0, 2)), c0))
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            module(torch.from_numpy(x), (torch.from_numpy(h0.transpose(1, 0, 2).copy()), torch.from_numpy(c0)))


def test_hx_changes_the_result_and_zero_hx_equals_none():
    module, model = _pair("proj-bf")
    x = _input(module, 2, 4)
    zeros = model.initial_state(2)
    assert zeros[0].shape == (2, 2, 3) and zeros[1].shape == (2, 2, 9)
    none_out = run_fast(model, x)
    zero_out = run_fast(model, x, zeros)
    for a, b in zip(none_out, zero_out):
        np.testing.assert_array_equal(a, b)
    hx = random_state(np.random.default_rng(5), module, 2, np.float32)
    assert max_abs_error(run_fast(model, x, hx)[0], none_out[0]) > 1e-3


def test_streaming_in_chunks_equals_one_call():
    """Bitwise, as the README promises: the kernels do the same arithmetic whatever the chunking."""
    module = make_torch_lstm(4, 6, num_layers=2, seed=2)  # unidirectional: chunks must compose
    model = fastlstm.LSTM.from_torch(module)
    x = _input(module, 2, 12)
    whole = run_fast(model, x)
    state = model.initial_state(2)
    outputs = []
    for start in range(0, 12, 5):
        out, state = model(x[start: start + 5], state)
        outputs.append(out)
    np.testing.assert_array_equal(np.concatenate(outputs), whole[0])
    np.testing.assert_array_equal(state[0], whole[1])
    np.testing.assert_array_equal(state[1], whole[2])


# ------------------------------------------------------------------------------ lengths
LENGTH_CASES = {
    "unsorted": [3, 7, 1, 5],
    "all-equal-full": [7, 7, 7, 7],
    "all-equal-short": [4, 4, 4, 4],
    "all-ones": [1, 1, 1, 1],
    "sorted": [7, 5, 3, 1],
}


@pytest.mark.parametrize("name", ["deep-bi", "all"])
@pytest.mark.parametrize("case", list(LENGTH_CASES))
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
def test_lengths_semantics(name, case, with_hx):
    """lengths= means PackedSequence semantics: zeros past each end, h_n/c_n at each sequence's
    own last step, the reverse direction starting at each sequence's last valid step."""
    module, model = _pair(name)
    lengths = np.array(LENGTH_CASES[case], np.int64)
    batch, steps = len(lengths), 7
    x = _input(module, batch, steps, seed=11)
    hx = random_state(np.random.default_rng(12), module, batch, np.float32) if with_hx else None
    fast = run_fast(model, x, hx, lengths=lengths)
    # 1. torch through a PackedSequence
    assert_matches_torch(fast, run_torch(module, x, hx, lengths=lengths), np.float32, f"lengths {case}")
    time_major = fast[0] if not module.batch_first else fast[0].transpose(1, 0, 2)
    x_tm = x if not module.batch_first else x.transpose(1, 0, 2)
    for b, n in enumerate(lengths):
        # 2. exactly zero past the end
        assert np.all(time_major[n:, b] == 0.0), f"sequence {b}: output past length {n} is not zero"
        # 3. each sequence alone, truncated to its length, as unbatched torch input
        alone_hx = None if hx is None else (hx[0][:, b], hx[1][:, b])
        single = make_torch_lstm(**{**CONFIGS[name], "batch_first": False}, seed=0)
        alone = run_torch(single, np.ascontiguousarray(x_tm[:n, b]), alone_hx)
        assert_matches_torch((time_major[:n, b], fast[1][:, b], fast[2][:, b]), alone, np.float32,
                             f"lengths {case}, sequence {b} alone")


@pytest.mark.parametrize("kind", ["list", "tuple", "tensor", "int32", "uint8"])
def test_lengths_containers(kind):
    module, model = _pair("deep-bi")
    x = _input(module, 3, 6)
    values = [2, 6, 4]
    lengths = {
        "list": values,
        "tuple": tuple(values),
        "tensor": torch.tensor(values),
        "int32": np.array(values, np.int32),
        "uint8": np.array(values, np.uint8),
    }[kind]
    assert_matches_torch(run_fast(model, x, lengths=lengths), run_torch(module, x, lengths=values), np.float32)


def test_lengths_full_equal_no_lengths():
    """Full lengths are no lengths, bitwise (the same rows, steps and sums either way)."""
    module, model = _pair("all")
    x = _input(module, 3, 6)
    for a, b in zip(run_fast(model, x, lengths=[6, 6, 6]), run_fast(model, x)):
        np.testing.assert_array_equal(a, b)


def test_unbatched_with_scalar_length():
    """Unbatched input takes a single length; same as running the truncated sequence."""
    module, model = _pair("deep-bi")
    x = random_input(np.random.default_rng(2), (8, 4), np.float32)
    for length in (3, np.int64(3), [3]):
        output, (h_n, c_n) = model(x, lengths=length)
        assert output.shape == (8, 12) and h_n.shape == (4, 6)
        assert np.all(output[3:] == 0)
        assert_matches_torch((output[:3], h_n, c_n), run_torch(module, x[:3]), np.float32)


# ------------------------------------------------------------------------------ memory layouts
def _layouts(base: np.ndarray):
    """Views of `base` (T, B, I) as non-contiguous arrays with the same values."""
    t, b, i = base.shape
    big = np.zeros((2 * t, b + 3, 2 * i), base.dtype)
    big[::2, 1: b + 1, ::2] = base
    flipped_src = np.ascontiguousarray(base[::-1, ::-1, ::-1])
    record = np.zeros((t, b), dtype=[("x", base.dtype, (i,)), ("flag", np.uint8)])
    record["x"] = base
    return {
        "fortran": np.asfortranarray(base),
        "transposed-view": np.ascontiguousarray(base.transpose(1, 0, 2)).transpose(1, 0, 2),
        "step-slices": big[::2, 1: b + 1, ::2],
        "negative-strides": flipped_src[::-1, ::-1, ::-1],
        "reversed-last-axis": np.ascontiguousarray(base[:, :, ::-1])[:, :, ::-1],
        "structured-field": record["x"],  # byte strides not a multiple of the itemsize
        "broadcast-batch": np.broadcast_to(base[:, :1], base.shape),  # stride 0 (values differ from base)
        "broadcast-time": np.broadcast_to(base[:1], base.shape),
    }


LAYOUT_NAMES = list(_layouts(np.zeros((2, 2, 2), np.float32)))


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_non_contiguous_input(layout, dtype):
    module = make_torch_lstm(5, 7, num_layers=2, bidirectional=True, dtype=dtype, seed=4)
    model = fastlstm.LSTM.from_torch(module)
    base = random_input(np.random.default_rng(0), (6, 3, 5), dtype)
    x = _layouts(base)[layout]
    if layout.startswith("broadcast"):
        base = np.ascontiguousarray(x)
    np.testing.assert_array_equal(x, base)
    expected = run_fast(model, base)
    got = run_fast(model, x)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    # unbatched, from the same view
    np.testing.assert_array_equal(run_fast(model, x[:, 1])[0], run_fast(model, np.ascontiguousarray(base[:, 1]))[0])


@pytest.mark.parametrize("layout", ["fortran", "transposed-view", "step-slices", "negative-strides"])
def test_non_contiguous_input_batch_first(layout):
    module = make_torch_lstm(5, 7, batch_first=True, proj_size=3, seed=4)
    model = fastlstm.LSTM.from_torch(module)
    base = random_input(np.random.default_rng(0), (3, 6, 5), np.float32)  # (B, T, I)
    x = _layouts(base)[layout]
    for a, b in zip(run_fast(model, x), run_fast(model, base)):
        np.testing.assert_array_equal(a, b)


def test_non_contiguous_tensors_and_states():
    module, model = _pair("deep-bi")
    base = random_input(np.random.default_rng(0), (5, 3, 4), np.float32)
    h0, c0 = random_state(np.random.default_rng(1), module, 3, np.float32)
    expected = run_fast(model, base, (h0, c0))
    x_t = torch.from_numpy(np.ascontiguousarray(base.transpose(1, 0, 2))).transpose(0, 1)
    assert not x_t.is_contiguous()
    h_nc = np.ascontiguousarray(h0.transpose(2, 0, 1)).transpose(1, 2, 0)  # Fortran-like view
    c_big = np.zeros(c0.shape[:2] + (2 * c0.shape[2],), np.float32)
    c_big[:, :, ::2] = c0
    c_nc = c_big[:, :, ::2]
    assert not h_nc.flags.c_contiguous and not c_nc.flags.c_contiguous
    got = run_fast(model, x_t, (torch.from_numpy(h_nc), torch.from_numpy(np.ascontiguousarray(c_nc))))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    got = run_fast(model, base, (h_nc, c_nc))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    # torch views with the negative bit set (e.g. from -x without materialising)
    # the real part of a complex tensor: float32 with element strides of 2
    complex_x = torch.complex(torch.from_numpy(base), torch.zeros(base.shape))
    assert complex_x.real.stride()[-1] == 2
    for a, b in zip(run_fast(model, complex_x.real, (h0, c0)), expected):
        np.testing.assert_array_equal(a, b)
    neg = torch.from_numpy(-base)._neg_view()  # logically equal to base
    assert neg.is_neg() and torch.equal(neg, torch.from_numpy(base))
    for a, b in zip(run_fast(model, neg, (h0, c0)), expected):
        np.testing.assert_array_equal(a, b)


def _misaligned_copy(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy whose data pointer is 1 byte off its dtype's alignment (numpy allows it:
    np.frombuffer at an odd offset of a network or shared-memory buffer gives one)."""
    buffer = np.zeros(array.nbytes + 1, np.uint8)
    out = np.ndarray(array.shape, array.dtype, buffer=buffer.data, offset=1)
    out[...] = array
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


@pytest.mark.parametrize("which", ["x", "h0", "c0", "lengths"])
def test_misaligned_arrays(which):
    """Misaligned input, states or lengths give the aligned result. (Dereferencing them in C++ is
    undefined behaviour: the FASTLSTM_SANITIZE build aborts with "load of misaligned address" if
    they reach the kernels uncopied.)"""
    module, model = _pair("deep-bi")
    x = _input(module, 3, 5)
    h0, c0 = random_state(np.random.default_rng(0), module, 3, np.float32)
    lengths = np.array([5, 2, 4], np.int64)
    expected = run_fast(model, x, (h0, c0), lengths=lengths)
    args = {"x": x, "h0": h0, "c0": c0, "lengths": lengths}
    args[which] = _misaligned_copy(args[which])
    got = run_fast(model, args["x"], (args["h0"], args["c0"]), lengths=args["lengths"])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
def test_batch_zero_matches_torch(name, with_hx):
    """torch returns empty outputs of the right shapes for an empty batch; so must fastlstm."""
    module, model = _pair(name)
    x = _input(module, 0, 4)
    hx = random_state(np.random.default_rng(0), module, 0, np.float32) if with_hx else None
    reference = run_torch(module, x, hx)
    got = run_fast(model, x, hx)
    assert tuple(a.shape for a in got) == tuple(a.shape for a in reference)
    output, (h_n, c_n) = model(torch.from_numpy(x))
    assert tuple(output.shape) == reference[0].shape and tuple(h_n.shape) == reference[1].shape


def test_sequence_length_one_and_batch_one():
    module, model = _pair("all", np.float64)
    x = _input(module, 1, 1, np.float64)
    assert_matches_torch(run_fast(model, x), run_torch(module, x), np.float64)


def test_inputs_not_mutated():
    module, model = _pair("deep-bi")
    rng = np.random.default_rng(0)
    x = random_input(rng, (6, 3, 4), np.float32)
    h0, c0 = random_state(rng, module, 3, np.float32)
    lengths = np.array([2, 6, 3], np.int64)
    copies = [a.copy() for a in (x, h0, c0, lengths)]
    model(x, (h0, c0), lengths=lengths)
    model(x, (h0, c0))
    for a, b in zip((x, h0, c0, lengths), copies):
        np.testing.assert_array_equal(a, b)
    # tensors share memory with numpy views inside fastlstm: they must not change either
    xt, ht, ct = (torch.from_numpy(a.copy()) for a in (x, h0, c0))
    model(xt, (ht, ct))
    for t, a in zip((xt, ht, ct), (x, h0, c0)):
        np.testing.assert_array_equal(t.numpy(), a)
    packed = pack_padded_sequence(torch.from_numpy(x.copy()), torch.from_numpy(lengths), enforce_sorted=False)
    data = packed.data.clone()
    model(packed, (ht, ct))
    assert torch.equal(packed.data, data)
    # the unbatched path reshapes states: the caller's arrays keep their shapes and values
    xu, hu, cu = x[:, 0].copy(), h0[:, 0].copy(), c0[:, 0].copy()
    model(xu, (hu, cu))
    assert hu.shape == (4, 6) and np.array_equal(hu, h0[:, 0]) and np.array_equal(cu, c0[:, 0])


def test_outputs_do_not_alias_inputs_or_each_other():
    module, model = _pair("plain")
    x = _input(module, 2, 3)
    h0, c0 = random_state(np.random.default_rng(0), module, 2, np.float32)
    output, (h_n, c_n) = model(x, (h0, c0))
    for a in (output, h_n, c_n):
        for b in (x, h0, c0):
            assert not np.shares_memory(a, b)
    output2, _ = model(x, (h0, c0))
    assert not np.shares_memory(output, output2)


def test_requires_grad_tensors():
    module, model = _pair("deep-bi")
    x = torch.from_numpy(_input(module, 2, 3)).requires_grad_()
    h0, c0 = (torch.from_numpy(a).requires_grad_() for a in random_state(np.random.default_rng(0), module, 2, np.float32))
    with torch.no_grad():  # with grad mode on they are refused (tests/test_inference_only.py)
        output, (h_n, c_n) = model(x, (h0, c0))
        t_out, (t_h, t_c) = module(x, (h0, c0))
    assert isinstance(output, torch.Tensor)
    assert_matches_torch(tuple(map(to_numpy, (output, h_n, c_n))), tuple(map(to_numpy, (t_out, t_h, t_c))),
                         np.float32)
    # and from a module whose parameters require grad (the default) in training mode
    module.train()
    assert fastlstm.LSTM.from_torch(module)(x.detach())[0].shape == t_out.shape


# ------------------------------------------------------------------------------ the module object
REPR_CONFIGS = [
    dict(input_size=3, hidden_size=5),
    dict(input_size=3, hidden_size=5, num_layers=2, dropout=0.25),
    dict(input_size=3, hidden_size=5, proj_size=2, num_layers=2, bias=False, batch_first=True, dropout=0.5,
         bidirectional=True),
    dict(input_size=10, hidden_size=20, bidirectional=True),
    dict(input_size=1, hidden_size=2, batch_first=True, bias=False),
]


@pytest.mark.parametrize("config", REPR_CONFIGS, ids=[str(i) for i in range(len(REPR_CONFIGS))])
def test_repr_and_attributes_match_torch(config):
    module = nn.LSTM(**config)
    model = fastlstm.LSTM.from_torch(module)
    assert repr(model) == repr(module)
    assert repr(fastlstm.LSTM(**config)) == repr(module)
    for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size"):
        assert getattr(model, name) == getattr(module, name), name
        assert type(getattr(model, name)) is type(getattr(module, name)), name


@pytest.mark.parametrize("name", ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                                  "bidirectional", "proj_size", "dtype", "config"])
def test_attributes_are_read_only(name):
    model = fastlstm.LSTM(3, 5, num_layers=2)
    before = getattr(model, name)
    with pytest.raises(AttributeError):
        setattr(model, name, before)
    with pytest.raises(AttributeError):
        delattr(model, name)
    assert getattr(model, name) == before


def test_weights_are_copied_and_frozen():
    """Later edits to the torch module must not reach the packed model."""
    module, model = _pair("deep-bi")
    x = _input(module, 2, 3)
    before = run_fast(model, x)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    for a, b in zip(run_fast(model, x), before):
        np.testing.assert_array_equal(a, b)
    for array in model.state_dict().values():
        assert not array.flags.writeable


@pytest.mark.parametrize("dropout", [0.3, 1.0])
def test_train_mode_with_dropout_converts_to_eval_semantics(dropout):
    module = make_torch_lstm(4, 6, num_layers=3, dropout=dropout, seed=9)
    module.train()
    model = fastlstm.LSTM.from_torch(module)
    assert module.training  # from_torch must not flip the caller's module
    assert model.dropout == dropout and repr(model) == repr(module)
    x = _input(module, 2, 5)
    module.eval()
    assert_matches_torch(run_fast(model, x), run_torch(module, x), np.float32)
    # dropout is inert: repeated calls give identical results
    np.testing.assert_array_equal(run_fast(model, x)[0], run_fast(model, x)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["deep-bi", "all"])
def test_pickle_round_trip(name, dtype):
    module = make_torch_lstm(**CONFIGS[name], dropout=0.2, dtype=dtype, seed=3)
    model = fastlstm.LSTM.from_torch(module)
    x = _input(module, 3, 4, dtype)
    expected = run_fast(model, x, lengths=[4, 1, 3])
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model), copy.copy(model)):
        assert type(clone) is fastlstm.LSTM
        assert repr(clone) == repr(model) and clone.dtype == model.dtype and clone.config == model.config
        assert clone.dropout == model.dropout
        for a, b in zip(run_fast(clone, x, lengths=[4, 1, 3]), expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "module",
    [nn.GRU(3, 4), nn.LSTMCell(3, 4), nn.Linear(3, 4), nn.RNN(3, 4), object(), None, {"weight_ih_l0": 1}],
    ids=["GRU", "LSTMCell", "Linear", "RNN", "object", "None", "dict"],
)
def test_from_torch_rejects_non_lstm(module):
    with pytest.raises(TypeError, match=type(module).__name__):
        fastlstm.LSTM.from_torch(module)


def test_from_torch_accepts_lstm_subclass_and_float64():
    class MyLSTM(nn.LSTM):
        pass

    torch.manual_seed(0)
    module = MyLSTM(3, 4, num_layers=2).double().eval()
    model = fastlstm.LSTM.from_torch(module)
    assert model.dtype == np.float64
    x = random_input(np.random.default_rng(0), (4, 2, 3), np.float64)
    assert_matches_torch(run_fast(model, x), run_torch(module, x), np.float64)


# ------------------------------------------------------------------------------ non-finite values
def _compare_non_finite(fast, reference, dtype):
    for name, got, want in zip(("output", "h_n", "c_n"), fast, reference):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{name}: NaN positions differ")
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f"{name}: +inf positions differ")
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f"{name}: -inf positions differ")
        finite = np.isfinite(want)
        bound = held_bound(dtype, reference_scale(want))
        assert max_abs_error(got[finite], want[finite]) <= bound, name


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["x", "h0", "c0"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [3, 8], ids=["B3", "B8"])  # fused matrix-vector step / GEMM step
def test_non_finite_values_propagate_like_torch(value, where, dtype, batch):
    module = make_torch_lstm(4, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    model = fastlstm.LSTM.from_torch(module)
    rng = np.random.default_rng(0)
    x = random_input(rng, (6, batch, 4), dtype)
    h0, c0 = random_state(rng, module, batch, dtype)
    {"x": x, "h0": h0, "c0": c0}[where][2 if where == "x" else 1, 1, 0] = value
    reference = run_torch(module, x, (h0, c0))
    if value != value:  # NaN: it must reach the outputs as it does in torch
        assert np.isnan(reference[0]).any()
    _compare_non_finite(run_fast(model, x, (h0, c0)), reference, dtype)


@pytest.mark.parametrize("value", [np.inf, -np.inf], ids=["inf", "-inf"])
@pytest.mark.parametrize("batch", [1, 8])
def test_inf_times_zero_weight_is_nan_like_torch(value, batch):
    """0 * inf = NaN in torch's GEMM; a kernel that skips zero weights (or pads hidden units with
    zeros that then meet an inf) would differ."""
    module = make_torch_lstm(5, 7, num_layers=2, proj_size=3, seed=2)
    with torch.no_grad():
        module.weight_ih_l0[:, 2] = 0.0
    model = fastlstm.LSTM.from_torch(module)
    x = random_input(np.random.default_rng(0), (6, batch, 5), np.float32)
    x[1, 0, 2] = value
    reference = run_torch(module, x)
    assert np.isnan(reference[0]).any()
    _compare_non_finite(run_fast(model, x), reference, np.float32)


def test_nan_with_lengths_stays_in_its_sequence():
    """A NaN in one sequence, or in the padding past its end, must not leak into the others."""
    module, model = _pair("deep-bi")
    x = _input(module, 3, 6)
    x[1, 0, 0] = np.nan  # inside sequence 0
    x[5, 2, :] = np.nan  # padding of sequence 2 (length 3)
    lengths = np.array([6, 4, 3], np.int64)
    fast = run_fast(model, x, lengths=lengths)
    reference = run_torch(module, x, lengths=lengths)
    _compare_non_finite(fast, reference, np.float32)
    assert np.isfinite(fast[0][:, 1:]).all() and np.isfinite(fast[1][:, 1:]).all()


@pytest.mark.parametrize("magnitude", [1e30, 1e38, 1e300], ids=["1e30", "1e38", "1e300"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_extreme_inputs(magnitude, dtype):
    """Saturating inputs: no NaN where torch gives none, and the same values (gates saturate)."""
    if dtype == np.float32 and magnitude > 3.4e38:
        magnitude_value = np.float32(np.inf)  # 1e300 is +inf in float32: torch gives NaN there too
    else:
        magnitude_value = magnitude
    module = make_torch_lstm(4, 6, num_layers=2, bidirectional=True, proj_size=3, dtype=dtype, seed=5)
    model = fastlstm.LSTM.from_torch(module)
    rng = np.random.default_rng(1)
    signs = np.sign(rng.standard_normal((7, 3, 4)))
    with np.errstate(over="ignore"):
        x = (signs * magnitude_value).astype(dtype)
    reference = run_torch(module, x)
    fast = run_fast(model, x)
    if np.isfinite(x).all():
        for value in reference:
            assert not np.isnan(value).any()
    _compare_non_finite(fast, reference, dtype)


# ------------------------------------------------------------------------------ calls that share state
def test_interleaved_models_and_sizes_reuse_scratch_safely():
    """Scratch memory is kept per calling thread across calls and models: a large call, then small
    ones with other shapes, then the large one again must each equal a fresh model's result."""
    pairs = {name: _pair(name) for name in CONFIGS}
    big_module = make_torch_lstm(16, 96, num_layers=3, bidirectional=True, seed=8)
    big_model = fastlstm.LSTM.from_torch(big_module)
    calls = [
        (big_module, big_model, _input(big_module, 9, 40), [40, 3, 17, 1, 40, 22, 5, 9, 30]),
        (*pairs["plain"], _input(pairs["plain"][0], 1, 2), None),
        (*pairs["all"], _input(pairs["all"][0], 5, 3), [3, 1, 2, 3, 1]),
        (*pairs["deep-bi"], _input(pairs["deep-bi"][0], 2, 6), None),
    ]
    expected = [run_torch(m, x, lengths=ln) for m, _, x, ln in calls]
    for _ in range(2):
        for (module, model, x, lengths), want in zip(calls + calls[::-1], expected + expected[::-1]):
            assert_matches_torch(run_fast(model, x, lengths=lengths), want, np.float32, "interleaved")


def test_concurrent_calls_from_python_threads():
    """The GIL is released in the kernel: several threads calling one model at once each get
    their own, correct result."""
    import concurrent.futures

    module = make_torch_lstm(8, 40, num_layers=2, bidirectional=True, seed=6)
    model = fastlstm.LSTM.from_torch(module)
    inputs = [_input(module, b, 20 + b, seed=b) for b in range(1, 7)]
    lengths = [None if b % 2 else list(range(20 + b, 20, -1))[:b] for b in range(1, 7)]
    expected = [run_fast(model, x, lengths=ln) for x, ln in zip(inputs, lengths)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            futures = [pool.submit(run_fast, model, x, None, ln) for x, ln in zip(inputs, lengths)]
            for future, want in zip(futures, expected):
                for got, w in zip(future.result(), want):
                    np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("name", ["plain", "all"])
def test_step_equals_one_step_call(name):
    module, model = _pair(name)
    rng = np.random.default_rng(4)
    x = random_input(rng, (3, module.input_size), np.float32)
    hx = random_state(rng, module, 3, np.float32)
    output, (h_n, c_n) = model.step(x, hx)
    reference = run_torch(module, x[:, None] if module.batch_first else x[None], hx)
    assert_matches_torch((output, h_n, c_n), (reference[0][:, 0] if module.batch_first else reference[0][0],
                                              reference[1], reference[2]), np.float32, "step")
    # unbatched
    output, (h_n, c_n) = model.step(x[0], (hx[0][:, 0].copy(), hx[1][:, 0].copy()))
    reference = run_torch(module, x[:1], (hx[0][:, 0], hx[1][:, 0]))
    assert_matches_torch((output, h_n, c_n), (reference[0][0], reference[1], reference[2]), np.float32, "step")
