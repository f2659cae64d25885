"""Helpers for the fastlstm.convert tests: comparing nested outputs with torch's, and running
saved models in a child process where `import torch` fails."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch

from child_process import run_python

# The bounds: fp32 within 2e-5 of the output's scale, fp64 1e-12, integers exact.
RELATIVE_BOUND = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def to_numpy_tree(value: Any) -> Any:
    """Tensors -> arrays, keeping tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, tuple):
        return tuple(to_numpy_tree(v) for v in value)
    if isinstance(value, list):
        return [to_numpy_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: to_numpy_tree(v) for k, v in value.items()}
    return value


def assert_outputs_match(reference: Any, got: Any, where: str = "output") -> float:
    """Same nesting, shapes and dtypes; floats within the bounds, integers exact. Returns the
    worst scaled error."""
    if isinstance(reference, torch.Tensor):
        reference = reference.detach().numpy()
    if isinstance(got, torch.Tensor):
        got = got.numpy()
    if isinstance(reference, np.ndarray):
        assert isinstance(got, np.ndarray), f"{where}: expected an array, got {type(got).__name__}"
        assert got.shape == reference.shape, f"{where}: shape {got.shape}, torch {reference.shape}"
        assert got.dtype == reference.dtype, f"{where}: dtype {got.dtype}, torch {reference.dtype}"
        if reference.dtype.kind != "f":
            assert np.array_equal(got, reference), f"{where}: integer/bool values differ from torch"
            return 0.0
        if reference.size == 0:
            return 0.0
        assert np.isfinite(got).all() == np.isfinite(reference).all(), f"{where}: non-finite values differ"
        scale = max(1.0, float(np.max(np.abs(reference))))
        error = float(np.max(np.abs(got.astype(np.float64) - reference.astype(np.float64))))
        bound = RELATIVE_BOUND[reference.dtype] * scale
        assert error <= bound, f"{where}: max abs error {error:.3g} exceeds {bound:.3g} (scale {scale:.3g})"
        return error / scale
    if isinstance(reference, (tuple, list)):
        assert type(got) is type(reference), f"{where}: {type(got).__name__}, torch {type(reference).__name__}"
        assert len(got) == len(reference), f"{where}: {len(got)} items, torch {len(reference)}"
        return max([assert_outputs_match(r, g, f"{where}[{i}]") for i, (r, g) in enumerate(zip(reference, got))],
                   default=0.0)
    if isinstance(reference, dict):
        assert isinstance(got, dict) and set(got) == set(reference), f"{where}: keys {list(got)}, torch {list(reference)}"
        return max([assert_outputs_match(reference[k], got[k], f"{where}[{k!r}]") for k in reference], default=0.0)
    assert got == reference, f"{where}: {got!r}, torch {reference!r}"
    return 0.0


_CHILD = """
import pickle, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
import json
import numpy as np
import fastlstm
try:
    import torch  # noqa: F401
    torch_importable = True
except ImportError:
    torch_importable = False
with open({cases!r}, "rb") as handle:
    cases = pickle.load(handle)
results = []
for model_path, runs in cases:
    model = fastlstm.load(model_path)
    assert type(model) is fastlstm.Model, type(model)
    results.append([model(*inputs) for inputs in runs])
with open({results!r}, "wb") as handle:
    pickle.dump(results, handle)
loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
print(json.dumps({{"torch_importable": torch_importable, "torch_modules": loaded}}))
"""


def run_saved_models_without_torch(directory: Path, cases: Sequence[Tuple[str, List[tuple]]],
                                   timeout: float = 120) -> List[List[Any]]:
    """Load each saved model in one child process where importing torch fails, run it on each
    tuple of numpy inputs, and return the outputs (numpy, nested as forward returns them)."""
    cases_path, results_path = directory / "cases.pkl", directory / "results.pkl"
    with open(cases_path, "wb") as handle:
        pickle.dump(list(cases), handle)
    report = run_python(_CHILD.format(cases=str(cases_path), results=str(results_path)), timeout=timeout)
    assert report["torch_importable"] is False
    assert report["torch_modules"] == ["torch"], f"fastlstm imported torch modules: {report['torch_modules']}"
    with open(results_path, "rb") as handle:
        return pickle.load(handle)
