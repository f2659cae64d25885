#include "linear.h"

#include <algorithm>
#include <cstring>

#include "cpu_features.h"
#include "kernels/kernels.h"
#include "pack_weights.h"

namespace fastlstm {
namespace {

// Rows per pass: their accumulators and packed inputs stay in L2 while the weights stream by.
constexpr int64_t kRowsPerPass = 64;

// Scratch a calling thread keeps between calls so that steady-state calls allocate nothing; a
// call needing more than this many bytes uses (and frees) a buffer of its own.
constexpr std::size_t kKeptScratchBytes = std::size_t(4) << 20;

template <typename T>
struct LinearScratch {
  AlignedBuffer<T> accumulators, a_pack;
  static LinearScratch& for_this_thread() {
    thread_local LinearScratch scratch;
    return scratch;
  }
};

template <typename T>
T* scratch_of(AlignedBuffer<T>& kept, AlignedBuffer<T>& own, int64_t count) {
  const std::size_t n = static_cast<std::size_t>(count);
  if (n * sizeof(T) > kKeptScratchBytes) {
    own.resize(n);
    return own.data();
  }
  if (kept.size() < n) kept.resize(n);
  return kept.data();
}

}  // namespace

template <typename T, typename W>
PackedLinear<T, W>::PackedLinear(const W* weight, const T* scales, const T* bias, int64_t out_features,
                                 int64_t in_features)
    : in_features_(in_features),
      out_features_(out_features),
      padded_out_(round_up(out_features, kPanelWidth<T>)),
      weights_(pack_panels<T, W>(weight, 1, out_features, in_features)),
      bias_(static_cast<std::size_t>(padded_out_)) {
  if constexpr (WeightFormat<W>::kScaled) {
    scales_ = pack_scales<T>(scales, 1, out_features, in_features);
    sums_ = pack_group_sums<T>(weight, 1, out_features, in_features);
  }
  if (bias != nullptr) std::copy(bias, bias + out_features, bias_.data());
}

template <typename T, typename W>
void PackedLinear<T, W>::forward(const T* x, int64_t rows, int64_t x_stride, T* out, int64_t out_stride) const {
  const KernelTable<T, W>& kernels = active_kernels<T, W>();
  LinearScratch<T>& kept = LinearScratch<T>::for_this_thread();
  AlignedBuffer<T> own_accumulators, own_a_pack;
  const int64_t pass_rows = std::min(rows, kRowsPerPass);
  // Output rows as wide as the panels are written by the GEMM directly; others go through
  // padded accumulator rows (the micro-kernel writes whole panels).
  const bool direct = padded_out_ == out_features_;
  T* accumulators = direct ? nullptr : scratch_of(kept.accumulators, own_accumulators, pass_rows * padded_out_);
  T* a_pack = scratch_of(kept.a_pack, own_a_pack, pass_rows * (in_features_ + 16));  // see GemmArgs::a_pack
  const T* a_rows[kRowsPerPass];
  T* c_rows[kRowsPerPass];

  for (int64_t r0 = 0; r0 < rows; r0 += kRowsPerPass) {
    const int64_t n = std::min(kRowsPerPass, rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      a_rows[r] = x + (r0 + r) * x_stride;
      c_rows[r] = direct ? out + (r0 + r) * out_stride : accumulators + r * padded_out_;
      std::memcpy(c_rows[r], bias_.data(), static_cast<std::size_t>(padded_out_) * sizeof(T));
    }
    GemmArgs<T, W> gemm;
    gemm.rows = n;
    gemm.a = a_rows;
    gemm.k = in_features_;
    gemm.w = weights_.data();
    gemm.w_scales = scales_.data();
    gemm.w_sums = sums_.data();
    gemm.gates = 1;
    gemm.panel_begin = 0;
    gemm.panel_end = padded_out_ / kPanelWidth<T>;
    gemm.c = c_rows;
    gemm.a_pack = a_pack;
    kernels.gemm_accumulate(gemm);
    if (!direct)
      for (int64_t r = 0; r < n; ++r)
        std::memcpy(out + (r0 + r) * out_stride, c_rows[r], static_cast<std::size_t>(out_features_) * sizeof(T));
  }
}

template class PackedLinear<float>;
template class PackedLinear<double>;
template class PackedLinear<float, Bf16>;
template class PackedLinear<float, int8_t>;

}  // namespace fastlstm
