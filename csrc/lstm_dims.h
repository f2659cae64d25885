// Hyperparameters of an nn.LSTM as the C++ core sees them, with the derived sizes used everywhere.
#pragma once

#include <cstdint>

namespace fastlstm {

// Hidden units are processed in panels of one cache line (16 floats / 8 doubles). The packed
// layout depends only on this width, never on the ISA, so the kernel set can change at runtime
// without repacking.
template <typename T>
constexpr int64_t kPanelWidth = 64 / sizeof(T);

constexpr int kGates = 4;  // i, f, g, o in PyTorch's order

// The reduction (k) block: of the packed weight layout, and of the GEMM and the fused step, whose
// partial sums restart at each block so that the two agree bitwise.
constexpr int64_t kKBlock = 256;

inline int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

struct LstmDims {
  int64_t input_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 1;
  int64_t proj_size = 0;
  bool bidirectional = false;
  bool bias = true;

  int64_t num_directions() const { return bidirectional ? 2 : 1; }
  int64_t output_size() const { return proj_size > 0 ? proj_size : hidden_size; }  // H_out
  int64_t layer_input_size(int64_t layer) const {
    return layer == 0 ? input_size : num_directions() * output_size();
  }
};

}  // namespace fastlstm
