"""bench/kernel_probe.sh still builds against csrc/ and reports every figure (no timing asserted:
performance claims live in bench/, not in tests)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fastlstm._core", reason="fastlstm's C++ extension is not built")

import fastlstm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The probe compiles the AVX2 + FMA kernels, which fastlstm's own CPU check calls "avx2".
pytestmark = [
    pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++"),
    pytest.mark.skipif("avx2" not in fastlstm.cpu_info()["supported_isas"], reason="needs a CPU with AVX2 and FMA"),
]


def test_kernel_probe_reports_every_figure() -> None:
    completed = subprocess.run(
        ["bash", str(REPO / "bench" / "kernel_probe.sh"), "8", "64"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in completed.stdout.splitlines()[2:]}
    expected = [
        "FMA peak, one core (12 chains of 8-float FMAs)",
        "micro-kernel, 6-row tile, data in L1",
        "recurrent step GEMM, 8 rows, H 64 (W_hh 0.06 MiB)",
        "the same step with its cell update",
        "cell update alone, data in L1",
    ]
    assert list(rows) == expected
    for value in rows.values():
        assert float(re.match(r"[0-9.]+", value).group()) > 0


def test_kernel_probe_refuses_shapes_it_cannot_time() -> None:
    completed = subprocess.run(
        ["bash", str(REPO / "bench" / "kernel_probe.sh"), "2", "64"], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 2
    assert "usage: kernel_probe" in completed.stderr
