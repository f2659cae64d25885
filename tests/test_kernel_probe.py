"""The benchmark lab's C++ tools, which live in bench/ and not in the extension: bench/kernel_probe.sh
still builds against csrc/ and reports every figure, and bench/read_probe builds itself with
setup.py's per-ISA flags and measures (no timing asserted: performance claims live in bench/)."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastlstm._core", reason="fastlstm's C++ extension is not built")

import fastlstm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import read_probe  # noqa: E402

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
needs_pybind11 = pytest.mark.skipif(importlib.util.find_spec("pybind11") is None, reason="needs pybind11")
# The kernel probe compiles the AVX2 + FMA kernels, which fastlstm's own CPU check calls "avx2".
needs_avx2 = pytest.mark.skipif("avx2" not in fastlstm.cpu_info()["supported_isas"], reason="needs AVX2 and FMA")


@needs_gxx
@needs_avx2
def test_kernel_probe_reports_every_figure() -> None:
    completed = subprocess.run(["bash", str(REPO / "bench" / "kernel_probe.sh"), "8", "64"], capture_output=True,
                               text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in completed.stdout.splitlines()[2:]}
    assert list(rows) == [
        "FMA peak, one core (12 chains of 8-float FMAs)",
        "micro-kernel, 6-row tile, data in L1",
        "recurrent step GEMM, 8 rows, H 64 (W_hh 0.06 MiB)",
        "the same step with its cell update",
        "cell update alone, data in L1",
    ]
    for value in rows.values():
        assert float(re.match(r"[0-9.]+", value).group()) > 0


@needs_gxx
@needs_avx2
def test_kernel_probe_refuses_shapes_it_cannot_time() -> None:
    completed = subprocess.run(["bash", str(REPO / "bench" / "kernel_probe.sh"), "2", "64"], capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 2
    assert "usage: kernel_probe" in completed.stderr


@needs_gxx
@needs_pybind11
def test_read_probe_measures_with_every_isa_and_refuses_bad_arguments() -> None:
    for isa in fastlstm.cpu_info()["supported_isas"]:
        assert 0 < read_probe.measure_read_seconds(64 * 1024, 3, 2, isa) < 0.01
    assert 0 < read_probe.measure_read_seconds(64 * 1024, 3, 2) < 0.01  # fastlstm's active ISA
    with pytest.raises(ValueError, match="bytes must be in"):
        read_probe.measure_read_seconds(0, 3, 2)
    with pytest.raises(ValueError, match="passes and repeats"):
        read_probe.measure_read_seconds(1024, 0, 2)
    with pytest.raises(ValueError, match="no read probe for ISA 'neon'"):
        read_probe.measure_read_seconds(1024, 1, 1, "neon")


def test_read_probe_isa_flags_are_setup_pys() -> None:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    assignment = next(node for node in tree.body if isinstance(node, ast.Assign)
                      and any(getattr(target, "id", None) == "ISA_FLAGS" for target in node.targets))
    assert ast.literal_eval(assignment.value) == read_probe.ISA_FLAGS
