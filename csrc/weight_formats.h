// The formats packed weights may be stored in, besides the activations' own float type. Inputs,
// states, biases and every accumulation stay in float32: only the bytes each weight costs to read
// change, which is what bounds a batch-1 step (docs/design.md).
#pragma once

#include <cstdint>

#include "lstm_dims.h"

namespace fastlstm {

// A bfloat16: the top 16 bits of a float32. Widening it back is a 16-bit shift, exact.
struct Bf16 {
  uint16_t bits;
};

// int8 weights carry one float32 scale per row and per group of this many k (weight = q * scale).
// Groups never straddle a kKBlock block, so the per-block partial sums of the kernels stay as they
// are; 64 keeps an outlier weight from coarsening more than 63 of its row's neighbours, for 1/16
// byte of scale per weight.
constexpr int64_t kInt8Group = 64;
static_assert(kKBlock % kInt8Group == 0, "int8 groups must tile the reduction blocks");

// Per stored type: whether it carries scales, and the k values each scale covers.
template <typename W>
struct WeightFormat {
  static constexpr bool kScaled = false;
  static constexpr int64_t kGroup = kKBlock;
};

template <>
struct WeightFormat<int8_t> {
  static constexpr bool kScaled = true;
  static constexpr int64_t kGroup = kInt8Group;
};

// Scale groups in a reduction of k values.
inline int64_t scale_groups(int64_t k) { return (k + kInt8Group - 1) / kInt8Group; }

}  // namespace fastlstm
