// AVX512_BF16: vec_avx512.h's float32 vectors plus vdpbf16ps, two bf16 products summed into each
// float32 lane, for bf16 weights. Include only from a translation unit built with -mavx512bf16.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "vec_avx512.h"

struct VecAvx512Bf16 : VecAvx512F32 {
  using DotWeights = fastlstm::Bf16;
  using DReg = __m512;
  static DReg dzero() { return _mm512_setzero_ps(); }
  // One vector of units' bf16 weights for 2 consecutive k (the bf16 pair layout, kernels.h).
  static DReg load_dot(const fastlstm::Bf16* p) { return _mm512_castsi512_ps(_mm512_loadu_si512(p)); }
  // acc += in each lane: the 2 bf16 of `a` times the lane's 2 bf16 weights.
  static DReg dot_add(DReg acc, uint32_t a, DReg w) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_set1_epi32(int32_t(a)), (__m512bh)_mm512_castps_si512(w));
  }
};
