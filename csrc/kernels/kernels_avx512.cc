// Kernels for AVX-512F. Built with -mavx512f; only called after cpu_features says so.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../lstm_dims.h"
#include "kernels.h"
#include "vec_avx512.h"

namespace fastlstm {
namespace avx512 {

#include "lstm_kernels_impl.h"

const KernelTable<float>& kernels_f32() {
  static const KernelTable<float> table = Kernels<VecAvx512F32>::table("avx512");
  return table;
}

const KernelTable<double>& kernels_f64() {
  static const KernelTable<double> table = Kernels<VecAvx512F64>::table("avx512");
  return table;
}

// Reduced-precision weights, widened to float32 as they are loaded.
const KernelTable<float, Bf16>& kernels_bf16() {
  static const KernelTable<float, Bf16> table = Kernels<VecAvx512F32, Bf16>::table("avx512");
  return table;
}

const KernelTable<float, int8_t>& kernels_i8() {
  static const KernelTable<float, int8_t> table = Kernels<VecAvx512F32, int8_t>::table("avx512");
  return table;
}

}  // namespace avx512
}  // namespace fastlstm
