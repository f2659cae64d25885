"""Scratch memory comes back: a calling thread keeps the scratch of its calls up to the workspace
limit (so steady-state calls allocate nothing) and gives back whatever a larger call needed.
Measured as resident memory in a child process of its own."""

from __future__ import annotations

import os

import pytest

import fastlstm
from child_process import run_python

pytestmark = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                reason="RSS is meaningless under AddressSanitizer's quarantine")

# One 3-layer call whose inter-layer scratch alone is 2 x 2000 x 32 x 256 floats (125 MiB).
CHILD = """
import json, os
import numpy as np
import fastlstm

def resident_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

limit = {limit}
if limit is not None:
    fastlstm.set_workspace_limit(limit)
model = fastlstm.LSTM(16, 256, num_layers=3, seed=0)
x = np.zeros((2000, 32, 16), np.float32)
model(x[:2])  # the small call's scratch, kept by design
before = resident_mib()
output, state = model(x)
del output, state
print(json.dumps({{"kept_mib": resident_mib() - before}}))
"""


def test_large_call_gives_its_scratch_back() -> None:
    assert fastlstm.get_workspace_limit() == 64 * 2**20
    report = run_python(CHILD.format(limit=None), timeout=120)
    assert report["kept_mib"] < 16, f"a thread kept {report['kept_mib']:.0f} MiB after one large call"


def test_a_raised_limit_keeps_scratch_for_the_next_call() -> None:
    """The measurement above sees the scratch when it is kept (so its pass means something)."""
    report = run_python(CHILD.format(limit=2**30), timeout=120)
    assert report["kept_mib"] > 100, f"expected the ~125 MiB of scratch kept, saw {report['kept_mib']:.0f} MiB"


@pytest.mark.parametrize("value, error", [(-1, ValueError), (1.5, TypeError), (None, TypeError), (True, TypeError)])
def test_workspace_limit_refuses_clearly(value: object, error: type) -> None:
    with pytest.raises(error, match="workspace limit"):
        fastlstm.set_workspace_limit(value)  # type: ignore[arg-type]
    assert fastlstm.get_workspace_limit() == 64 * 2**20
