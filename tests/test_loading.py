"""Finding, validating and reading nn.LSTM weights: real torch objects are the oracle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from fastlstm._config import LSTMConfig  # noqa: E402
from fastlstm._files import (  # noqa: E402
    load_config_and_weights,
    read_weights_file,
    write_npz,
    write_safetensors,
)
from fastlstm._state_dict import (  # noqa: E402
    extract_lstm,
    find_lstm_prefixes,
    flatten_state_dict,
)

# fastlstm.load on a file that holds more than the LSTM warns (tests/test_load_frictions.py).
WHOLE_MODEL_IGNORED = "ignore:.*fastlstm.load serves the LSTM alone:UserWarning"


# (num_layers, bidirectional, bias, proj_size, dtype): each axis that changes the set of
# parameter names or their shapes, alone and combined.
LSTM_VARIANTS = [
    (1, False, True, 0, torch.float32),
    (3, False, True, 0, torch.float32),
    (1, True, True, 0, torch.float32),
    (3, True, True, 0, torch.float32),
    (2, False, False, 0, torch.float32),
    (3, True, False, 0, torch.float32),
    (1, False, True, 3, torch.float32),
    (2, True, True, 3, torch.float32),
    (2, True, False, 3, torch.float64),
    (3, True, True, 0, torch.float64),
]


def make_lstm(num_layers=2, bidirectional=False, bias=True, proj_size=0, dtype=torch.float32,
              input_size=5, hidden_size=6, batch_first=False, seed=0) -> nn.LSTM:
    torch.manual_seed(seed)
    return nn.LSTM(input_size, hidden_size, num_layers=num_layers, bias=bias,
                   batch_first=batch_first, bidirectional=bidirectional,
                   proj_size=proj_size, dtype=dtype)


class Net(nn.Module):
    """The common service model: an LSTM feeding a linear head."""

    def __init__(self, **lstm_kwargs) -> None:
        super().__init__()
        self.rnn = make_lstm(**lstm_kwargs)
        self.head = nn.Linear(self.rnn.hidden_size * (2 if self.rnn.bidirectional else 1), 3)


class EncoderDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = make_lstm(num_layers=1, input_size=4, hidden_size=6, seed=1)
        self.decoder = make_lstm(num_layers=2, input_size=6, hidden_size=5, seed=2)
        self.head = nn.Linear(5, 2)


def assert_matches(config: LSTMConfig, weights: dict, lstm: nn.LSTM) -> None:
    """Config equals the module's hyperparameters; arrays are exact, owned, read-only copies."""
    assert config.input_size == lstm.input_size
    assert config.hidden_size == lstm.hidden_size
    assert config.num_layers == lstm.num_layers
    assert config.bias == lstm.bias
    assert config.bidirectional == lstm.bidirectional
    assert config.proj_size == lstm.proj_size
    reference = lstm.state_dict()
    assert list(weights) == list(reference)  # nn.LSTM's own order
    assert list(weights) == list(config.parameter_shapes())
    expected_dtype = np.dtype(str(next(lstm.parameters()).dtype).replace("torch.", ""))
    for name, array in weights.items():
        tensor = reference[name]
        assert isinstance(array, np.ndarray)
        assert array.dtype == expected_dtype
        # Owned: its own buffer, or (read from a file) a buffer only it references, which cannot
        # be written through it.
        assert array.flags.c_contiguous
        assert array.flags.owndata or sys.getrefcount(array.base) <= 3
        assert not array.flags.writeable
        assert not np.shares_memory(array, tensor.numpy())
        assert np.array_equal(array, tensor.numpy()), name


def numpy_state_dict(module: nn.Module) -> dict:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------
# extract_lstm on in-memory state_dicts


@pytest.mark.parametrize("num_layers,bidirectional,bias,proj_size,dtype", LSTM_VARIANTS)
def test_bare_lstm_state_dict(num_layers, bidirectional, bias, proj_size, dtype):
    lstm = make_lstm(num_layers, bidirectional, bias, proj_size, dtype)
    config, weights = extract_lstm(lstm.state_dict())
    assert_matches(config, weights, lstm)
    assert config.batch_first is False


@pytest.mark.parametrize("num_layers,bidirectional,bias,proj_size,dtype", LSTM_VARIANTS[::3])
def test_whole_model_state_dict(num_layers, bidirectional, bias, proj_size, dtype):
    net = Net(num_layers=num_layers, bidirectional=bidirectional, bias=bias,
              proj_size=proj_size, dtype=dtype)
    sd = net.state_dict()
    assert find_lstm_prefixes(flatten_state_dict(sd)) == ["rnn."]
    config, weights = extract_lstm(sd, batch_first=True)
    assert_matches(config, weights, net.rnn)
    assert config.batch_first is True
    assert extract_lstm(sd, prefix="rnn.")[1].keys() == weights.keys()


def test_parameters_with_grad_and_numpy_arrays_are_accepted():
    lstm = make_lstm(bidirectional=True)
    # named_parameters gives nn.Parameter objects that require grad, not detached tensors.
    config, weights = extract_lstm(dict(lstm.named_parameters()))
    assert_matches(config, weights, lstm)
    config, weights = extract_lstm(numpy_state_dict(lstm))
    assert_matches(config, weights, lstm)


def test_big_endian_arrays_are_converted_to_native_order():
    lstm = make_lstm()
    sd = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in numpy_state_dict(lstm).items()}
    config, weights = extract_lstm(sd)
    assert_matches(config, weights, lstm)
    assert all(w.dtype.isnative for w in weights.values())


def test_extracted_arrays_do_not_follow_later_edits():
    lstm = make_lstm()
    _, weights = extract_lstm(lstm.state_dict())
    before = weights["weight_ih_l0"].copy()
    with torch.no_grad():
        lstm.weight_ih_l0.add_(1.0)
    assert np.array_equal(weights["weight_ih_l0"], before)
    with pytest.raises(ValueError):
        weights["weight_ih_l0"][0, 0] = 0.0  # read-only


def test_nan_weights_are_allowed_like_torch():
    lstm = make_lstm()
    with torch.no_grad():
        lstm.weight_hh_l1[0, 0] = float("nan")
    _, weights = extract_lstm(lstm.state_dict())
    assert np.isnan(weights["weight_hh_l1"][0, 0])


def test_keys_of_other_modules_are_ignored_under_empty_prefix():
    lstm = make_lstm()
    sd = dict(lstm.state_dict())
    sd["head.weight"] = torch.zeros(3, 6)
    sd["step"] = 7
    config, weights = extract_lstm(sd)
    assert_matches(config, weights, lstm)


def test_two_lstms_need_a_prefix():
    model = EncoderDecoder()
    sd = model.state_dict()
    with pytest.raises(ValueError, match="prefix=") as info:
        extract_lstm(sd)
    assert "'encoder.'" in str(info.value) and "'decoder.'" in str(info.value)
    config, weights = extract_lstm(sd, prefix="encoder.")
    assert_matches(config, weights, model.encoder)
    config, weights = extract_lstm(sd, prefix="decoder.")
    assert_matches(config, weights, model.decoder)
    config, weights = extract_lstm(sd, prefix="decoder")  # the module's name works too
    assert_matches(config, weights, model.decoder)
    with pytest.raises(ValueError, match="'encoder.', 'decoder.'") as info:
        extract_lstm(sd, prefix="rnn.")
    assert "'rnn.'" in str(info.value)


def test_training_checkpoint_with_optimizer_state():
    net = Net(num_layers=2, bidirectional=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = net.head(net.rnn(torch.randn(4, 2, 5))[0]).sum()
    loss.backward()
    optimizer.step()  # fills optimizer state with exp_avg tensors shaped like the weights
    checkpoint = {
        "epoch": 3,
        "model_state_dict": net.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "loss": 0.25,
    }
    flat = flatten_state_dict(checkpoint)
    assert "model_state_dict.rnn.weight_ih_l0" in flat
    assert "optimizer_state_dict.state.0.exp_avg" in flat  # int keys become strings
    assert flat["epoch"] == 3
    assert find_lstm_prefixes(flat) == ["model_state_dict.rnn."]
    config, weights = extract_lstm(checkpoint)
    assert_matches(config, weights, net.rnn)


def test_flatten_and_find_prefixes():
    assert flatten_state_dict({"a": {"b": {1: "x"}}, "c": [1, 2]}) == {"a.b.1": "x", "c": [1, 2]}
    with pytest.raises(TypeError, match="list"):
        flatten_state_dict([1, 2])
    with pytest.raises(ValueError, match="'a.b'"):
        flatten_state_dict({"a.b": 1, "a": {"b": 2}})
    flat = {"weight_ih": 0, "cell.weight_ih": 0, "my_weight_ih_l0": 0,
            "x.y.weight_ih_l0": 0, "weight_ih_l0": 0, "x.y.weight_hh_l0": 0}
    assert find_lstm_prefixes(flat) == ["x.y.", ""]


def test_lstm_cell_is_not_an_lstm():
    torch.manual_seed(0)
    cell = nn.LSTMCell(4, 5)
    assert find_lstm_prefixes(flatten_state_dict(cell.state_dict())) == []
    with pytest.raises(ValueError, match="weight_ih_l0") as info:
        extract_lstm(cell.state_dict())
    assert "LSTMCell" in str(info.value) and "'weight_ih'" in str(info.value)


def test_no_lstm_lists_some_keys():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"no nn.LSTM weights .*'weight_ih_l0'.*'0.weight'"):
        extract_lstm(nn.Sequential(nn.Linear(3, 4)).state_dict())
    with pytest.raises(ValueError, match="empty"):
        extract_lstm({})


# --------------------------------------------------------------------------------------------
# extract_lstm errors


def rnn_sd(**kwargs) -> dict:
    return dict(Net(**kwargs).state_dict())


def test_missing_key_is_named_in_full():
    sd = rnn_sd(num_layers=2)
    del sd["rnn.weight_hh_l1"]
    with pytest.raises(ValueError, match=r"missing 'rnn\.weight_hh_l1'"):
        extract_lstm(sd)
    sd = rnn_sd(num_layers=1)
    del sd["rnn.weight_hh_l0"]
    with pytest.raises(ValueError, match=r"'rnn\.weight_hh_l0'"):
        extract_lstm(sd)


def test_non_contiguous_layers_are_rejected():
    sd = rnn_sd(num_layers=3)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        del sd[f"rnn.{name}_l1"]
    with pytest.raises(ValueError, match=r"unexpected .*'rnn\.weight_ih_l2'") as info:
        extract_lstm(sd)
    assert "missing 'rnn.weight_ih_l1'" in str(info.value)
    assert "present for layers [0, 2]" in str(info.value)


def test_bias_on_some_layers_only_is_rejected():
    sd = rnn_sd(num_layers=2, bias=False)
    sd["rnn.bias_hh_l1"] = torch.zeros(24)
    with pytest.raises(ValueError, match=r"unexpected 'rnn\.bias_hh_l1'"):
        extract_lstm(sd)


def test_reverse_on_some_layers_only_is_rejected():
    sd = rnn_sd(num_layers=2, bidirectional=True)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        del sd[f"rnn.{name}_l1_reverse"]
    with pytest.raises(ValueError, match=r"missing 'rnn\.weight_ih_l1_reverse'"):
        extract_lstm(sd)


def test_projection_on_some_layers_only_is_rejected():
    sd = rnn_sd(num_layers=2, proj_size=3)
    del sd["rnn.weight_hr_l1"]
    with pytest.raises(ValueError, match=r"missing 'rnn\.weight_hr_l1'"):
        extract_lstm(sd)


def test_wrong_shape_names_key_expected_and_actual():
    sd = rnn_sd(num_layers=2)
    sd["rnn.weight_ih_l1"] = torch.zeros(24, 7)
    expected = r"'rnn\.weight_ih_l1' has shape \(24, 7\).*expects \(24, 6\)"
    with pytest.raises(ValueError, match=expected):
        extract_lstm(sd)
    sd = rnn_sd(num_layers=1)
    sd["rnn.bias_hh_l0"] = torch.zeros(23)
    with pytest.raises(ValueError, match=r"'rnn\.bias_hh_l0' has shape \(23,\).*\(24,\)"):
        extract_lstm(sd)


def test_shapes_that_cannot_be_an_lstm():
    sd = rnn_sd(num_layers=1)
    sd["rnn.weight_hh_l0"] = torch.zeros(22, 6)
    with pytest.raises(ValueError, match=r"'rnn\.weight_hh_l0'.*multiple of 4"):
        extract_lstm(sd)
    sd = rnn_sd(num_layers=1)
    sd["rnn.weight_ih_l0"] = torch.zeros(24)
    with pytest.raises(ValueError, match=r"'rnn\.weight_ih_l0' must be 2-D"):
        extract_lstm(sd)
    sd = rnn_sd(num_layers=1, proj_size=3)
    sd["rnn.weight_hr_l0"] = torch.zeros(6, 6)  # proj_size must be < hidden_size
    with pytest.raises(ValueError, match="proj_size"):
        extract_lstm(sd)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_float_torch_dtype(dtype):
    sd = rnn_sd(num_layers=1)
    sd["rnn.bias_ih_l0"] = sd["rnn.bias_ih_l0"].to(dtype)
    with pytest.raises(TypeError, match=r"'rnn\.bias_ih_l0' has dtype " + str(dtype)[6:]):
        extract_lstm(sd)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_torch_says_convert(dtype):
    sd = rnn_sd(num_layers=1)
    sd["rnn.weight_hh_l0"] = sd["rnn.weight_hh_l0"].to(dtype)
    with pytest.raises(TypeError, match=r"'rnn\.weight_hh_l0' has dtype .*float32/float64 first"):
        extract_lstm(sd)


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.float16, np.complex128, object])
def test_non_float_numpy_dtype(dtype):
    sd = numpy_state_dict(make_lstm(num_layers=1))
    sd["weight_ih_l0"] = sd["weight_ih_l0"].astype(dtype)
    with pytest.raises(TypeError, match=f"'weight_ih_l0' has dtype {np.dtype(dtype).name}"):
        extract_lstm(sd)


def test_value_that_is_not_an_array():
    sd = numpy_state_dict(make_lstm(num_layers=1))
    sd["bias_hh_l0"] = sd["bias_hh_l0"].tolist()
    expected = r"'bias_hh_l0' must be a numpy array or torch tensor, got list"
    with pytest.raises(TypeError, match=expected):
        extract_lstm(sd)


def test_mixed_float32_and_float64():
    sd = rnn_sd(num_layers=1)
    sd["rnn.weight_hh_l0"] = sd["rnn.weight_hh_l0"].double()
    with pytest.raises(TypeError, match="mix dtypes") as info:
        extract_lstm(sd)
    message = str(info.value)
    assert "float64: 'rnn.weight_hh_l0'" in message
    assert "float32: 'rnn.weight_ih_l0'" in message


def test_bad_arguments():
    sd = make_lstm().state_dict()
    with pytest.raises(TypeError, match="batch_first"):
        extract_lstm(sd, batch_first="yes")
    with pytest.raises(TypeError, match="prefix"):
        extract_lstm(sd, prefix=0)


# --------------------------------------------------------------------------------------------
# files


@pytest.mark.filterwarnings(WHOLE_MODEL_IGNORED)  # the file holds the head too: load warns, as intended
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_torch_save_state_dict(tmp_path, suffix):
    net = Net(num_layers=2, bidirectional=True, proj_size=2)
    path = tmp_path / f"model{suffix}"
    torch.save(net.state_dict(), path)
    mapping, metadata = read_weights_file(path)
    assert metadata is None
    config, weights = load_config_and_weights(str(path))
    assert_matches(config, weights, net.rnn)
    assert config.batch_first is False
    config, _ = load_config_and_weights(path, batch_first=True)
    assert config.batch_first is True


@pytest.mark.filterwarnings(WHOLE_MODEL_IGNORED)  # the file holds the head too: load warns, as intended
def test_torch_save_checkpoint(tmp_path):
    net = Net(num_layers=1, dtype=torch.float64)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "model_state_dict": net.state_dict(),
                "optimizer_state_dict": optimizer.state_dict()}, path)
    config, weights = load_config_and_weights(path)
    assert_matches(config, weights, net.rnn)
    config, weights = load_config_and_weights(path, prefix="model_state_dict.rnn.")
    assert_matches(config, weights, net.rnn)


@pytest.mark.filterwarnings(WHOLE_MODEL_IGNORED)  # the file holds the head too: load warns, as intended
def test_safetensors_written_by_torch(tmp_path):
    from safetensors.torch import save_file

    net = Net(num_layers=3, bidirectional=True)
    path = tmp_path / "model.safetensors"
    save_file(net.state_dict(), str(path), metadata={"format": "pt"})
    _, metadata = read_weights_file(path)
    assert metadata is None  # other tools' metadata is not ours
    config, weights = load_config_and_weights(path)
    assert_matches(config, weights, net.rnn)


@pytest.mark.filterwarnings(WHOLE_MODEL_IGNORED)  # the file holds the head too: load warns, as intended
def test_npz(tmp_path):
    net = Net(num_layers=2, bias=False)
    path = tmp_path / "model.npz"
    np.savez(path, **numpy_state_dict(net))
    config, weights = load_config_and_weights(path)
    assert_matches(config, weights, net.rnn)
    path2 = tmp_path / "again.npz"
    write_npz(path2, weights)
    config2, weights2 = load_config_and_weights(path2)
    assert config2 == config
    assert_matches(config2, weights2, net.rnn)


@pytest.mark.parametrize("batch_first", [False, True])
def test_write_safetensors_round_trip(tmp_path, batch_first):
    lstm = make_lstm(num_layers=2, bidirectional=True, proj_size=4, dtype=torch.float64,
                     batch_first=batch_first)
    config, weights = extract_lstm(lstm.state_dict(), batch_first=batch_first)
    path = tmp_path / "fast.safetensors"
    write_safetensors(path, weights, config)
    assert os.listdir(tmp_path) == ["fast.safetensors"]  # no temporary file left behind
    _, metadata = read_weights_file(path)
    assert metadata["format_version"] == "1"
    assert LSTMConfig.from_metadata(metadata) == config
    loaded_config, loaded = load_config_and_weights(path)
    assert loaded_config == config and loaded_config.batch_first is batch_first
    assert_matches(loaded_config, loaded, lstm)
    overridden, _ = load_config_and_weights(path, batch_first=not batch_first)
    assert overridden.batch_first is (not batch_first)
    # A file fastlstm wrote can also be read by torch users.
    from safetensors.torch import load_file

    restored = make_lstm(num_layers=2, bidirectional=True, proj_size=4, dtype=torch.float64,
                         seed=99)
    restored.load_state_dict(load_file(str(path)))
    assert all(torch.equal(a, b) for a, b in zip(restored.parameters(), lstm.parameters()))


def test_write_safetensors_refuses_weights_that_do_not_fit(tmp_path):
    lstm = make_lstm(num_layers=1)
    config, weights = extract_lstm(lstm.state_dict())
    bigger = LSTMConfig(input_size=5, hidden_size=7)
    with pytest.raises(ValueError, match="weight_ih_l0"):
        write_safetensors(tmp_path / "x.safetensors", weights, bigger)
    deeper = LSTMConfig(input_size=5, hidden_size=6, num_layers=2)
    with pytest.raises(ValueError, match="missing"):
        write_safetensors(tmp_path / "x.safetensors", weights, deeper)
    mixed = dict(weights, bias_hh_l0=weights["bias_hh_l0"].astype(np.float64))
    with pytest.raises(TypeError, match="float32"):
        write_safetensors(tmp_path / "x.safetensors", mixed, config)
    assert os.listdir(tmp_path) == []


def test_metadata_disagreeing_with_tensors(tmp_path):
    from safetensors.numpy import save_file

    lstm = make_lstm(num_layers=1, hidden_size=6)
    config, weights = extract_lstm(lstm.state_dict())
    lying = LSTMConfig(input_size=5, hidden_size=8)
    metadata = {f"fastlstm.{k}": v for k, v in lying.to_metadata().items()}
    metadata["fastlstm.format_version"] = "1"
    path = tmp_path / "lying.safetensors"
    save_file(dict(weights), str(path), metadata=metadata)
    with pytest.raises(ValueError, match=r"hidden_size: metadata 8, tensors 6") as info:
        load_config_and_weights(path)
    assert "lying.safetensors" in str(info.value)


def test_bad_metadata(tmp_path):
    from safetensors.numpy import save_file

    _, weights = extract_lstm(make_lstm(num_layers=1).state_dict())
    path = tmp_path / "future.safetensors"
    save_file(dict(weights), str(path), metadata={"fastlstm.format_version": "2"})
    with pytest.raises(ValueError, match="format version '2'"):
        read_weights_file(path)
    save_file(dict(weights), str(path), metadata={"fastlstm.hidden_size": "six"})
    with pytest.raises(ValueError, match="invalid fastlstm metadata"):
        load_config_and_weights(path)


def test_bfloat16_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "half.safetensors"
    save_file(make_lstm(num_layers=1).to(torch.bfloat16).state_dict(), str(path))
    with pytest.raises(TypeError, match="BF16.*float32/float64 first"):
        read_weights_file(path)


def test_errors_from_the_state_dict_name_the_file(tmp_path):
    sd = make_lstm(num_layers=2).state_dict()
    del sd["weight_hh_l1"]
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"broken\.pt.*missing 'weight_hh_l1'"):
        load_config_and_weights(path)


def test_missing_file(tmp_path):
    for name in ("nothing.pt", "nothing.safetensors", "nothing.npz"):
        with pytest.raises(FileNotFoundError, match=name):
            load_config_and_weights(tmp_path / name)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match=r"'\.onnx'.*\.pt, \.pth, \.safetensors, \.npz"):
        read_weights_file(path)


def _write_valid(path: Path) -> None:
    net = Net(num_layers=2)
    if path.suffix == ".pt":
        torch.save(net.state_dict(), path)
    elif path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(net.state_dict(), str(path))
    else:
        np.savez(path, **numpy_state_dict(net))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_truncated_file(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    _write_valid(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"model\\{suffix}"):
        read_weights_file(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_garbage_bytes(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=f"garbage\\{suffix}"):
        read_weights_file(path)


def test_pickled_module_is_refused_with_advice(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(make_lstm(num_layers=1), path)  # the whole module, not its state_dict
    expected = r"whole\.pt.*torch\.save\(model\.state_dict\(\), path\)"
    with pytest.raises(ValueError, match=expected) as info:
        read_weights_file(path)
    assert "pickled torch.nn.modules.rnn.LSTM" in str(info.value)
    assert "\x1b" not in str(info.value)


def test_pt_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="holds a Tensor, not a state_dict"):
        read_weights_file(path)


def test_npz_with_object_array_or_single_array(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, weight_ih_l0=np.array([1, None], dtype=object))
    with pytest.raises(ValueError, match="'weight_ih_l0' is an object array"):
        read_weights_file(path)
    path = tmp_path / "single.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array"):
        read_weights_file(path)


def test_reading_pt_without_torch(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    torch.save(make_lstm(num_layers=1).state_dict(), path)
    monkeypatch.setitem(sys.modules, "torch", None)  # makes "import torch" fail
    with pytest.raises(ModuleNotFoundError, match=r"fastlstm\[torch\].*\.safetensors"):
        read_weights_file(path)


def test_modules_do_not_import_torch(tmp_path):
    import fastlstm

    # Serving must not need torch: importing the package (from wherever this test imported it,
    # the source tree or an installed copy) must not pull it in.
    code = ("import sys, fastlstm, fastlstm._state_dict, fastlstm._files; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    env = dict(os.environ, PYTHONPATH=str(Path(fastlstm.__file__).resolve().parent.parent))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.filterwarnings(WHOLE_MODEL_IGNORED)  # the file holds the head too: load warns, as intended
def test_legacy_torch_save_format_loads(tmp_path):
    """torch.save(..., _use_new_zipfile_serialization=False) files (torch < 1.6's default) are read
    without mmap, which needs the zip format."""
    net = Net(num_layers=2, bidirectional=True)
    path = tmp_path / "legacy.pt"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    config, weights = load_config_and_weights(path)
    assert_matches(config, weights, net.rnn)


@pytest.mark.filterwarnings(WHOLE_MODEL_IGNORED)  # the file holds the head too: load warns, as intended
def test_pt_repacked_without_alignment_loads(tmp_path):
    """A .pt re-zipped by another tool (stored records, no 64-byte alignment) still loads."""
    import zipfile

    net = Net(num_layers=1)
    source = tmp_path / "source.pt"
    torch.save(net.state_dict(), source)
    path = tmp_path / "repacked.pt"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as repacked:
        for info in original.infolist():
            repacked.writestr(info.filename, original.read(info))
    config, weights = load_config_and_weights(path)
    assert_matches(config, weights, net.rnn)


def test_pt_with_a_record_past_the_end_of_the_file_is_refused(tmp_path):
    """Tensors are memory-mapped: a record that claims more bytes than the file has would fault
    (SIGBUS) when read, so it is refused first."""
    import struct
    import zipfile

    source = tmp_path / "source.pt"
    torch.save(make_lstm(num_layers=1).state_dict(), source)
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.header_offset)
    name = info.filename.encode()
    at = data.find(b"PK\x01\x02")  # the record's central directory entry
    while data[at + 46:at + 46 + len(name)] != name:
        at = data.find(b"PK\x01\x02", at + 4)
    struct.pack_into("<LL", data, at + 20, 2**31, 2**31)  # compressed and uncompressed sizes
    path = tmp_path / "overlong.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"overlong\.pt.*past the end of the file"):
        load_config_and_weights(path)
