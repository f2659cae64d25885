// The read probe with avx512 loads. Built with the flags setup.py gives kernels_avx512.cc.
#include "../../csrc/kernels/vec_avx512.h"
#include "measure_read.h"

namespace read_probe {

double measure_read_seconds_avx512(int64_t bytes, int passes, int repeats) {
  return measure_read_seconds<VecAvx512F32>(bytes, passes, repeats);
}

}  // namespace read_probe
