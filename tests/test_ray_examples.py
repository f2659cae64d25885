"""The Ray examples run end to end on a local Ray instance (ray.init(num_cpus=2)), in child processes
under timeouts: Ray Serve replicas answer over HTTP exactly as the model alone, and Ray Data scoring of
a Parquet dataset equals single-process scoring. Skipped when Ray (the `ray` extra) is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra (fastlstm[ray])")
# Under .ci/sanitize, LD_PRELOAD puts ASan into every child process, Ray's own native services too,
# which are not built for it; these examples run no extension code that the rest of the suite does not.
if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("Ray's native processes do not run under the ASan preload", allow_module_level=True)
pytest.importorskip("pyarrow")
pytest.importorskip("uvicorn")

from serve_helpers import free_port  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT = 300


def run_example(*arguments: str) -> dict:
    completed = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=TIMEOUT,
                               cwd=tempfile.gettempdir())
    assert completed.returncode == 0, f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    # Ray's own processes may print to the same stdout after the example's one JSON line.
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines, completed.stdout[-3000:]
    return json.loads(lines[-1])


def test_ray_serve_replicas_answer_as_the_model_alone() -> None:
    result = run_example(str(EXAMPLES / "ray_serve.py"), "--smoke", "--port", str(free_port()))
    assert result == {"smoke": {"requests": 16, "all_equal_to_lone_calls": True}, "replicas": 2}


def test_ray_data_scoring_equals_single_process_scoring() -> None:
    result = run_example(str(EXAMPLES / "ray_batch_scoring.py"), "--smoke")
    assert result == {"rows": 200, "workers": 2, "equal_to_single_process": True}
