"""The service's settings: one dataclass, passed to worker processes through the environment."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

__all__ = ["ServeConfig", "BUNDLED_MODEL", "ENVIRONMENT_VARIABLE"]

BUNDLED_MODEL = Path(__file__).resolve().parent / "models" / "airline.safetensors"
ENVIRONMENT_VARIABLE = "FASTLSTM_SERVE_CONFIG"


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What one service process serves and how.

    model: a file fastlstm.load reads; None serves the bundled airline-passengers forecaster.
    max_batch, max_delay_ms, max_queue: the Batcher's (a full queue answers 503).
    max_body_bytes: larger request bodies answer 413.
    max_length: the longest a varying axis (a sequence's length) may be; longer answers 413.
    """

    model: Optional[str] = None
    max_batch: int = 32
    max_delay_ms: float = 1.0
    max_queue: int = 1024
    max_body_bytes: int = 16 * 2**20
    max_length: int = 10_000

    @property
    def model_path(self) -> Path:
        return BUNDLED_MODEL if self.model is None else Path(self.model)

    def to_environment(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_environment(cls) -> "ServeConfig":
        text = os.environ.get(ENVIRONMENT_VARIABLE)
        return cls() if not text else cls(**json.loads(text))
