// Kernels for AVX2 + FMA. Built with -mavx2 -mfma; only called after cpu_features says so.
#include <cstdint>
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

}  // namespace avx2
}  // namespace fastlstm
