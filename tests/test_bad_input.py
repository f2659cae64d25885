"""Bad input gets a clear ValueError/TypeError naming the problem, never a crash or a silent cast.

The first part goes through the public `fastlstm.LSTM` call; the second calls the C++ extension
directly with inconsistent arrays, which must raise too (bindings.cc checks every size, dtype and
stride before the kernels touch memory).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_sequence  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm import _core  # noqa: E402

# input 4, hidden 6, 2 layers, bidirectional, proj 3: h0 (4, B, 3), c0 (4, B, 6), output (T, B, 6)
I, H, LAYERS, PROJ = 4, 6, 2, 3
LEAD = LAYERS * 2
T, B = 5, 3


@pytest.fixture(scope="module")
def model():
    return fastlstm.LSTM(I, H, LAYERS, bidirectional=True, proj_size=PROJ, seed=0)


@pytest.fixture(scope="module")
def model64():
    return fastlstm.LSTM(I, H, LAYERS, bidirectional=True, proj_size=PROJ, seed=0, dtype=np.float64)


def _x(dtype=np.float32, shape=(T, B, I)):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _hx(dtype=np.float32, batch=B):
    return np.zeros((LEAD, batch, PROJ), dtype), np.zeros((LEAD, batch, H), dtype)


def _works(model, *args, **kwargs):
    output, (h_n, c_n) = model(*args, **kwargs)
    assert np.isfinite(np.asarray(output)).all()


def test_valid_call_works(model):
    """The baseline every test below perturbs in one way."""
    _works(model, _x(), _hx(), lengths=[5, 3, 1])


# ----------------------------------------------------------------------------------- input
@pytest.mark.parametrize("shape", [(I,), (1, T, B, I), (1, 1, T, B, I)], ids=["1d", "4d", "5d"])
def test_wrong_ndim(model, shape):
    with pytest.raises(ValueError, match="2-D.*3-D"):
        model(_x(shape=shape))
    with pytest.raises(ValueError, match="2-D.*3-D"):
        model(torch.from_numpy(_x(shape=shape)))


def test_zero_dim_input(model):
    with pytest.raises((TypeError, ValueError), match="input"):
        model(np.float32(1.0))
    with pytest.raises((TypeError, ValueError), match="input|D"):
        model(np.array(1.0, np.float32))


@pytest.mark.parametrize("shape", [(T, B, I + 1), (T, B, I - 1), (T, I + 2), (T, B, 1)])
def test_input_size_mismatch(model, shape):
    with pytest.raises(ValueError, match="input_size"):
        model(_x(shape=shape))


def test_batch_first_input_size_mismatch():
    model = fastlstm.LSTM(I, H, batch_first=True, seed=0)
    with pytest.raises(ValueError, match="input_size"):
        model(_x(shape=(B, T, I + 3)))


@pytest.mark.parametrize("shape", [(0, B, I), (0, I)], ids=["batched", "unbatched"])
def test_zero_length_sequence(model, shape):
    """torch raises for T=0 ("Expected sequence length to be larger than 0"); so does fastlstm."""
    with pytest.raises(ValueError, match="sequence length"):
        model(_x(shape=shape))


def test_zero_length_sequence_batch_first():
    model = fastlstm.LSTM(I, H, batch_first=True, seed=0)
    with pytest.raises(ValueError, match="sequence length"):
        model(_x(shape=(B, 0, I)))


@pytest.mark.parametrize("value", [[[0.0] * I] * T, "abc", None, 3, 3.0, b"bytes", {"x": 1}],
                         ids=["list", "str", "None", "int", "float", "bytes", "dict"])
def test_input_wrong_python_type(model, value):
    with pytest.raises(TypeError, match="numpy array"):
        model(value)


# ----------------------------------------------------------------------------------- dtypes
def test_float64_into_float32_model_names_both_dtypes(model):
    with pytest.raises(TypeError, match=r"float64.*float32|float32.*float64"):
        model(_x(np.float64))
    with pytest.raises(TypeError, match=r"float64.*float32|float32.*float64"):
        model(torch.from_numpy(_x(np.float64)))


def test_float32_into_float64_model_names_both_dtypes(model64):
    with pytest.raises(TypeError, match=r"float64.*float32|float32.*float64"):
        model64(_x(np.float32))
    with pytest.raises(TypeError, match=r"float64.*float32|float32.*float64"):
        model64(_x(np.float64), _hx(np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128, object,
                                   np.float16, np.longdouble],
                         ids=["int32", "int64", "uint8", "bool", "complex64", "complex128", "object", "float16",
                              "longdouble"])
def test_non_float32_numpy_input(model, dtype):
    with pytest.raises(TypeError, match="dtype"):
        model(_x().astype(dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int64", "int32", "bool", "complex64", "uint8"])
def test_bad_tensor_dtype(model, dtype):
    x = torch.zeros(T, B, I, dtype=getattr(torch, dtype))
    with pytest.raises(TypeError, match="dtype|floating"):
        model(x)


def test_byte_swapped_input_is_rejected_not_cast(model):
    """Big-endian float32 is not the model's dtype; it must not be reinterpreted byte for byte."""
    with pytest.raises(TypeError, match="dtype"):
        model(_x().astype(">f4"))


@pytest.mark.parametrize("which", ["h0", "c0"])
def test_byte_swapped_state_is_rejected_not_cast(model, which):
    h0, c0 = _hx()
    state = (h0.astype(">f4"), c0) if which == "h0" else (h0, c0.astype(">f4"))
    with pytest.raises(TypeError, match=which):
        model(_x(), state)


def test_byte_swapped_step_input_is_rejected_on_the_fast_path(model):
    """step(out=) hands its arrays to the extension untouched, so the extension itself must refuse."""
    h0, c0 = _hx()
    output = np.empty((B, 2 * PROJ), np.float32)  # bidirectional, projected
    with pytest.raises(TypeError, match="dtype"):
        model.step(_x()[0].astype(">f4"), (h0, c0), out=(output, h0.copy(), c0.copy()))


def test_hx_as_one_stacked_array_is_rejected(model):
    """hx must be a tuple: an array that merely unpacks into two is not accepted silently."""
    h0, _ = _hx()
    with pytest.raises(TypeError, match="hx"):
        model(_x(), np.stack([h0, h0]))


@pytest.mark.parametrize("which", ["h0", "c0"])
@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32], ids=["float64", "float16", "int32"])
def test_hx_dtype_mismatch(model, which, dtype):
    h0, c0 = _hx()
    if which == "h0":
        h0 = h0.astype(dtype)
    else:
        c0 = c0.astype(dtype)
    with pytest.raises(TypeError, match=which):
        model(_x(), (h0, c0))
    with pytest.raises(TypeError, match=which):
        model(torch.from_numpy(_x()), (torch.from_numpy(h0), torch.from_numpy(c0)))


def test_packed_sequence_dtype_mismatch(model):
    packed = pack_sequence([torch.zeros(3, I, dtype=torch.float64), torch.zeros(2, I, dtype=torch.float64)])
    with pytest.raises(TypeError, match="float64"):
        model(packed)


def test_meta_tensor_is_rejected(model):
    """A tensor without CPU memory (the CUDA case cannot be tested here; meta stands in)."""
    with pytest.raises(ValueError, match="CPU"):
        model(torch.zeros(T, B, I, device="meta"))


# ----------------------------------------------------------------------------------- hx
@pytest.mark.parametrize(
    "h_shape,c_shape,name",
    [
        ((LEAD, B + 1, PROJ), (LEAD, B + 1, H), "h0"),  # wrong batch
        ((LEAD, B, PROJ), (LEAD, B - 1, H), "c0"),  # wrong batch, c only
        ((LAYERS, B, PROJ), (LAYERS, B, H), "h0"),  # forgot the directions
        ((LEAD + 2, B, PROJ), (LEAD + 2, B, H), "h0"),  # too many layers
        ((LEAD, B, H), (LEAD, B, H), "h0"),  # hidden_size instead of proj_size
        ((LEAD, B, PROJ), (LEAD, B, PROJ), "c0"),  # proj_size instead of hidden_size
        ((B, LEAD, PROJ), (B, LEAD, H), "h0"),  # "batch-first" states
        ((LEAD, PROJ), (LEAD, H), "h0"),  # 2-D states for batched input
        ((1, LEAD, B, PROJ), (1, LEAD, B, H), "h0"),  # 4-D
    ],
    ids=["batch", "c-batch", "layers-no-directions", "layers-too-many", "h-hidden", "c-proj", "batch-first",
         "2d", "4d"],
)
def test_hx_wrong_shape(model, h_shape, c_shape, name):
    hx = (np.zeros(h_shape, np.float32), np.zeros(c_shape, np.float32))
    with pytest.raises(ValueError, match=name):
        model(_x(), hx)


def test_hx_wrong_batch_with_packed_sequence(model):
    packed = pack_sequence([torch.zeros(3, I), torch.zeros(2, I)])
    with pytest.raises(ValueError, match="h0"):
        model(packed, (torch.zeros(LEAD, 3, PROJ), torch.zeros(LEAD, 3, H)))


def test_3d_hx_with_unbatched_input(model):
    with pytest.raises(ValueError, match="unbatched|2-D"):
        model(_x(shape=(T, I)), _hx(batch=1))


@pytest.mark.parametrize(
    "hx",
    [
        np.zeros((LEAD, B, PROJ), np.float32),
        (np.zeros((LEAD, B, PROJ), np.float32),),
        (np.zeros((LEAD, B, PROJ), np.float32), np.zeros((LEAD, B, H), np.float32), np.zeros(1)),
        "hx",
        3,
        {"h0": 1, "c0": 2},
    ],
    ids=["array", "1-tuple", "3-tuple", "str", "int", "dict"],
)
def test_hx_not_a_pair(model, hx):
    with pytest.raises(TypeError, match="hx"):
        model(_x(), hx)


@pytest.mark.parametrize("which", ["h0", "c0"])
@pytest.mark.parametrize("value", [None, "zeros", 0.0], ids=["None", "str", "float"])
def test_hx_member_wrong_type(model, which, value):
    h0, c0 = _hx()
    hx = (value, c0) if which == "h0" else (h0, value)
    with pytest.raises(TypeError, match=which):
        model(_x(), hx)


def test_hx_nested_lists_are_rejected(model):
    h0, c0 = _hx()
    with pytest.raises(TypeError, match="h0"):
        model(_x(), (h0.tolist(), c0.tolist()))


# ----------------------------------------------------------------------------------- lengths
@pytest.mark.parametrize("lengths", [[0, 5, 5], [T + 1, 5, 5], [-1, 5, 5], [5, 5, -(2**40)], [2**40, 1, 1]],
                         ids=["zero", "above-T", "negative", "very-negative", "huge"])
def test_lengths_out_of_range(model, lengths):
    with pytest.raises(ValueError, match="lengths"):
        model(_x(), lengths=lengths)
    with pytest.raises(ValueError, match="lengths"):
        model(_x(), lengths=torch.tensor(lengths))


@pytest.mark.parametrize("lengths", [[5, 5], [5, 5, 5, 5], [[5, 5, 5]], 5, np.array([5, 5], np.int64)],
                         ids=["too-few", "too-many", "2d", "scalar", "array-too-few"])
def test_lengths_wrong_count(model, lengths):
    with pytest.raises(ValueError, match="lengths"):
        model(_x(), lengths=lengths)


def test_lengths_empty_list(model):
    """np.asarray([]) is float64, so the complaint may be about the dtype; either names lengths."""
    with pytest.raises((ValueError, TypeError), match="lengths"):
        model(_x(), lengths=[])


@pytest.mark.parametrize(
    "lengths",
    [[5.0, 3.0, 1.0], np.array([5.0, 3.0, 1.0], np.float32), [True, True, True], np.ones(3, np.bool_),
     torch.tensor([5.0, 3.0, 1.0]), torch.tensor([True, True, True]), ["5", "3", "1"], [5, 3, None], "531",
     [5 + 0j, 3, 1]],
    ids=["float-list", "float-array", "bool-list", "bool-array", "float-tensor", "bool-tensor", "str-list",
         "None-member", "str", "complex"],
)
def test_lengths_not_integers(model, lengths):
    with pytest.raises(TypeError, match="lengths"):
        model(_x(), lengths=lengths)


def test_lengths_with_packed_sequence(model):
    packed = pack_sequence([torch.zeros(3, I), torch.zeros(2, I)])
    with pytest.raises(ValueError, match="PackedSequence"):
        model(packed, lengths=[3, 2])


@pytest.mark.parametrize("lengths", [0, T + 1, [2, 3]], ids=["zero", "above-T", "two"])
def test_unbatched_lengths_invalid(model, lengths):
    with pytest.raises(ValueError, match="lengths"):
        model(_x(shape=(T, I)), lengths=lengths)


# ----------------------------------------------------------------------------------- construction
@pytest.mark.parametrize(
    "kwargs,error,word",
    [
        (dict(input_size=0, hidden_size=4), ValueError, "input_size"),
        (dict(input_size=3, hidden_size=0), ValueError, "hidden_size"),
        (dict(input_size=3, hidden_size=4, num_layers=0), ValueError, "num_layers"),
        (dict(input_size=3, hidden_size=4, proj_size=4), ValueError, "proj_size"),
        (dict(input_size=3, hidden_size=4, proj_size=-1), ValueError, "proj_size"),
        (dict(input_size=3.0, hidden_size=4), TypeError, "input_size"),
        (dict(input_size=3, hidden_size=True), TypeError, "hidden_size"),
        (dict(input_size=3, hidden_size=4, bias="yes"), TypeError, "bias"),
        (dict(input_size=3, hidden_size=4, dropout=1.5), ValueError, "dropout"),
        (dict(input_size=3, hidden_size=4, dropout=-0.1), ValueError, "dropout"),
        (dict(input_size=3, hidden_size=4, dtype=np.float16), TypeError, "dtype"),
        (dict(input_size=3, hidden_size=4, dtype="int32"), TypeError, "dtype"),
    ],
    ids=["I0", "H0", "L0", "proj=H", "proj<0", "I-float", "H-bool", "bias-str", "dropout>1", "dropout<0",
         "dtype-f16", "dtype-int"],
)
def test_constructor_rejects_bad_arguments(kwargs, error, word):
    with pytest.raises(error, match=word):
        fastlstm.LSTM(**kwargs)


def test_set_isa_rejects_unknown():
    before = fastlstm.cpu_info()["isa"]
    with pytest.raises(ValueError, match="ISA"):
        fastlstm.set_isa("neon-sve-9000")
    assert fastlstm.cpu_info()["isa"] == before


# ======================================================================= the C++ extension directly
PACKED = {np.float32: _core.PackedLstmF32, np.float64: _core.PackedLstmF64}
CORE_ARGS = (I, H, LAYERS, True, True, PROJ)  # input_size, hidden_size, num_layers, bias, bidirectional, proj


def _weights(dtype=np.float32):
    return [np.ascontiguousarray(w) for w in fastlstm.LSTM(*CORE_ARGS[:3], bias=True, bidirectional=True,
                                                          proj_size=PROJ, seed=0, dtype=dtype).state_dict().values()]


@pytest.fixture(scope="module")
def core32():
    return _core.PackedLstmF32(*CORE_ARGS, _weights())


def test_core_valid_call_works(core32):
    output, h_n, c_n = core32.forward(_x(), False, *_hx(), np.array([5, 3, 1], np.int64))
    assert output.shape == (T, B, 2 * PROJ) and h_n.shape == (LEAD, B, PROJ) and c_n.shape == (LEAD, B, H)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["F32", "F64"])
def test_core_weight_count(dtype):
    weights = _weights(dtype)
    assert len(weights) == 20
    cls = PACKED[dtype]
    for bad in (weights[:-1], weights[:1], [], weights + [weights[0]], weights + weights):
        with pytest.raises(ValueError, match="weight"):
            cls(*CORE_ARGS, bad)


@pytest.mark.parametrize("index", [0, 1, 2, 4, 5, 19], ids=lambda i: f"w{i}")
def test_core_weight_shapes(index):
    weights = _weights()
    for replacement in (np.zeros(weights[index].shape[:-1] + (weights[index].shape[-1] + 1,), np.float32),
                        np.zeros(weights[index].shape[::-1], np.float32) if weights[index].ndim == 2
                        else np.zeros(weights[index].size - 1, np.float32),
                        weights[index][None], weights[index].reshape(-1)[:1]):
        if replacement.shape == weights[index].shape:
            continue
        bad = list(weights)
        bad[index] = replacement
        with pytest.raises(ValueError, match="shape"):
            _core.PackedLstmF32(*CORE_ARGS, bad)


@pytest.mark.parametrize("config,word", [
    ((I, H, LAYERS, False, True, PROJ), "shape"),  # says no bias, gets biases
    ((I, H, LAYERS, True, False, PROJ), "shape|weight"),  # says unidirectional
    ((I, H, LAYERS, True, True, 0), "shape"),  # says no projection
    ((I + 1, H, LAYERS, True, True, PROJ), "shape"),
    ((I, H, LAYERS + 1, True, True, PROJ), "weight"),
    ((I, H, LAYERS, True, True, H), "proj_size"),
    ((0, H, LAYERS, True, True, PROJ), "positive"),
    ((I, -H, LAYERS, True, True, PROJ), "positive"),
    ((I, H, 0, True, True, PROJ), "positive"),
    ((I, H, LAYERS, True, True, -1), "proj_size|positive"),
    ((I, 2**40, LAYERS, True, True, PROJ), "large"),
    ((2**62, H, LAYERS, True, True, PROJ), "large"),
], ids=["bias", "bidirectional", "proj0", "input_size", "layers", "proj=H", "I0", "H<0", "L0", "proj<0",
        "huge-H", "huge-I"])
def test_core_config_inconsistent_with_weights(config, word):
    with pytest.raises(ValueError, match=word):
        _core.PackedLstmF32(*config, _weights())


def test_core_weight_dtype():
    weights = _weights()
    for dtype in (np.float64, np.float16, np.int32, np.complex64):
        bad = list(weights)
        bad[3] = weights[3].astype(dtype)
        with pytest.raises(TypeError, match="dtype"):
            _core.PackedLstmF32(*CORE_ARGS, bad)
    with pytest.raises(TypeError, match="dtype"):
        _core.PackedLstmF64(*CORE_ARGS, weights)  # float32 arrays into the float64 class
    with pytest.raises(TypeError, match="dtype"):
        _core.PackedLstmF32(*CORE_ARGS, _weights(np.float64))


def test_core_weight_non_contiguous():
    weights = _weights()
    cases = [
        np.asfortranarray(weights[0]),
        np.repeat(weights[0], 2, axis=1)[:, ::2],
        np.repeat(weights[2], 2)[::2],
        np.ascontiguousarray(weights[1][::-1])[::-1],
    ]
    for index, replacement in zip((0, 0, 2, 1), cases):
        assert not replacement.flags.c_contiguous
        bad = list(weights)
        bad[index] = replacement
        with pytest.raises(ValueError, match="contiguous"):
            _core.PackedLstmF32(*CORE_ARGS, bad)


@pytest.mark.parametrize("value", [None, "weights", 3, [None] * 20, [[0.0]] * 20], ids=["None", "str", "int",
                                                                                      "Nones", "lists"])
def test_core_weights_wrong_python_type(value):
    with pytest.raises(TypeError):
        _core.PackedLstmF32(*CORE_ARGS, value)


# ---- forward
@pytest.mark.parametrize("shape", [(B, I), (I,), (1, T, B, I)], ids=["2d", "1d", "4d"])
def test_core_forward_x_ndim(core32, shape):
    with pytest.raises(ValueError, match="3-D"):
        core32.forward(_x(shape=shape), False, None, None, None)


def test_core_forward_x_dtype(core32):
    for dtype in (np.float64, np.float16, np.int32, np.int64, np.bool_):
        with pytest.raises(TypeError, match="dtype"):
            core32.forward(_x().astype(dtype), False, None, None, None)


def test_core_forward_x_last_dim_stride(core32):
    for x in (_x()[:, :, ::-1], _x(shape=(T, B, 2 * I))[:, :, ::2], np.asfortranarray(_x())):
        with pytest.raises(ValueError, match="contiguous"):
            core32.forward(x, False, None, None, None)


def test_core_forward_x_wrong_size(core32):
    with pytest.raises(ValueError, match="input"):
        core32.forward(_x(shape=(T, B, I + 1)), False, None, None, None)
    with pytest.raises(ValueError, match="input|sequence"):
        core32.forward(_x(shape=(0, B, I)), False, None, None, None)
    with pytest.raises(ValueError, match="input|sequence"):
        core32.forward(_x(shape=(B, 0, I)), True, None, None, None)


def test_core_forward_x_wrong_python_type(core32):
    with pytest.raises(TypeError):
        core32.forward(_x().tolist(), False, None, None, None)
    with pytest.raises(TypeError):
        core32.forward(None, False, None, None, None)


def test_core_forward_state_shapes(core32):
    h0, c0 = _hx()
    bad_h = [h0[:, :2], h0[:2], h0[:, :, :2], np.zeros((LEAD, B, H), np.float32), h0[:, 0], h0[None]]
    for h in bad_h:
        with pytest.raises(ValueError, match="h0"):
            core32.forward(_x(), False, np.ascontiguousarray(h), c0, None)
    bad_c = [c0[:, :2], c0[:2], np.zeros((LEAD, B, PROJ), np.float32), c0[:, 0]]
    for c in bad_c:
        with pytest.raises(ValueError, match="c0"):
            core32.forward(_x(), False, h0, np.ascontiguousarray(c), None)
    # batch-first x: the states' batch is x.shape[0]
    with pytest.raises(ValueError, match="h0"):
        core32.forward(_x(shape=(B + 1, T, I)), True, h0, None, None)


def test_core_forward_state_dtype_and_layout(core32):
    h0, c0 = _hx()
    with pytest.raises(TypeError, match="h0"):
        core32.forward(_x(), False, h0.astype(np.float64), c0, None)
    with pytest.raises(TypeError, match="c0"):
        core32.forward(_x(), False, h0, c0.astype(np.int32), None)
    with pytest.raises(ValueError, match="h0.*contiguous"):
        core32.forward(_x(), False, np.asfortranarray(h0), c0, None)
    c_view = np.zeros((LEAD, B, 2 * H), np.float32)[:, :, ::2]
    with pytest.raises(ValueError, match="c0.*contiguous"):
        core32.forward(_x(), False, h0, c_view, None)
    with pytest.raises(TypeError, match="h0"):
        core32.forward(_x(), False, h0.tolist(), c0, None)
    with pytest.raises(TypeError, match="c0"):
        core32.forward(_x(), False, h0, "c0", None)


def test_core_forward_lengths(core32):
    x = _x()
    with pytest.raises(TypeError, match="lengths.*int64"):
        core32.forward(x, False, None, None, np.array([5, 3, 1], np.int32))
    with pytest.raises(TypeError, match="lengths"):
        core32.forward(x, False, None, None, np.array([5.0, 3.0, 1.0]))
    with pytest.raises(TypeError, match="lengths"):
        core32.forward(x, False, None, None, [5, 3, 1])
    for wrong_count in ([5, 3], [5, 3, 1, 1], [[5, 3, 1]]):
        with pytest.raises(ValueError, match="lengths"):
            core32.forward(x, False, None, None, np.array(wrong_count, np.int64))
    for out_of_range in ([0, 3, 1], [T + 1, 3, 1], [5, -1, 1], [5, 3, 2**62], [5, 3, -(2**62)]):
        with pytest.raises(ValueError, match="lengths"):
            core32.forward(x, False, None, None, np.array(out_of_range, np.int64))
    with pytest.raises(ValueError, match="lengths.*contiguous"):
        core32.forward(x, False, None, None, np.array([5, 0, 3, 0, 1, 0], np.int64)[::2])


def test_core_forward_output_buffers(core32):
    x = _x()
    with pytest.raises(ValueError, match="out"):
        core32.forward(x, False, None, None, None, np.zeros((T, B, 5), np.float32))
    with pytest.raises(TypeError, match="out"):
        core32.forward(x, False, None, None, None, np.zeros((T, B, 2 * PROJ), np.float64))
    with pytest.raises(ValueError, match="out.*contiguous"):
        core32.forward(x, False, None, None, None, np.zeros((T, B, 4 * PROJ), np.float32)[:, :, ::2])
    read_only = np.zeros((T, B, 2 * PROJ), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        core32.forward(x, False, None, None, None, read_only)
    with pytest.raises(ValueError, match="h_n"):
        core32.forward(x, False, None, None, None, None, np.zeros((LEAD, B, H), np.float32))
    with pytest.raises(ValueError, match="c_n"):
        core32.forward(x, False, None, None, None, None, None, np.zeros((LEAD, B, PROJ), np.float32))


def test_core_float64_forward_checks():
    core = _core.PackedLstmF64(*CORE_ARGS, _weights(np.float64))
    with pytest.raises(TypeError, match="dtype"):
        core.forward(_x(np.float32), False, None, None, None)
    h0, c0 = _hx(np.float64)
    with pytest.raises(TypeError, match="h0"):
        core.forward(_x(np.float64), False, h0.astype(np.float32), c0, None)
    output, h_n, c_n = core.forward(_x(np.float64), False, h0, c0, np.array([1, 5, 2], np.int64))
    assert output.dtype == np.float64


def _misaligned_copy(array: np.ndarray) -> np.ndarray:
    buffer = np.zeros(array.nbytes + 1, np.uint8)
    out = np.ndarray(array.shape, array.dtype, buffer=buffer.data, offset=1)
    out[...] = array
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


@pytest.mark.parametrize("which", ["x", "h0", "c0", "lengths", "out", "h_n", "weight"])
def test_core_rejects_misaligned_arrays(core32, which):
    """A C-contiguous array whose data pointer is not aligned to its dtype passes every shape,
    dtype and stride check, yet reading it as float/int64 in C++ is undefined behaviour (the
    FASTLSTM_SANITIZE build aborts: "load of misaligned address"). The extension must refuse it."""
    h0, c0 = _hx()
    args = dict(x=_x(), h0=h0, c0=c0, lengths=np.array([5, 3, 1], np.int64), out=None, h_n=None)
    if which == "weight":
        weights = _weights()
        weights[1] = _misaligned_copy(weights[1])
        with pytest.raises(ValueError, match="align"):
            _core.PackedLstmF32(*CORE_ARGS, weights)
        return
    if which == "out":
        args["out"] = _misaligned_copy(np.zeros((T, B, 2 * PROJ), np.float32))
    elif which == "h_n":
        args["h_n"] = _misaligned_copy(np.zeros((LEAD, B, PROJ), np.float32))
    else:
        args[which] = _misaligned_copy(args[which])
    with pytest.raises(ValueError, match="align"):
        core32.forward(args["x"], False, args["h0"], args["c0"], args["lengths"], args["out"], args["h_n"])


# ---- caller-given outputs must not overlap each other or the inputs
# Writing an output while an input (or another output) in the same memory is still being read gives
# silently wrong results (with h_n and c_n in one buffer, step returned an h_n 0.51 off). The only
# aliasing allowed is exact: h_n is h0 and c_n is c0 (a stream's state updated in place). Each case
# below puts two of the call's arrays into one buffer and gives every other array its own memory.
OUTPUTS = ("out", "h_n", "c_n")
ALLOWED_ALIAS = {("h_n", "h0"), ("c_n", "c0")}


def _specs(entry: str, dtype) -> dict:
    """name -> (shape, dtype) of every array a forward (time-major) or step call takes."""
    lead = (T, B) if entry == "forward" else (B,)
    specs = {
        "input": (lead + (I,), dtype),
        "h0": ((LEAD, B, PROJ), dtype),
        "c0": ((LEAD, B, H), dtype),
        "out": (lead + (2 * PROJ,), dtype),
        "h_n": ((LEAD, B, PROJ), dtype),
        "c_n": ((LEAD, B, H), dtype),
    }
    if entry == "forward":
        specs["lengths"] = ((B,), np.int64)
    return specs


def _fill(name: str, array: np.ndarray) -> None:
    """Valid values for the inputs (lengths in range, finite floats); zeros for the outputs."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name == "lengths":
        array[...] = [5, 3, 1]
    elif name in OUTPUTS:
        array[...] = 0
    else:
        array[...] = rng.standard_normal(array.shape) * 0.5


def _arrays(entry: str, dtype, shared=()):
    """Every array of a call, each in its own memory except `shared`: pairs (name, byte offset)
    placed in one buffer. Returns (arrays by name, the shared buffer)."""
    specs = _specs(entry, dtype)
    arena = np.zeros(sum(int(np.prod(specs[n][0])) * 8 for n, _ in shared) // 8 + 64, np.float64)  # 8-aligned
    arrays = {}
    for name, offset in shared:
        shape, kind = specs[name]
        arrays[name] = np.ndarray(shape, kind, buffer=arena, offset=offset)
        assert arrays[name].flags.c_contiguous and arrays[name].flags.aligned and arrays[name].flags.writeable
    for name, (shape, kind) in specs.items():
        if name not in arrays:
            arrays[name] = np.empty(shape, kind)
    # Outputs first, inputs last: where they share memory, the inputs' valid values are what is left.
    for name in sorted(arrays, key=lambda n: n not in OUTPUTS):
        _fill(name, arrays[name])
    return arrays, arena


def _call(model, entry: str, a: dict, given=OUTPUTS):
    out, h_n, c_n = (a[n] if n in given else None for n in OUTPUTS)
    if entry == "forward":
        return model._packed.forward(a["input"], False, a["h0"], a["c0"], a["lengths"], out, h_n, c_n, 0)
    return model.step(a["input"], (a["h0"], a["c0"]), out=(out, h_n, c_n))


def _nbytes(entry: str, dtype, name: str) -> int:
    shape, kind = _specs(entry, dtype)[name]
    return int(np.prod(shape)) * np.dtype(kind).itemsize


def _overlapping_placements(entry: str, dtype, first: str, second: str):
    """(label, byte offset of first, of second): both from the same start, each shifted one
    8-byte word into the other, and each one's last word under the other's first."""
    n1, n2 = _nbytes(entry, dtype, first), _nbytes(entry, dtype, second)
    assert n1 % 8 == 0 and n2 % 8 == 0
    return [
        ("same start", 0, 0),
        (f"{second} one word into {first}", 0, 8),
        (f"{first} one word into {second}", 8, 0),
        (f"last word of {first} under {second}", 0, n1 - 8),
        (f"last word of {second} under {first}", n2 - 8, 0),
    ]


def _pairs(entry: str):
    inputs = ("input", "h0", "c0") + (("lengths",) if entry == "forward" else ())
    return [("out", "h_n"), ("out", "c_n"), ("h_n", "c_n")] + [(o, i) for o in OUTPUTS for i in inputs]


OVERLAP_CASES = [(entry, first, second) for entry in ("forward", "step") for first, second in _pairs(entry)]


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["f32", "f64"])
def overlap_model(request):
    return fastlstm.LSTM(I, H, LAYERS, bidirectional=True, proj_size=PROJ, seed=0, dtype=request.param)


@pytest.mark.parametrize("entry,first,second", OVERLAP_CASES, ids=[f"{e}-{a}-{b}" for e, a, b in OVERLAP_CASES])
def test_overlapping_outputs_are_rejected(overlap_model, entry, first, second):
    """Every pair of (output, output) and (output, input), sharing all or one word of memory, is a
    ValueError naming the overlap, raised before anything is written; the exact alias h_n = h0 /
    c_n = c0 (same start, same shape) is the one accepted placement. Through the extension's forward
    (with all three outputs given, and with only the ones in the pair) and through model.step(out=)."""
    dtype = overlap_model.dtype
    for label, offset1, offset2 in _overlapping_placements(entry, dtype, first, second):
        if label == "same start" and (first, second) in ALLOWED_ALIAS:
            continue  # test_exact_state_alias_is_accepted
        givens = [OUTPUTS]
        if entry == "forward":
            givens.append(tuple(n for n in OUTPUTS if n in (first, second)))
        for given in givens:
            arrays, arena = _arrays(entry, dtype, [(first, offset1), (second, offset2)])
            assert np.shares_memory(arrays[first], arrays[second])
            before = {name: array.tobytes() for name, array in arrays.items()}
            with pytest.raises(ValueError, match="overlap"):
                _call(overlap_model, entry, arrays, given)
                pytest.fail(f"{entry}: {label} accepted (outputs given: {given})")
            for name, array in arrays.items():
                assert array.tobytes() == before[name], f"{entry}, {label}: {name} written before the check"


def _reference(model, entry: str, dtype):
    arrays, _ = _arrays(entry, dtype)
    _call(model, entry, arrays)
    return arrays


@pytest.mark.parametrize("entry,first,second", OVERLAP_CASES, ids=[f"{e}-{a}-{b}" for e, a, b in OVERLAP_CASES])
def test_adjacent_outputs_are_accepted(overlap_model, entry, first, second):
    """The same pairs laid end to end in one buffer (touching, not sharing a byte) are accepted and
    computed exactly as in separate buffers: the checks are not stricter than an overlap."""
    dtype = overlap_model.dtype
    want = _reference(overlap_model, entry, dtype)
    n1, n2 = _nbytes(entry, dtype, first), _nbytes(entry, dtype, second)
    for offset1, offset2 in ((0, n1), (n2, 0)):
        arrays, _ = _arrays(entry, dtype, [(first, offset1), (second, offset2)])
        assert not np.shares_memory(arrays[first], arrays[second])
        _call(overlap_model, entry, arrays)
        for name in OUTPUTS:
            np.testing.assert_array_equal(arrays[name], want[name], err_msg=f"{entry} {first}/{second} adjacent: {name}")


@pytest.mark.parametrize("entry", ["forward", "step"])
def test_exact_state_alias_is_accepted(overlap_model, entry):
    """h_n is h0 and c_n is c0 (the same arrays, or views of exactly the same memory): the state is
    updated in place, with exactly the out-of-place result."""
    dtype = overlap_model.dtype
    want = _reference(overlap_model, entry, dtype)
    arrays, _ = _arrays(entry, dtype)
    arrays["h_n"], arrays["c_n"] = arrays["h0"], arrays["c0"]
    _call(overlap_model, entry, arrays)
    arrays2, _ = _arrays(entry, dtype, [("h_n", 0), ("h0", 0)])  # two array objects, one memory
    arrays2["c_n"] = arrays2["c0"].view()
    assert arrays2["h_n"] is not arrays2["h0"] and arrays2["c_n"] is not arrays2["c0"]
    _call(overlap_model, entry, arrays2)
    for result in (arrays, arrays2):
        for name in OUTPUTS:
            np.testing.assert_array_equal(result[name], want[name], err_msg=f"{entry} in place: {name}")


@pytest.mark.parametrize("entry", ["forward", "step"])
def test_state_buffers_swapped_or_shared_are_rejected(entry):
    """Without a projection h and c have one shape, so the mistakes are whole arrays: h_n and c_n
    one buffer (`out=(y, buf, buf)`), h_n written into c0 and c_n into h0, out over h_n's first layer."""
    model = fastlstm.LSTM(I, H, 1, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I) if entry == "forward" else (B, I)).astype(np.float32)
    h, c = (rng.standard_normal((1, B, H)).astype(np.float32) for _ in range(2))
    y = np.zeros(x.shape[:-1] + (H,), np.float32)
    buf = np.zeros((1, B, H), np.float32)
    cases = {
        "h_n and c_n one buffer": (y, buf, buf),
        "h_n and c_n both h0": (y, h, h),
        "h_n and c_n both c0": (y, c, c),
        "h_n = c0, c_n = h0": (y, c, h),
        "h_n = c0, c_n fresh": (y, c, buf),
        "c_n = h0, h_n fresh": (y, buf, h),
    }
    if entry == "step":
        cases["out is h_n[0]"] = (buf[0], buf, np.zeros_like(c))
    for label, (out, h_n, c_n) in cases.items():
        h_before, c_before = h.copy(), c.copy()
        with pytest.raises(ValueError, match="overlap"):
            if entry == "forward":
                model._packed.forward(x, False, h, c, None, out, h_n, c_n, 0)
            else:
                model.step(x, (h, c), out=(out, h_n, c_n))
            pytest.fail(f"{entry}: {label} accepted")
        np.testing.assert_array_equal(h, h_before)
        np.testing.assert_array_equal(c, c_before)
