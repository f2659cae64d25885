"""Operation coverage of fastlstm.convert: the functional and method forms, tensor operations and
LSTM variants, each in a small module converted from one size and compared with torch at others.

Operations are grouped a few per module, to keep the number of (slowish) captures down.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastlstm  # noqa: E402
from convert_helpers import assert_outputs_match, to_numpy_tree  # noqa: E402


class Lambda(nn.Module):
    """A module whose forward is `fn(self, *inputs)`; `children` are registered submodules."""

    def __init__(self, fn: Callable, **children: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, child in children.items():
            setattr(self, name, child)

    def forward(self, *inputs):
        return self.fn(self, *inputs)


def convert_and_compare(module: nn.Module, make_inputs: Callable[[int, int], tuple],
                        sizes: Sequence = ((5, 11), (1, 3), (3, 2))) -> fastlstm.Model:
    """Convert from make_inputs(2, 7), then compare with torch at each (batch, length) in sizes,
    with numpy inputs and with tensor inputs."""
    torch.manual_seed(0)
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = fastlstm.convert(module, make_inputs(2, 7))
    for batch, length in sizes:
        inputs = make_inputs(batch, length)
        with torch.no_grad():
            reference = module(*inputs)
        where = f"{type(module).__name__} at ({batch}, {length})"
        assert_outputs_match(to_numpy_tree(reference), model(*to_numpy_tree(inputs)), where + ", numpy")
        assert_outputs_match(reference, model(*inputs), where + ", torch")
    return model


def series(features: int, dtype=torch.float32) -> Callable[[int, int], tuple]:
    return lambda b, t: (torch.randn(b, t, features, dtype=dtype),)


# ------------------------------------------------------------------------------ activations
def test_activation_modules_and_functional_forms():
    def forward(self, x):
        parts = [
            F.relu(x), torch.tanh(x), x.sigmoid(), torch.sigmoid(x), F.gelu(x), F.gelu(x, approximate="tanh"),
            F.silu(x), F.elu(x), F.elu(x, alpha=0.3), F.leaky_relu(x), F.leaky_relu(x, 0.2), F.relu6(3 * x),
            F.softplus(x), F.softplus(x, beta=2.0, threshold=1.0), F.hardtanh(x, -0.5, 0.5),
            self.acts(x), torch.clamp(x, -0.1, 0.2), x.clamp(min=0.0), x.clamp_max(0.3),
            torch.exp(x), torch.log(x.abs() + 1), x.abs().sqrt(), torch.rsqrt(x.abs() + 1), -x, x.abs(),
            torch.sign(x), torch.floor(x), torch.ceil(x), torch.round(x * 3), torch.erf(x), x.reciprocal(),
            torch.log1p(x.abs()), torch.expm1(x), torch.sin(x), torch.cos(x),
        ]
        return torch.cat(parts, dim=-1)

    acts = nn.Sequential(nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(), nn.LeakyReLU(), nn.ELU(), nn.SiLU(),
                         nn.ReLU6(), nn.Softplus(), nn.Hardtanh(), nn.Identity(), nn.Dropout(0.4))
    convert_and_compare(Lambda(forward, acts=acts), series(4))


def test_softmax_normalize_norms_and_layer_norms():
    def forward(self, x):
        return (
            torch.softmax(x, dim=-1), x.softmax(dim=1), F.softmax(x, 2), self.softmax(x), self.log_softmax(x),
            F.log_softmax(x, dim=-1), F.normalize(x, dim=-1), F.normalize(x, p=1.0, dim=1),
            torch.norm(x, dim=2), torch.norm(x), x.norm(p=1, dim=-1, keepdim=True),
            torch.linalg.vector_norm(x, ord=float("inf"), dim=-1), self.norm(x), self.rms(x),
            F.layer_norm(x, (4,)), torch.logsumexp(x, dim=-1),
        )

    module = Lambda(forward, softmax=nn.Softmax(dim=-1), log_softmax=nn.LogSoftmax(dim=1),
                    norm=nn.LayerNorm(4), rms=nn.RMSNorm(4))
    with torch.no_grad():
        module.norm.weight.uniform_(0.5, 1.5)
        module.norm.bias.uniform_(-0.5, 0.5)
    convert_and_compare(module, series(4))


def test_batch_norm_on_features_and_on_channels():
    def forward(self, x):
        features = self.bn_features(x[:, -1])  # (B, C)
        channels = self.bn_channels(x.transpose(1, 2))  # (B, C, T)
        return features, channels.mean(-1)

    module = Lambda(forward, bn_features=nn.BatchNorm1d(4), bn_channels=nn.BatchNorm1d(4, affine=False))
    for bn in (module.bn_features, module.bn_channels):
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    convert_and_compare(module, series(4))


# ------------------------------------------------------------------------------ tensor operations
def test_indexing_and_slicing():
    index = torch.tensor([2, 0, 1])

    def forward(self, x):
        out, (h_n, _) = self.lstm(x)
        predictions = self.fc(out)
        return (
            out[:, -1, :], out[:, 0], h_n[-1], predictions[-1], out[:, 1:5:2], out[..., 0], x[:, :, index],
            out.index_select(2, index), out[:, -2:].flip(1), x.narrow(2, 1, 2), out[:, :, 3],
            torch.gather(x, 2, torch.zeros_like(x[..., :1], dtype=torch.long)),
        )

    convert_and_compare(Lambda(forward, lstm=nn.LSTM(3, 6, batch_first=True), fc=nn.Linear(6, 2)), series(3))


def test_shape_operations():
    def forward(self, x):
        b, t, f = x.shape
        seq_len = len(x[0])
        return (
            x.view(b, t * f), x.reshape(-1, f), x.reshape(x.size(0), -1), torch.flatten(x, 1), x.flatten(),
            self.flatten(x), x.unsqueeze(1).squeeze(1), x[:, :1].squeeze(1), x[:, :1].squeeze(), x.permute(2, 0, 1),
            x.transpose(0, 1).contiguous(), x.mT, x[:, 0].t(), x[:, :1].expand(b, seq_len, f), x.repeat(1, 2, 1),
            F.pad(x, (1, 2)), F.pad(x, (0, 0, 1, 0), value=-1.0), x[0].T, x.view(b, -1, f)[:, -1],
        )

    convert_and_compare(Lambda(forward, flatten=nn.Flatten()), series(3))


def test_joining_and_splitting():
    def forward(self, x):
        first, second = x.split(3, dim=-1)
        a, b, c = torch.chunk(x, 3, dim=2)
        rows = x.unbind(2)
        return (
            torch.cat([x, x * 2], dim=1), torch.stack([x, -x], dim=0), torch.stack([x, x], dim=-1),
            first + second, a - c + b, rows[0] * rows[5], torch.cat((first, x[..., :1]), -1),
        )

    convert_and_compare(Lambda(forward), series(6))


def test_arithmetic_comparisons_and_selection():
    def forward(self, x, y):
        mask = x > 0
        return (
            x + y, x - y, x * y, x / (y.abs() + 1), x + 1, 2 - x, x * 3, x / 4, 1 / (x.abs() + 1), x ** 2,
            torch.pow(x.abs(), y.abs()), x // 0.5, torch.remainder(x, 0.7), x + y[:, :1], x * y.mean(),
            torch.maximum(x, y), torch.minimum(x, y), torch.where(mask, x, y), x.masked_fill(mask, 0.0),
            torch.where(x > y, 1.0, 0.0), (x == y) | (x < 0), (x >= 0) & (y <= 0), ~mask, x != y,
            torch.add(x, y, alpha=2), torch.sub(x, y, alpha=0.5), torch.rsub(x, 1.0),
        )

    convert_and_compare(Lambda(forward), lambda b, t: (torch.randn(b, t, 4), torch.randn(b, t, 4)))


def test_products():
    weight = torch.randn(5, 3)

    def forward(self, x):
        return (
            torch.matmul(x, self.w), x @ self.w, torch.bmm(x, x.transpose(1, 2)), x @ x.transpose(1, 2),
            torch.einsum("btf,gf->btg", x, self.w.T), torch.addmm(self.b, x[:, 0], self.w), self.fc(x),
            F.linear(x, self.fc.weight), x[:, 0] @ self.w, torch.mm(x[:, 0], self.w),
        )

    module = Lambda(forward, fc=nn.Linear(3, 4, bias=False))
    module.register_buffer("w", weight.T.contiguous())
    module.register_parameter("b", nn.Parameter(torch.randn(5)))
    convert_and_compare(module, series(3))


def test_reductions():
    def forward(self, x):
        values, indices = x.max(dim=1)
        low, low_at = torch.min(x, -1, keepdim=True)
        return (
            x.mean(dim=1), x.sum(dim=1), x.sum(), x.mean(), torch.amax(x, dim=(1, 2)), x.amin(-1), values, indices,
            low, low_at, x.max(), x.argmax(dim=-1), x.argmin(1, keepdim=True), (x > 0).any(dim=1),
            (x > -5).all(), x.var(dim=1), x.std(dim=-1, unbiased=False), x.cumsum(dim=1), (x > 0).sum(-1),
            x.prod(dim=-1), x.sum(dim=(0, 2), keepdim=True),
        )

    convert_and_compare(Lambda(forward), series(4))


def test_creation_sized_from_the_input_and_dtype_changes():
    def forward(self, x, tokens):
        batch, steps = x.size(0), x.size(1)
        positions = torch.arange(steps).unsqueeze(0).expand(batch, steps)
        return (
            torch.zeros(batch, steps), torch.ones(batch, 3), torch.full((batch, 2), 0.5), torch.zeros_like(x),
            torch.ones_like(x), x.new_zeros(batch, 4), x.new_ones((2, batch)), torch.full_like(x, 7.0),
            positions, torch.arange(1, steps, 2), torch.arange(0.0, steps / 2, 0.5), tokens.float() / 2,
            x.long(), x.to(torch.float64), (tokens % 3).bool(), tokens.to(torch.int32) * 2, x.double().float(),
            x + positions.unsqueeze(-1), torch.empty(batch, 0), x.type_as(tokens),
        )

    convert_and_compare(Lambda(forward), lambda b, t: (torch.randn(b, t, 2), torch.randint(0, 9, (b, t))))


def test_sizes_computed_in_forward():
    def forward(self, x):
        batch, steps, features = x.size()
        halves = x[:, : steps // 2 * 2].reshape(batch, steps // 2, 2 * features)
        return halves.mean(1), x.reshape(batch * steps, features).sum(0), torch.zeros(batch, steps + 1).sum(-1)

    convert_and_compare(Lambda(forward), series(3), sizes=((5, 11), (1, 3), (3, 2), (4, 8)))


# ------------------------------------------------------------------------------ recurrent variants
@pytest.mark.parametrize("options", [
    dict(),
    dict(bias=False, num_layers=2),
    dict(bidirectional=True, batch_first=True),
    dict(bidirectional=True, num_layers=2, proj_size=3),
], ids=["plain", "no_bias_2_layers", "bidirectional_batch_first", "bidirectional_proj"])
def test_lstm_options_with_and_without_states(options):
    lstm = nn.LSTM(4, 7, **options)
    directions = 2 if lstm.bidirectional else 1
    h_out = lstm.proj_size or lstm.hidden_size
    layers = lstm.num_layers * directions

    def forward(self, x, h0, c0):
        out, (h, c) = self.lstm(x, (h0, c0))
        out_zero, (h_zero, _) = self.lstm(x)
        return out, h, c, out_zero, h_zero

    def inputs(b, t):
        x = torch.randn(b, t, 4) if lstm.batch_first else torch.randn(t, b, 4)
        return x, torch.randn(layers, b, h_out), torch.randn(layers, b, 7)

    convert_and_compare(Lambda(forward, lstm=lstm), inputs)


def test_unbatched_lstm_and_lstm_cells():
    def forward(self, sequence, step, h, c):
        out, (h_n, c_n) = self.lstm(sequence)  # unbatched (T, F)
        h1, c1 = self.cell(step)  # no state: zeros
        h2, c2 = self.cell(step, (h, c))
        h3, c3 = self.cell(step[0])  # unbatched (F,)
        return out, h_n, c_n, h1, c1, h2, c2, h3, c3

    def inputs(b, t):
        return torch.randn(t, 3), torch.randn(b, 5), torch.randn(b, 6), torch.randn(b, 6)

    convert_and_compare(Lambda(forward, lstm=nn.LSTM(3, 4, num_layers=2), cell=nn.LSTMCell(5, 6)), inputs)


def test_packed_sequences_sorted_unsorted_total_length_and_state():
    def forward(self, x, lengths, h0, c0):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = self.lstm(packed, (h0, c0))
        padded, out_lengths = pad_packed_sequence(out, batch_first=True, total_length=x.size(1), padding_value=-1.0)
        sorted_packed = pack_padded_sequence(x.transpose(0, 1), lengths.sort(descending=True)[0])
        sorted_out, _ = self.lstm_time_major(sorted_packed)
        unpadded, _ = pad_packed_sequence(sorted_out)
        return padded, out_lengths, h, c, unpadded

    def inputs(b, t):
        lengths = torch.randint(1, t + 1, (b,))
        return torch.randn(b, t, 3), lengths, torch.randn(2, b, 5), torch.randn(2, b, 5)

    module = Lambda(forward, lstm=nn.LSTM(3, 5, bidirectional=True, batch_first=True),
                    lstm_time_major=nn.LSTM(3, 4))
    convert_and_compare(module, inputs, sizes=((5, 11), (1, 3), (3, 2), (6, 9)))


def test_weights_computed_from_weights_alone_are_folded_at_conversion():
    """weight_norm on an LSTM and a Linear: forward computes g * v / |v| from parameters only."""
    def forward(self, x):
        out, (h, _) = self.lstm(x)
        return self.fc(out), h

    module = Lambda(forward, lstm=nn.utils.parametrizations.weight_norm(nn.LSTM(3, 5), name="weight_hh_l0"),
                    fc=nn.utils.parametrizations.weight_norm(nn.Linear(5, 2)))
    model = convert_and_compare(module, lambda b, t: (torch.randn(t, b, 3),))
    assert "vector_norm" not in model.operations and any(":" in name for name in model.state_dict())


# ------------------------------------------------------------------------------ properties
@pytest.fixture(scope="module")
def packed_classifier():
    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        padded, _ = pad_packed_sequence(out, batch_first=True)
        return self.fc(h[-1]), padded.sum(1)

    torch.manual_seed(3)
    module = Lambda(forward, embedding=nn.Embedding(20, 4), lstm=nn.LSTM(4, 6, num_layers=2, batch_first=True),
                    fc=nn.Linear(6, 3)).eval()
    example = (torch.randint(0, 20, (2, 7)), torch.tensor([7, 4]))
    return module, fastlstm.convert(module, example)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 6), length=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_property_any_batch_and_length(packed_classifier, batch, length, seed):
    module, model = packed_classifier
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 20, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    with torch.no_grad():
        reference = module(tokens, lengths)
    assert_outputs_match(reference, model(tokens.numpy(), lengths.numpy()), f"batch {batch}, length {length}")


def test_numpy_in_numpy_out_torch_in_torch_out_and_nesting(packed_classifier):
    module, model = packed_classifier
    tokens, lengths = torch.randint(0, 20, (3, 5)), torch.tensor([5, 2, 3])
    from_numpy = model(tokens.numpy(), lengths.numpy())
    from_torch = model(tokens, lengths)
    assert type(from_numpy) is tuple and all(type(v) is np.ndarray for v in from_numpy)
    assert type(from_torch) is tuple and all(type(v) is torch.Tensor for v in from_torch)
    for a, b in zip(from_numpy, from_torch):
        np.testing.assert_array_equal(a, b.numpy())
    # integer inputs of another width are accepted when they convert exactly
    int32 = model(tokens.numpy().astype(np.int32), lengths.numpy().astype(np.int32))
    np.testing.assert_array_equal(int32[0], from_numpy[0])


def test_model_description(packed_classifier):
    _, model = packed_classifier
    assert [entry["name"] for entry in model.inputs] == ["inputs[0]", "inputs[1]"]  # forward(self, *inputs)
    assert "lstm" in model.operations and "pack_padded" in model.operations
    assert "fastlstm.Model(" in repr(model)


def test_conversions_from_several_threads_leave_torch_as_it_was():
    import threading

    originals = (nn.Module.__setattr__, nn.LSTM.forward, nn.LSTMCell.forward, vars(torch._VF).copy())
    results, errors = {}, []

    def work(index):
        try:
            torch.manual_seed(index)
            module = Lambda(lambda self, x: self.fc(self.lstm(x)[0]), lstm=nn.LSTM(3, 4), fc=nn.Linear(4, 2)).eval()
            x = torch.randn(6, 3, 3)
            model = fastlstm.convert(module, torch.randn(7, 2, 3))
            with torch.no_grad():
                results[index] = (model(x.numpy()), module(x).numpy())
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for got, want in results.values():
        assert_outputs_match(want, got)
    assert (nn.Module.__setattr__, nn.LSTM.forward, nn.LSTMCell.forward, vars(torch._VF)) == originals


@pytest.mark.parametrize("batched", [True, False])
def test_capture_operations_compute_torchs_result_outside_a_capture(batched):
    """The fastlstm::lstm / lstm_cell kernels run only if something calls them outside a capture
    (torch.compile in another thread meanwhile); they give torch's result."""
    from fastlstm.converters import capture_ops  # noqa: F401 - registers the operations

    torch.manual_seed(0)
    lstm, cell = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True), nn.LSTMCell(3, 4)
    x = torch.randn(2, 6, 3) if batched else torch.randn(6, 3)
    weights = [getattr(lstm, name) for name in lstm._flat_weights_names]
    with torch.no_grad():
        got = torch.ops.fastlstm.lstm(x, None, None, None, weights, 3, 5, 2, True, True, True, 0)
        output, (h, c) = lstm(x)
        step = x[..., 0, :]
        got_cell = torch.ops.fastlstm.lstm_cell(step, None, None, [cell.weight_ih, cell.weight_hh, cell.bias_ih,
                                                                   cell.bias_hh], 3, 4, True)
        want_cell = cell(step)
    for a, b in zip(got, (output, h, c)):
        torch.testing.assert_close(a, b)
    for a, b in zip(got_cell, want_cell):
        torch.testing.assert_close(a, b)
