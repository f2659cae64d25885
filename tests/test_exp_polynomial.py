"""The fp32 exp polynomial in csrc/kernels/vec_exp.h is the one bench/fit_exp_polynomial.py fits,
with the error its comment states (the accuracy of every sigmoid and tanh rests on it)."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from types import ModuleType

import numpy as np

REPO = Path(__file__).resolve().parent.parent
HEADER = REPO / "csrc" / "kernels" / "vec_exp.h"


def fit_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fit_exp_polynomial", REPO / "bench" / "fit_exp_polynomial.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def header_float_polynomial() -> list:
    text = HEADER.read_text(encoding="utf-8")
    float_part = text[text.index("struct ExpConstants<float>") : text.index("struct ExpConstants<double>")]
    body = re.search(r"kPoly\[kDegree \+ 1\] = \{([^}]*)\}", float_part)
    assert body is not None, "kPoly not found in vec_exp.h's float constants"
    return [float(np.float32(value.strip().rstrip("f"))) for value in body.group(1).split(",")]


def test_header_holds_the_fitted_coefficients() -> None:
    fitted, _exact_error, _rounded_error = fit_script().float_coefficients()
    assert header_float_polynomial() == fitted


def taylor(degree: int) -> np.ndarray:
    return np.array([1 / math.factorial(k) for k in range(degree, -1, -1)])


def test_stated_errors_are_the_measured_ones() -> None:
    script = fit_script()
    error = script.max_relative_error(np.array(header_float_polynomial()))
    # The figures vec_exp.h's comment quotes.
    assert f"{error:.2e}" == "3.83e-09"
    assert f"{script.max_relative_error(taylor(6)):.1e}" == "1.6e-07"
    assert f"{script.max_relative_error(taylor(7)):.1e}" == "7.0e-09"
    assert error < np.spacing(np.float32(1)) / 2  # below half an ulp: exp's rounding, not its polynomial, dominates
