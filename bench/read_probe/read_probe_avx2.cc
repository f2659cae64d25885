// The read probe with avx2 loads. Built with the flags setup.py gives kernels_avx2.cc.
#include "../../csrc/kernels/vec_avx2.h"
#include "measure_read.h"

namespace read_probe {

double measure_read_seconds_avx2(int64_t bytes, int passes, int repeats) {
  return measure_read_seconds<VecAvx2F32>(bytes, passes, repeats);
}

}  // namespace read_probe
