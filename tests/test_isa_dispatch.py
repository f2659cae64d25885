"""Forcing an instruction set selects that set's kernel tables, as the tables themselves report
(a wrong table would be an illegal instruction on a CPU without the ISA)."""

from __future__ import annotations

import pytest

import fastlstm
from fastlstm import _core
from child_process import run_python


def test_each_forced_isa_runs_its_own_kernels(isa: str) -> None:
    assert _core.kernel_isas() == (isa, isa)
    assert fastlstm.cpu_info()["isa"] == isa


@pytest.mark.parametrize("name", fastlstm.cpu_info()["supported_isas"])
def test_fastlstm_isa_environment_variable(name: str) -> None:
    code = 'import json, fastlstm; from fastlstm import _core; print(json.dumps(list(_core.kernel_isas())))'
    assert run_python(code, timeout=60, env={"FASTLSTM_ISA": name}) == [name, name]


def test_unsupported_isa_is_refused() -> None:
    with pytest.raises(ValueError, match="ISA must be one of"):
        fastlstm.set_isa("avx1024")
