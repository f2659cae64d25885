// exp(x) for any Vec type: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then a Taylor
// polynomial in r scaled by 2^n. Degree 7 (float) and 13 (double) keep the truncation error below
// half an ulp, so sigmoid/tanh built on it stay within the accuracy policy (fp32 1e-5, fp64 1e-12
// over long sequences). NaN propagates: the clamps return their second operand on NaN.
#pragma once

template <typename T>
struct ExpConstants;

template <>
struct ExpConstants<float> {
  static constexpr float kMin = -87.0f, kMax = 88.0f;  // 2^n stays a normal float
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  static constexpr int kDegree = 7;
};

template <>
struct ExpConstants<double> {
  static constexpr double kMin = -708.0, kMax = 709.0;
  static constexpr double kLog2e = 1.4426950408889634074;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
  static constexpr int kDegree = 13;
};

template <class V>
inline typename V::Reg vec_exp(typename V::Reg x) {
  using T = typename V::T;
  using C = ExpConstants<T>;
  x = V::max(V::set1(C::kMin), V::min(V::set1(C::kMax), x));
  typename V::Reg n = V::round(V::mul(x, V::set1(C::kLog2e)));
  typename V::Reg r = V::fnmadd(n, V::set1(C::kLn2Hi), x);
  r = V::fnmadd(n, V::set1(C::kLn2Lo), r);
  // Horner on the Taylor series: 1 + r(1 + r/2(1 + r/3(...))) written with 1/k! coefficients.
  T inverse_factorial[C::kDegree + 1];
  inverse_factorial[0] = T(1);
  for (int k = 1; k <= C::kDegree; ++k) inverse_factorial[k] = inverse_factorial[k - 1] / T(k);
  typename V::Reg p = V::set1(inverse_factorial[C::kDegree]);
  for (int k = C::kDegree - 1; k >= 0; --k) p = V::fmadd(p, r, V::set1(inverse_factorial[k]));
  return V::scale_by_pow2(p, n);
}

template <class V>
inline typename V::Reg vec_sigmoid(typename V::Reg x) {
  using T = typename V::T;
  typename V::Reg one = V::set1(T(1));
  return V::div(one, V::add(one, vec_exp<V>(V::sub(V::zero(), x))));
}

// tanh(x) = 2 sigmoid(2x) - 1: absolute error stays at ulp(1), which is what the state update needs.
template <class V>
inline typename V::Reg vec_tanh(typename V::Reg x) {
  using T = typename V::T;
  typename V::Reg s = vec_sigmoid<V>(V::add(x, x));
  return V::sub(V::add(s, s), V::set1(T(1)));
}
