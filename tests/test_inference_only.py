"""fastlstm is inference-only: a tensor that autograd would track (requires grad, grad mode on) is
refused with a TypeError saying how to call it, never silently detached."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastlstm  # noqa: E402

MESSAGE = r"requires grad, but fastlstm is inference-only .* torch.no_grad\(\) or torch.inference_mode\(\)"


def _models():
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 5)
    cell_module = torch.nn.LSTMCell(3, 5)
    return module, fastlstm.LSTM.from_torch(module), cell_module, fastlstm.LSTMCell.from_torch(cell_module)


@pytest.mark.parametrize("what", ["input", "h0", "c0", "cell input", "cell h_0", "packed"])
def test_tracked_tensors_are_refused(what: str) -> None:
    _, model, _, cell = _models()
    x = torch.randn(4, 2, 3)
    h0, c0 = torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)
    calls = {
        "input": lambda: model(x.requires_grad_()),
        "h0": lambda: model(x, (h0.requires_grad_(), c0)),
        "c0": lambda: model(x, (h0, c0.requires_grad_())),
        "cell input": lambda: cell(x[0].requires_grad_()),
        "cell h_0": lambda: cell(x[0], (h0[0].requires_grad_(), c0[0])),
        "packed": lambda: model(torch.nn.utils.rnn.pack_padded_sequence(x.requires_grad_(), [4, 2])),
    }
    with pytest.raises(TypeError, match=MESSAGE):
        calls[what]()


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_tracked_tensors_run_without_grad_mode(context) -> None:
    module, model, cell_module, cell = _models()
    x = torch.randn(4, 2, 3, requires_grad=True)
    with context():
        output, _ = model(x)
        expected, _ = module(x)
        h, _ = cell(x[0])
        expected_h, _ = cell_module(x[0])
    assert np.abs(output.numpy() - expected.numpy()).max() <= 1e-6
    assert np.abs(h.numpy() - expected_h.numpy()).max() <= 1e-6


def test_detached_tensor_runs() -> None:
    module, model, _, _ = _models()
    x = torch.randn(4, 2, 3, requires_grad=True)
    output, _ = model(x.detach())
    with torch.no_grad():
        expected, _ = module(x)
    assert np.abs(output.numpy() - expected.numpy()).max() <= 1e-6
