// The portable fallback "vector" of one element; the compiler may still auto-vectorise loops. Its
// activations use the same polynomial formulas as the SIMD sets (vec_exp.h), not libm, so every
// kernel set has the same accuracy.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../weight_formats.h"
#include "vec_exp.h"

template <typename Scalar>
struct VecScalar {
  using T = Scalar;
  using Reg = Scalar;
  // The unsigned integer of T's width, and where T's exponent field starts.
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static constexpr int kMantissaBits = sizeof(T) == 4 ? 23 : 52;
  static constexpr int kWidth = 1;
  static constexpr int kRegisters = 16;  // architectural vector registers
  using DotWeights = void;  // no dot-product instruction
  static Reg zero() { return Reg(0); }
  static Reg set1(T v) { return v; }
  static Reg load(const T* p) { return *p; }
  // Stored weights widened (float32 only): one unit's weights for 2 (bf16) or 4 (int8)
  // consecutive k, w[s] holding k + s.
  static void widen(const fastlstm::Bf16* p, Reg (&w)[2]) {
    static_assert(sizeof(T) == 4, "bf16 weights widen to float32");
    for (int s = 0; s < 2; ++s) {
      const uint32_t bits = uint32_t(p[s].bits) << 16;  // a bf16 is a float's top half
      std::memcpy(&w[s], &bits, sizeof(T));
    }
  }
  static void widen(const int8_t* p, Reg (&w)[4]) {
    for (int s = 0; s < 4; ++s) w[s] = static_cast<T>(p[s]);
  }
  static void store(T* p, Reg v) { *p = v; }
  static Reg add(Reg a, Reg b) { return a + b; }
  static Reg sub(Reg a, Reg b) { return a - b; }
  static Reg mul(Reg a, Reg b) { return a * b; }
  static Reg div(Reg a, Reg b) { return a / b; }
  static Reg fmadd(Reg a, Reg b, Reg c) { return a * b + c; }
  static Reg fnmadd(Reg a, Reg b, Reg c) { return c - a * b; }
  static Reg min(Reg a, Reg b) { return a < b ? a : b; }  // b when either is NaN, as the SIMD sets
  static Reg max(Reg a, Reg b) { return a > b ? a : b; }
  static Reg abs(Reg a) { return std::fabs(a); }
  static Reg copy_sign(Reg magnitude, Reg sign) { return std::copysign(magnitude, sign); }
  // p * 2^n; `shifted` holds n plus the exponent bias in its low bits (ExpConstants).
  static Reg scale_by_pow2(Reg p, Reg /*n*/, Reg shifted) {
    Bits bits;
    std::memcpy(&bits, &shifted, sizeof(bits));
    bits <<= kMantissaBits;
    T pow2n;
    std::memcpy(&pow2n, &bits, sizeof(pow2n));
    return p * pow2n;
  }
  static Reg sigmoid(Reg a) { return vec_sigmoid<VecScalar>(a); }
  static Reg tanh(Reg a) { return vec_tanh<VecScalar>(a); }
};
