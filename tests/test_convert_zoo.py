"""A zoo of models written the way tutorials and real projects write them, each converted from an
example of batch 2 and length 7, saved, loaded in a process where `import torch` fails, and run
at other batch sizes and lengths against the torch module itself.

Conversion and saving happen once per module (a module-scoped fixture); one child process runs
every saved model, so the whole zoo costs one interpreter start.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastlstm  # noqa: E402
from convert_helpers import assert_outputs_match, run_saved_models_without_torch, to_numpy_tree  # noqa: E402


# --------------------------------------------------------------------------------------- models
class AirlineForecaster(nn.Module):
    """The classic airline-passengers forecaster: LSTM(1, 100) + Linear on the last step."""

    def __init__(self, input_size=1, hidden_layer_size=100, output_size=1):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_layer_size, batch_first=True)
        self.linear = nn.Linear(hidden_layer_size, output_size)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.linear(out[:, -1, :])


class BiLSTMTagger(nn.Module):
    """Embedding(5000, 128) + 2-layer biLSTM(256) + Linear per token (a POS/NER tagger)."""

    def __init__(self, vocab_size=5000, embedding_dim=128, hidden_dim=256, tagset_size=17):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers=2, bidirectional=True, batch_first=True)
        self.hidden2tag = nn.Linear(2 * hidden_dim, tagset_size)

    def forward(self, sentence):
        embeds = self.word_embeddings(sentence)
        lstm_out, _ = self.lstm(embeds)
        tag_space = self.hidden2tag(lstm_out)
        return F.log_softmax(tag_space, dim=2)


class SpeakerEncoder(nn.Module):
    """GE2E speaker encoder: LSTM(40, 256, 3) + Linear + ReLU + L2 normalisation."""

    def __init__(self, mel_n_channels=40, model_hidden_size=256, model_num_layers=3, model_embedding_size=256):
        super().__init__()
        self.lstm = nn.LSTM(mel_n_channels, model_hidden_size, model_num_layers, batch_first=True)
        self.linear = nn.Linear(model_hidden_size, model_embedding_size)
        self.relu = nn.ReLU()

    def forward(self, utterances, hidden_init=None):
        out, (hidden, cell) = self.lstm(utterances, hidden_init)
        embeds_raw = self.relu(self.linear(hidden[-1]))
        return embeds_raw / (torch.norm(embeds_raw, dim=1, keepdim=True) + 1e-5)


class SentimentClassifier(nn.Module):
    """Classifier on h_n[-1] with dropout and a sigmoid."""

    def __init__(self, vocab_size=300, embedding_dim=16, hidden_dim=24, n_layers=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, n_layers, dropout=0.3, batch_first=True)
        self.dropout = nn.Dropout(0.3)
        self.fc = nn.Linear(hidden_dim, 1)

    def forward(self, x):
        embedded = self.embedding(x)
        _, (h_n, _) = self.lstm(embedded)
        return torch.sigmoid(self.fc(self.dropout(h_n[-1]))).squeeze(1)


class Seq2SeqDecoder(nn.Module):
    """Encoder LSTM, then an LSTMCell decoder unrolled for a fixed number of steps, feeding each
    prediction back in."""

    def __init__(self, input_size=3, hidden_size=20, output_size=2, horizon=6):
        super().__init__()
        self.encoder = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.decoder = nn.LSTMCell(output_size, hidden_size)
        self.project = nn.Linear(hidden_size, output_size)
        self.horizon = horizon
        self.output_size = output_size

    def forward(self, source):
        _, (h, c) = self.encoder(source)
        h, c = h.squeeze(0), c.squeeze(0)
        prediction = torch.zeros(source.size(0), self.output_size)
        predictions = []
        for _ in range(self.horizon):
            h, c = self.decoder(prediction, (h, c))
            prediction = self.project(h)
            predictions.append(prediction)
        return torch.stack(predictions, dim=1)


class PackedTagger(nn.Module):
    """Padded token batches with a lengths input: pack_padded_sequence / pad_packed_sequence."""

    def __init__(self, vocab_size=100, embedding_dim=12, hidden_dim=16, n_tags=5):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden_dim, n_tags)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
        packed_out, (h_n, c_n) = self.lstm(packed)
        out, out_lengths = pad_packed_sequence(packed_out, batch_first=True)
        sentence = torch.cat([h_n[-2], h_n[-1]], dim=1)
        return self.fc(out), out_lengths, sentence


class ZeroStateRegressor(nn.Module):
    """The ubiquitous h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size)."""

    def __init__(self, input_size=5, hidden_size=16, num_layers=2, num_classes=3):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size)
        c0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size)
        out, _ = self.lstm(x, (h0, c0))
        return self.fc(out[:, -1, :])


class PooledClassifier(nn.Module):
    """Mean-pooling over time, LayerNorm, Linear, Softmax."""

    def __init__(self, input_size=6, hidden_size=16, n_classes=4):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Sequential(nn.Linear(hidden_size, n_classes), nn.Softmax(dim=-1))

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(self.norm(out.mean(dim=1)))


class BatchNormHead(nn.Module):
    """BatchNorm1d (eval: running statistics) in a Sequential head."""

    def __init__(self, input_size=4, hidden_size=16):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.head = nn.Sequential(nn.BatchNorm1d(hidden_size), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden_size, 2))
        with torch.no_grad():  # trained-looking running statistics
            self.head[0].running_mean.uniform_(-0.5, 0.5)
            self.head[0].running_var.uniform_(0.5, 2.0)
            self.head[0].weight.uniform_(0.5, 1.5)
            self.head[0].bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        out, (h, _) = self.lstm(x)
        return self.head(h[-1])


class ProjectedLSTM(nn.Module):
    """proj_size, time-major input, an explicit view(seq_len, batch, -1)."""

    def __init__(self, input_size=8, hidden_size=32, proj_size=12):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=2, proj_size=proj_size)
        self.fc = nn.Linear(proj_size, 3)

    def forward(self, x):
        seq_len, batch = x.shape[0], x.shape[1]
        out, (h, c) = self.lstm(x)
        out = out.view(seq_len, batch, -1)
        return self.fc(out), h, c


class ActivationHeads(nn.Module):
    """GELU (both approximations), SiLU, ELU, LeakyReLU, Tanh, Sigmoid heads side by side."""

    def __init__(self, input_size=4, hidden_size=16):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.heads = nn.ModuleList([
            nn.Sequential(nn.Linear(hidden_size, 8), activation, nn.Linear(8, 2))
            for activation in (nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.ELU(alpha=0.7),
                               nn.LeakyReLU(0.05), nn.Tanh(), nn.Sigmoid())
        ])

    def forward(self, x):
        out, _ = self.lstm(x)
        last = out[:, -1]
        return torch.cat([head(last) for head in self.heads], dim=-1)


class DoubleStateful(nn.Module):
    """float64, bidirectional, the state passed in and returned, dict output."""

    def __init__(self, input_size=3, hidden_size=10):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=2, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden_size, 1)

    def forward(self, x, state):
        out, (h, c) = self.lstm(x, state)
        return {"prediction": self.out(out).squeeze(-1), "state": (h, c)}


class ArgmaxTagger(nn.Module):
    """Integer outputs: the best tag per token, and how many tokens got tag 0."""

    def __init__(self, vocab_size=60, embedding_dim=8, hidden_dim=12, n_tags=6):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, n_tags)

    def forward(self, tokens):
        scores = self.fc(self.lstm(self.embedding(tokens))[0])
        tags = scores.argmax(dim=-1)
        return tags, (tags == 0).sum(dim=1)


class StatelessTutorial(nn.Module):
    """The tutorial forecaster rewritten as the refusal message advises: state in, state out."""

    def __init__(self, input_size=1, hidden_layer_size=100, output_size=1):
        super().__init__()
        self.hidden_layer_size = hidden_layer_size
        self.lstm = nn.LSTM(input_size, hidden_layer_size)
        self.linear = nn.Linear(hidden_layer_size, output_size)

    def forward(self, input_seq, hidden_cell):
        lstm_out, hidden_cell = self.lstm(input_seq.view(len(input_seq), 1, -1), hidden_cell)
        predictions = self.linear(lstm_out.view(len(input_seq), -1))
        return predictions[-1], hidden_cell


class ResidualStack(nn.Module):
    """A ModuleList of LSTMs with residual connections, Identity, Flatten, time-major."""

    def __init__(self, size=12, depth=3):
        super().__init__()
        self.layers = nn.ModuleList([nn.LSTM(size, size) for _ in range(depth)])
        self.skip = nn.Identity()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(size, 2)

    def forward(self, x):
        for layer in self.layers:
            out, _ = layer(x)
            x = self.skip(x) + out
        last = self.flatten(x[-1:].permute(1, 0, 2))
        return self.fc(last)


# --------------------------------------------------------------------------------------- cases
@dataclasses.dataclass
class ZooCase:
    name: str
    build: Callable[[], nn.Module]
    make_inputs: Callable[[np.random.Generator, int, int], tuple]  # (rng, batch, length)
    runs: Tuple[Tuple[int, int], ...] = ((5, 40), (1, 3))
    dtype: Any = torch.float32

    def inputs(self, rng: np.random.Generator, batch: int, length: int) -> tuple:
        return tuple(_tensors(self.make_inputs(rng, batch, length), self.dtype))


def _tensors(value: Any, dtype: Any) -> Any:
    if isinstance(value, np.ndarray):
        tensor = torch.from_numpy(value)
        return tensor.to(dtype) if tensor.is_floating_point() else tensor
    if isinstance(value, (tuple, list)):
        return type(value)(_tensors(v, dtype) for v in value)
    return value


def _series(features: int) -> Callable:
    return lambda rng, b, t: (rng.standard_normal((b, t, features)),)


def _time_major(features: int) -> Callable:
    return lambda rng, b, t: (rng.standard_normal((t, b, features)),)


def _tokens(vocab: int) -> Callable:
    return lambda rng, b, t: (rng.integers(1, vocab, (b, t)),)


def _tokens_and_lengths(rng: np.random.Generator, b: int, t: int) -> tuple:
    lengths = rng.integers(1, t + 1, b)
    lengths[rng.integers(b)] = max(1, t - 2)  # the longest is shorter than the padding: output is cut
    tokens = rng.integers(1, 100, (b, t))
    tokens[np.arange(t)[None, :] >= lengths[:, None]] = 0
    return tokens, lengths.astype(np.int64)


def _double_with_state(rng: np.random.Generator, b: int, t: int) -> tuple:
    state = (rng.standard_normal((4, b, 10)) * 0.5, rng.standard_normal((4, b, 10)) * 0.5)
    return rng.standard_normal((b, t, 3)), state


def _tutorial(rng: np.random.Generator, b: int, t: int) -> tuple:
    return rng.standard_normal(t), (rng.standard_normal((1, 1, 100)) * 0.1, rng.standard_normal((1, 1, 100)) * 0.1)


ZOO: List[ZooCase] = [
    ZooCase("airline_forecaster", AirlineForecaster, _series(1), runs=((5, 40), (1, 12))),
    ZooCase("bilstm_tagger", BiLSTMTagger, _tokens(5000), runs=((3, 11), (1, 4))),
    ZooCase("speaker_encoder", SpeakerEncoder, _series(40), runs=((3, 25), (1, 5))),
    ZooCase("sentiment_on_h_n", SentimentClassifier, _tokens(300)),
    ZooCase("seq2seq_lstmcell_decoder", Seq2SeqDecoder, _series(3)),
    ZooCase("packed_tagger", PackedTagger, _tokens_and_lengths, runs=((5, 40), (1, 3), (4, 2))),
    ZooCase("zeros_h0_from_x_size", ZeroStateRegressor, _series(5)),
    ZooCase("mean_pool_layernorm_softmax", PooledClassifier, _series(6)),
    ZooCase("batchnorm_head", BatchNormHead, _series(4)),
    ZooCase("proj_size_time_major", ProjectedLSTM, _time_major(8)),
    ZooCase("gelu_silu_elu_heads", ActivationHeads, _series(4)),
    ZooCase("float64_state_in_dict_out", DoubleStateful, _double_with_state, dtype=torch.float64),
    ZooCase("argmax_integer_outputs", ArgmaxTagger, _tokens(60)),
    ZooCase("stateless_tutorial", StatelessTutorial, _tutorial, runs=((1, 30), (1, 2))),
    ZooCase("residual_lstm_stack", ResidualStack, _time_major(12)),
]


# --------------------------------------------------------------------------------------- fixture
@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Dict[str, Any]:
    """name -> (torch references, outputs in the torch-free child, outputs in this process) or
    the exception the conversion raised."""
    directory = tmp_path_factory.mktemp("zoo")
    results: Dict[str, Any] = {}
    child_cases = []
    for index, case in enumerate(ZOO):
        torch.manual_seed(index)
        rng = np.random.default_rng(index)
        module = case.build().to(case.dtype).eval()
        example = case.inputs(rng, 2, 7)
        runs = [case.inputs(rng, b, t) for b, t in case.runs]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a zoo model must convert without any warning...
                warnings.filterwarnings("ignore", message=".*had size 1 in the example.*")  # ...but the tutorial's batch of 1
                model = fastlstm.convert(module, example)
        except Exception as exc:  # reported by the case's own test
            results[case.name] = exc
            continue
        path = directory / f"{case.name}.safetensors"
        model.save(path)
        with torch.no_grad():
            references = [module(*inputs) for inputs in runs]
        numpy_runs = [to_numpy_tree(inputs) for inputs in runs]
        local = [model(*inputs) for inputs in numpy_runs]
        results[case.name] = (references, None, local, model)
        child_cases.append((case.name, str(path), numpy_runs))
    outputs = run_saved_models_without_torch(directory, [(path, runs) for _, path, runs in child_cases])
    for (name, _, _), child in zip(child_cases, outputs):
        references, _, local, model = results[name]
        results[name] = (references, child, local, model)
    return results


@pytest.mark.parametrize("case", ZOO, ids=[case.name for case in ZOO])
def test_zoo_model_matches_torch_at_other_sizes_without_torch(case, zoo):
    result = zoo[case.name]
    if isinstance(result, Exception):
        raise result
    references, child, local, model = result
    assert isinstance(model, fastlstm.Model)
    for (batch, length), reference, from_file, in_process in zip(case.runs, references, child, local):
        where = f"{case.name} at batch {batch}, length {length}"
        assert_outputs_match(reference, from_file, where + " (loaded without torch)")
        assert_outputs_match(reference, in_process, where + " (converted model)")


def test_zoo_is_large_enough():
    assert len(ZOO) >= 12
