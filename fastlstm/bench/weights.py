"""Where every engine's weights come from, so all engines run the very same network.

Standard configs: one seeded `nn.LSTM` is the source. fastlstm copies it (`LSTM.from_torch`), ONNX
Runtime runs its export, and torch itself is both an engine and the oracle the others are checked
against. Without torch, fastlstm draws its own random weights and nothing can be cross-checked.

`--model`: the user's file is loaded with `fastlstm.load`, exactly as a service would, and torch gets
the same tensors through the model's `state_dict()`, so file parsing lives in one place (fastlstm).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from fastlstm._config import LSTMConfig
from fastlstm.bench.configs import BenchConfig

BENCH_DTYPE = np.float32


@dataclasses.dataclass
class WeightSource:
    """The network one benchmark case runs, in whatever forms the engines need."""

    config: BenchConfig
    torch_lstm: Optional[Any] = None  # torch.nn.LSTM, or None when torch is not installed
    fastlstm_model: Optional[Any] = None  # set for --model: the file as fastlstm.load read it
    seed: int = 0  # for fastlstm's own random weights when torch is missing
    notes: List[str] = dataclasses.field(default_factory=list)


def torch_or_none() -> Optional[Any]:
    """The torch module if it can be imported, else None (the benchmark must run without it)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def make_input(config: BenchConfig, seed: int = 0) -> np.ndarray:
    """A fixed standard-normal float32 input of shape (T, B, I), the same for every engine."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(config.input_shape, dtype=BENCH_DTYPE)


def build_torch_lstm(torch: Any, lstm: LSTMConfig) -> Any:
    """An eval-mode, time-major float32 nn.LSTM with nn.LSTM's own init and no autograd bookkeeping."""
    module = torch.nn.LSTM(
        lstm.input_size,
        lstm.hidden_size,
        num_layers=lstm.num_layers,
        bias=lstm.bias,
        batch_first=False,
        bidirectional=lstm.bidirectional,
        proj_size=lstm.proj_size,
    )
    module.eval()
    module.requires_grad_(False)
    return module


def random_weights(config: BenchConfig, seed: int = 0) -> WeightSource:
    """Seeded nn.LSTM-initialised weights when torch exists; otherwise fastlstm draws its own."""
    torch = torch_or_none()
    if torch is None:
        return WeightSource(config=config, seed=seed)
    torch.manual_seed(seed)
    return WeightSource(config=config, torch_lstm=build_torch_lstm(torch, config.lstm))


def weights_from_file(path: Path, seq_len: int, batch: int) -> WeightSource:
    """The user's weight file as a benchmark case; the input shape comes from --seq-len/--batch.

    Raises OSError/ValueError/RuntimeError with fastlstm's own message if the file cannot be read.
    """
    import fastlstm

    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    model = fastlstm.load(str(path))
    notes = []
    if np.dtype(model.dtype) != np.dtype(BENCH_DTYPE):
        # Every engine is timed in float32; a float64 file is converted once, here.
        notes.append(f"{path.name} holds {np.dtype(model.dtype)} weights; benchmarked as float32")
        weights = {name: np.asarray(array, dtype=BENCH_DTYPE) for name, array in model.state_dict().items()}
        model = fastlstm.LSTM.from_state_dict(weights, prefix="", batch_first=model.batch_first)
    config = BenchConfig(name=path.stem, lstm=model.config, seq_len=seq_len, batch=batch)

    torch = torch_or_none()
    torch_lstm = None
    if torch is not None:
        torch_lstm = build_torch_lstm(torch, model.config)
        state = {name: torch.from_numpy(np.array(array)) for name, array in model.state_dict().items()}
        torch_lstm.load_state_dict(state, strict=True)
    return WeightSource(config=config, torch_lstm=torch_lstm, fastlstm_model=model, notes=notes)
