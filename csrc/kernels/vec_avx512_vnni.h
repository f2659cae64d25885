// AVX-512 VNNI: vec_avx512.h's float32 vectors plus vpdpbusd, four byte products summed into each
// 32-bit lane, for int8 weights. Include only from a translation unit built with -mavx512vnni.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "vec_avx512.h"

struct VecAvx512Vnni : VecAvx512F32 {
  using DotWeights = int8_t;
  using DReg = __m512i;
  static DReg dzero() { return _mm512_setzero_si512(); }
  // One vector of units' int8 weights for 4 consecutive k (the int8 quad layout, kernels.h).
  static DReg load_dot(const int8_t* p) { return _mm512_loadu_si512(p); }
  // acc += in each lane: the 4 unsigned bytes of `a` times the lane's 4 signed weight bytes.
  static DReg dot_add(DReg acc, uint32_t a, DReg w) { return _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(int32_t(a)), w); }
  // 256 * (hi - 128 * sums) + lo as floats: the dot product of the weights with activations split
  // into a high byte stored plus 128 and a low byte (Kernels::split_row). Exact in int32.
  static Reg combine(DReg hi, DReg lo, const int32_t* sums) {
    const DReg centred = _mm512_sub_epi32(hi, _mm512_slli_epi32(_mm512_loadu_si512(sums), 7));
    return _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(centred, 8), lo));
  }
};
