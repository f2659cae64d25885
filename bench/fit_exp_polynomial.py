"""Fits the fp32 exp polynomial in csrc/kernels/vec_exp.h and prints it with its error.

exp(r) on |r| <= ln2/2 (what is left after Cody-Waite range reduction) is approximated by
1 + r + r^2 q(r), q of degree 4: the two lowest coefficients stay exactly 1, so exp(0) is exact and
small r loses nothing to rounding. q is chosen for the least maximum *relative* error by Lawson's
algorithm (iteratively reweighted least squares, which converges to the minimax fit on a grid).

    python bench/fit_exp_polynomial.py

prints the coefficients as vec_exp.h's kPoly (highest degree first, rounded to float) and the
maximum relative error before and after that rounding; tests/test_exp_polynomial.py checks that
the header holds exactly these coefficients and that error. Needs only numpy.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

HALF_LN2 = math.log(2) / 2
DEGREE = 6
GRID_POINTS = 2001  # Chebyshev nodes the fit equalises the error on
CHECK_POINTS = 400_001  # uniform points the error is measured on
LAWSON_ITERATIONS = 200


def fit_coefficients() -> np.ndarray:
    """float64 coefficients, highest degree first (the last two are 1)."""
    x = np.cos(np.pi * (np.arange(GRID_POINTS) + 0.5) / GRID_POINTS) * HALF_LN2
    # Relative error of 1 + x + x^2 q(x): (1 + x + x^2 q(x)) / e^x - 1, linear in q's coefficients.
    design = np.vander(x, DEGREE - 1) * (x**2 / np.exp(x))[:, None]
    target = (np.exp(x) - 1 - x) / np.exp(x)
    weights = np.full(x.shape, 1.0 / x.size)
    for _ in range(LAWSON_ITERATIONS):
        root = np.sqrt(weights)
        q = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)[0]
        weights = weights * np.abs(design @ q - target)
        weights /= weights.sum()
    return np.concatenate([q, [1.0, 1.0]])


def max_relative_error(coefficients: np.ndarray) -> float:
    """max |p(r) / e^r - 1| over |r| <= ln2/2, p evaluated in float64 (the truncation error alone)."""
    r = np.linspace(-HALF_LN2, HALF_LN2, CHECK_POINTS)
    return float(np.max(np.abs(np.polyval(coefficients, r) / np.exp(r) - 1)))


def float_coefficients() -> Tuple[List[float], float, float]:
    """(coefficients rounded to float, error before rounding, error after)."""
    exact = fit_coefficients()
    rounded = np.float32(exact).astype(np.float64)
    return [float(v) for v in rounded], max_relative_error(exact), max_relative_error(rounded)


def main() -> None:
    coefficients, exact_error, rounded_error = float_coefficients()
    body = ", ".join(np.format_float_positional(np.float32(v), unique=True, trim="0") + "f" for v in coefficients)
    print(f"kPoly[{DEGREE + 1}] = {{{body}}};")
    print(f"max relative error: {exact_error:.2e} as fitted, {rounded_error:.2e} with float coefficients")
    ulp = float(np.spacing(np.float32(1)))
    print(f"  = 1/{ulp / rounded_error:.0f} of an ulp of 1.0 ({ulp:.3g})")


if __name__ == "__main__":
    main()
