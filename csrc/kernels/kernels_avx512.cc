// Kernels for AVX-512F. Built with -mavx512f; only called after cpu_features says so.
#include <cstdint>
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

}  // namespace avx512
}  // namespace fastlstm
