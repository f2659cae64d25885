"""Every way fastlstm.convert refuses a module (or an input size), and what it says.

Refusals happen at conversion with a fastlstm.ConversionError (a ValueError) that names every
problem with the user's source line, or, for sizes the module's code only handles in part, at
call time with a ValueError that names the condition: never a wrong answer.
"""

from __future__ import annotations

import inspect
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm import _program_ops  # noqa: E402

THIS_FILE = "test_convert_refusals.py"


def line_of(text: str, function) -> int:
    """The line number of `text` in `function`'s source (to check that messages point at it)."""
    lines, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(lines) if text in line)


# ------------------------------------------------------------------------------ stateful modules
class TutorialLSTM(nn.Module):
    """Verbatim from the popular tutorial (issue 16): keeps its state on itself between calls."""

    def __init__(self, input_size=1, hidden_layer_size=100, output_size=1):
        super().__init__()
        self.hidden_layer_size = hidden_layer_size
        self.lstm = nn.LSTM(input_size, hidden_layer_size)
        self.linear = nn.Linear(hidden_layer_size, output_size)
        self.hidden_cell = (torch.zeros(1, 1, self.hidden_layer_size),
                            torch.zeros(1, 1, self.hidden_layer_size))

    def forward(self, input_seq):
        lstm_out, self.hidden_cell = self.lstm(input_seq.view(len(input_seq), 1, -1), self.hidden_cell)
        predictions = self.linear(lstm_out.view(len(input_seq), -1))
        return predictions[-1]


def test_module_keeping_state_on_itself_is_refused_with_the_attribute_and_the_rewrite():
    module = TutorialLSTM().eval()
    before = module.hidden_cell
    with pytest.raises(fastlstm.ConversionError) as caught:
        fastlstm.convert(module, torch.randn(12))
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "self.hidden_cell" in message
    assert f"{THIS_FILE}:{line_of('lstm_out, self.hidden_cell', TutorialLSTM.forward)}" in message
    assert "take the state as an argument and return" in message
    assert "def forward(self, x, hidden_cell)" in message
    assert len(caught.value.problems) == 1
    # the module is left as it was: no fake tensors from the trace, the same state object
    assert module.hidden_cell is before
    assert all(type(t) is torch.Tensor and t.shape == (1, 1, 100) for t in module.hidden_cell)
    with torch.no_grad():
        module(torch.randn(5))  # still runs in torch


class CountingModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.fc(x)


def test_buffer_updated_in_forward_is_refused():
    with pytest.raises(fastlstm.ConversionError, match=r"updates buffer 'calls' in place"):
        fastlstm.convert(CountingModule().eval(), torch.randn(2, 3))


# ------------------------------------------------------------------------------ unsupported ops
class ManyUnsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        running = torch.cumprod(out, dim=1)
        spectrum = torch.fft.rfft(running, dim=1).abs()
        return self.fc(running) + spectrum.sum()


def test_every_unsupported_operation_is_listed_with_its_source_line():
    with pytest.raises(fastlstm.ConversionError) as caught:
        fastlstm.convert(ManyUnsupported().eval(), torch.randn(2, 7, 4))
    message, problems = str(caught.value), caught.value.problems
    assert "nn.GRU (aten.gru.input)" in message and "[self.rnn (GRU)]" in message
    assert "aten.cumprod.default" in message
    assert "aten._fft_r2c.default" in message or "fft" in message
    for text in ("out, _ = self.rnn(x)", "running = torch.cumprod", "spectrum = torch.fft.rfft"):
        assert f"{THIS_FILE}:{line_of(text, ManyUnsupported.forward)} in forward: {text}" in message
    assert len(problems) >= 3
    assert message.count("\n  - ") == len(problems)
    assert "Supported: nn.LSTM" in message and "nn.LayerNorm" in message
    assert re.search(r"at \S*test_convert_refusals\.py:\d+ in forward", message)  # relative to the working directory


class UsesPackedData(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return self.fc(out.data)


class ReturnsPacked(UsesPackedData):
    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return self.lstm(packed)[0]


@pytest.mark.parametrize("module, expected", [
    (UsesPackedData(), r"uses a PackedSequence's data directly"),
    (ReturnsPacked(), r"returns a PackedSequence"),
], ids=["packed_data_used", "packed_sequence_returned"])
def test_packed_sequence_misuse_is_refused(module, expected):
    with pytest.raises(fastlstm.ConversionError, match=expected):
        fastlstm.convert(module.eval(), (torch.randn(2, 7, 3), torch.tensor([7, 4])))


class BranchesOnValues(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_untraceable_forward_is_refused_with_the_line():
    with pytest.raises(fastlstm.ConversionError) as caught:
        fastlstm.convert(BranchesOnValues().eval(), torch.randn(2, 3))
    message = str(caught.value)
    assert "torch.export could not trace forward" in message
    assert "if x.sum() > 0:" in message
    assert "without branching on tensor values" in message


class BatchStatistics(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3, track_running_stats=False)

    def forward(self, x):
        return self.bn(x)


class ExplicitTrainingDropout(nn.Module):
    def forward(self, x):
        return F.dropout(x, 0.5, training=True)


class HalfBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(3, dtype=torch.float16))

    def forward(self, x):
        return (x.half() * self.scale).float()  # computes in half precision


class ReflectPad(nn.Module):
    def forward(self, x):
        return F.pad(x, (1, 1), mode="reflect")


class IntegerBitwise(nn.Module):
    def forward(self, tokens):
        return tokens & 3


class TopK(nn.Module):
    def forward(self, x):
        return x.topk(2, dim=-1).values


@pytest.mark.parametrize("module, example, expected", [
    (ReflectPad(), torch.randn(2, 3, 5), r"reflection_pad1d|mode='reflect'"),
    (IntegerBitwise(), torch.randint(0, 9, (2, 5)), r"on integers \(only on bool masks\)"),
    (TopK(), torch.randn(2, 5), r"aten.topk.default is not supported"),
    (BatchStatistics(), torch.randn(4, 3), r"batch statistics"),
    (ExplicitTrainingDropout(), torch.randn(4, 3), r"dropout in training mode"),
    (HalfBuffer(), torch.randn(4, 3), r"computes a torch.float16 tensor"),
], ids=["reflect_pad", "integer_bitwise", "topk", "batchnorm_without_running_stats", "dropout_training_true", "half_precision"])
def test_operations_fastlstm_cannot_reproduce_are_refused(module, example, expected):
    with pytest.raises(fastlstm.ConversionError, match=expected):
        fastlstm.convert(module.eval(), example)


def test_a_translation_that_disagrees_with_torch_is_refused(monkeypatch):
    """The safety net: the program is run against the module on the example inputs."""
    broken = dict(_program_ops.OPERATIONS)
    real_tanh = broken["tanh"]

    def wrong_tanh(step_args):
        run = real_tanh(step_args)
        out = step_args.out

        def run_wrong(env):
            run(env)
            env[out] = env[out] * 1.01
        return run_wrong

    broken["tanh"] = wrong_tanh
    monkeypatch.setattr(_program_ops, "OPERATIONS", broken)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh()).eval()
    with pytest.raises(fastlstm.ConversionError, match=r"does not reproduce the module[\s\S]*max abs error"):
        fastlstm.convert(module, torch.randn(2, 3))


# ------------------------------------------------------------------------------ arguments
def test_bad_arguments_are_type_errors():
    module = nn.Linear(3, 2).eval()
    with pytest.raises(TypeError, match=r"torch.nn.Module"):
        fastlstm.convert(lambda x: x, torch.randn(2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's own
        scripted = torch.jit.script(module)
    with pytest.raises(TypeError, match=r"TorchScript"):
        fastlstm.convert(scripted, torch.randn(2, 3))
    with pytest.raises(TypeError, match=r"tensor or a tuple"):
        fastlstm.convert(module, np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match=r"example input .* is a int.*constant"):
        fastlstm.convert(module, (torch.randn(2, 3), 5))
    with pytest.raises(TypeError, match=r"float16"):
        fastlstm.convert(module.half(), torch.randn(2, 3).half())


# ------------------------------------------------------------------------------ modes and sizes
def test_training_mode_module_is_converted_in_eval_semantics_and_left_in_training_mode():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.Linear(8, 2))
    module.train()
    with pytest.warns(UserWarning, match=r"training mode; it is converted with eval-mode semantics"):
        model = fastlstm.convert(module, torch.randn(4, 3))
    assert module.training and all(m.training for m in module.modules())
    x = torch.randn(6, 3)
    module.eval()
    with torch.no_grad():
        expected = module(x)
    np.testing.assert_allclose(model(x.numpy()), expected.numpy(), rtol=1e-5, atol=1e-6)


class FixedLength(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.fc = nn.Linear(7 * 6, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out.reshape(x.size(0), 7 * 6))  # the length, hard-coded


def test_axis_fixed_by_the_code_warns_and_other_sizes_are_refused_at_call_time():
    with pytest.warns(UserWarning, match=r"fixes x axis 1 = 7"):
        model = fastlstm.convert(FixedLength().eval(), torch.randn(2, 7, 4))
    model(np.zeros((3, 7, 4), np.float32))  # the batch still varies
    with pytest.raises(ValueError, match=r"x has shape \(3, 8, 4\).*axis 1 must be 7"):
        model(np.zeros((3, 8, 4), np.float32))


class BranchesOnLength(nn.Module):
    def forward(self, x):
        if x.size(1) > 4:
            return x[:, -4:].sum(1)
        return x.sum(1) * 10


class BranchesOnBatchOfOne(nn.Module):
    def forward(self, x):
        if x.size(0) == 1:
            return x.mean(1) * 100
        return x.mean(1)


def test_sizes_that_take_another_branch_of_forward_are_refused_at_call_time():
    model = fastlstm.convert(BranchesOnLength().eval(), torch.randn(2, 7, 3))
    model(np.ones((1, 5, 3), np.float32))
    line = line_of("if x.size(1) > 4:", BranchesOnLength.forward)
    with pytest.raises(ValueError, match=rf"another path through the module's code.*{THIS_FILE}:{line}.*x.shape\[1\] > 4"):
        model(np.ones((2, 3, 3), np.float32))


def test_size_one_is_checked_against_the_module_at_conversion():
    with pytest.warns(UserWarning, match=r"refuses size 1 on x axis 0"):
        model = fastlstm.convert(BranchesOnBatchOfOne().eval(), torch.randn(2, 7, 3))
    model(np.ones((3, 4, 3), np.float32))
    model(np.ones((3, 1, 3), np.float32))  # length 1 is fine
    with pytest.raises(ValueError, match=r"x has size 1 on axis 0.*at least 2"):
        model(np.ones((1, 4, 3), np.float32))
