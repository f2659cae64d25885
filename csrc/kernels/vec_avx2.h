// AVX2 + FMA vectors: 8 floats or 4 doubles. Include only from a translation unit built with
// -mavx2 -mfma.
#pragma once

#include <immintrin.h>

#include "../weight_formats.h"
#include "vec_exp.h"

struct VecAvx2F32 {
  using T = float;
  using Reg = __m256;
  static constexpr int kWidth = 8;
  static constexpr int kRegisters = 16;  // architectural vector registers
  using DotWeights = void;  // no dot-product instruction
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(T v) { return _mm256_set1_ps(v); }
  static Reg load(const T* p) { return _mm256_loadu_ps(p); }
  // Stored weights widened to float, from words holding one unit's weights for 2 (bf16) or 4
  // (int8) consecutive k, lowest address first: w[s] then holds k + s for every unit.
  static void widen(const fastlstm::Bf16* p, Reg (&w)[2]) {
    const __m256i words = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    w[0] = _mm256_castsi256_ps(_mm256_slli_epi32(words, 16));  // a bf16 is a float's top half
    w[1] = _mm256_castsi256_ps(_mm256_and_si256(words, _mm256_set1_epi32(int32_t(0xFFFF0000u))));
  }
  static void widen(const int8_t* p, Reg (&w)[4]) {
    const __m256i words = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    w[0] = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(words, 24), 24));
    w[1] = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(words, 16), 24));
    w[2] = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(words, 8), 24));
    w[3] = _mm256_cvtepi32_ps(_mm256_srai_epi32(words, 24));
  }
  static void store(T* p, Reg v) { _mm256_storeu_ps(p, v); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  static Reg div(Reg a, Reg b) { return _mm256_div_ps(a, b); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg fnmadd(Reg a, Reg b, Reg c) { return _mm256_fnmadd_ps(a, b, c); }
  static Reg min(Reg a, Reg b) { return _mm256_min_ps(a, b); }  // returns b when either is NaN
  static Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  static Reg abs(Reg a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  // |magnitude| with the sign of `sign`; magnitude must be non-negative.
  static Reg copy_sign(Reg magnitude, Reg sign) { return _mm256_or_ps(magnitude, _mm256_and_ps(_mm256_set1_ps(-0.0f), sign)); }
  // p * 2^n, n an integer-valued float; `shifted` holds n + 127 in its low bits (ExpConstants).
  static Reg scale_by_pow2(Reg p, Reg /*n*/, Reg shifted) {
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(shifted), 23)));
  }
  static Reg sigmoid(Reg a) { return vec_sigmoid<VecAvx2F32>(a); }
  static Reg tanh(Reg a) { return vec_tanh<VecAvx2F32>(a); }
};

struct VecAvx2F64 {
  using T = double;
  using Reg = __m256d;
  static constexpr int kWidth = 4;
  static constexpr int kRegisters = 16;  // architectural vector registers
  using DotWeights = void;  // no dot-product instruction
  static Reg zero() { return _mm256_setzero_pd(); }
  static Reg set1(T v) { return _mm256_set1_pd(v); }
  static Reg load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, Reg v) { _mm256_storeu_pd(p, v); }
  static Reg add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_pd(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_pd(a, b); }
  static Reg div(Reg a, Reg b) { return _mm256_div_pd(a, b); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
  static Reg fnmadd(Reg a, Reg b, Reg c) { return _mm256_fnmadd_pd(a, b, c); }
  static Reg min(Reg a, Reg b) { return _mm256_min_pd(a, b); }
  static Reg max(Reg a, Reg b) { return _mm256_max_pd(a, b); }
  static Reg abs(Reg a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
  static Reg copy_sign(Reg magnitude, Reg sign) { return _mm256_or_pd(magnitude, _mm256_and_pd(_mm256_set1_pd(-0.0), sign)); }
  // p * 2^n, n an integer-valued double; `shifted` holds n + 1023 in its low bits (ExpConstants).
  static Reg scale_by_pow2(Reg p, Reg /*n*/, Reg shifted) {
    return _mm256_mul_pd(p, _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(shifted), 52)));
  }
  static Reg sigmoid(Reg a) { return vec_sigmoid<VecAvx2F64>(a); }
  static Reg tanh(Reg a) { return vec_tanh<VecAvx2F64>(a); }
};
