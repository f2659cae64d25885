"""Shared fixtures and helpers for the correctness suite: torch's nn.LSTM is the oracle.

* `isa`: runs a test once per instruction set this CPU supports (fastlstm.set_isa), restoring the
  previous kernel set afterwards. Grids parametrize it indirectly so that the best ISA gets the
  full grid and the others a reduced one (`isa_params`).
* `make_torch_lstm` / `run_torch` / `run_fast` / `compare`: build an nn.LSTM from a fixed seed,
  run both engines on the same input and measure the max abs error of output, h_n and c_n.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastlstm  # noqa: E402

SUPPORTED_ISAS: List[str] = list(fastlstm.cpu_info()["supported_isas"])
# supported_isas is ascending (scalar < avx2 < avx512): the last one is what import picks.
BEST_ISA: str = SUPPORTED_ISAS[-1]

# The accuracy policy (DESIGN.md): max abs error against nn.LSTM on the same weights.
TOLERANCE: Dict[Any, float] = {np.float32: 1e-5, np.float64: 1e-12}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def tolerance(dtype: Any) -> float:
    return TOLERANCE[np.dtype(dtype).type]


# Worst errors seen during the run, per (dtype name, what it was measured against); printed in the
# terminal summary at the end of the session.
WORST_ERRORS: Dict[Tuple[str, str], Tuple[float, str]] = {}


def record_error(dtype: Any, error: float, where: str, against: str = "nn.LSTM, same dtype") -> None:
    key = (np.dtype(dtype).name, against)
    if key not in WORST_ERRORS or error > WORST_ERRORS[key][0]:
        WORST_ERRORS[key] = (error, where)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: D103
    if WORST_ERRORS:
        terminalreporter.write_sep("-", "fastlstm worst max-abs error, per dtype")
        for (name, against), (error, where) in sorted(WORST_ERRORS.items()):
            terminalreporter.write_line(f"{name} vs {against}: {error:.3e}  ({where})")


# ------------------------------------------------------------------------------------------ ISA
@contextlib.contextmanager
def active_isa(name: str):
    previous = fastlstm.cpu_info()["isa"]
    fastlstm.set_isa(name)
    try:
        assert fastlstm.cpu_info()["isa"] == name
        yield name
    finally:
        fastlstm.set_isa(previous)


@pytest.fixture(params=SUPPORTED_ISAS)
def isa(request):
    """Run the test under each supported kernel set (or the one given by indirect parametrize)."""
    with active_isa(request.param) as name:
        yield name


def isa_params(cases: Sequence[Any], reduced: Iterable[int], ids: Sequence[str]) -> Tuple[list, list]:
    """(isa, case) pairs: every case under BEST_ISA, the cases at indices `reduced` under the other
    ISAs. Use with `parametrize("isa,case", ..., indirect=["isa"])`."""
    reduced = set(reduced)
    values, names = [], []
    for isa_name in SUPPORTED_ISAS:
        for index, (case, case_id) in enumerate(zip(cases, ids)):
            if isa_name == BEST_ISA or index in reduced:
                values.append((isa_name, case))
                names.append(f"{isa_name}-{case_id}")
    return values, names


# ------------------------------------------------------------------------------------------ torch
def make_torch_lstm(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
    dtype: Any = np.float32,
    seed: int = 0,
) -> nn.Module:
    """An eval-mode nn.LSTM with weights drawn from `seed` at nn.LSTM's own init scale."""
    torch.manual_seed(seed)
    module = nn.LSTM(
        input_size,
        hidden_size,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        dropout=dropout,
        bidirectional=bidirectional,
        proj_size=proj_size,
        dtype=TORCH_DTYPE[np.dtype(dtype).type],
    )
    return module.eval()


def to_tensor(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    return value


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().numpy()


def run_torch(module: nn.Module, x: Any, hx: Optional[Tuple[Any, Any]] = None, lengths: Any = None):
    """nn.LSTM's (output, h_n, c_n) as numpy arrays. `lengths` runs it through a PackedSequence
    (enforce_sorted=False) and pads the output back to the input's full length with zeros."""
    x_t = to_tensor(x)
    hx_t = None if hx is None else (to_tensor(hx[0]), to_tensor(hx[1]))
    with torch.no_grad():
        if lengths is None:
            output, (h_n, c_n) = module(x_t, hx_t)
        else:
            steps = x_t.shape[1] if module.batch_first else x_t.shape[0]
            packed = pack_padded_sequence(
                x_t, torch.as_tensor(np.asarray(lengths), dtype=torch.int64), batch_first=module.batch_first,
                enforce_sorted=False,
            )
            packed_out, (h_n, c_n) = module(packed, hx_t)
            output, _ = pad_packed_sequence(packed_out, batch_first=module.batch_first, total_length=steps)
    return to_numpy(output), to_numpy(h_n), to_numpy(c_n)


def run_fast(model: fastlstm.LSTM, x: Any, hx: Optional[Tuple[Any, Any]] = None, lengths: Any = None):
    """fastlstm's (output, h_n, c_n) as numpy arrays, whatever container came back."""
    output, (h_n, c_n) = model(x, hx, lengths=lengths)
    return to_numpy(output), to_numpy(h_n), to_numpy(c_n)


def max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def compare(fast: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> Dict[str, float]:
    """Max abs error of output, h_n and c_n; also checks shapes and dtypes agree."""
    errors = {}
    for name, got, want in zip(("output", "h_n", "c_n"), fast, reference):
        assert got.shape == want.shape, f"{name}: fastlstm shape {got.shape}, torch {want.shape}"
        assert got.dtype == want.dtype, f"{name}: fastlstm dtype {got.dtype}, torch {want.dtype}"
        assert np.isfinite(got).all(), f"{name}: fastlstm produced non-finite values"
        errors[name] = max_abs_error(got, want)
    return errors


def assert_matches_torch(fast, reference, dtype, where: str = "") -> float:
    errors = compare(fast, reference)
    worst = max(errors.values())
    record_error(dtype, worst, where)
    assert worst <= tolerance(dtype), f"max abs error {errors} exceeds {tolerance(dtype):g} ({where})"
    return worst


def random_input(rng: np.random.Generator, shape: Sequence[int], dtype: Any, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


def random_state(rng: np.random.Generator, module: nn.Module, batch: Optional[int], dtype: Any):
    """(h0, c0) of nn.LSTM's shapes (batch None = unbatched 2-D states), never batch-first."""
    layers = module.num_layers * (2 if module.bidirectional else 1)
    h_out = module.proj_size or module.hidden_size
    lead = (layers,) if batch is None else (layers, batch)
    h0 = random_input(rng, lead + (h_out,), dtype, 0.5)
    c0 = random_input(rng, lead + (module.hidden_size,), dtype, 0.5)
    return h0, c0
