// A packed nn.Linear: y = x W^T + b on the LSTM kernels' GEMM (gates = 1), for the heads of
// converted whole models. The weights are packed once into the panel layout of kernels/kernels.h,
// so a head costs one pass of the micro-kernel over them, with no per-call transposition.
#pragma once

#include <cstdint>

#include "aligned_buffer.h"
#include "weight_formats.h"

namespace fastlstm {

// Inputs, outputs and bias are T; the weight is stored as W (T, or Bf16 or int8_t under float).
template <typename T, typename W = T>
class PackedLinear {
 public:
  // weight: (out_features, in_features) row-major, as nn.Linear stores it, in the stored type;
  // scales: for int8 only, (out_features, scale_groups(in_features)) row-major; bias: out_features
  // values or null. All are copied; sizes must be positive (the bindings check them).
  PackedLinear(const W* weight, const T* scales, const T* bias, int64_t out_features, int64_t in_features);

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  // out[r] = x[r] W^T + b for `rows` rows: row r of x starts at x + r * x_stride (in_features
  // contiguous values), row r of out at out + r * out_stride (out_features values written).
  // Thread-safe; runs on the calling thread.
  void forward(const T* x, int64_t rows, int64_t x_stride, T* out, int64_t out_stride) const;

 private:
  int64_t in_features_ = 0, out_features_ = 0, padded_out_ = 0;
  AlignedBuffer<W> weights_;  // pack_panels(weight, gates = 1, units = out_features, k = in_features)
  AlignedBuffer<T> scales_;   // pack_scales(scales, ...), int8 only
  AlignedBuffer<int32_t> sums_;  // pack_group_sums(weight, ...), int8 only
  AlignedBuffer<T> bias_;     // padded_out_ values, zero past out_features
};

extern template class PackedLinear<float>;
extern template class PackedLinear<double>;
extern template class PackedLinear<float, Bf16>;
extern template class PackedLinear<float, int8_t>;

}  // namespace fastlstm
