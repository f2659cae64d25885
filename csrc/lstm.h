// A packed, immutable LSTM and its forward pass over layers, directions and time.
#pragma once

#include <cstdint>
#include <vector>

#include "aligned_buffer.h"
#include "lstm_dims.h"
#include "weight_formats.h"

namespace fastlstm {

// One forward call. Rows of x and out are addressed by (time, batch) element strides so that
// time-major and batch-first arrays are both read and written in place. The batch is processed
// in order of decreasing length, but every user-visible array keeps the caller's batch order.
template <typename T>
struct ForwardRequest {
  const T* x = nullptr;
  int64_t seq_len = 0, batch = 0;
  int64_t x_stride_t = 0, x_stride_b = 0;
  const T* h0 = nullptr;  // optional, contiguous (layers * directions, batch, H_out)
  const T* c0 = nullptr;  // optional, contiguous (layers * directions, batch, hidden_size)
  const int64_t* lengths = nullptr;  // optional, batch values in [1, seq_len]
  T* out = nullptr;
  int64_t out_stride_t = 0, out_stride_b = 0;
  T* h_n = nullptr;  // contiguous like h0
  T* c_n = nullptr;  // contiguous like c0
};

// A weight matrix as nn.LSTM stores it, (rows, k) row-major, in the stored type W; int8 adds its
// scales, (rows, scale_groups(k)) row-major.
template <typename T, typename W>
struct MatrixSource {
  const W* values = nullptr;
  const T* scales = nullptr;
};

// One layer and direction's parameters as nn.LSTM names them, already size-checked.
template <typename T, typename W>
struct DirectionSource {
  MatrixSource<T, W> w_ih, w_hh, w_hr;  // w_hr only with proj_size
  const T* b_ih = nullptr;              // both null without bias
  const T* b_hh = nullptr;
};

// Activations, states and biases are T; the weight matrices are stored as W (T itself, or Bf16 or
// int8_t under float activations).
template <typename T, typename W = T>
class PackedLstm {
 public:
  // `directions`: one per layer and direction, in nn.LSTM's order (layer * num_directions + d).
  PackedLstm(const LstmDims& dims, const std::vector<DirectionSource<T, W>>& directions);

  const LstmDims& dims() const { return dims_; }
  // Thread-safe: all per-call state lives in the call. `threads` caps the cores this call may use
  // (the pool's setting when 0); small work runs on the calling thread regardless.
  void forward(const ForwardRequest<T>& request, int threads = 0) const;

 private:
  struct DirectionWeights {
    int64_t input_size = 0;
    AlignedBuffer<W> w_ih, w_hh, w_hr;
    AlignedBuffer<T> w_ih_scales, w_hh_scales, w_hr_scales;  // int8 only
    AlignedBuffer<int32_t> w_ih_sums, w_hh_sums, w_hr_sums;  // int8 only: each scale group's sum
    AlignedBuffer<T> bias;
  };
  class ForwardCall;  // the state of one forward call (lstm.cc)

  LstmDims dims_;
  int64_t hidden_padded_ = 0, proj_padded_ = 0;
  std::vector<DirectionWeights> directions_;  // index layer * num_directions + direction
};

// Scratch memory a calling thread keeps between calls (per dtype), so that steady-state calls
// allocate nothing. A call whose scratch ends up larger than this gives all of it back when it
// returns; the next call allocates afresh.
constexpr int64_t kDefaultWorkspaceLimit = int64_t(64) << 20;
void set_workspace_limit(int64_t bytes);
int64_t workspace_limit();

extern template class PackedLstm<float>;
extern template class PackedLstm<double>;
extern template class PackedLstm<float, Bf16>;
extern template class PackedLstm<float, int8_t>;

}  // namespace fastlstm
