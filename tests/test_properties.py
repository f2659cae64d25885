"""Property tests (hypothesis): random valid configurations agree with nn.LSTM (within conftest's
held bound), streaming in random chunks equals one call bit for bit, and random invalid calls raise
ValueError/TypeError and nothing else.

Bounded for CI: a fixed example budget per property, no deadline (the first call of a shape may
grow scratch buffers), and `derandomize=True` so a CI run is reproducible; set
FASTLSTM_HYPOTHESIS_EXAMPLES to explore further locally, e.g. 2000.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastlstm  # noqa: E402

from conftest import held_bound, record_error, reference_scale  # noqa: E402

EXAMPLES = int(os.environ.get("FASTLSTM_HYPOTHESIS_EXAMPLES", "100"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
SUPPORTED_ISAS = list(fastlstm.cpu_info()["supported_isas"])


@contextlib.contextmanager
def kernel_set(name: str):
    """Run under one instruction set's kernels (a process-wide setting), then restore."""
    previous = fastlstm.cpu_info()["isa"]
    fastlstm.set_isa(name)
    try:
        yield
    finally:
        fastlstm.set_isa(previous)


# ------------------------------------------------------------------------------------------ strategies
@st.composite
def lstm_configs(draw, allow_bidirectional: bool = True) -> Dict[str, Any]:
    hidden = draw(st.integers(1, 40))
    return dict(
        input_size=draw(st.integers(1, 40)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 3)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()) if allow_bidirectional else False,
        proj_size=draw(st.one_of(st.just(0), st.integers(0, hidden - 1))),
        dtype=np.dtype(draw(st.sampled_from([np.float32, np.float64]))),
        seed=draw(st.integers(0, 2**16)),
    )


def build_pair(config: Dict[str, Any]) -> Tuple[nn.LSTM, fastlstm.LSTM]:
    """An eval-mode nn.LSTM at its own init scale, and fastlstm's copy of it."""
    torch.manual_seed(config["seed"])
    module = nn.LSTM(
        config["input_size"],
        config["hidden_size"],
        num_layers=config["num_layers"],
        bias=config["bias"],
        batch_first=config["batch_first"],
        bidirectional=config["bidirectional"],
        proj_size=config["proj_size"],
        dtype=TORCH_DTYPE[config["dtype"]],
    ).eval()
    return module, fastlstm.LSTM.from_torch(module)


def state_shapes(config: Dict[str, Any], batch: Optional[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    lead = config["num_layers"] * (2 if config["bidirectional"] else 1)
    h_out = config["proj_size"] or config["hidden_size"]
    if batch is None:
        return (lead, h_out), (lead, config["hidden_size"])
    return (lead, batch, h_out), (lead, batch, config["hidden_size"])


def call_inputs(call: Dict[str, Any]) -> Tuple[np.ndarray, Any]:
    """The drawn call's input (unbatched, time-major or batch-first as its config says) and hx."""
    config, batch, steps = call["config"], call["batch"], call["steps"]
    dtype = config["dtype"]
    rng = np.random.default_rng(call["data_seed"])
    if batch is None:
        shape = (steps, config["input_size"])
    elif config["batch_first"]:
        shape = (batch, steps, config["input_size"])
    else:
        shape = (steps, batch, config["input_size"])
    x = rng.standard_normal(shape).astype(dtype)
    hx = None
    if call["use_hx"]:
        h_shape, c_shape = state_shapes(config, batch)
        hx = (rng.standard_normal(h_shape).astype(dtype) * 0.5, rng.standard_normal(c_shape).astype(dtype) * 0.5)
    return x, hx


def with_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """The same values in a different memory layout, to exercise the strided paths."""
    if layout == "contiguous":
        return array
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "feature-strided":  # every other float of a wider buffer: last stride != itemsize
        wide = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), array.dtype)
        wide[..., ::2] = array
        return wide[..., ::2]
    if layout == "reversed":  # negative strides on the leading axis
        flipped = np.ascontiguousarray(array[::-1])
        return flipped[::-1]
    if layout == "offset":  # a view one element into a buffer: misaligned for SIMD
        flat = np.zeros(array.size + 1, array.dtype)
        view = flat[1:].reshape(array.shape)
        view[...] = array
        return view
    raise AssertionError(layout)


LAYOUTS = ["contiguous", "fortran", "feature-strided", "reversed", "offset"]


def torch_reference(module: nn.LSTM, x: np.ndarray, hx, lengths) -> Tuple[np.ndarray, ...]:
    x_t = torch.from_numpy(np.ascontiguousarray(x))
    hx_t = None if hx is None else tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in hx)
    with torch.no_grad():
        if lengths is None:
            output, (h_n, c_n) = module(x_t, hx_t)
        else:
            steps = x_t.shape[1] if module.batch_first else x_t.shape[0]
            packed = pack_padded_sequence(x_t, torch.tensor(lengths, dtype=torch.int64),
                                          batch_first=module.batch_first, enforce_sorted=False)
            packed_out, (h_n, c_n) = module(packed, hx_t)
            output, _ = pad_packed_sequence(packed_out, batch_first=module.batch_first, total_length=steps)
    return output.numpy(), h_n.numpy(), c_n.numpy()


def as_numpy(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else value


def assert_close(got, want, dtype: np.dtype, context: str) -> None:
    """fastlstm's (output, h_n, c_n) against torch's, within conftest's held bound."""
    scale = reference_scale(*want)
    tolerance = held_bound(dtype, scale)
    for name, g, w in zip(("output", "h_n", "c_n"), got, want):
        g = as_numpy(g)
        assert g.shape == w.shape, f"{name}: shape {g.shape} != torch's {w.shape} ({context})"
        assert g.dtype == w.dtype, f"{name}: dtype {g.dtype} != torch's {w.dtype} ({context})"
        if g.size:
            error = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64))))
            record_error(dtype, error, "hypothesis (test_properties)", scale=scale)
            assert error <= tolerance, f"{name}: max abs error {error:.3e} > {tolerance:.3g} ({context})"


def assert_identical(got, want, context: str) -> None:
    """fastlstm against fastlstm: the README promises bitwise equality (same shapes, dtypes, bits)."""
    for name, g, w in zip(("output", "h_n", "c_n"), got, want):
        g, w = as_numpy(g), as_numpy(w)
        assert g.shape == w.shape and g.dtype == w.dtype, f"{name}: {g.shape} {g.dtype} != {w.shape} {w.dtype} ({context})"
        np.testing.assert_array_equal(g, w, err_msg=f"{name} ({context})")


# ------------------------------------------------------------------------------------------ (a) vs torch
@st.composite
def valid_calls(draw):
    config = draw(lstm_configs())
    unbatched = draw(st.booleans())
    batch = None if unbatched else draw(st.integers(1, 5))
    steps = draw(st.integers(1, 12))
    use_lengths = not unbatched and draw(st.booleans())
    lengths = None
    containers = ["numpy", "torch"]
    if use_lengths:
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
        containers.append("packed")  # a PackedSequence carries the lengths itself
    return dict(
        config=config,
        batch=batch,
        steps=steps,
        lengths=lengths,
        use_hx=draw(st.booleans()),
        container=draw(st.sampled_from(containers)),
        layout=draw(st.sampled_from(LAYOUTS)),
        isa=draw(st.sampled_from(SUPPORTED_ISAS)),
        num_threads=draw(st.sampled_from([0, 1, 2])),
        data_seed=draw(st.integers(0, 2**32 - 1)),
    )


@PROPERTY_SETTINGS
@given(call=valid_calls())
def test_random_valid_calls_match_torch(call):
    config, steps, lengths = call["config"], call["steps"], call["lengths"]
    dtype = config["dtype"]
    module, model = build_pair(config)
    x, hx = call_inputs(call)
    want = torch_reference(module, x, hx, lengths)

    x_in = with_layout(x, call["layout"])
    hx_in = None if hx is None else tuple(with_layout(a, call["layout"]) for a in hx)
    if call["container"] in ("torch", "packed"):
        x_in = as_tensor(x_in)
        hx_in = None if hx_in is None else tuple(as_tensor(a) for a in hx_in)
    x_before = np.array(as_numpy(x_in), copy=True)
    with kernel_set(call["isa"]):
        if call["container"] == "packed":
            packed = pack_padded_sequence(x_in, torch.tensor(lengths), batch_first=config["batch_first"],
                                          enforce_sorted=False)
            packed_out, (h_n, c_n) = model(packed, hx_in, num_threads=call["num_threads"])
            assert isinstance(packed_out, torch.nn.utils.rnn.PackedSequence)
            output, _ = pad_packed_sequence(packed_out, batch_first=config["batch_first"], total_length=steps)
        else:
            output, (h_n, c_n) = model(x_in, hx_in, lengths=lengths, num_threads=call["num_threads"])

    expected_type = np.ndarray if call["container"] == "numpy" else torch.Tensor
    for value in (output, h_n, c_n):
        assert isinstance(value, expected_type)
    np.testing.assert_array_equal(as_numpy(x_in), x_before)  # the input is never written
    assert_close((output, h_n, c_n), want, dtype, f"{call}")


def as_tensor(array: np.ndarray) -> Any:
    """A tensor with the array's values and, where torch allows it, its strides (torch has no
    negative strides: those become a transposed view instead)."""
    if all(stride >= 0 for stride in array.strides):
        return torch.from_numpy(array)
    if array.ndim >= 2:
        return torch.from_numpy(np.ascontiguousarray(np.swapaxes(array, 0, 1))).transpose(0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


# ------------------------------------------------------------------------------------------ (b) chunks
@st.composite
def chunked_calls(draw):
    # Bidirectional layers read the whole sequence backwards, so only one direction can stream.
    config = draw(lstm_configs(allow_bidirectional=False))
    steps = draw(st.integers(2, 24))
    cuts = sorted(draw(st.sets(st.integers(1, steps - 1), max_size=min(6, steps - 1))))
    unbatched = draw(st.booleans())
    return dict(
        config=config,
        batch=None if unbatched else draw(st.integers(1, 5)),
        steps=steps,
        cuts=cuts,
        use_hx=draw(st.booleans()),
        # How each single-step chunk is run: the full call or the streaming step() entry point.
        use_step=draw(st.booleans()),
        container=draw(st.sampled_from(["numpy", "torch"])),
        isa=draw(st.sampled_from(SUPPORTED_ISAS)),
        data_seed=draw(st.integers(0, 2**32 - 1)),
    )


@PROPERTY_SETTINGS
@given(call=chunked_calls())
def test_chunked_equals_one_shot(call):
    config, batch = call["config"], call["batch"]
    _, model = build_pair(config)
    time_axis = 1 if (batch is not None and config["batch_first"]) else 0
    x, hx = call_inputs(call)

    with kernel_set(call["isa"]):
        _run_chunked(model, call, x, hx, time_axis)


def _run_chunked(model, call, x, hx, time_axis):
    steps, dtype = call["steps"], call["config"]["dtype"]
    whole, (h_whole, c_whole) = model(x, hx)

    bounds = [0] + call["cuts"] + [steps]
    pieces = []
    state = hx
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        chunk = np.take(x, np.arange(lo, hi), axis=time_axis)
        if hi - lo == 1 and call["use_step"]:
            piece, state = model.step(np.take(chunk, 0, axis=time_axis), state)
            piece = np.expand_dims(piece, time_axis)
        elif call["container"] == "torch":
            state_t = None if state is None else tuple(torch.from_numpy(np.asarray(a)) for a in state)
            piece_t, state_t = model(torch.from_numpy(chunk), state_t)
            piece, state = piece_t.numpy(), (state_t[0].numpy(), state_t[1].numpy())
        else:
            piece, state = model(chunk, state)
        pieces.append(piece)
    chunked = np.concatenate(pieces, axis=time_axis)
    assert chunked.dtype == dtype
    assert_identical((chunked, state[0], state[1]), (whole, h_whole, c_whole), f"{call}")


# ------------------------------------------------------------------------------------------ (c) invalid
MUTATIONS = [
    "input-ndim", "input-feature", "input-dtype", "input-type", "input-empty-time",
    "hx-not-pair", "hx-shape", "hx-dtype", "hx-type", "hx-ndim",
    "lengths-zero", "lengths-too-long", "lengths-negative", "lengths-count", "lengths-dtype",
    "lengths-ndim", "lengths-type", "lengths-unbatched-many",
]


@st.composite
def invalid_calls(draw):
    config = draw(lstm_configs())
    config["dtype"] = np.dtype(np.float32)  # the model's dtype matters little here; keep it cheap
    config["num_layers"] = min(config["num_layers"], 2)
    unbatched = draw(st.booleans())
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation.startswith("lengths") and mutation != "lengths-unbatched-many":
        unbatched = False
    if mutation == "lengths-unbatched-many":
        unbatched = True
    return dict(
        config=config,
        unbatched=unbatched,
        batch=draw(st.integers(1, 5)),
        steps=draw(st.integers(1, 6)),
        mutation=mutation,
        container=draw(st.sampled_from(["numpy", "torch"])),
        variant=draw(st.integers(0, 2**16)),
    )


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _perturbed_shape(rng: np.random.Generator, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """A different shape: one axis off by a non-zero amount, or an axis added/dropped."""
    kind = _pick(rng, ["axis", "add", "drop"])
    if kind == "add":
        return shape + (1,)
    if kind == "drop" and len(shape) > 1:
        return shape[1:]
    axis = int(rng.integers(len(shape)))
    delta = int(_pick(rng, [-1, 1, 2, 7]))
    new = list(shape)
    new[axis] = max(0, new[axis] + delta)
    if tuple(new) == shape:
        new[axis] += 1
    return tuple(new)


@PROPERTY_SETTINGS
@given(call=invalid_calls())
def test_random_invalid_calls_raise_value_or_type_error(call):
    config, mutation = call["config"], call["mutation"]
    rng = np.random.default_rng(call["variant"])
    _, model = build_pair(config)
    batch = None if call["unbatched"] else call["batch"]
    steps, size = call["steps"], config["input_size"]
    if batch is None:
        x_shape = (steps, size)
    elif config["batch_first"]:
        x_shape = (batch, steps, size)
    else:
        x_shape = (steps, batch, size)
    h_shape, c_shape = state_shapes(config, batch)
    x: Any = np.zeros(x_shape, np.float32)
    hx: Any = (np.zeros(h_shape, np.float32), np.zeros(c_shape, np.float32)) if rng.integers(2) else None
    lengths: Any = None

    if mutation == "input-ndim":
        x = np.zeros(_pick(rng, [(), (size,), (1,) + x_shape if len(x_shape) == 3 else (1, 1) + x_shape,
                                 (2, 1, 1, size), (1, 1, 1, 1, size)]), np.float32)
    elif mutation == "input-feature":
        wrong = [n for n in (0, size - 1, size + 1, size + 3, 2 * size) if n != size]
        x = np.zeros(x_shape[:-1] + (int(_pick(rng, wrong)),), np.float32)
    elif mutation == "input-dtype":
        x = np.zeros(x_shape, _pick(rng, [np.float64, np.float16, np.int32, np.int64, np.bool_,
                                           np.complex64, object, ">f4"]))
    elif mutation == "input-type":
        x = _pick(rng, [None, 1, 1.5, "x", b"x", [[0.0] * size] * steps, {"x": 1}, (1, 2), object(),
                        np.float32(1.0)])
    elif mutation == "input-empty-time":
        x = np.zeros(tuple(0 if i == (1 if (batch is not None and config["batch_first"]) else 0) else d
                           for i, d in enumerate(x_shape)), np.float32)
    elif mutation == "hx-not-pair":
        pair = (np.zeros(h_shape, np.float32), np.zeros(c_shape, np.float32))
        hx = _pick(rng, [pair[0], pair + (pair[0],), (pair[0],), [], "hx", 3, {"h": pair[0]}])
    elif mutation == "hx-shape":
        which = int(rng.integers(2))
        shapes = [h_shape, c_shape]
        shapes[which] = _perturbed_shape(rng, shapes[which])
        hx = (np.zeros(shapes[0], np.float32), np.zeros(shapes[1], np.float32))
    elif mutation == "hx-dtype":
        which = int(rng.integers(2))
        dtype = _pick(rng, [np.float64, np.float16, np.int32, np.int64, np.bool_, object, ">f4"])
        hx = [np.zeros(h_shape, np.float32), np.zeros(c_shape, np.float32)]
        hx[which] = hx[which].astype(dtype)
        hx = tuple(hx)
    elif mutation == "hx-type":
        which = int(rng.integers(2))
        hx = [np.zeros(h_shape, np.float32), np.zeros(c_shape, np.float32)]
        hx[which] = _pick(rng, [None, 0.0, "h", hx[which].tolist(), object()])
        hx = tuple(hx)
    elif mutation == "hx-ndim":
        hx = (np.zeros(h_shape + (1,), np.float32), np.zeros(c_shape + (1,), np.float32))
        if rng.integers(2):
            hx = (np.zeros(h_shape[1:], np.float32), np.zeros(c_shape[1:], np.float32))
    elif mutation == "lengths-zero":
        lengths = [steps] * batch
        lengths[int(rng.integers(batch))] = 0
    elif mutation == "lengths-too-long":
        lengths = [steps] * batch
        lengths[int(rng.integers(batch))] = steps + int(rng.integers(1, 1000))
    elif mutation == "lengths-negative":
        lengths = [steps] * batch
        lengths[int(rng.integers(batch))] = -int(rng.integers(1, 2**40))
    elif mutation == "lengths-count":
        lengths = [1] * _pick(rng, [0, batch + 1, batch + 3] + ([batch - 1] if batch > 1 else []))
    elif mutation == "lengths-dtype":
        lengths = np.full(batch, steps, _pick(rng, [np.float32, np.float64, np.bool_, object, np.complex64]))
    elif mutation == "lengths-ndim":
        lengths = np.full((batch, 1), steps) if rng.integers(2) else np.int64(steps)
    elif mutation == "lengths-type":
        lengths = _pick(rng, ["abc", [None] * batch, 1.5, [1.5] * batch, {"a": 1}, object()])
    elif mutation == "lengths-unbatched-many":
        lengths = [steps, steps]
    else:
        raise AssertionError(mutation)

    if call["container"] == "torch":
        def to_tensor(value):
            if isinstance(value, np.ndarray) and value.dtype != object and value.dtype.isnative:
                return torch.from_numpy(np.ascontiguousarray(value))
            return value
        x = to_tensor(x)
        if isinstance(hx, tuple):
            hx = tuple(to_tensor(a) for a in hx)
        if isinstance(lengths, np.ndarray):
            lengths = to_tensor(lengths)

    try:
        model(x, hx, lengths=lengths)
    except (ValueError, TypeError):
        return
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a bug
        raise AssertionError(f"{mutation}: raised {type(exc).__name__}: {exc} (not ValueError/TypeError)") from exc
    raise AssertionError(f"{mutation}: the invalid call was accepted: {call}")


# ------------------------------------------------------------------------------------------ regressions
# Found by test_random_valid_calls_match_torch (layout "feature-strided", input_size=1) and fixed since
# ("size-1 axes may have any stride"); kept as plain tests so that they run every time, whatever
# examples hypothesis draws.
def test_univariate_input_made_with_newaxis_is_accepted():
    """`series[:, :, None]` is how a (T, B) univariate series becomes (T, B, 1) input. numpy gives the
    new axis stride 0 and still calls the array C-contiguous (a size-1 axis's stride is irrelevant),
    so np.ascontiguousarray returns it unchanged and the extension must accept any stride there."""
    module = nn.LSTM(1, 8).eval()
    model = fastlstm.LSTM.from_torch(module)
    series = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    wide = np.zeros((1, 2), np.float32)
    wide[0, 0] = 0.5
    for x in (series[:, :, None],  # (5, 3, 1), strides (12, 4, 0)
              series[:, :1, None],  # (5, 1, 1)
              wide[:, ::2],  # unbatched (1, 1), strides (8, 8)
              wide[None, :, ::2]):  # (1, 1, 1), strides (8, 8, 8)
        output, (h_n, c_n) = model(x)
        want = torch_reference(module, np.ascontiguousarray(x), None, None)
        assert_close((output, h_n, c_n), want, np.dtype(np.float32), f"shape {x.shape} strides {x.strides}")


def test_step_accepts_any_layout_like_a_call():
    """step(x, state) is documented as model(x[None], state) without the time axis; the call copies
    strided input, so step must accept it too. In particular a univariate batch `v[:, None]` (shape
    (B, 1), strides (4, 0)) is C-contiguous to numpy, so step passes it on uncopied and the extension
    rejected it ("input's last dimension must be contiguous")."""
    model = fastlstm.LSTM(4, 6, seed=0)
    wide = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    for x in (wide[:, ::2], wide[:, :4].T.copy().T, np.zeros(3, np.float32)[:, None][:, [0, 0, 0, 0]]):
        want, (h_want, c_want) = model(np.ascontiguousarray(x)[None])
        got, (h_got, c_got) = model.step(x)
        assert_identical((got, h_got, c_got), (want[0], h_want, c_want), f"strides {x.strides}")
    univariate = fastlstm.LSTM(1, 6, seed=0)
    wide = np.arange(4, dtype=np.float32).reshape(2, 2)
    for x in (np.arange(3, dtype=np.float32)[:, None],  # (3, 1), strides (4, 0)
              wide[0, ::2],  # unbatched (1,), stride 8
              wide[:1, ::2]):  # (1, 1), strides (8, 8)
        got, _ = univariate.step(x)
        want, _ = univariate(np.array(x, order="C")[None])
        np.testing.assert_array_equal(got, want[0], err_msg=f"strides {x.strides}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("layers,batch", [(1, 1), (2, 1), (1, None), (1, 3)], ids=["L1-B1", "L2-B1", "L1-unbatched", "L1-B3"])
def test_in_place_step_equals_out_of_place_with_threads(dtype, layers, batch):
    """step(x, (h, c), out=(y, h, c)) updates the stream's state in place, as documented, and must
    equal the same step into fresh arrays, bitwise, on any number of threads. A regression test: when the
    step is big enough to split its hidden units across two threads (H=256, batch 1) and the final
    state is copied in the same phase as the last step's gates, the member that finishes first
    writes its units of h_n, which is h0, while the other is still reading all of h0 for its
    matrix-vector product; a few percent of steps then came out wrong (max abs error ~0.1)."""
    model = fastlstm.LSTM(128, 256, num_layers=layers, dtype=dtype, seed=0)
    rng = np.random.default_rng(7)
    lead = (layers,) if batch is None else (layers, batch)
    wrong = []
    for trial in range(150):
        x = rng.standard_normal((128,) if batch is None else (batch, 128)).astype(dtype)
        h0 = rng.standard_normal(lead + (256,)).astype(dtype)
        c0 = rng.standard_normal(lead + (256,)).astype(dtype)
        want, (h_want, c_want) = model.step(x, (h0, c0), num_threads=1)
        h, c = h0.copy(), c0.copy()
        y = np.empty_like(want)
        model.step(x, (h, c), out=(y, h, c), num_threads=2)
        if not (np.array_equal(y, want) and np.array_equal(h, h_want) and np.array_equal(c, c_want)):
            error = max(float(np.abs(y - want).max()), float(np.abs(h - h_want).max()),
                        float(np.abs(c - c_want).max()))
            wrong.append((trial, error))
    assert not wrong, f"{len(wrong)} of 150 in-place steps differ from out-of-place ones: {wrong[:5]}"
