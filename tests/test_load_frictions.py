"""Friction fixes: fastlstm.load warns about the model parts it leaves out, and from_torch given a
whole model names the LSTMs inside it."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastlstm  # noqa: E402


class Forecaster(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(1, 10)
        self.linear = nn.Linear(10, 1)


class Big(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4)
        self.heads = nn.ModuleList([nn.Linear(4, 4) for _ in range(10)])


def _no_warnings(function, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function(*args)


def test_whole_model_state_dict_warns_naming_ignored_keys(tmp_path):
    net = Forecaster()
    path = tmp_path / "airline.pt"
    torch.save(net.state_dict(), path)
    with pytest.warns(UserWarning) as record:
        model = fastlstm.load(path)
    assert isinstance(model, fastlstm.LSTM)
    message = str(record[0].message)
    assert "'linear.weight', 'linear.bias'" in message
    assert "fastlstm.convert(module, example)" in message
    assert record[0].filename == __file__  # points at the caller's line


def test_many_ignored_keys_are_capped(tmp_path):
    path = tmp_path / "big.pt"
    torch.save(Big().state_dict(), path)
    with pytest.warns(UserWarning, match=r"ignored 20 other model tensors: .*, \.\.\. \(8 more\)"):
        fastlstm.load(path)


def test_training_checkpoint_counts_optimizer_state_and_counters(tmp_path):
    net = Forecaster()
    optimizer = torch.optim.Adam(net.parameters())
    net.lstm(torch.randn(3, 1, 1))[0].sum().backward()
    optimizer.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 7,
                "loss": 0.25}, path)
    with pytest.warns(UserWarning) as record:
        fastlstm.load(path)
    message = str(record[0].message)
    assert "'model_state_dict.linear.weight', 'model_state_dict.linear.bias'" in message
    assert "3 other checkpoint entries" in message and "'optimizer', 'epoch', 'loss'" in message
    assert "exp_avg" not in message and "param_groups" not in message


def test_lstm_only_checkpoint_with_optimizer_does_not_warn(tmp_path):
    lstm = nn.LSTM(2, 3)
    optimizer = torch.optim.SGD(lstm.parameters(), lr=0.1, momentum=0.9)
    lstm(torch.randn(2, 1, 2))[0].sum().backward()
    optimizer.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": lstm.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1}, path)
    model = _no_warnings(fastlstm.load, path)
    np.testing.assert_array_equal(model.state_dict()["weight_ih_l0"], lstm.weight_ih_l0.detach().numpy())


def test_bare_lstm_files_do_not_warn(tmp_path):
    lstm = nn.LSTM(2, 3)
    torch.save(lstm.state_dict(), tmp_path / "a.pt")
    _no_warnings(fastlstm.load, tmp_path / "a.pt")
    fastlstm.LSTM.from_torch(lstm).save(tmp_path / "a.safetensors")
    _no_warnings(fastlstm.load, tmp_path / "a.safetensors")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_torch_free_formats_warn_too(tmp_path, suffix):
    arrays = {k: v.numpy() for k, v in Forecaster().state_dict().items()}
    path = tmp_path / ("model" + suffix)
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
    with pytest.warns(UserWarning, match=r"'linear\.weight'"):
        fastlstm.load(path)


def test_lstm_from_torch_names_the_lstm_inside():
    with pytest.raises(TypeError, match=r"net\.lstm is an nn\.LSTM: pass it, or "
                                        r"fastlstm\.convert\(net, example\) for the whole model"):
        fastlstm.LSTM.from_torch(Forecaster())


def test_lstm_from_torch_lists_several():
    net = nn.Module()
    net.encoder = nn.Sequential(nn.Linear(2, 2), nn.LSTM(2, 3))
    net.decoder = nn.LSTM(3, 3)
    with pytest.raises(TypeError, match=r"2 nn\.LSTM modules \(net\.encoder\[1\], net\.decoder\)"):
        fastlstm.LSTM.from_torch(net)


def test_cell_from_torch_names_the_cells_inside():
    net = nn.Module()
    net.cell = nn.LSTMCell(2, 3)
    with pytest.raises(TypeError, match=r"net\.cell is an nn\.LSTMCell: pass it, or fastlstm\.convert"):
        fastlstm.LSTMCell.from_torch(net)


def test_from_torch_of_other_modules_keeps_the_plain_message():
    with pytest.raises(TypeError, match=r"expects a torch\.nn\.LSTM, got torch\.nn\.modules\.linear\.Linear$"):
        fastlstm.LSTM.from_torch(nn.Linear(2, 2))
