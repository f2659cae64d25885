// AVX-512F vectors: 16 floats or 8 doubles, one cache-line panel per register. Include only from a
// translation unit built with -mavx512f.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "../weight_formats.h"
#include "vec_exp.h"

struct VecAvx512F32 {
  using T = float;
  using Reg = __m512;
  static constexpr int kWidth = 16;
  static constexpr int kRegisters = 32;  // architectural vector registers
  using DotWeights = void;  // no dot-product instruction (see vec_avx512_vnni.h)
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(T v) { return _mm512_set1_ps(v); }
  static Reg load(const T* p) { return _mm512_loadu_ps(p); }
  // Stored weights widened to float, from words holding one unit's weights for 2 (bf16) or 4
  // (int8) consecutive k, lowest address first: w[s] then holds k + s for every unit.
  static void widen(const fastlstm::Bf16* p, Reg (&w)[2]) {
    const __m512i words = _mm512_loadu_si512(p);
    w[0] = _mm512_castsi512_ps(_mm512_slli_epi32(words, 16));  // a bf16 is a float's top half
    w[1] = _mm512_castsi512_ps(_mm512_and_si512(words, _mm512_set1_epi32(int32_t(0xFFFF0000u))));
  }
  static void widen(const int8_t* p, Reg (&w)[4]) {
    const __m512i words = _mm512_loadu_si512(p);
    w[0] = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(words, 24), 24));
    w[1] = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(words, 16), 24));
    w[2] = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(words, 8), 24));
    w[3] = _mm512_cvtepi32_ps(_mm512_srai_epi32(words, 24));
  }
  static void store(T* p, Reg v) { _mm512_storeu_ps(p, v); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  static Reg div(Reg a, Reg b) { return _mm512_div_ps(a, b); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg fnmadd(Reg a, Reg b, Reg c) { return _mm512_fnmadd_ps(a, b, c); }
  static Reg min(Reg a, Reg b) { return _mm512_min_ps(a, b); }  // returns b when either is NaN
  static Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  // Bitwise through the integer views: AVX-512F has no float and/or (that is AVX-512DQ).
  static Reg abs(Reg a) { return _mm512_abs_ps(a); }
  static Reg copy_sign(Reg magnitude, Reg sign) {
    const __m512i sign_bits = _mm512_and_epi32(_mm512_castps_si512(sign), _mm512_set1_epi32(INT32_MIN));
    return _mm512_castsi512_ps(_mm512_or_epi32(_mm512_castps_si512(magnitude), sign_bits));
  }
  static Reg scale_by_pow2(Reg p, Reg n, Reg /*shifted*/) { return _mm512_scalef_ps(p, n); }  // p * 2^n
  static Reg sigmoid(Reg a) { return vec_sigmoid<VecAvx512F32>(a); }
  static Reg tanh(Reg a) { return vec_tanh<VecAvx512F32>(a); }
};

struct VecAvx512F64 {
  using T = double;
  using Reg = __m512d;
  static constexpr int kWidth = 8;
  static constexpr int kRegisters = 32;  // architectural vector registers
  using DotWeights = void;  // no dot-product instruction (see vec_avx512_vnni.h)
  static Reg zero() { return _mm512_setzero_pd(); }
  static Reg set1(T v) { return _mm512_set1_pd(v); }
  static Reg load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, Reg v) { _mm512_storeu_pd(p, v); }
  static Reg add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_pd(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_pd(a, b); }
  static Reg div(Reg a, Reg b) { return _mm512_div_pd(a, b); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
  static Reg fnmadd(Reg a, Reg b, Reg c) { return _mm512_fnmadd_pd(a, b, c); }
  static Reg min(Reg a, Reg b) { return _mm512_min_pd(a, b); }
  static Reg max(Reg a, Reg b) { return _mm512_max_pd(a, b); }
  static Reg abs(Reg a) { return _mm512_abs_pd(a); }
  static Reg copy_sign(Reg magnitude, Reg sign) {
    const __m512i sign_bits = _mm512_and_epi64(_mm512_castpd_si512(sign), _mm512_set1_epi64(INT64_MIN));
    return _mm512_castsi512_pd(_mm512_or_epi64(_mm512_castpd_si512(magnitude), sign_bits));
  }
  static Reg scale_by_pow2(Reg p, Reg n, Reg /*shifted*/) { return _mm512_scalef_pd(p, n); }  // p * 2^n
  static Reg sigmoid(Reg a) { return vec_sigmoid<VecAvx512F64>(a); }
  static Reg tanh(Reg a) { return vec_tanh<VecAvx512F64>(a); }
};
