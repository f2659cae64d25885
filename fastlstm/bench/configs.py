"""The standard benchmark configurations: one table, the single source of truth for what we measure.

Each entry pairs the network's hyperparameters (the package's own `LSTMConfig`, so shapes are derived
the same way everywhere) with the input the benchmark feeds it: sequence length T and batch B.
The table spans where services live (streaming single steps, batch 1 sequences) and where the
recurrence turns into a real GEMM (batch 32 and 128).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

from fastlstm._config import LSTMConfig


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark case: a network shape plus the input it is timed on."""

    name: str
    lstm: LSTMConfig
    seq_len: int
    batch: int

    def __post_init__(self) -> None:
        if self.seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {self.seq_len}")
        if self.batch <= 0:
            raise ValueError(f"batch must be positive, got {self.batch}")

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(T, B, I): the time-major layout every engine is fed."""
        return (self.seq_len, self.batch, self.lstm.input_size)

    def describe(self) -> str:
        """Compact shape string for tables, e.g. 'I128 H256 L2 uni T100 B1'."""
        lstm = self.lstm
        parts = [
            f"I{lstm.input_size}",
            f"H{lstm.hidden_size}",
            f"L{lstm.num_layers}",
            "bi" if lstm.bidirectional else "uni",
        ]
        if lstm.proj_size:
            parts.append(f"P{lstm.proj_size}")
        if not lstm.bias:
            parts.append("nobias")
        parts += [f"T{self.seq_len}", f"B{self.batch}"]
        return " ".join(parts)

    def to_dict(self) -> Dict[str, object]:
        return {
            "name": self.name,
            **dataclasses.asdict(self.lstm),
            "seq_len": self.seq_len,
            "batch": self.batch,
        }


def _config(
    name: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool, seq_len: int, batch: int
) -> BenchConfig:
    lstm = LSTMConfig(input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional)
    return BenchConfig(name=name, lstm=lstm, seq_len=seq_len, batch=batch)


UNI, BI = False, True

#                         name                input hidden layers dir  T    B
STANDARD_CONFIGS: Tuple[BenchConfig, ...] = (
    _config("stream-step-h128", 64, 128, 1, UNI, 1, 1),
    _config("stream-step-h512", 256, 512, 1, UNI, 1, 1),
    _config("small", 32, 64, 1, UNI, 100, 1),
    _config("medium", 128, 256, 2, UNI, 100, 1),
    _config("large", 512, 1024, 1, UNI, 50, 1),
    _config("bidir", 128, 256, 1, BI, 100, 1),
    _config("batch32", 128, 256, 2, UNI, 100, 32),
    _config("batch128", 256, 512, 1, UNI, 50, 128),
)

CONFIGS_BY_NAME: Dict[str, BenchConfig] = {config.name: config for config in STANDARD_CONFIGS}


def select_configs(spec: str) -> List[BenchConfig]:
    """Resolve a comma-separated list of names (or 'all') into configs, in the order given.

    Raises ValueError naming the valid choices, so the CLI can show a helpful message.
    """
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise ValueError("no configuration named; choose from: all, " + ", ".join(CONFIGS_BY_NAME))
    if names == ["all"]:
        return list(STANDARD_CONFIGS)
    unknown = [name for name in names if name not in CONFIGS_BY_NAME]
    if unknown:
        raise ValueError(
            f"unknown configuration(s): {', '.join(unknown)}; choose from: all, " + ", ".join(CONFIGS_BY_NAME)
        )
    seen: Dict[str, BenchConfig] = {}
    for name in names:
        seen.setdefault(name, CONFIGS_BY_NAME[name])
    return list(seen.values())
