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
    """The CPU model, the instruction sets it supports, and the kernel set in use ("isa"), as the
    active kernel tables themselves report it."""
    float32_isa, float64_isa = _core.kernel_isas()
    if float32_isa != float64_isa:  # one switch selects both; anything else is a build defect
        raise RuntimeError(f"the float32 kernels are {float32_isa!r} but the float64 ones {float64_isa!r}")
    return {"cpu": _cpu_model(), "isa": float32_isa, "supported_isas": list(_core.supported_isas())}


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


MAX_THREADS: int = _core.MAX_THREADS


def set_num_threads(n: int) -> None:
    """Let each forward call use up to `n` threads (the caller's included), 1 <= n <= MAX_THREADS
    (1024). The workers persist between calls. Work too small to gain from a split runs on the
    calling thread anyway, and a call that finds the workers busy with another call runs alone, so
    concurrent callers never oversubscribe the cores. Per call: `model(x, num_threads=...)`.

    Raises TypeError for a non-integer (numpy integers are accepted) and ValueError outside
    [1, MAX_THREADS]."""
    _core.set_num_threads(n)


def get_workspace_limit() -> int:
    """Scratch bytes each calling thread keeps between calls, per dtype (default 64 MiB)."""
    return int(_core.get_workspace_limit())


def set_workspace_limit(nbytes: int) -> None:
    """Each thread that calls a model keeps the scratch memory of its largest call, so that later
    calls allocate nothing. A call whose scratch exceeds `nbytes` gives all of it back when it
    returns (and the next large call allocates again). 0 releases scratch after every call."""
    _core.set_workspace_limit(nbytes)
