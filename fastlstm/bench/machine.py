"""What machine the numbers came from (CPU model, instruction sets, CPU count) and with what software:
numbers without their machine are not comparable, so this heads every report."""

from __future__ import annotations

import os
import platform
from typing import Any, Dict


def software_versions() -> Dict[str, str]:
    """Versions of everything that may be timed; packages that are not installed are left out."""
    versions = {"python": platform.python_version()}
    for name in ("numpy", "torch", "onnxruntime", "fastlstm"):
        try:
            versions[name] = str(getattr(__import__(name), "__version__", "unknown"))
        except ImportError:
            continue
    return versions


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask): fastlstm's default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def describe_machine() -> Dict[str, Any]:
    """The CPU as fastlstm sees it: its model, the widest instruction set it supports, and the kernels in use."""
    import fastlstm

    cpu = fastlstm.cpu_info()
    return {
        "cpu": cpu["cpu"],
        "isa": cpu["supported_isas"][-1],
        "fastlstm_isa": cpu["isa"],
        "logical_cpus": os.cpu_count(),
        "available_cpus": available_cpus(),
        "platform": platform.platform(),
        "versions": software_versions(),
    }
