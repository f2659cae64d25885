"""Make the small model `fastlstm serve` serves when it is given no model file.

It is examples/airline_forecast.py's forecaster made small enough to ship inside the package (a few KB):
`nn.LSTM(1, HIDDEN, batch_first=True)` and `nn.Linear(HIDDEN, 1)` on the last step, trained (seeded,
full batch, on CPU) on the min-max scaled monthly airline passengers of 1949-1959, then converted with
`fastlstm.convert`. A request is one window of scaled months, shape (months, 1); the answer is the
next month, scaled. The scaling travels in the file's JSON companion (airline.json).

    python examples/bundled_model.py            # rewrites fastlstm/serve/models/airline.{safetensors,json}
    python examples/bundled_model.py --out DIR  # elsewhere

Needs torch. Rerunning it with the same torch version gives the same file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airline_forecast import WINDOW, train_forecaster  # noqa: E402

HIDDEN = 16
EPOCHS = 400
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "fastlstm" / "serve" / "models"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    import torch

    import fastlstm

    torch.use_deterministic_algorithms(True)
    model, x, _, low, high = train_forecaster(EPOCHS, hidden=HIDDEN, log=False)
    inputs = torch.from_numpy(x)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "airline.safetensors"
    fastlstm.convert(model, inputs[:2]).save(str(path))
    about = {
        "name": "airline-passengers forecaster",
        "description": (f"Monthly international airline passengers (thousands), 1949-1960. Input: a window of "
                        f"months (e.g. {WINDOW}), shape (months, 1), each value scaled as (passengers - min) / "
                        f"(max - min); output: the next month, scaled the same way."),
        "scaling": {"min": low, "max": high},
        "made_by": "examples/bundled_model.py",
    }
    (args.out / "airline.json").write_text(json.dumps(about, indent=2) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes) and airline.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
