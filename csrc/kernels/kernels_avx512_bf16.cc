// bf16 kernels for AVX-512 with AVX512_BF16 (vdpbf16ps). Built with -mavx512bf16; only called after
// cpu_features says the CPU has it. The other formats' AVX-512 kernels are in kernels_avx512.cc.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../lstm_dims.h"
#include "kernels.h"
#include "vec_avx512_bf16.h"

namespace fastlstm {
namespace avx512_bf16 {

#include "lstm_kernels_impl.h"

const KernelTable<float, Bf16>& kernels_bf16() {
  static const KernelTable<float, Bf16> table = Kernels<VecAvx512Bf16, Bf16>::table("avx512_bf16");
  return table;
}

}  // namespace avx512_bf16
}  // namespace fastlstm
