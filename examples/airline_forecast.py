"""Train the classic airline-passengers forecaster in PyTorch, convert it with fastlstm, and serve it
without torch.

The series is the monthly number of international airline passengers, 1949-1960 (144 months). It is
min-max scaled to [0, 1] and cut into windows of 12 months, each labelled with the month after it. The
model is `nn.LSTM(1, 100, batch_first=True)` followed by `nn.Linear(100, 1)` on the last step. It is
trained on every month but the last 12, for a fixed number of epochs (a few seconds on a CPU, seeded),
then `fastlstm.convert` turns the whole module into one .safetensors file.

A second process, in which importing torch fails, loads that file with `fastlstm.load` and forecasts
the last 12 months autoregressively (each forecast is fed back as the next input), prints actual
against forecast and draws forecast.png (the series, torch's forecast and fastlstm's). The training
side then prints the largest difference between the two forecasts.

Run it:

    python examples/airline_forecast.py                    # train, convert, serve; files go in ./airline-out/
    python examples/airline_forecast.py --epochs 50 --out /tmp/airline
    python examples/airline_forecast.py --serve MODEL.safetensors   # the torch-free part alone

It needs torch and matplotlib for the training part; the serving part needs only fastlstm, numpy and
matplotlib.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "airline_passengers.csv"
WINDOW = 12  # months of history per prediction
HORIZON = 12  # months forecast at the end of the series
HIDDEN = 100
SEED = 0


# ----------------------------------------------------------------------------------------- the data
def read_series(path: Path = DATA) -> Tuple[List[str], np.ndarray]:
    """Month labels ('1949-01', ...) and passengers, from the CSV's year,month,passengers columns."""
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"]
    labels = [f"{row['year']}-{months.index(row['month']) + 1:02d}" for row in rows]
    return labels, np.array([float(row["passengers"]) for row in rows])


def scaler(train: np.ndarray) -> Tuple[float, float]:
    """Min and max of the training part: the forecast months must not leak into the scaling."""
    return float(train.min()), float(train.max())


def windows(scaled: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, WINDOW, 1) inputs, each followed by its (N, 1) next month."""
    x = np.stack([scaled[i: i + WINDOW] for i in range(len(scaled) - WINDOW)])
    return x[:, :, None].astype(np.float32), scaled[WINDOW:, None].astype(np.float32)


def forecast(predict, history: np.ndarray, steps: int = HORIZON) -> np.ndarray:
    """Autoregression: predict the next month from the last WINDOW, append it, repeat `steps` times.
    `predict` maps a (1, WINDOW, 1) float32 array to a (1, 1) one."""
    values = list(history[-WINDOW:].astype(np.float32))
    for _ in range(steps):
        window = np.array(values[-WINDOW:], dtype=np.float32).reshape(1, WINDOW, 1)
        values.append(float(np.asarray(predict(window)).reshape(())))
    return np.array(values[WINDOW:])


# --------------------------------------------------------------------------- training (torch side)
def train_forecaster(epochs: int, hidden: int = HIDDEN, log: bool = True) -> Tuple[Any, np.ndarray, np.ndarray, float, float]:
    """The forecaster (nn.LSTM(1, hidden) + Linear on the last step) trained, seeded and full batch, on
    the scaled series but its last HORIZON months: (model in eval mode, the training windows, the
    scaled series, min, max)."""
    import torch
    from torch import nn

    class Forecaster(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(1, hidden, batch_first=True)
            self.linear = nn.Linear(hidden, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(x)
            return self.linear(out[:, -1, :])

    _, passengers = read_series()
    low, high = scaler(passengers[:-HORIZON])
    scaled = (passengers - low) / (high - low)
    x, y = windows(scaled[:-HORIZON])

    torch.manual_seed(SEED)
    model = Forecaster()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(1, epochs + 1):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimiser.step()
        if log and (epoch == 1 or epoch % 50 == 0 or epoch == epochs):
            print(f"epoch {epoch:4d}  training MSE {loss.item():.5f}")
    return model.eval(), x, scaled, low, high


def train_and_convert(epochs: int, out: Path) -> Tuple[Path, np.ndarray]:
    """Train the forecaster, save the converted model, return its path and torch's scaled forecast."""
    import torch

    import fastlstm

    model, x, scaled, low, high = train_forecaster(epochs)
    with torch.inference_mode():
        torch_forecast = forecast(lambda w: model(torch.from_numpy(w)).numpy(), scaled[:-HORIZON])

    converted = fastlstm.convert(model, torch.from_numpy(x[:2]))
    path = out / "airline.safetensors"
    converted.save(str(path))
    (out / "scaling.json").write_text(json.dumps({"min": low, "max": high}))
    print(f"saved {path}")
    return path, torch_forecast


# ---------------------------------------------------------------------------- serving (torch-free)
def serve(model_path: Path, out: Path) -> np.ndarray:
    """Load the converted model with fastlstm alone, forecast the last HORIZON months, print a table and
    plot; return the scaled forecast."""
    import fastlstm

    model = fastlstm.load(str(model_path))
    scaling = json.loads((model_path.parent / "scaling.json").read_text())
    low, high = scaling["min"], scaling["max"]
    labels, passengers = read_series()
    scaled = (passengers - low) / (high - low)
    predicted = forecast(model, scaled[:-HORIZON])
    passengers_forecast = predicted * (high - low) + low

    print(f"\n{'month':<8} {'actual':>7} {'forecast':>9}")
    for label, actual, guess in zip(labels[-HORIZON:], passengers[-HORIZON:], passengers_forecast):
        print(f"{label:<8} {actual:7.0f} {guess:9.1f}")
    np.save(out / "fastlstm_forecast.npy", predicted)
    torch_file = model_path.parent / "torch_forecast.npy"  # written beside the model by the training side
    torch_forecast = np.load(torch_file) if torch_file.exists() else None
    print(f"wrote {plot(out, (low, high), torch_forecast, predicted)}")
    return predicted


def plot(out: Path, scaling: Tuple[float, float], torch_forecast: "np.ndarray | None", fastlstm_forecast: np.ndarray) -> Path:
    """The whole series, with the torch forecast (if given) and fastlstm's over its last HORIZON months."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low, high = scaling
    unscale = lambda values: values * (high - low) + low  # noqa: E731
    _, passengers = read_series()
    months = np.arange(len(passengers))
    tail = months[-HORIZON:]
    figure, axes = plt.subplots(figsize=(9, 4.5))
    axes.plot(months, passengers, color="black", label="actual")
    if torch_forecast is not None:
        axes.plot(tail, unscale(torch_forecast), "o-", color="tab:blue", label="torch forecast")
    axes.plot(tail, unscale(fastlstm_forecast), "x--", color="tab:orange", label="fastlstm forecast (no torch)")
    axes.axvline(len(passengers) - HORIZON - 0.5, color="grey", linewidth=0.8)
    axes.set(xlabel="months since January 1949", ylabel="passengers (thousands)",
             title="Airline passengers: 12-month autoregressive forecast")
    axes.legend()
    figure.tight_layout()
    path = out / "forecast.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def serve_without_torch(model_path: Path, out: Path) -> np.ndarray:
    """Run `--serve` in a child process where `import torch` fails; return its forecast."""
    model_path, out = model_path.resolve(), out.resolve()
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            f"sys.argv = [{str(Path(__file__).resolve())!r}, '--serve', {str(model_path)!r}, '--out', {str(out)!r}]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    # Run from the output folder: started in a source checkout, `-c` would import the unbuilt package there.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=out)
    return np.load(out / "fastlstm_forecast.npy")


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=300, help="full-batch training epochs (default: 300)")
    parser.add_argument("--out", type=Path, default=Path("airline-out"), help="output folder (default: ./airline-out)")
    parser.add_argument("--serve", type=Path, metavar="MODEL",
                        help="only forecast with a converted model file, without torch")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.serve is not None:
        serve(args.serve, args.out)
        return 0
    model_path, torch_forecast = train_and_convert(args.epochs, args.out)
    np.save(args.out / "torch_forecast.npy", torch_forecast)
    fastlstm_forecast = serve_without_torch(model_path, args.out)
    difference = float(np.max(np.abs(fastlstm_forecast - torch_forecast)))
    print(f"\nmax abs difference, torch vs fastlstm forecast (scaled): {difference:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
