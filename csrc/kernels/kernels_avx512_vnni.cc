// int8 kernels for AVX-512 with VNNI (vpdpbusd). Built with -mavx512vnni; only called after
// cpu_features says the CPU has it. The other formats' AVX-512 kernels are in kernels_avx512.cc.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../lstm_dims.h"
#include "kernels.h"
#include "vec_avx512_vnni.h"

namespace fastlstm {
namespace avx512_vnni {

#include "lstm_kernels_impl.h"

const KernelTable<float, int8_t>& kernels_i8() {
  static const KernelTable<float, int8_t> table = Kernels<VecAvx512Vnni, int8_t>::table("avx512_vnni");
  return table;
}

}  // namespace avx512_vnni
}  // namespace fastlstm
