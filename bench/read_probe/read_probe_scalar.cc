// The read probe with scalar loads. No ISA flags: runs on any CPU.
#include "../../csrc/kernels/vec_scalar.h"
#include "measure_read.h"

namespace read_probe {

double measure_read_seconds_scalar(int64_t bytes, int passes, int repeats) {
  return measure_read_seconds<VecScalar<float>>(bytes, passes, repeats);
}

}  // namespace read_probe
