// The portable kernels: no ISA flags, so this path runs on any CPU.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../lstm_dims.h"
#include "kernels.h"
#include "vec_scalar.h"

namespace fastlstm {
namespace scalar {

#include "lstm_kernels_impl.h"

const KernelTable<float>& kernels_f32() {
  static const KernelTable<float> table = Kernels<VecScalar<float>>::table("scalar");
  return table;
}

const KernelTable<double>& kernels_f64() {
  static const KernelTable<double> table = Kernels<VecScalar<double>>::table("scalar");
  return table;
}

// Reduced-precision weights, widened to float32 as they are loaded.
const KernelTable<float, Bf16>& kernels_bf16() {
  static const KernelTable<float, Bf16> table = Kernels<VecScalar<float>, Bf16>::table("scalar");
  return table;
}

const KernelTable<float, int8_t>& kernels_i8() {
  static const KernelTable<float, int8_t> table = Kernels<VecScalar<float>, int8_t>::table("scalar");
  return table;
}

}  // namespace scalar
}  // namespace fastlstm
