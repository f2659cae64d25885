#!/usr/bin/env python
"""Same as `fastlstm bench ...`, for a source checkout where the console script is not installed.

Example: python bench/run_bench.py --configs small,medium --seconds 2
"""

import sys
from pathlib import Path

# Prefer the checkout's package when run from a source tree.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastlstm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
