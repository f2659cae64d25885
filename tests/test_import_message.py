"""Importing fastlstm from a source tree whose extension is not built says so, and what to do,
instead of Python's "partially initialized module (most likely due to a circular import)"."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import fastlstm


def test_unbuilt_source_tree_says_what_to_do(tmp_path: Path) -> None:
    package = Path(fastlstm.__file__).parent
    shutil.copytree(package, tmp_path / "fastlstm", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    # An editable install's import hook would find the built extension in the checkout: drop it, so
    # that the copy's missing extension is what the import sees (as it is for a plain install).
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in getattr(f, '__name__', "
            "type(f).__name__)]; import fastlstm")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "ImportError: fastlstm's compiled extension (fastlstm._core) is not built" in last_line
    assert "pip install ." in last_line and "outside the source tree" in last_line
