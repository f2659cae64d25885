"""fastlstm.LSTMCell against torch.nn.LSTMCell on the same weights: results, shapes, types,
loading, errors, pickling and repr. torch is the oracle."""

from __future__ import annotations

import copy
import pickle
from typing import Any, Optional, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm._cell import LSTMCell  # noqa: E402

from conftest import (  # noqa: E402
    SUPPORTED_ISAS,
    TORCH_DTYPE,
    held_bound,
    max_abs_error,
    record_error,
    reference_scale,
)

AGAINST = "nn.LSTMCell, same dtype"


def make_torch_cell(input_size: int, hidden_size: int, bias: bool = True, dtype: Any = np.float32,
                    seed: int = 0) -> nn.LSTMCell:
    torch.manual_seed(seed)
    return nn.LSTMCell(input_size, hidden_size, bias=bias, dtype=TORCH_DTYPE[np.dtype(dtype).type]).eval()


def torch_step(module: nn.LSTMCell, x: np.ndarray, hx: Optional[Tuple[np.ndarray, np.ndarray]] = None):
    with torch.no_grad():
        hx_t = None if hx is None else tuple(torch.from_numpy(a.copy()) for a in hx)
        h, c = module(torch.from_numpy(x.copy()), hx_t)
    return h.numpy(), c.numpy()


def as_numpy(value: Any) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else value.detach().numpy()


def assert_close(got, want, dtype, where: str) -> None:
    """(h, c) within conftest's held bound of torch's (tighter than the README's policy)."""
    errors = []
    for name, a, b in zip(("h", "c"), got, want):
        a = as_numpy(a)
        assert a.shape == b.shape, f"{name}: shape {a.shape}, torch {b.shape}"
        assert a.dtype == b.dtype, f"{name}: dtype {a.dtype}, torch {b.dtype}"
        errors.append(max_abs_error(a, b))
    scale = reference_scale(*want)
    record_error(dtype, max(errors), where, AGAINST, scale)
    bound = held_bound(dtype, scale)
    assert max(errors) <= bound, f"max abs error {errors} > the held bound {bound:.3g} ({where})"


def rand(rng: np.random.Generator, shape, dtype, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ------------------------------------------------------------------------------ against torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batch", [None, 1, 3], ids=["unbatched", "B1", "B3"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("container", ["numpy", "torch"])
@pytest.mark.parametrize("sizes", [(10, 20), (3, 67)], ids=["10x20", "3x67"])
def test_matches_torch(sizes, container, with_hx, batch, bias, dtype):
    input_size, hidden_size = sizes
    module = make_torch_cell(input_size, hidden_size, bias, dtype)
    cell = LSTMCell.from_torch(module)
    rng = np.random.default_rng(1)
    lead = () if batch is None else (batch,)
    x = rand(rng, lead + (input_size,), dtype)
    hx = (rand(rng, lead + (hidden_size,), dtype, 0.5), rand(rng, lead + (hidden_size,), dtype, 0.5)) if with_hx else None
    want = torch_step(module, x, hx)
    if container == "torch":
        hx_in = None if hx is None else tuple(torch.from_numpy(a) for a in hx)
        got = cell(torch.from_numpy(x), hx_in)
        assert all(isinstance(v, torch.Tensor) for v in got)
        assert all(v.dtype == TORCH_DTYPE[dtype] for v in got)
    else:
        got = cell(x, hx)
        assert all(type(v) is np.ndarray for v in got)
    assert_close(got, want, dtype, f"LSTMCell{sizes} {container} hx={with_hx} batch={batch} bias={bias}")


@pytest.mark.parametrize("isa", SUPPORTED_ISAS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_matches_torch_every_isa_over_many_steps(isa, dtype):
    """A stream of 200 steps, state fed back each time, under every kernel set."""
    module = make_torch_cell(7, 33, True, dtype, seed=3)
    cell = LSTMCell.from_torch(module)
    rng = np.random.default_rng(2)
    xs = rand(rng, (200, 2, 7), dtype)
    state = ours = None
    for x in xs:
        state = torch_step(module, x, state)
        ours = cell(x, ours)
        assert_close(ours, state, dtype, f"LSTMCell(7, 33) step stream isa={isa}")


def test_equals_fastlstm_lstm_step_bitwise():
    """The cell is a one-layer fastlstm.LSTM stepped once: same kernels, same bits."""
    cell = LSTMCell(6, 12, seed=5)
    weights = {name + "_l0": array for name, array in cell.state_dict().items()}
    lstm = fastlstm.LSTM(6, 12, weights=weights)
    rng = np.random.default_rng(0)
    x = rand(rng, (4, 6), np.float32)
    h0, c0 = rand(rng, (4, 12), np.float32), rand(rng, (4, 12), np.float32)
    h, c = cell(x, (h0, c0))
    output, (h_n, c_n) = lstm.step(x, (h0[None], c0[None]))
    np.testing.assert_array_equal(h, h_n[0])
    np.testing.assert_array_equal(c, c_n[0])
    np.testing.assert_array_equal(h, output)
    # and a one-step sequence through the full forward pass (the kernels are batch-invariant)
    output, (h_n, c_n) = lstm(x[None], (h0[None], c0[None]))
    np.testing.assert_array_equal(h, h_n[0])
    np.testing.assert_array_equal(c, c_n[0])


def test_batch_zero_like_torch():
    module = make_torch_cell(3, 4)
    cell = LSTMCell.from_torch(module)
    x = np.zeros((0, 3), np.float32)
    for hx in (None, (np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))):
        h, c = cell(x, hx)
        want = torch_step(module, x, hx)
        assert h.shape == want[0].shape == (0, 4) and c.shape == want[1].shape == (0, 4)
        assert h.dtype == c.dtype == np.float32
    h, c = cell(torch.zeros(0, 3))
    assert tuple(h.shape) == (0, 4) and isinstance(h, torch.Tensor)


def test_mixed_containers_follow_the_input():
    cell = LSTMCell(3, 4, seed=0)
    x = np.ones((2, 3), np.float32)
    hx = (torch.zeros(2, 4), torch.zeros(2, 4))
    h, c = cell(x, hx)
    assert type(h) is np.ndarray and type(c) is np.ndarray
    h2, c2 = cell(torch.from_numpy(x), (np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32)))
    assert isinstance(h2, torch.Tensor)
    np.testing.assert_array_equal(h, h2.numpy())
    np.testing.assert_array_equal(h, cell(x)[0])  # zeros hx == no hx


def test_non_contiguous_inputs_and_states():
    cell = LSTMCell(5, 8, seed=1)
    rng = np.random.default_rng(0)
    x = rand(rng, (3, 5), np.float32)
    h0, c0 = rand(rng, (3, 8), np.float32), rand(rng, (3, 8), np.float32)
    want = cell(x, (h0, c0))
    x_t = np.asfortranarray(x)                     # column-major
    x_s = np.repeat(x, 2, axis=1)[:, ::2]          # strided last axis
    x_r = x[::-1].copy()[::-1]                     # negative row stride
    h_f, c_f = np.asfortranarray(h0), np.asfortranarray(c0)
    h_s = np.repeat(h0, 2, axis=0)[::2]
    for xi in (x_t, x_s, x_r):
        for hx in ((h0, c0), (h_f, c_f), (h_s, c0)):
            got = cell(xi, hx)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    # tensors: a transposed view
    got = cell(torch.from_numpy(x.T.copy()).T, (torch.from_numpy(h0), torch.from_numpy(c0)))
    np.testing.assert_array_equal(got[0].numpy(), want[0])
    # misaligned (but contiguous) arrays, e.g. from a packed binary buffer
    def misaligned(a):
        buffer = np.zeros(a.nbytes + 1, np.uint8)
        out = np.ndarray(a.shape, a.dtype, buffer=buffer.data, offset=1)
        out[...] = a
        assert not out.flags.aligned
        return out
    for xi, hx in ((misaligned(x), (h0, c0)), (x, (misaligned(h0), misaligned(c0))), (misaligned(x[0]), None)):
        got = cell(xi, hx)
        ref = cell(xi.copy(), None if hx is None else tuple(a.copy() for a in hx))
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def test_inputs_not_mutated_and_outputs_fresh():
    cell = LSTMCell(4, 6, seed=2)
    rng = np.random.default_rng(0)
    x = rand(rng, (2, 4), np.float32)
    h0, c0 = rand(rng, (2, 6), np.float32), rand(rng, (2, 6), np.float32)
    copies = [a.copy() for a in (x, h0, c0)]
    h, c = cell(x, (h0, c0))
    for a, b in zip((x, h0, c0), copies):
        np.testing.assert_array_equal(a, b)
    assert not np.shares_memory(h, h0) and not np.shares_memory(c, c0) and not np.shares_memory(h, c)
    assert h.flags.writeable and c.flags.writeable
    h[...] = 0  # the caller owns the result: writing it changes nothing for the next call
    np.testing.assert_array_equal(cell(x, (h0, c0))[1], c)


def test_requires_grad_tensors_and_train_mode_module():
    """Under no_grad (tests/test_inference_only.py: refused with grad mode on)."""
    torch.manual_seed(0)
    module = nn.LSTMCell(3, 5).train()
    cell = LSTMCell.from_torch(module)
    x = torch.randn(2, 3, requires_grad=True)
    with torch.no_grad():
        h, c = cell(x)
        th, tc = module(x)
    assert_close((h, c), (th.numpy(), tc.numpy()), np.float32, "requires_grad input, train-mode module")


def test_call_is_forward_and_num_threads():
    cell = LSTMCell(4, 64, seed=0)
    x = np.ones((3, 4), np.float32)
    a = cell(x)
    b = cell.forward(x, num_threads=1)
    np.testing.assert_array_equal(a[0], b[0])


# ------------------------------------------------------------------------------ construction
def test_random_weights_seeded_and_scaled():
    a, b, other = LSTMCell(3, 16, seed=7), LSTMCell(3, 16, seed=7), LSTMCell(3, 16, seed=8)
    for name, array in a.state_dict().items():
        np.testing.assert_array_equal(array, b.state_dict()[name])
        assert not np.array_equal(array, other.state_dict()[name])
        assert np.abs(array).max() <= 1 / np.sqrt(16)
        assert array.dtype == np.float32
    assert list(LSTMCell(3, 16, bias=False).state_dict()) == ["weight_ih", "weight_hh"]
    assert LSTMCell(3, 16, dtype=np.float64).state_dict()["weight_hh"].dtype == np.float64
    assert LSTMCell(3, 16, dtype=torch.float64).dtype == np.float64


@pytest.mark.parametrize("bias", [True, False])
def test_weights_round_trip_through_torch(bias):
    cell = LSTMCell(5, 9, bias, seed=3)
    module = nn.LSTMCell(5, 9, bias=bias)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in cell.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rand(rng, (2, 5), np.float32)
    assert_close(cell(x), torch_step(module, x), np.float32, "state_dict round trip")
    again = LSTMCell(5, 9, bias, weights=cell.state_dict())
    np.testing.assert_array_equal(again(x)[0], cell(x)[0])


def test_state_dict_is_read_only_and_detached_from_the_source():
    module = make_torch_cell(3, 4)
    cell = LSTMCell.from_torch(module)
    before = cell(np.ones(3, np.float32))[0].copy()
    with torch.no_grad():
        module.weight_ih.add_(1.0)  # later edits to the module must not reach the packed cell
    np.testing.assert_array_equal(cell(np.ones(3, np.float32))[0], before)
    weights = cell.state_dict()
    assert not weights["weight_ih"].flags.writeable
    with pytest.raises(ValueError):
        weights["weight_ih"][0, 0] = 1.0


def test_from_torch_float64_and_attributes():
    module = make_torch_cell(6, 10, False, np.float64)
    cell = LSTMCell.from_torch(module)
    assert (cell.input_size, cell.hidden_size, cell.bias, cell.dtype) == (6, 10, False, np.dtype(np.float64))
    assert isinstance(cell.input_size, int) and isinstance(cell.bias, bool)


@pytest.mark.parametrize(
    "obj",
    [nn.LSTM(3, 4), nn.GRUCell(3, 4), nn.RNNCell(3, 4), nn.Linear(3, 4), object(), None, {"weight_ih": 1}],
    ids=["LSTM", "GRUCell", "RNNCell", "Linear", "object", "None", "dict"],
)
def test_from_torch_rejects_other_types(obj):
    with pytest.raises(TypeError) as info:
        LSTMCell.from_torch(obj)
    message = str(info.value)
    assert type(obj).__name__ in message and "nn.LSTMCell" in message
    if isinstance(obj, nn.LSTM):
        assert "fastlstm.LSTM.from_torch" in message


def test_from_torch_rejects_half_precision():
    module = nn.LSTMCell(3, 4, dtype=torch.float16)
    with pytest.raises(TypeError, match="float16"):
        LSTMCell.from_torch(module)


def test_constructor_weights_mismatch():
    weights = LSTMCell(3, 4, seed=0).state_dict()
    with pytest.raises(ValueError, match=r"input_size=3, hidden_size=4, bias=True.*input_size=3, hidden_size=5"):
        LSTMCell(3, 5, weights=weights)
    with pytest.raises(ValueError, match="bias=False"):
        LSTMCell(3, 4, bias=False, weights=weights)
    with pytest.raises(TypeError, match="float32.*float64"):
        LSTMCell(3, 4, dtype=np.float64, weights=weights)
    with pytest.raises(TypeError):
        LSTMCell(3, 4, dtype=np.int32)
    with pytest.raises(ValueError, match="hidden_size must be positive"):
        LSTMCell(3, 0)
    with pytest.raises(TypeError, match="input_size must be an int"):
        LSTMCell(3.0, 4)


# ------------------------------------------------------------------------------ from_state_dict
class Model(nn.Module):
    def __init__(self, cells: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(2, 3)
        self.cell = nn.LSTMCell(3, 5)
        if cells > 1:
            self.decoder = nn.Sequential(nn.LSTMCell(5, 5))
        self.head = nn.Linear(5, 1)


def _assert_same_as(cell: LSTMCell, module: nn.LSTMCell) -> None:
    x = np.random.default_rng(0).standard_normal((2, module.input_size)).astype(np.float32)
    assert_close(cell(x), torch_step(module, x), np.float32, "from_state_dict")


@pytest.mark.parametrize("prefix", [None, "cell", "cell."])
def test_from_state_dict_whole_model(prefix):
    model = Model()
    cell = LSTMCell.from_state_dict(model.state_dict(), prefix=prefix)
    assert (cell.input_size, cell.hidden_size) == (3, 5)
    _assert_same_as(cell, model.cell)


def test_from_state_dict_bare_nested_and_numpy():
    module = make_torch_cell(4, 6, False)
    _assert_same_as(LSTMCell.from_state_dict(module.state_dict()), module)
    checkpoint = {"epoch": 3, "model_state_dict": Model().state_dict(), "optimizer": {"lr": 0.1}}
    cell = LSTMCell.from_state_dict(checkpoint)
    _assert_same_as(cell, Model().cell)
    as_np = {k: v.numpy() for k, v in module.state_dict().items()}
    _assert_same_as(LSTMCell.from_state_dict(as_np), module)
    big_endian = {k: v.astype(">f4") for k, v in as_np.items()}
    cell = LSTMCell.from_state_dict(big_endian)
    assert cell.dtype == np.float32
    _assert_same_as(cell, module)


def test_from_state_dict_several_cells_lists_prefixes():
    sd = Model(cells=2).state_dict()
    with pytest.raises(ValueError) as info:
        LSTMCell.from_state_dict(sd)
    assert "'cell.'" in str(info.value) and "'decoder.0.'" in str(info.value) and "prefix=" in str(info.value)
    cell = LSTMCell.from_state_dict(sd, prefix="decoder.0")
    assert (cell.input_size, cell.hidden_size) == (5, 5)


def test_from_state_dict_prefix_errors():
    sd = Model().state_dict()
    with pytest.raises(ValueError, match=r"no nn.LSTMCell weights under prefix 'enc'.*found under: 'cell.'"):
        LSTMCell.from_state_dict(sd, prefix="enc")
    with pytest.raises(TypeError, match="prefix must be a str"):
        LSTMCell.from_state_dict(sd, prefix=1)
    with pytest.raises(ValueError, match="keys seen: none"):
        LSTMCell.from_state_dict({})
    with pytest.raises(TypeError, match="state_dict"):
        LSTMCell.from_state_dict([1, 2])


def test_from_state_dict_of_an_lstm_hints_at_fastlstm_lstm():
    with pytest.raises(ValueError, match="fastlstm.LSTM.from_state_dict"):
        LSTMCell.from_state_dict(nn.LSTM(3, 4).state_dict())


def _cell_sd(**changes):
    sd = {k: v.numpy().copy() for k, v in make_torch_cell(3, 4).state_dict().items()}
    for key, value in changes.items():
        if value is None:
            del sd[key]
        else:
            sd[key] = value
    return sd


@pytest.mark.parametrize(
    "changes, pattern",
    [
        (dict(weight_hh=None), r"missing 'weight_hh'"),
        (dict(bias_hh=None), r"missing 'bias_hh'"),
        (dict(weight_hh=np.zeros((16, 5), np.float32)),
         r"'weight_hh' has shape \(16, 5\), but nn.LSTMCell\(input_size=3, hidden_size=4, bias=True\) expects \(16, 4\)"),
        (dict(bias_ih=np.zeros(17, np.float32)), r"'bias_ih' has shape \(17,\).*expects \(16,\)"),
        (dict(bias_hh=np.zeros((16, 1), np.float32)), r"'bias_hh' has shape \(16, 1\).*expects \(16,\)"),
        (dict(weight_ih=np.zeros(16, np.float32)), r"'weight_ih' must be 2-D \(4\*hidden_size, input_size\), got shape \(16,\)"),
        (dict(weight_ih=np.zeros((15, 3), np.float32)), r"'weight_ih' has shape \(15, 3\).*multiple of 4"),
        (dict(weight_ih=np.zeros((16, 0), np.float32)), r"input_size must be positive"),
    ],
    ids=["no-weight_hh", "half-bias", "weight_hh-shape", "bias-len", "bias-2d", "weight_ih-1d", "gates", "zero-input"],
)
def test_from_state_dict_shape_errors(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        LSTMCell.from_state_dict(_cell_sd(**changes))


def test_from_state_dict_dtype_errors():
    with pytest.raises(TypeError, match=r"mix dtypes \(float32: 'weight_ih', 'bias_ih', 'bias_hh'; float64: 'weight_hh'\)"):
        LSTMCell.from_state_dict(_cell_sd(weight_hh=np.zeros((16, 4), np.float64)))
    with pytest.raises(TypeError, match=r"'bias_ih' has dtype int64"):
        LSTMCell.from_state_dict(_cell_sd(bias_ih=np.zeros(16, np.int64)))
    with pytest.raises(TypeError, match=r"'weight_ih' must be a numpy array or torch tensor, got list"):
        LSTMCell.from_state_dict(_cell_sd(weight_ih=[[0.0] * 3] * 16))


# ------------------------------------------------------------------------------ call errors
@pytest.fixture(scope="module")
def cell():
    return LSTMCell(3, 4, seed=0)


def test_call_dtype_errors(cell):
    with pytest.raises(TypeError, match="input has dtype float64 but the cell is float32"):
        cell(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="input must be a floating array of dtype float32, got dtype int64"):
        cell(np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="float64"):
        cell(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="h_0 has dtype float64"):
        cell(np.zeros((2, 3), np.float32), (np.zeros((2, 4)), np.zeros((2, 4), np.float32)))
    with pytest.raises(TypeError, match="c_0 has dtype float16"):
        cell(np.zeros((2, 3), np.float32), (np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float16)))
    with pytest.raises(TypeError, match="input must be a numpy array or a torch tensor, got list"):
        cell([[0.0, 0.0, 0.0]])


def test_call_shape_errors(cell):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"Expected input to be 1D or 2D, got 3D"):
        cell(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"Expected input to be 1D or 2D, got 0D"):
        cell(np.zeros((), np.float32))
    with pytest.raises(ValueError, match=r"input_size. Expected 3, got 5"):
        cell(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"Expected h_0 of shape \(2, 4\), got \(3, 4\)"):
        cell(x, (np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match=r"Expected c_0 of shape \(2, 4\), got \(2, 5\)"):
        cell(x, (np.zeros((2, 4), np.float32), np.zeros((2, 5), np.float32)))
    with pytest.raises(ValueError, match=r"unbatched 1-D input, h_0 must also be 1-D \(4,\), got 2-D \(1, 4\)"):
        cell(np.zeros(3, np.float32), (np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32)))
    with pytest.raises(ValueError, match=r"Expected h_0 of shape \(2, 4\), got \(4,\)"):
        cell(x, (np.zeros(4, np.float32), np.zeros(4, np.float32)))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        cell(x, np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        cell(x, (np.zeros((2, 4), np.float32),))
    with pytest.raises(TypeError, match="h_0 must be a numpy array or torch tensor, got float"):
        cell(x, (0.0, np.zeros((2, 4), np.float32)))


def test_torch_hx_shape_errors_match_torch_kind(cell):
    """torch raises RuntimeError for a wrong hx batch; we raise ValueError naming both shapes."""
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(3, 4\)"):
        cell(torch.zeros(2, 3), (torch.zeros(3, 4), torch.zeros(3, 4)))


# ------------------------------------------------------------------------------ object protocol
def test_immutable(cell):
    for name in ("input_size", "hidden_size", "bias", "dtype", "_lstm", "new_attribute"):
        with pytest.raises(AttributeError):
            setattr(cell, name, 1)
        with pytest.raises(AttributeError):
            delattr(cell, name)
    assert cell.hidden_size == 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_pickle_and_copy(dtype, bias):
    cell = LSTMCell(5, 7, bias, dtype=dtype, seed=4)
    rng = np.random.default_rng(0)
    x = rand(rng, (3, 5), dtype)
    hx = (rand(rng, (3, 7), dtype), rand(rng, (3, 7), dtype))
    want = cell(x, hx)
    for other in (pickle.loads(pickle.dumps(cell)), pickle.loads(pickle.dumps(cell, protocol=2)),
                  copy.copy(cell), copy.deepcopy(cell)):
        assert type(other) is LSTMCell and repr(other) == repr(cell)
        assert (other.input_size, other.hidden_size, other.bias, other.dtype) == (5, 7, bias, np.dtype(dtype))
        got = other(x, hx)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("args, kwargs", [((10, 20), {}), ((10, 20), {"bias": False}), ((1, 1), {})])
def test_repr_like_torch(args, kwargs):
    assert repr(LSTMCell(*args, **kwargs)) == repr(nn.LSTMCell(*args, **kwargs))
    assert repr(LSTMCell(10, 20)) == "LSTMCell(10, 20)"
    assert repr(LSTMCell(10, 20, bias=False)) == "LSTMCell(10, 20, bias=False)"
    assert repr(LSTMCell(10, 20, dtype=np.float64)) == "LSTMCell(10, 20, dtype=float64)"


def test_exported_from_package():
    """Fails until fastlstm/__init__.py exports the cell (`from ._cell import LSTMCell`)."""
    assert getattr(fastlstm, "LSTMCell", None) is LSTMCell
    assert "LSTMCell" in fastlstm.__all__
