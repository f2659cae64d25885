// How fast one core reads a block of cached data: the floor of a batch-1 LSTM step, which must read
// all of W_hh. Written once against a Vec type (csrc/kernels/vec_*.h) and instantiated per ISA by
// read_probe_<isa>.cc, each built with that ISA's flags, as the extension's kernels are.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "../../csrc/aligned_buffer.h"
#include "../../csrc/lstm_dims.h"

namespace read_probe {

// Sums `count` values (a multiple of four panels, 64-byte aligned) with the widest loads, chunk by chunk
// upward or downward, each chunk (a multiple of four panels) read as four streams side by side, its
// quarters, each upward. One add chain per stream, so the loads, not the adds, set the pace. Four
// panels per chunk is one plain stream; a panel's reduction block is how the fused step reads W_hh.
template <class V>
float sum_stream(const float* data, int64_t count, bool descending, int64_t chunk) {
  using Reg = typename V::Reg;
  constexpr int64_t kPanel = fastlstm::kPanelWidth<float>;
  constexpr int kVecsPerPanel = static_cast<int>(kPanel) / V::kWidth;
  constexpr int kStreams = 4;
  Reg acc[kStreams][kVecsPerPanel];
  for (int j = 0; j < kStreams; ++j)
    for (int v = 0; v < kVecsPerPanel; ++v) acc[j][v] = V::zero();
  const int64_t chunks = (count + chunk - 1) / chunk;
  const int64_t whole_quarter = chunk / kStreams;
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t begin = (descending ? chunks - 1 - i : i) * chunk;
    // Only the last chunk may be short (no division per chunk: at four panels it would cost more than the loads).
    const int64_t quarter = count - begin >= chunk ? whole_quarter : (count - begin) / (kStreams * kPanel) * kPanel;
    const float* part = data + begin;
    for (int64_t at = 0; at < quarter; at += kPanel)
      for (int j = 0; j < kStreams; ++j)
        for (int v = 0; v < kVecsPerPanel; ++v) acc[j][v] = V::add(acc[j][v], V::load(part + j * quarter + at + v * V::kWidth));
  }
  Reg sum = V::zero();
  for (int j = 0; j < kStreams; ++j)
    for (int v = 0; v < kVecsPerPanel; ++v) sum = V::add(sum, acc[j][v]);
  alignas(64) float lanes[V::kWidth];
  V::store(lanes, sum);
  float total = 0;
  for (int i = 0; i < V::kWidth; ++i) total += lanes[i];
  return total;
}

// Best seconds of one pass over `bytes` of resident data: best of `repeats` batches of `passes` passes,
// after two passes that bring the data into cache. Two read patterns, and the faster counts: one plain
// stream, and the fused step's four streams per reduction block (faster from L3 and memory, where more
// streams keep more misses in flight). Passes alternate direction, so each starts on what the last
// one read most recently, as the fused step's sweeps do.
template <class V>
double measure_read_seconds(int64_t bytes, int passes, int repeats) {
  using namespace fastlstm;
  constexpr int64_t kGroup = 4 * kPanelWidth<float>;
  const int64_t count = round_up(std::max<int64_t>(bytes, 64) / int64_t(sizeof(float)), kGroup);
  AlignedBuffer<float> data(count);
  volatile float sink = 0;  // keeps the sums, hence the loads, from being dropped
  int64_t pass = 0;
  double best = 1e300;
  for (const int64_t chunk : {kGroup, kGates * kKBlock * kPanelWidth<float>}) {
    auto sweep = [&](int n) {
      for (int i = 0; i < n; ++i, ++pass) sink = sink + sum_stream<V>(data.data(), count, pass % 2 == 1, chunk);
    };
    sweep(2);
    for (int r = 0; r < repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      sweep(passes);
      const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
      best = std::min(best, elapsed.count() / passes);
    }
  }
  return best;
}

}  // namespace read_probe
