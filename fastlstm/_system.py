"""What the extension runs on: CPU, instruction sets, the kernel set in use."""

from __future__ import annotations

import platform
from typing import Dict, List, Union

from . import _core


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_info() -> Dict[str, Union[str, List[str]]]:
    """The CPU model, the instruction sets it supports, and the kernel set in use ("isa")."""
    return {"cpu": _cpu_model(), "isa": _core.active_isa(), "supported_isas": list(_core.supported_isas())}


def set_isa(name: str) -> None:
    """Use the kernels for instruction set `name` ("scalar", "avx2" or "avx512") from now on, for
    every model. The environment variable FASTLSTM_ISA does the same at import. Packed weights do
    not depend on the ISA, so existing models switch too."""
    supported = _core.supported_isas()
    if name not in supported:
        raise ValueError(f"ISA must be one of {supported} on this CPU, got {name!r}")
    _core.set_active_isa(name)


def get_num_threads() -> int:
    """Threads one forward call may use by default, the caller's included (default: the CPUs this
    process may run on)."""
    return int(_core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Let each forward call use up to `n` threads (the caller's included). The workers persist
    between calls. Work too small to gain from a split runs on the calling thread anyway, and a call
    that finds the workers busy with another call runs alone, so concurrent callers never
    oversubscribe the cores. Per call: `model(x, num_threads=...)`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_threads must be a positive int, got {n!r}")
    _core.set_num_threads(n)
