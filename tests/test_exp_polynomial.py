"""The exp polynomials in csrc/kernels/vec_exp.h (the accuracy of every sigmoid and tanh rests on
them): the fp32 one is the one bench/fit_exp_polynomial.py fits, with the error its comment states;
the fp64 one stays below a quarter of an ulp, measured in extended precision."""

from __future__ import annotations

import decimal
import importlib.util
import math
import re
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import List

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


# ----------------------------------------------------------------------------------- fp64
def header_double_polynomial() -> List[float]:
    """ExpConstants<double>::kPoly as the compiler builds it: each entry a double literal or a
    quotient of two (`1.0 / 6227020800`), divided in double (correctly rounded, as in C++)."""
    text = HEADER.read_text(encoding="utf-8")
    double_part = text[text.index("struct ExpConstants<double>") :]
    body = re.search(r"kPoly\[kDegree \+ 1\] = \{([^}]*)\}", double_part)
    assert body is not None, "kPoly not found in vec_exp.h's double constants"
    coefficients = []
    for entry in body.group(1).split(","):
        match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(?:/\s*([0-9.eE+-]+))?\s*", entry)
        assert match is not None, f"cannot read the coefficient {entry.strip()!r}"
        value = float(match.group(1))
        coefficients.append(value / float(match.group(2)) if match.group(2) else value)
    degree = re.search(r"kDegree = (\d+);", double_part)
    assert degree is not None and len(coefficients) == int(degree.group(1)) + 1
    return coefficients


def double_relative_error(coefficients: List[float], points: int = 2001) -> float:
    """max |p(r) / e^r - 1| over |r| <= ln2/2 (what Cody-Waite reduction leaves), with the double
    coefficients and points as they are and everything else in 60-digit decimal arithmetic: the
    polynomial's own error (truncation and coefficient rounding), free of evaluation rounding.
    float64 cannot measure this (its own rounding is 1.1e-16) and numpy's longdouble is not
    extended on every platform."""
    context = decimal.Context(prec=60)
    exact = [Decimal(c) for c in coefficients]  # Decimal(float) is exact
    half_ln2 = math.log(2) / 2
    worst = Decimal(0)
    for r in np.linspace(-half_ln2, half_ln2, points):  # endpoints included: the error peaks at -ln2/2
        x = Decimal(float(r))
        p = Decimal(0)
        for c in exact:
            p = context.add(context.multiply(p, x), c)
        worst = max(worst, abs(context.divide(p, context.exp(x)) - 1))
    return float(worst)


# A quarter of an ulp of 1.0 (2^-52): the polynomial's error must stay well below exp's final
# rounding (half an ulp). The header's degree-13 Taylor polynomial measures 5.2e-18 (a 43rd of an
# ulp); without its last term (1/13!) it is 2.3e-16, without 1/11! 3.1e-13.
DOUBLE_BOUND = 2.0**-53 / 2


def test_double_polynomial_below_a_quarter_ulp() -> None:
    coefficients = header_double_polynomial()
    assert coefficients[-2:] == [1.0, 1.0]  # exp(0) = 1 exactly, and the r term exact
    error = double_relative_error(coefficients)
    assert error < DOUBLE_BOUND, f"fp64 exp polynomial relative error {error:.3e} >= 2^-54 ({DOUBLE_BOUND:.3e})"


def test_double_bound_notices_a_missing_term() -> None:
    """The bound is tight enough to see each term: zeroing even the smallest (the highest degree)
    breaks it, and the 1/11! term a mutation test once zeroed unnoticed breaks it by far."""
    coefficients = header_double_polynomial()
    for index in range(len(coefficients) - 2):
        mutated = list(coefficients)
        mutated[index] = 0.0
        assert double_relative_error(mutated, points=201) > DOUBLE_BOUND, f"zeroing kPoly[{index}] went unnoticed"
    without_r11 = list(coefficients)
    without_r11[len(coefficients) - 1 - 11] = 0.0  # highest degree first: r^11's coefficient
    assert double_relative_error(without_r11) > 1000 * DOUBLE_BOUND
