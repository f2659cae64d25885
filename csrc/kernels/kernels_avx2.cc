// Kernels for AVX2 + FMA. Built with -mavx2 -mfma; only called after cpu_features says so.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../lstm_dims.h"
#include "kernels.h"
#include "vec_avx2.h"

namespace fastlstm {
namespace avx2 {

#include "lstm_kernels_impl.h"

const KernelTable<float>& kernels_f32() {
  static const KernelTable<float> table = Kernels<VecAvx2F32>::table("avx2");
  return table;
}

const KernelTable<double>& kernels_f64() {
  static const KernelTable<double> table = Kernels<VecAvx2F64>::table("avx2");
  return table;
}

// Reduced-precision weights, widened to float32 as they are loaded.
const KernelTable<float, Bf16>& kernels_bf16() {
  static const KernelTable<float, Bf16> table = Kernels<VecAvx2F32, Bf16>::table("avx2");
  return table;
}

const KernelTable<float, int8_t>& kernels_i8() {
  static const KernelTable<float, int8_t> table = Kernels<VecAvx2F32, int8_t>::table("avx2");
  return table;
}

}  // namespace avx2
}  // namespace fastlstm
