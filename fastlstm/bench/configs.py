"""The standard benchmark configurations: what `fastlstm bench` measures unless given a model file.

Each pairs a network (the package's `LSTMConfig`) with its input, T steps of batch B: from single
streaming steps and batch-1 sequences, where services live, to batch 32 and 128, where the recurrence
becomes a real GEMM.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

from fastlstm._config import LSTMConfig


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark case: a network plus the (T, B) input it is timed on."""

    name: str
    lstm: LSTMConfig
    seq_len: int
    batch: int

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(T, B, I): the time-major layout every engine is fed."""
        return (self.seq_len, self.batch, self.lstm.input_size)

    def describe(self) -> str:
        """Compact shape for tables, e.g. 'I128 H256 L2 uni T100 B1'."""
        lstm = self.lstm
        parts = [f"I{lstm.input_size}", f"H{lstm.hidden_size}", f"L{lstm.num_layers}", "bi" if lstm.bidirectional else "uni"]
        parts += ([f"P{lstm.proj_size}"] if lstm.proj_size else []) + ([] if lstm.bias else ["nobias"])
        return " ".join(parts + [f"T{self.seq_len}", f"B{self.batch}"])

    def to_dict(self) -> Dict[str, object]:
        return {"name": self.name, **dataclasses.asdict(self.lstm), "seq_len": self.seq_len, "batch": self.batch}


def _config(name: str, input_size: int, hidden: int, layers: int, bidirectional: bool, seq_len: int, batch: int) -> BenchConfig:
    return BenchConfig(name, LSTMConfig(input_size, hidden, layers, bidirectional=bidirectional), seq_len, batch)


UNI, BI = False, True
#                                 name            input hidden layers dir  T    B
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
    """'all' or comma-separated names -> configs, in the order given; ValueError naming the choices."""
    names = list(dict.fromkeys(name.strip() for name in spec.split(",") if name.strip()))
    if names == ["all"]:
        return list(STANDARD_CONFIGS)
    unknown = [name for name in names if name not in CONFIGS_BY_NAME]
    if unknown or not names:
        what = f"unknown configuration(s): {', '.join(unknown)}" if unknown else "no configuration named"
        raise ValueError(f"{what}; choose from: all, " + ", ".join(CONFIGS_BY_NAME))
    return [CONFIGS_BY_NAME[name] for name in names]
