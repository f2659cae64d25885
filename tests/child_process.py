"""Run Python code in a child process with a timeout: the way to test what could hang (a hang
then fails the test instead of CI), crash (a segfault is an exit status, not a dead test run) or
hold memory (resident size is measured in a process of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from typing import Any, Dict, Optional

# Under the sanitizers (.ci/sanitize) everything runs several times slower.
SLOWDOWN = 4 if "libasan" in os.environ.get("LD_PRELOAD", "") else 1


def run_python(code: str, timeout: float, env: Optional[Dict[str, str]] = None) -> Any:
    """Run `code` in a fresh interpreter; return the JSON it prints on its last line of stdout.

    Fails (AssertionError) with the child's output if it exits non-zero or crashes; raises
    subprocess.TimeoutExpired (killing it) if it runs past `timeout` seconds. The child runs
    outside the repository so that it imports the installed fastlstm, not the source tree.
    """
    child_env = dict(os.environ, **(env or {}))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout * SLOWDOWN,
        cwd=tempfile.gettempdir(),
        env=child_env,
    )
    assert result.returncode == 0, (
        f"child exited with status {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
        f"--- stderr\n{result.stderr[-4000:]}"
    )
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None
