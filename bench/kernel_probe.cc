// Kernel-level ceilings for the batched (GEMM) path, on AVX2 + FMA, without Python or the other
// engines in the way: how close the micro-kernel gets to the core's FMA peak, and what the cell
// update costs next to the GEMM in one recurrent step. Build and run with bench/kernel_probe.sh.
//
//   kernel_probe [rows] [hidden]     (default 32 256: one recurrent step of batch32's network)
//
// Every figure is the best of many timed batches: the probe asks what the core can do, and on a shared
// host any one batch may have lost the core to a neighbour. The step with and without its cell
// update is timed batch by batch in alternation, so both sides see the same moments.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "../csrc/aligned_buffer.h"
#include "../csrc/lstm_dims.h"
#include "../csrc/kernels/kernels.h"
#include "../csrc/kernels/vec_avx2.h"

namespace fastlstm {
namespace probe {
#include "../csrc/kernels/lstm_kernels_impl.h"
}  // namespace probe
}  // namespace fastlstm

namespace {

using fastlstm::GemmArgs;
using fastlstm::StepArgs;
using K = fastlstm::probe::Kernels<VecAvx2F32>;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The extension's own cache-line-aligned buffers (zero-filled): unaligned rows would time split loads.
using Floats = fastlstm::AlignedBuffer<float>;

// Uniform values in [-scale/2, scale/2), from a fixed LCG so every run sees the same data.
Floats noise(size_t count, float scale) {
  Floats v(count);
  uint32_t x = 12345;
  for (size_t i = 0; i < count; ++i) {
    x = x * 1664525u + 1013904223u;
    v[i] = scale * (float(x >> 8) / 16777216.0f - 0.5f);
  }
  return v;
}

void copy(const Floats& from, Floats& to) { std::copy(from.data(), from.data() + from.size(), to.data()); }

// Twelve independent FMA chains, enough to cover the latency on both FMA pipes. Written in assembly
// so the compiler can neither spill the chains nor fold the loop; zeros throughout, so no denormals.
double fma_peak_gflops() {
  constexpr long kIters = 1000000;  // ~2 ms: many short trials, to find a quiet moment
  double best = 1e30;
  for (int trial = 0; trial < 100; ++trial) {
    long n = kIters;
    const auto t0 = std::chrono::steady_clock::now();
    __asm__ volatile(
        "vxorps %%ymm0, %%ymm0, %%ymm0\n\t"
        "vmovaps %%ymm0, %%ymm1\n\tvmovaps %%ymm0, %%ymm2\n\tvmovaps %%ymm0, %%ymm3\n\t"
        "vmovaps %%ymm0, %%ymm4\n\tvmovaps %%ymm0, %%ymm5\n\tvmovaps %%ymm0, %%ymm6\n\t"
        "vmovaps %%ymm0, %%ymm7\n\tvmovaps %%ymm0, %%ymm8\n\tvmovaps %%ymm0, %%ymm9\n\t"
        "vmovaps %%ymm0, %%ymm10\n\tvmovaps %%ymm0, %%ymm11\n\tvmovaps %%ymm0, %%ymm12\n\t"
        "vmovaps %%ymm0, %%ymm13\n\t"
        "1:\n\t"
        "vfmadd231ps %%ymm12, %%ymm13, %%ymm0\n\tvfmadd231ps %%ymm12, %%ymm13, %%ymm1\n\t"
        "vfmadd231ps %%ymm12, %%ymm13, %%ymm2\n\tvfmadd231ps %%ymm12, %%ymm13, %%ymm3\n\t"
        "vfmadd231ps %%ymm12, %%ymm13, %%ymm4\n\tvfmadd231ps %%ymm12, %%ymm13, %%ymm5\n\t"
        "vfmadd231ps %%ymm12, %%ymm13, %%ymm6\n\tvfmadd231ps %%ymm12, %%ymm13, %%ymm7\n\t"
        "vfmadd231ps %%ymm12, %%ymm13, %%ymm8\n\tvfmadd231ps %%ymm12, %%ymm13, %%ymm9\n\t"
        "vfmadd231ps %%ymm12, %%ymm13, %%ymm10\n\tvfmadd231ps %%ymm12, %%ymm13, %%ymm11\n\t"
        "dec %0\n\t"
        "jnz 1b\n\t"
        "vzeroupper"
        : "+r"(n)
        :
        : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
          "xmm11", "xmm12", "xmm13");
    best = std::min(best, seconds_since(t0));
  }
  return kIters * 12.0 * 16.0 / best / 1e9;
}

// The micro-kernel alone, on one row tile and one gate's panel of one reduction block, all in L1.
double tile_in_l1_gflops() {
  constexpr int R = K::kRowTile;
  const Floats a = noise(R * fastlstm::kKBlock, 1.f), w = noise(fastlstm::kKBlock * 16, 0.1f);
  Floats c(R * 16);
  float* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = c.data() + r * 16;
  constexpr int kCalls = 2000;  // ~2 ms per trial
  double best = 1e30;
  for (int trial = 0; trial < 100; ++trial) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) K::gemm_tile<R>(a.data(), 0, fastlstm::kKBlock, w.data(), nullptr, 0, rows, 0);
    best = std::min(best, seconds_since(t0));
  }
  return kCalls * 2.0 * R * fastlstm::kKBlock * 16 / best / 1e9;
}

// One recurrent step (z += h W_hh^T, then the cell update) for `rows` rows and `hidden` units, and
// the same GEMM without the update; z is restored before every call, as the projection would leave it.
struct StepTimes {
  double step_us, gemm_us, gflops_gemm;
};

StepTimes recurrent_step(int64_t rows, int64_t hidden) {
  const int64_t gates = 4 * hidden, panels = hidden / 16;
  const Floats h = noise(rows * hidden, 1.f), w = noise(hidden * gates, 0.1f), z0 = noise(rows * gates, 2.f);
  Floats z(z0.size()), a_pack(rows * hidden), c(rows * hidden), h_out(rows * hidden);
  std::vector<const float*> h_rows(rows);
  std::vector<float*> z_rows(rows), out_rows(rows);
  for (int64_t r = 0; r < rows; ++r) {
    h_rows[r] = h.data() + r * hidden;
    z_rows[r] = z.data() + r * gates;
    out_rows[r] = h_out.data() + r * hidden;
  }
  GemmArgs<float> gemm;
  gemm.rows = rows, gemm.a = h_rows.data(), gemm.k = hidden, gemm.w = w.data(), gemm.gates = 4;
  gemm.panel_begin = 0, gemm.panel_end = panels, gemm.c = z_rows.data(), gemm.a_pack = a_pack.data();
  StepArgs<float> step;
  step.rows = rows, step.k = hidden, step.hidden_size = hidden, step.panel_begin = 0, step.panel_end = panels;
  step.c = c.data(), step.c_stride = hidden, step.h_out = out_rows.data();

  auto time_calls = [&](bool with_update) {
    constexpr int kCalls = 10;
    double total = 0;
    for (int i = 0; i < kCalls; ++i) {
      copy(z0, z);
      const auto t0 = std::chrono::steady_clock::now();
      if (with_update) K::lstm_step_gemm(gemm, step);
      else K::gemm_accumulate(gemm);
      total += seconds_since(t0);
    }
    return total / kCalls * 1e6;
  };
  double with = 1e30, without = 1e30;
  for (int round = 0; round < 200; ++round) {
    with = std::min(with, time_calls(true));
    without = std::min(without, time_calls(false));
  }
  return {with, without, 2.0 * rows * hidden * gates / (without * 1e3)};
}

// The cell update alone: gate activations and the state update for 16 hidden units of 32 rows, in L1.
double update_ns_per_8_units() {
  constexpr int kRows = 32;
  const Floats z0 = noise(kRows * 64, 6.f);
  Floats z(kRows * 64), c(kRows * 16), h(kRows * 16);
  constexpr int kCalls = 500;  // ~2 ms per trial
  double best = 1e30;
  for (int trial = 0; trial < 100; ++trial) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) {
      copy(z0, z);
      for (int r = 0; r < kRows; ++r) K::activate_gates(z.data() + r * 64);
      for (int r = 0; r < kRows; ++r) K::update_cell(z.data() + r * 64, c.data() + r * 16, h.data() + r * 16, 16);
    }
    best = std::min(best, seconds_since(t0));
  }
  return best / kCalls / (kRows * 2) * 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atol(argv[1]) : 32, hidden = argc > 2 ? std::atol(argv[2]) : 256;
  if (rows < K::kMinTiledRows || hidden < 16 || hidden % 16 != 0) {
    std::fprintf(stderr, "usage: kernel_probe [rows >= %ld] [hidden, a multiple of 16]\n", long(K::kMinTiledRows));
    return 2;
  }
  const double peak = fma_peak_gflops(), tile = tile_in_l1_gflops();
  const StepTimes s = recurrent_step(rows, hidden);
  const double update = update_ns_per_8_units();
  std::printf("| measurement | value |\n|---|---|\n");
  std::printf("| FMA peak, one core (12 chains of 8-float FMAs) | %.1f GFLOP/s |\n", peak);
  std::printf("| micro-kernel, %d-row tile, data in L1 | %.1f GFLOP/s (%.0f%% of peak) |\n", K::kRowTile, tile,
              100 * tile / peak);
  std::printf("| recurrent step GEMM, %ld rows, H %ld (W_hh %.2f MiB) | %.1f us, %.1f GFLOP/s (%.0f%% of peak) |\n",
              long(rows), long(hidden), 16.0 * hidden * hidden / 1048576, s.gemm_us, s.gflops_gemm,
              100 * s.gflops_gemm / peak);
  std::printf("| the same step with its cell update | %.1f us (update: %.0f%% of the step) |\n", s.step_us,
              100 * (s.step_us - s.gemm_us) / s.step_us);
  std::printf("| cell update alone, data in L1 | %.1f ns per 8 hidden units |\n", update);
  return 0;
}
