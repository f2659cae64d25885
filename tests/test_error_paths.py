"""Error paths outside the forward pass: malformed state_dicts, saving, special files, pickles,
limits and torch modules that do not hold plain parameters. Each must end in a clear error (or the
right result), never a RecursionError, a hang, a silently wrong model or an empty message."""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm import _checks, _config, _core  # noqa: E402
from fastlstm._state_dict import flatten_state_dict  # noqa: E402

# Children import the fastlstm under test (source tree or installed), from a neutral directory.
PACKAGE_PARENT = Path(fastlstm.__file__).resolve().parent.parent


def lstm_state_dict(**kwargs) -> dict:
    torch.manual_seed(0)
    return nn.LSTM(**{"input_size": 4, "hidden_size": 5, **kwargs}).state_dict()


def outputs(model: fastlstm.LSTM, seed: int = 0):
    x = np.random.default_rng(seed).standard_normal((3, 2, model.input_size)).astype(model.dtype)
    output, (h_n, c_n) = model(x)
    return output, h_n, c_n


def same_outputs(a: fastlstm.LSTM, b: fastlstm.LSTM) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(outputs(a), outputs(b)))


# ------------------------------------------------------------------------------ state_dict structure
def test_state_dict_that_contains_itself_is_refused():
    state = dict(lstm_state_dict())
    state["self"] = state
    with pytest.raises(ValueError, match=r"'self'.*cycle"):
        fastlstm.LSTM.from_state_dict(state)
    nested = {"model": dict(lstm_state_dict())}
    nested["model"]["parent"] = nested
    with pytest.raises(ValueError, match=r"'model\.parent'.*cycle"):
        fastlstm.LSTM.from_state_dict(nested)
    with pytest.raises(ValueError, match="cycle"):
        fastlstm.LSTMCell.from_state_dict({"cell": {"loop": state}})


def test_deeply_nested_state_dict_is_refused_not_a_recursion_error():
    state = lstm_state_dict()
    for _ in range(3000):
        state = {"m": state}
    with pytest.raises(ValueError, match=r"nested more than 64 levels deep"):
        fastlstm.LSTM.from_state_dict(state)


def test_nesting_within_the_limit_and_shared_submappings_still_flatten():
    state = lstm_state_dict()
    for _ in range(63):
        state = {"m": state}
    model = fastlstm.LSTM.from_state_dict(state)
    assert model.hidden_size == 5
    shared = lstm_state_dict()
    flat = flatten_state_dict({"a": shared, "b": shared})  # the same mapping twice is not a cycle
    assert "a.weight_ih_l0" in flat and "b.weight_ih_l0" in flat
    assert fastlstm.LSTM.from_state_dict({"a": shared, "b": shared}, prefix="b").input_size == 4


def test_cyclic_checkpoint_file_names_the_file(tmp_path):
    checkpoint = {"model_state_dict": lstm_state_dict(), "epoch": 3}
    checkpoint["again"] = checkpoint
    path = tmp_path / "cyclic.pt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"cyclic\.pt.*cycle"):
        fastlstm.load(path)


# ------------------------------------------------------------------------------------------ save
@pytest.fixture(scope="module")
def model():
    return fastlstm.LSTM(4, 5, num_layers=2, batch_first=True, seed=0)


@pytest.mark.parametrize("name", ["m.pt", "m.pth", "m.npz", "m", "m.safetensors.tmp", "m.json"])
def test_save_refuses_a_name_it_would_not_write_in_that_format(tmp_path, model, name):
    """save writes safetensors only; under another suffix the file would be misread by load."""
    path = tmp_path / name
    with pytest.raises(ValueError, match=r"\.safetensors") as info:
        model.save(path)
    message = str(info.value)
    assert name in message
    if name.endswith((".pt", ".pth")):
        assert "torch.save" in message and "state_dict()" in message
    assert os.listdir(tmp_path) == []


def test_save_accepts_the_suffix_in_any_case(tmp_path, model):
    path = tmp_path / "M.SafeTensors"
    model.save(path)
    loaded = fastlstm.load(path)
    assert loaded.batch_first is True and same_outputs(loaded, model)


def test_concurrent_saves_to_one_path_all_succeed(tmp_path):
    """Eight threads save to the same path at once; each writes its own temporary file and renames
    it into place, so all succeed and the result is one complete file (a temporary name made from
    the process id alone made them trample each other: FileNotFoundError)."""
    big = fastlstm.LSTM(64, 256, num_layers=2, seed=1)
    path = tmp_path / "shared.safetensors"
    threads = 8
    barrier = threading.Barrier(threads)

    def save(_: int) -> None:
        barrier.wait()
        for _ in range(3):
            big.save(path)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(save, i) for i in range(threads)]:
            future.result()
    assert os.listdir(tmp_path) == ["shared.safetensors"]  # no temporary file left behind
    assert same_outputs(fastlstm.load(path), big)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077])
def test_saved_file_mode_follows_the_umask(tmp_path, model, umask):
    previous = os.umask(umask)
    try:
        model.save(tmp_path / "m.safetensors")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "m.safetensors").st_mode) == 0o666 & ~umask


# ------------------------------------------------------------------------------------ special files
_LOAD_CHILD = (
    "import json, sys, fastlstm\n"
    "try:\n"
    "    fastlstm.load(sys.argv[1]); print(json.dumps([None, 'loaded', None]))\n"
    "except BaseException as exc:\n"
    "    print(json.dumps([type(exc).__name__, str(exc), getattr(exc, 'errno', None)]))\n"
)


def _load_in_child(path: Path, timeout: float = 30.0):
    """(exception type name or None, message) of fastlstm.load(path) in a child process, which is
    killed if it hangs (opening a FIFO blocks until a writer appears, holding the GIL)."""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        result = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(path)], capture_output=True, text=True,
                                timeout=timeout, env=env, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        pytest.fail(f"fastlstm.load({path.name!r}) hung for {timeout} s")
    assert result.returncode == 0, result.stderr[-2000:]
    kind, message, _ = json.loads(result.stdout.strip().splitlines()[-1])
    return kind, message


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_fifo_is_refused_without_hanging(tmp_path, suffix):
    path = tmp_path / f"pipe{suffix}"
    os.mkfifo(path)
    kind, message = _load_in_child(path)
    assert kind == "ValueError", (kind, message)
    assert "pipe" + suffix in message and "FIFO" in message and "regular file" in message


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_character_device_is_refused(tmp_path):
    path = tmp_path / "zero.pt"
    os.symlink("/dev/zero", path)
    kind, message = _load_in_child(path)
    assert kind == "ValueError" and "character device" in message, (kind, message)


def test_symlink_loop_is_reported_as_a_loop(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    os.symlink(b.name, a)
    os.symlink(a.name, b)
    with pytest.raises(OSError, match="symlink loop") as info:
        fastlstm.load(a)
    assert info.value.errno == errno.ELOOP and not isinstance(info.value, FileNotFoundError)
    assert "a.safetensors" in str(info.value)


def test_dangling_symlink_is_not_found_and_names_its_target(tmp_path):
    path = tmp_path / "m.safetensors"
    os.symlink("gone.safetensors", path)
    with pytest.raises(FileNotFoundError, match=r"m\.safetensors.*gone\.safetensors"):
        fastlstm.load(path)


# ------------------------------------------------------------------------------------------ pickle
def _reduce_args(model: fastlstm.LSTM):
    rebuild, args = model.__reduce__()
    return rebuild, args


class _Tampered:
    """Pickles as a fastlstm.LSTM whose reduce arguments were changed."""

    def __init__(self, rebuild, args) -> None:
        self.rebuild, self.args = rebuild, args

    def __reduce__(self):
        return self.rebuild, self.args


def test_pickle_round_trip_keeps_everything():
    model = fastlstm.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3, batch_first=True, dropout=0.25,
                          dtype=np.float64, seed=3)
    restored = pickle.loads(pickle.dumps(model))
    assert restored.config == model.config and restored.dropout == 0.25 and restored.dtype == np.float64
    assert same_outputs(restored, model)
    cell = fastlstm.LSTMCell(3, 4, seed=1)
    x = np.ones((2, 3), np.float32)
    assert all(np.array_equal(p, q) for p, q in zip(pickle.loads(pickle.dumps(cell))(x), cell(x)))


def test_unpickling_orders_weights_by_name_not_by_position():
    """input_size == hidden_size makes weight_ih and weight_hh the same shape: packing by position
    would swap them silently."""
    model = fastlstm.LSTM(5, 5, num_layers=2, seed=4)
    rebuild, (config, weights, *rest) = _reduce_args(model)
    reordered = dict(reversed(list(weights.items())))
    restored = pickle.loads(pickle.dumps(_Tampered(rebuild, (config, reordered, *rest))))
    assert same_outputs(restored, model)
    # Pickles written before the checked path rebuild through _from_validated: it packs by name too.
    assert same_outputs(fastlstm.LSTM._from_validated(config, reordered), model)


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "config", "dtype", "not-a-config"])
def test_unpickling_tampered_weights_is_refused(change):
    model = fastlstm.LSTM(5, 5, num_layers=2, seed=4)
    rebuild, (config, weights, *rest) = _reduce_args(model)
    weights = dict(weights)
    if change == "missing":
        del weights["bias_hh_l1"]
    elif change == "extra":
        weights["weight_ih_l2"] = weights["weight_ih_l1"]
    elif change == "shape":
        weights["weight_hh_l1"] = np.zeros((20, 4), np.float32)
    elif change == "config":
        config = _config.LSTMConfig(5, 5, num_layers=2, bidirectional=True)
    elif change == "dtype":
        weights["bias_ih_l0"] = weights["bias_ih_l0"].astype(np.float16)
    else:
        config = {"input_size": 5}
    blob = pickle.dumps(_Tampered(rebuild, (config, weights, *rest)))
    with pytest.raises((ValueError, TypeError)) as info:
        pickle.loads(blob)
    assert "pickle" in str(info.value)


# ------------------------------------------------------------------------------------------ metadata
@pytest.mark.parametrize("value", [" 5", "+5", "5 ", "5\n", "\u0665", "\uff15", "0_5", "-5", ""])
def test_metadata_integers_must_be_plain_ascii_digits(value):
    """int() accepts all but the last two (the Arabic-Indic and fullwidth 5 among them)."""
    metadata = {**_config.LSTMConfig(5, 6).to_metadata(), "input_size": value}
    with pytest.raises(ValueError, match=r"'input_size'.*plain ASCII digits"):
        _config.LSTMConfig.from_metadata(metadata)
    assert _config.LSTMConfig.from_metadata({**metadata, "input_size": "0005"}).input_size == 5
    with pytest.raises(ValueError, match=r"'input_size' is too large: 40 digits"):
        _config.LSTMConfig.from_metadata({**metadata, "input_size": "5" * 40})


# ------------------------------------------------------------------------------------------ limits
@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(input_size=1, hidden_size=1, num_layers=1025), r"num_layers=1025 is too large.*at most 1024"),
        (dict(input_size=2**24 + 1, hidden_size=1), r"input_size=16777217 is too large.*at most 16777216"),
        (dict(input_size=1, hidden_size=2**24 + 1), r"hidden_size=16777217 is too large.*at most 16777216"),
        (dict(input_size=1, hidden_size=4, proj_size=2**24 + 1), r"proj_size=16777217 is too large"),
    ],
    ids=["layers", "input", "hidden", "proj"],
)
def test_dimension_limits_name_the_limit(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastlstm.LSTM(**kwargs)
    with pytest.raises(ValueError, match=pattern):
        _config.LSTMConfig(**kwargs)


def test_dimension_limits_match_the_core():
    assert _checks.MAX_NUM_LAYERS == 1024 and _checks.MAX_DIMENSION == 2**24
    _config.LSTMConfig(_checks.MAX_DIMENSION, _checks.MAX_DIMENSION, num_layers=_checks.MAX_NUM_LAYERS,
                       proj_size=_checks.MAX_DIMENSION - 1)  # the limits themselves are allowed
    edge = [(_checks.MAX_DIMENSION, 1, 1, 0), (1, 1, _checks.MAX_NUM_LAYERS, 0)]
    beyond = [(_checks.MAX_DIMENSION + 1, 1, 1, 0), (1, _checks.MAX_DIMENSION + 1, 1, 0),
              (1, 1, _checks.MAX_NUM_LAYERS + 1, 0), (1, _checks.MAX_DIMENSION + 2, 1, _checks.MAX_DIMENSION + 1)]
    for dims in edge:  # refused for the missing weights, not the sizes
        with pytest.raises(ValueError) as info:
            _core.PackedLstmF32(dims[0], dims[1], dims[2], True, False, dims[3], [])
        assert "too large" not in str(info.value), dims
    for dims in beyond:
        with pytest.raises(ValueError, match="too large"):
            _core.PackedLstmF32(dims[0], dims[1], dims[2], True, False, dims[3], [])


# -------------------------------------------------------------------------------- torch modules
def _torch_output(module: nn.LSTM, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        output, (h_n, c_n) = module(torch.from_numpy(x))
    return np.concatenate([output.numpy().ravel(), h_n.numpy().ravel(), c_n.numpy().ravel()])


def _fast_output(model: fastlstm.LSTM, x: np.ndarray) -> np.ndarray:
    output, (h_n, c_n) = model(x)
    return np.concatenate([output.ravel(), h_n.ravel(), c_n.ravel()])


def _normalized(kind: str, module: nn.LSTM, names) -> nn.LSTM:
    from torch.nn.utils import parametrizations

    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated
            {"weight_norm": lambda: parametrizations.weight_norm(module, name),
             "spectral_norm": lambda: parametrizations.spectral_norm(module, name),
             "old_weight_norm": lambda: nn.utils.weight_norm(module, name),
             "old_spectral_norm": lambda: nn.utils.spectral_norm(module, name)}[kind]()
    return module


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")  # torch notes its slower path
@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "old_weight_norm", "old_spectral_norm"])
@pytest.mark.parametrize("training", [False, True])
def test_from_torch_folds_weight_and_spectral_norm(kind, training):
    torch.manual_seed(0)
    module = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    module = _normalized(kind, module, ["weight_hh_l0", "weight_ih_l1_reverse", "weight_hr_l1"])
    x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
    module.train()
    for _ in range(3):  # spectral norm's power iteration only runs in training forward passes
        _torch_output(module, x)
    module.train(training)
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    model = fastlstm.LSTM.from_torch(module)
    assert module.training is training  # from_torch changes nothing of the module
    assert all(torch.equal(b, buffers[name]) for name, b in module.named_buffers())
    module.eval()
    error = np.max(np.abs(_fast_output(model, x) - _torch_output(module, x)))
    assert error <= 1e-5, error


def test_lstm_cell_from_torch_folds_weight_norm():
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    module = parametrizations.weight_norm(nn.LSTMCell(4, 6), "weight_hh")
    cell = fastlstm.LSTMCell.from_torch(module)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    for got, want in zip(cell(x), expected):
        assert np.max(np.abs(got - want.numpy())) <= 1e-5


@pytest.mark.parametrize("cls", ["LSTM", "LSTMCell"])
def test_from_torch_on_the_meta_device_says_so(cls):
    module = getattr(nn, cls)(4, 6, device="meta")
    with pytest.raises(ValueError, match="meta device.*load_state_dict"):
        getattr(fastlstm, cls).from_torch(module)


def test_random_bytes_as_pt_give_a_reason(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"random\.pt.*not a zip archive.*legacy") as info:
        fastlstm.load(path)
    assert "starts with" in str(info.value)
    # A legacy torch file's magic number followed by garbage: torch's reason is on a later line.
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2) + b"\xff" * 64)
    with pytest.raises(ValueError) as info:
        fastlstm.load(legacy)
    assert "not a weights pickle: )" not in str(info.value) and "(not a weights pickle: " in str(info.value)
