"""fastlstm.accelerate: the LSTMs inside a torch model run on fastlstm when no gradient is needed."""

import copy
import io
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastlstm  # noqa: E402


class CnnLstm(nn.Module):
    def __init__(self, bidirectional=False):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3, padding=1)
        self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(16 * (2 if bidirectional else 1), 2)

    def forward(self, x):
        y = self.conv(x.transpose(1, 2)).relu().transpose(1, 2)
        out, _ = self.lstm(y)
        return self.head(out[:, -1])


class CellDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.cells = nn.ModuleList([nn.LSTMCell(4, 12), nn.LSTMCell(12, 12)])
        self.head = nn.Sequential(nn.Linear(12, 4))

    def forward(self, x, steps=5):
        h = [None, None]
        outs = []
        for _ in range(steps):
            inp = x
            for i, cell in enumerate(self.cells):
                h[i] = cell(inp, h[i])
                inp = h[i][0]
            x = self.head(inp)
            outs.append(x)
        return torch.stack(outs)


@pytest.fixture
def spy(monkeypatch):
    """Counts the fastlstm.LSTM / LSTMCell calls made with torch inputs."""
    calls = {"lstm": 0, "cell": 0}
    lstm_call, cell_call = fastlstm.LSTM.__call__, fastlstm.LSTMCell.__call__

    def lstm_spy(self, input, *args, **kwargs):
        if not isinstance(input, np.ndarray):  # a tensor call recurses once with numpy arrays
            calls["lstm"] += 1
        return lstm_call(self, input, *args, **kwargs)

    def cell_spy(self, *args, **kwargs):
        calls["cell"] += 1
        return cell_call(self, *args, **kwargs)

    monkeypatch.setattr(fastlstm.LSTM, "__call__", lstm_spy)
    monkeypatch.setattr(fastlstm.LSTMCell, "__call__", cell_spy)
    return calls


def _close(actual, expected, dtype):
    scale = max(1.0, float(expected.abs().max()))
    tol = 2e-6 * scale if dtype == torch.float32 else 1e-12 * scale
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert float((actual - expected).abs().max()) <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_cnn_lstm_matches_torch_and_runs_on_fastlstm(dtype, context, spy):
    torch.manual_seed(0)
    model = CnnLstm(bidirectional=True).to(dtype).eval()
    reference = copy.deepcopy(model)
    assert fastlstm.accelerate(model) is model
    assert isinstance(model.lstm, nn.LSTM) and model.lstm.hidden_size == 16
    guard = torch.no_grad if context == "no_grad" else torch.inference_mode
    for batch, steps in ((3, 11), (1, 40)):
        x = torch.randn(batch, steps, 3, dtype=dtype)
        with guard():
            expected = reference(x)
            actual = model(x)
        _close(actual, expected, dtype)



def test_grad_mode_off_without_context_manager(spy):
    model = fastlstm.accelerate(CnnLstm().eval())
    for p in model.parameters():
        p.requires_grad_(False)
    model(torch.randn(2, 5, 3))  # grad mode on, but nothing requires grad
    assert spy["lstm"] == 1


def test_backward_runs_torch_and_gradients_match(spy):
    torch.manual_seed(1)
    model = CnnLstm()
    reference = copy.deepcopy(model)
    fastlstm.accelerate(model)
    x = torch.randn(4, 9, 3)
    model(x).square().sum().backward()
    reference(x).square().sum().backward()
    assert spy["lstm"] == 0
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_input_requiring_grad_runs_torch(spy):
    model = fastlstm.accelerate(nn.LSTM(3, 5))
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(4, 2, 3, requires_grad=True)
    out, _ = model(x)
    out.sum().backward()
    assert x.grad is not None and spy["lstm"] == 0


def test_optimizer_step_and_load_state_dict_repack(spy):
    torch.manual_seed(2)
    model = CnnLstm()
    reference = copy.deepcopy(model)
    fastlstm.accelerate(model)
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        before = model(x)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x).sum().backward()
    optimizer.step()
    with torch.no_grad():
        after = model(x)
        # the same step taken by plain torch
        ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
        with torch.enable_grad():
            reference(x).sum().backward()
        ref_opt.step()
        _close(after, reference(x), torch.float32)
    assert not torch.allclose(before, after)
    # load_state_dict copies in place: noticed too
    fresh = CnnLstm()
    model.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        _close(model(x), fresh(x), torch.float32)
    assert spy["lstm"] == 3


def test_data_writes_need_repack():
    model = fastlstm.accelerate(nn.LSTM(3, 4))
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        model(x)
        model.weight_hh_l0.data.mul_(2)  # .data bypasses the version counter
        model.fastlstm_repack()
        expected = torch.nn.LSTM.forward(model, x)[0]
        _close(model(x)[0], expected, torch.float32)


def test_state_dict_keys_and_checkpoints_both_ways(tmp_path):
    torch.manual_seed(3)
    original = CnnLstm()
    keys = list(original.state_dict())
    path = tmp_path / "ckpt.pt"
    torch.save(original.state_dict(), path)
    model = fastlstm.accelerate(CnnLstm())
    assert list(model.state_dict()) == keys
    model.load_state_dict(torch.load(path))
    x = torch.randn(2, 7, 3)
    with torch.no_grad():
        _close(model(x), original(x), torch.float32)
    # and the accelerated model's checkpoint loads into a plain one
    plain = CnnLstm()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        _close(plain(x), original(x), torch.float32)


def test_lstm_cell_inside(spy):
    torch.manual_seed(4)
    model = CellDecoder().eval()
    reference = copy.deepcopy(model)
    fastlstm.accelerate(model)
    assert all(isinstance(c, nn.LSTMCell) for c in model.cells)
    x = torch.randn(3, 4)
    with torch.no_grad():
        _close(model(x), reference(x), torch.float32)
        _close(model(x[0]), reference(x[0]), torch.float32)  # unbatched
    assert spy["cell"] == 2 * 2 * 5
    loss = model(x).sum()
    loss.backward()
    assert model.cells[0].weight_ih.grad is not None


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence(enforce_sorted, spy):
    torch.manual_seed(5)
    lstm = nn.LSTM(3, 6, num_layers=2, bidirectional=True)
    reference = copy.deepcopy(lstm)
    fastlstm.accelerate(lstm)
    x = torch.randn(7, 4, 3)
    lengths = torch.tensor([7, 5, 2, 1]) if enforce_sorted else torch.tensor([2, 7, 1, 5])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    hx = (torch.randn(4, 4, 6), torch.randn(4, 4, 6))
    with torch.no_grad():
        out, (h, c) = lstm(packed, hx)
        ref_out, (ref_h, ref_c) = reference(packed, hx)
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    _close(pad_packed_sequence(out)[0], pad_packed_sequence(ref_out)[0], torch.float32)
    _close(h, ref_h, torch.float32)
    _close(c, ref_c, torch.float32)
    assert spy["lstm"] == 1


def test_root_lstm_with_hx_batch_first_and_proj(spy):
    torch.manual_seed(6)
    lstm = nn.LSTM(3, 8, batch_first=True, proj_size=4).double()
    reference = copy.deepcopy(lstm)
    accelerated = fastlstm.accelerate(lstm)
    assert accelerated is lstm and isinstance(accelerated, nn.LSTM)
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    hx = (torch.randn(1, 2, 4, dtype=torch.float64), torch.randn(1, 2, 8, dtype=torch.float64))
    with torch.no_grad():
        out, (h, c) = accelerated(x, hx)
        ref_out, (ref_h, ref_c) = reference(x, hx)
    for a, b in ((out, ref_out), (h, ref_h), (c, ref_c)):
        _close(a, b, torch.float64)
    assert spy["lstm"] == 1


def test_double_accelerate_is_a_noop(spy):
    model = CnnLstm().eval()
    fastlstm.accelerate(model)
    cls = type(model.lstm)
    assert fastlstm.accelerate(model) is model
    assert type(model.lstm) is cls and cls.__mro__.count(nn.LSTM) == 1
    with torch.no_grad():
        model(torch.randn(1, 4, 3))
    assert spy["lstm"] == 1


def test_falls_back_on_mismatched_dtype_and_errors_are_torchs(spy):
    lstm = fastlstm.accelerate(nn.LSTM(3, 4))
    with torch.no_grad():
        with pytest.raises(ValueError, match="RNN input dtype"):
            lstm(torch.randn(2, 1, 3, dtype=torch.float64))  # torch's own dtype error
        with pytest.raises(RuntimeError, match="input.size"):
            lstm(torch.randn(2, 1, 5))  # torch's input_size error
        attempts = spy["lstm"]  # fastlstm may try the bad input_size first, then defers to torch
        lstm.half()  # unsupported dtype: torch runs it
        out, _ = lstm(torch.randn(2, 1, 3, dtype=torch.float16))
    assert out.dtype == torch.float16 and spy["lstm"] == attempts


def test_training_dropout_runs_torch(spy):
    lstm = fastlstm.accelerate(nn.LSTM(3, 4, num_layers=2, dropout=0.5))  # training mode
    with torch.no_grad():
        lstm(torch.randn(2, 1, 3))
        lstm.eval()
        lstm(torch.randn(2, 1, 3))
    assert spy["lstm"] == 1


def test_forward_override_is_left_alone():
    class Custom(nn.LSTM):
        def forward(self, x, hx=None):
            return super().forward(x, hx)

    model = nn.Sequential(Custom(2, 3))
    with pytest.warns(UserWarning, match="overrides forward"):
        fastlstm.accelerate(model)
    assert type(model[0]) is Custom


def test_pickle_and_deepcopy_stay_accelerated(spy):
    model = fastlstm.accelerate(CnnLstm().eval())
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        expected = model(x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        with torch.no_grad():
            _close(clone(x), expected, torch.float32)
    assert spy["lstm"] == 3


def test_threads_share_one_packing():
    model = fastlstm.accelerate(nn.LSTM(3, 8).eval())
    x = torch.randn(6, 2, 3)
    with torch.no_grad():
        expected = nn.LSTM.forward(model, x)[0]
    results, errors = [], []

    def run():
        try:
            with torch.no_grad():
                for _ in range(20):
                    results.append(model(x)[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        _close(r, expected, torch.float32)


def test_convert_of_accelerated_model_still_works():
    torch.manual_seed(7)
    model = CnnLstm().eval()
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        expected = model(x).numpy()
    fastlstm.accelerate(model)
    lstm_only = nn.Sequential(nn.Linear(3, 8), model.lstm)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = lstm_only

        def forward(self, x):
            return self.inner(x)[0]

    wrapped = Wrap().eval()
    converted = fastlstm.convert(wrapped, x)
    with torch.no_grad():
        np.testing.assert_allclose(converted(x.numpy()), wrapped(x).numpy(), atol=1e-5)
    assert expected.shape == (2, 2)


def test_rejects_non_modules():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fastlstm.accelerate(fastlstm.LSTM(2, 3))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")  # torch's own
def test_compile_and_jit_trace_run_torchs_computation(spy):
    lstm = fastlstm.accelerate(nn.LSTM(3, 4).eval())
    reference = copy.deepcopy(lstm)
    x = torch.randn(5, 2, 3)
    compiled = torch.compile(lstm, backend="eager")
    traced = torch.jit.trace(lstm, (x,), check_trace=False)
    with torch.no_grad():
        expected = nn.LSTM.forward(reference, x)[0]
        assert torch.equal(compiled(x)[0], expected)
        assert torch.equal(traced(x)[0], expected)
    assert spy["lstm"] == 0


def test_parametrized_weights(spy):
    torch.manual_seed(8)
    lstm = nn.LSTM(3, 5)
    nn.utils.parametrizations.weight_norm(lstm, "weight_hh_l0")
    fastlstm.accelerate(lstm)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        lstm(x)  # training mode, parametrized: torch
        assert spy["lstm"] == 0
        lstm.eval()
        expected = nn.LSTM.forward(lstm, x)[0]
        _close(lstm(x)[0], expected, torch.float32)
        before = lstm(x)[0]
        lstm.parametrizations.weight_hh_l0.original0.mul_(0.5)  # the magnitude g halves: repacked
        assert not torch.allclose(lstm(x)[0], before)
        _close(lstm(x)[0], nn.LSTM.forward(lstm, x)[0], torch.float32)

    assert spy["lstm"] == 4
