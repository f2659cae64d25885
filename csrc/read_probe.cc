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
  constexpr int64_t kGroup = 4 * kPanelWidth<float>;  // sum_stream's smallest chunk
  const int64_t count = round_up(std::max<int64_t>(bytes, 64) / int64_t(sizeof(float)), kGroup);
  AlignedBuffer<float> data(count);
  volatile float sink = 0;  // keeps the sums, hence the loads, from being dropped
  int64_t pass = 0;
  // Two read patterns, and the faster one counts: one plain stream, and the fused step's four
  // streams per reduction block (faster from L3 and memory, where more streams keep more misses in
  // flight). Passes alternate direction, so each starts on what the last one read most recently.
  double best = 1e300;
  for (const int64_t chunk : {kGroup, kGates * kKBlock * kPanelWidth<float>}) {
    auto sweep = [&](int n) {
      for (int i = 0; i < n; ++i, ++pass) sink += kernels.sum_stream(data.data(), count, pass % 2 == 1, chunk);
    };
    sweep(2);  // into cache
    for (int r = 0; r < repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      sweep(passes);
      const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
      best = std::min(best, elapsed.count() / passes);
    }
  }
  return best;
}

}  // namespace fastlstm
