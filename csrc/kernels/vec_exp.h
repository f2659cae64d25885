// exp, expm1, sigmoid and tanh for any Vec type, the same formulas in every kernel set (the
// portable one included). Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then a
// polynomial in r scaled by 2^n. The polynomials keep the truncation error below half an ulp, so
// sigmoid and tanh stay within a few ulps of relative error (tests/test_activations.py).
// NaN propagates: the clamps return their second operand on NaN.
#pragma once

template <typename T>
struct ExpConstants;

template <>
struct ExpConstants<float> {
  static constexpr float kMin = -87.0f, kMax = 88.0f;  // 2^n stays a normal float
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  // Adding 1.5 * 2^23 rounds a float of magnitude below 2^22 to an integer, left in the low
  // mantissa bits; the extra 127 (the exponent bias) makes those bits, shifted up by 23, the float
  // 2^n itself (see Vec::scale_by_pow2).
  static constexpr float kShifter = 12582912.0f + 127.0f;
  // Degree 6, 1 + r + r^2 q(r) with q fitted for the least maximum relative error on [-ln2/2, ln2/2]
  // by bench/fit_exp_polynomial.py: 3.83e-9 with these float coefficients, a 31st of an ulp (Taylor's
  // degree 6 is at 1.6e-7, degree 7 at 7.0e-9). Highest degree first.
  static constexpr int kDegree = 6;
  static constexpr float kPoly[kDegree + 1] = {0.0013814613f, 0.00836871f, 0.04166839f, 0.16666521f,
                                               0.49999994f,   1.0f,        1.0f};
};

template <>
struct ExpConstants<double> {
  static constexpr double kMin = -708.0, kMax = 709.0;
  static constexpr double kLog2e = 1.4426950408889634074;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
  static constexpr double kShifter = 6755399441055744.0 + 1023.0;  // 1.5 * 2^52 + the exponent bias
  // Taylor, degree 13: 1/k!, highest degree first.
  static constexpr int kDegree = 13;
  static constexpr double kPoly[kDegree + 1] = {
      1.0 / 6227020800, 1.0 / 479001600, 1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040,
      1.0 / 720,        1.0 / 120,       1.0 / 24,       1.0 / 6,       1.0 / 2,      1.0,         1.0};
};

// The reduction shared by exp and expm1: x = n ln2 + r, |r| <= ln2/2, with 2^n's construction
// left in `shifted` (ExpConstants), and the polynomial short of its last step: e^r = 1 + r p(r).
// e^r - 1 = r p(r) is then relatively accurate however small r is.
template <class V>
struct ExpReduced {
  typename V::Reg n, shifted, r, p;
};

template <class V>
inline ExpReduced<V> vec_exp_reduce(typename V::Reg x) {
  using C = ExpConstants<typename V::T>;
  x = V::max(V::set1(C::kMin), V::min(V::set1(C::kMax), x));
  ExpReduced<V> e;
  // n = round(x log2e) from one fmadd: no separate rounding or float-to-int conversion.
  e.shifted = V::fmadd(x, V::set1(C::kLog2e), V::set1(C::kShifter));
  e.n = V::sub(e.shifted, V::set1(C::kShifter));
  e.r = V::fnmadd(e.n, V::set1(C::kLn2Hi), x);
  e.r = V::fnmadd(e.n, V::set1(C::kLn2Lo), e.r);
  e.p = V::set1(C::kPoly[0]);
  for (int k = 1; k < C::kDegree; ++k) e.p = V::fmadd(e.p, e.r, V::set1(C::kPoly[k]));
  return e;
}

template <class V>
inline typename V::Reg vec_exp(typename V::Reg x) {
  using T = typename V::T;
  const ExpReduced<V> e = vec_exp_reduce<V>(x);
  return V::scale_by_pow2(V::fmadd(e.p, e.r, V::set1(T(1))), e.n, e.shifted);
}

// e^x - 1 = 2^n m + (2^n - 1) with m = r p(r) = e^r - 1. With n = 0 (|x| < ln2/2) that is m
// itself, relatively accurate however small x is; otherwise |e^x - 1| > 0.29 and the sum cancels
// little.
template <class V>
inline typename V::Reg vec_expm1(typename V::Reg x) {
  using T = typename V::T;
  const ExpReduced<V> e = vec_exp_reduce<V>(x);
  const typename V::Reg pow2n = V::scale_by_pow2(V::set1(T(1)), e.n, e.shifted);
  return V::fmadd(pow2n, V::mul(e.r, e.p), V::sub(pow2n, V::set1(T(1))));
}

// 1 / (1 + e^-x): relatively accurate wherever the result is a normal number (x > -87 in fp32).
template <class V>
inline typename V::Reg vec_sigmoid(typename V::Reg x) {
  using T = typename V::T;
  typename V::Reg one = V::set1(T(1));
  return V::div(one, V::add(one, vec_exp<V>(V::sub(V::zero(), x))));
}

// tanh|x| = -u / (2 + u) with u = expm1(-2|x|), then x's sign. The textbook 2 / (1 + e^-2x) - 1
// cancels for small |x| (tanh(1e-8) would be 0); through expm1 the result keeps a few ulps of
// relative accuracy across the whole range, and tanh(-x) = -tanh(x) exactly.
template <class V>
inline typename V::Reg vec_tanh(typename V::Reg x) {
  using T = typename V::T;
  const typename V::Reg u = vec_expm1<V>(V::mul(V::abs(x), V::set1(T(-2))));
  const typename V::Reg magnitude = V::abs(V::div(u, V::add(V::set1(T(2)), u)));
  return V::copy_sign(magnitude, x);
}
