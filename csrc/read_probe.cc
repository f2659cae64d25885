#include "read_probe.h"

#include <algorithm>
#include <chrono>

#include "aligned_buffer.h"
#include "cpu_features.h"
#include "kernels/kernels.h"
#include "lstm_dims.h"

namespace fastlstm {

double measure_read_seconds(int64_t bytes, int passes, int repeats) {
  const KernelTable<float>& kernels = active_kernels<float>();
  const int64_t count = round_up(std::max<int64_t>(bytes, 64) / int64_t(sizeof(float)), 4 * kPanelWidth<float>);  // whole groups of sum_stream
  AlignedBuffer<float> data(count);
  volatile float sink = 0;  // keeps the sums, hence the loads, from being dropped
  int64_t pass = 0;
  auto sweep = [&](int n) {
    for (int i = 0; i < n; ++i, ++pass) sink += kernels.sum_stream(data.data(), count, pass % 2 == 1);
  };
  sweep(2);  // into cache
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    sweep(passes);
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best = std::min(best, elapsed.count() / passes);
  }
  return best;
}

}  // namespace fastlstm
