"""The examples run end to end: examples/airline_forecast.py trains (briefly), converts, serves the model
in a process where torch cannot be imported, and torch's and fastlstm's forecasts agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastlstm._core", reason="fastlstm's C++ extension is not built")
pytest.importorskip("torch")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_airline_forecast_runs_and_fastlstm_matches_torch(tmp_path: Path) -> None:
    completed = subprocess.run([sys.executable, str(EXAMPLES / "airline_forecast.py"), "--epochs", "15",
                                "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "max abs difference" in completed.stdout and "1960-12" in completed.stdout  # the table
    torch_forecast = np.load(tmp_path / "torch_forecast.npy")
    fastlstm_forecast = np.load(tmp_path / "fastlstm_forecast.npy")
    assert torch_forecast.shape == fastlstm_forecast.shape == (12,)
    np.testing.assert_allclose(fastlstm_forecast, torch_forecast, rtol=0, atol=1e-5)
    assert (tmp_path / "airline.safetensors").is_file()
    png = tmp_path / "forecast.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
