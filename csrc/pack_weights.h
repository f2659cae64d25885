// Packing PyTorch's row-major weights into the gate-interleaved panel layout of kernels/kernels.h.
// Done once per model, so it favours clarity over speed.
#pragma once

#include <cstdint>
#include <vector>

#include "aligned_buffer.h"
#include "lstm_dims.h"
#include "weight_formats.h"

namespace fastlstm {

// w: (gates * units, k) row-major, as nn.LSTM stores weight_ih/weight_hh (gates = 4) or
// weight_hr (gates = 1). Units beyond `units` in the last panel are zero, so padded hidden units
// stay exactly zero through the recurrence. W is the stored type, T the activations' (whose
// panel width the layout takes).
// With kKStep S > 1 (bf16, int8), each unit's weights for S consecutive k sit side by side, the
// reduction padded with zero weights to whole steps (stored_k); see kernels/kernels.h.
template <typename T, typename W = T>
AlignedBuffer<W> pack_panels(const W* w, int64_t gates, int64_t units, int64_t k) {
  constexpr int64_t P = kPanelWidth<T>;
  constexpr int64_t S = WeightFormat<W>::kKStep;
  const int64_t panels = round_up(units, P) / P, ks = stored_k<W>(k);
  AlignedBuffer<W> packed(static_cast<std::size_t>(panels * ks * gates * P));
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t k0 = 0; k0 < k; k0 += kKBlock) {
      const int64_t block = k0 + kKBlock < ks ? kKBlock : ks - k0;  // stored length
      const int64_t valid = k0 + kKBlock < k ? kKBlock : k - k0;
      W* out = packed.data() + (p * ks + k0) * gates * P;
      for (int64_t g = 0; g < gates; ++g)
        for (int64_t kk = 0; kk < valid; ++kk)
          for (int64_t u = 0; u < P && p * P + u < units; ++u)
            out[g * block * P + (kk / S * P + u) * S + kk % S] = w[(g * units + p * P + u) * k + k0 + kk];
    }
  return packed;
}

// int8 scales: (gates * units, scale_groups(k)) row-major, one per row and k group, into the
// layout of kernels/kernels.h. Padded units get scale zero (their weights are zero anyway).
template <typename T>
AlignedBuffer<T> pack_scales(const T* scales, int64_t gates, int64_t units, int64_t k) {
  constexpr int64_t P = kPanelWidth<T>;
  const int64_t panels = round_up(units, P) / P, groups = scale_groups(k);
  AlignedBuffer<T> packed(static_cast<std::size_t>(panels * groups * gates * P));
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t kg = 0; kg < groups; ++kg)
      for (int64_t g = 0; g < gates; ++g)
        for (int64_t u = 0; u < P && p * P + u < units; ++u)
          packed[((p * groups + kg) * gates + g) * P + u] = scales[(g * units + p * P + u) * groups + kg];
  return packed;
}

// int8 weights (gates * units, k) row-major -> the int32 sum of each row's k group, in the scales'
// layout (pack_scales). The kernels with VNNI correct their unsigned activation bytes with them.
template <typename T>
AlignedBuffer<int32_t> pack_group_sums(const int8_t* w, int64_t gates, int64_t units, int64_t k) {
  const int64_t groups = scale_groups(k), rows = gates * units;
  std::vector<int32_t> sums(static_cast<std::size_t>(rows * groups), 0);
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t kk = 0; kk < k; ++kk) sums[row * groups + kk / kInt8Group] += w[row * k + kk];
  return pack_scales<int32_t>(sums.data(), gates, units, k);
}

// b_ih + b_hh summed once, in the accumulator-row layout; null biases mean bias=False.
template <typename T>
AlignedBuffer<T> pack_bias(const T* b_ih, const T* b_hh, int64_t units) {
  constexpr int64_t P = kPanelWidth<T>;
  const int64_t panels = round_up(units, P) / P;
  AlignedBuffer<T> packed(static_cast<std::size_t>(panels * kGates * P));
  if (b_ih == nullptr) return packed;
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t g = 0; g < kGates; ++g)
      for (int64_t u = 0; u < P && p * P + u < units; ++u)
        packed[(p * kGates + g) * P + u] = b_ih[g * units + p * P + u] + b_hh[g * units + p * P + u];
  return packed;
}

}  // namespace fastlstm
