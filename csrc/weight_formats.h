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

// Per stored type: whether it carries scales, the k values each scale covers, and kKStep, the
// consecutive k whose weights for one hidden unit sit side by side (see kernels/kernels.h). bf16
// pairs fill a 32-bit word that widens to two float32 vectors with one shift and one mask, in-lane:
// far cheaper than the cross-lane zero-extending load a k-major run of bf16 needs, which left bf16
// only 10-25% faster than float32 at batch 1 (0.62-0.68x with pairs; measured on Zen 4).
template <typename W>
struct WeightFormat {
  static constexpr bool kScaled = false;
  static constexpr int64_t kGroup = kKBlock;
  static constexpr int64_t kKStep = 1;
};

template <>
struct WeightFormat<Bf16> {
  static constexpr bool kScaled = false;
  static constexpr int64_t kGroup = kKBlock;
  static constexpr int64_t kKStep = 2;
};

// int8 quads: the operand layout of VNNI's vpdpbusd (4 multiply-adds of bytes per 32-bit lane),
// which the kernel sets with VNNI use; the others widen each byte of a word with a shift pair.
template <>
struct WeightFormat<int8_t> {
  static constexpr bool kScaled = true;
  static constexpr int64_t kGroup = kInt8Group;
  static constexpr int64_t kKStep = 4;
};
static_assert(kInt8Group % 4 == 0, "int8 groups hold whole k steps");

// The reduction length as stored: rounded up to whole k steps (zero weights past k).
template <typename W>
constexpr int64_t stored_k(int64_t k) {
  return (k + WeightFormat<W>::kKStep - 1) / WeightFormat<W>::kKStep * WeightFormat<W>::kKStep;
}

// Scale groups in a reduction of k values.
inline int64_t scale_groups(int64_t k) { return (k + kInt8Group - 1) / kInt8Group; }

}  // namespace fastlstm
