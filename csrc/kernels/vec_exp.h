// exp(x) for any Vec type: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then a
// polynomial in r scaled by 2^n. The polynomials keep the truncation error below half an ulp, so
// sigmoid/tanh built on them stay within the accuracy policy (fp32 1e-5, fp64 1e-12 over long
// sequences). NaN propagates: the clamps return their second operand on NaN.
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

template <class V>
inline typename V::Reg vec_exp(typename V::Reg x) {
  using C = ExpConstants<typename V::T>;
  x = V::max(V::set1(C::kMin), V::min(V::set1(C::kMax), x));
  // n = round(x log2e) from one fmadd: no separate rounding or float-to-int conversion.
  typename V::Reg shifted = V::fmadd(x, V::set1(C::kLog2e), V::set1(C::kShifter));
  typename V::Reg n = V::sub(shifted, V::set1(C::kShifter));
  typename V::Reg r = V::fnmadd(n, V::set1(C::kLn2Hi), x);
  r = V::fnmadd(n, V::set1(C::kLn2Lo), r);
  typename V::Reg p = V::set1(C::kPoly[0]);
  for (int k = 1; k <= C::kDegree; ++k) p = V::fmadd(p, r, V::set1(C::kPoly[k]));
  return V::scale_by_pow2(p, n, shifted);
}

template <class V>
inline typename V::Reg vec_sigmoid(typename V::Reg x) {
  using T = typename V::T;
  typename V::Reg one = V::set1(T(1));
  return V::div(one, V::add(one, vec_exp<V>(V::sub(V::zero(), x))));
}

// tanh(x) = 2 sigmoid(2x) - 1 = 2 / (1 + exp(-2x)) - 1: absolute error stays at ulp(1), which is
// what the state update needs.
template <class V>
inline typename V::Reg vec_tanh(typename V::Reg x) {
  using T = typename V::T;
  typename V::Reg e = vec_exp<V>(V::mul(x, V::set1(T(-2))));
  return V::sub(V::div(V::set1(T(2)), V::add(V::set1(T(1)), e)), V::set1(T(1)));
}
