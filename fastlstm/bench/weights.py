"""Where each case's weights come from, so that every engine runs the very same network.

Standard configs: one seeded `nn.LSTM`; fastlstm copies it, ONNX Runtime runs its export, and torch is
both an engine and the oracle the others are checked against. Without torch, fastlstm draws its own
weights and nothing is cross-checked. A model file is read by `fastlstm.load`, as a service would read
it, and torch gets the same tensors through the model's `state_dict()`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from fastlstm._config import LSTMConfig
from fastlstm.bench.configs import BenchConfig

BENCH_DTYPE = np.float32  # every engine is timed in float32


@dataclasses.dataclass
class WeightSource:
    """The network of one case, in the forms the engines need."""

    config: BenchConfig
    torch_lstm: Optional[Any] = None  # torch.nn.LSTM, or None without torch
    fastlstm_model: Optional[Any] = None  # the loaded file, or one model shared by several variants
    seed: int = 0  # for fastlstm's own weights when torch is missing
    notes: List[str] = dataclasses.field(default_factory=list)


def torch_or_none() -> Optional[Any]:
    try:
        import torch
    except ImportError:
        return None
    return torch


def make_input(config: BenchConfig, seed: int = 0) -> np.ndarray:
    """A fixed standard-normal float32 input of shape (T, B, I), the same for every engine."""
    return np.random.default_rng(seed).standard_normal(config.input_shape, dtype=BENCH_DTYPE)


def build_torch_lstm(torch: Any, lstm: LSTMConfig) -> Any:
    """An eval-mode, time-major float32 nn.LSTM with nn.LSTM's own initialisation and no autograd."""
    module = torch.nn.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, bias=lstm.bias,
                           bidirectional=lstm.bidirectional, proj_size=lstm.proj_size)
    return module.eval().requires_grad_(False)


def random_weights(config: BenchConfig, seed: int = 0) -> WeightSource:
    """A seeded nn.LSTM when torch exists; otherwise fastlstm draws its own weights."""
    torch = torch_or_none()
    if torch is None:
        return WeightSource(config, seed=seed)
    torch.manual_seed(seed)
    return WeightSource(config, torch_lstm=build_torch_lstm(torch, config.lstm))


def weights_from_file(path: Path, seq_len: int, batch: int) -> WeightSource:
    """The weight file as a case timed on (seq_len, batch) inputs; raises fastlstm's own error if unreadable."""
    import fastlstm

    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    model, notes = fastlstm.load(str(path)), []
    if np.dtype(model.dtype) != np.dtype(BENCH_DTYPE):
        notes.append(f"{path.name} holds {np.dtype(model.dtype)} weights; benchmarked as float32")
        weights = {name: np.asarray(array, dtype=BENCH_DTYPE) for name, array in model.state_dict().items()}
        model = fastlstm.LSTM.from_state_dict(weights, prefix="", batch_first=model.batch_first)
    torch, torch_lstm = torch_or_none(), None
    if torch is not None:
        torch_lstm = build_torch_lstm(torch, model.config)
        torch_lstm.load_state_dict({name: torch.from_numpy(np.array(a)) for name, a in model.state_dict().items()})
    return WeightSource(BenchConfig(path.stem, model.config, seq_len, batch), torch_lstm, model, notes=notes)
