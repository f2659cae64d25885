"""`python -m fastlstm.bench ...` is `fastlstm bench ...`, for use without the console script."""

import sys

from fastlstm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
