#include "lstm.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "cpu_features.h"
#include "kernels/kernels.h"
#include "pack_weights.h"

namespace fastlstm {
namespace {

// Rows up to this count take the fused matrix-vector step; more rows amortise a GEMM over the
// packed weights and a separate (still per-panel, cache-hot) cell update.
constexpr int64_t kFusedStepMaxRows = 4;
// The input projection runs over chunks of time steps whose accumulators fit comfortably in L2.
constexpr int64_t kChunkBytes = 256 * 1024;

}  // namespace

template <typename T>
PackedLstm<T>::PackedLstm(const LstmDims& dims, const std::vector<const T*>& weights) : dims_(dims) {
  const int64_t H = dims.hidden_size;
  hidden_padded_ = round_up(H, kPanelWidth<T>);
  proj_padded_ = round_up(dims.proj_size, kPanelWidth<T>);
  std::size_t next = 0;
  for (int64_t layer = 0; layer < dims.num_layers; ++layer) {
    for (int64_t d = 0; d < dims.num_directions(); ++d) {
      DirectionWeights dir;
      dir.input_size = dims.layer_input_size(layer);
      const T* w_ih = weights.at(next++);
      const T* w_hh = weights.at(next++);
      const T* b_ih = dims.bias ? weights.at(next++) : nullptr;
      const T* b_hh = dims.bias ? weights.at(next++) : nullptr;
      dir.w_ih = pack_panels(w_ih, kGates, H, dir.input_size);
      dir.w_hh = pack_panels(w_hh, kGates, H, dims.output_size());
      dir.bias = pack_bias(b_ih, b_hh, H);
      if (dims.proj_size > 0) dir.w_hr = pack_panels(weights.at(next++), 1, dims.proj_size, H);
      directions_.push_back(std::move(dir));
    }
  }
}

// Everything one forward call needs beyond the packed weights. Allocated once per call, before the
// time loop; the loop itself only moves pointers.
template <typename T>
class PackedLstm<T>::Pass {
 public:
  Pass(const PackedLstm& model, const ForwardRequest<T>& request)
      : model_(model), req_(request), kernels_(active_kernels<T>()), dims_(model.dims_) {
    steps_ = req_.seq_len;
    batch_ = req_.batch;
    h_out_ = dims_.output_size();
    row_width_ = dims_.num_directions() * h_out_;
    gate_row_ = kGates * model.hidden_padded_;
    sort_batch_by_length();

    chunk_steps_ = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(1, batch_ * gate_row_ * sizeof(T)), 1, steps_);
    const int64_t chunk_rows = chunk_steps_ * batch_;
    if (dims_.num_layers > 1) layer_out_[0].resize(steps_ * batch_ * row_width_);
    if (dims_.num_layers > 2) layer_out_[1].resize(steps_ * batch_ * row_width_);
    z_.resize(chunk_rows * gate_row_);
    c_.resize(batch_ * model.hidden_padded_);
    if (dims_.proj_size > 0) {
      h_raw_.resize(batch_ * model.hidden_padded_);
      proj_acc_.resize(batch_ * model.proj_padded_);
    }
    zeros_.resize(h_out_);
    const int64_t widest_input = std::max(dims_.input_size, row_width_);
    a_pack_.resize(std::max(chunk_rows * widest_input, batch_ * std::max(h_out_, dims_.hidden_size)));
    a_rows_.resize(chunk_rows);
    z_rows_.resize(chunk_rows);
    h_rows_.resize(batch_);
    out_rows_.resize(batch_);
  }

  void run() {
    for (int64_t layer = 0; layer < dims_.num_layers; ++layer)
      for (int64_t d = 0; d < dims_.num_directions(); ++d) run_direction(layer, d);
  }

 private:
  // Slots are batch rows sorted by decreasing length, so the rows still running at any step are
  // a prefix: active_[t] of them.
  void sort_batch_by_length() {
    order_.resize(batch_);
    std::iota(order_.begin(), order_.end(), 0);
    length_.assign(batch_, steps_);
    if (req_.lengths != nullptr) {
      std::stable_sort(order_.begin(), order_.end(),
                       [&](int64_t a, int64_t b) { return req_.lengths[a] > req_.lengths[b]; });
      for (int64_t s = 0; s < batch_; ++s) length_[s] = req_.lengths[order_[s]];
    }
    active_.assign(steps_, 0);
    for (int64_t t = 0; t < steps_; ++t)
      while (active_[t] < batch_ && length_[active_[t]] > t) ++active_[t];
  }

  const T* input_row(int64_t layer, int64_t t, int64_t s) const {
    if (layer == 0) return req_.x + t * req_.x_stride_t + order_[s] * req_.x_stride_b;
    return layer_out_[(layer - 1) % 2].data() + (t * batch_ + s) * row_width_;
  }

  T* output_row(int64_t layer, int64_t d, int64_t t, int64_t s) {
    if (layer == dims_.num_layers - 1)
      return req_.out + t * req_.out_stride_t + order_[s] * req_.out_stride_b + d * h_out_;
    return layer_out_[layer % 2].data() + (t * batch_ + s) * row_width_ + d * h_out_;
  }

  int64_t state_index(int64_t layer, int64_t d, int64_t s) const {
    return (layer * dims_.num_directions() + d) * batch_ + order_[s];
  }

  void run_direction(int64_t layer, int64_t d) {
    const DirectionWeights& w = model_.directions_[layer * dims_.num_directions() + d];
    const bool reverse = d == 1;
    const int64_t H = dims_.hidden_size, Hp = model_.hidden_padded_;

    for (int64_t s = 0; s < batch_; ++s) {
      T* c = c_.data() + s * Hp;
      std::fill(c, c + Hp, T(0));
      if (req_.c0 != nullptr) std::memcpy(c, req_.c0 + state_index(layer, d, s) * H, H * sizeof(T));
    }

    const int64_t chunks = (steps_ + chunk_steps_ - 1) / chunk_steps_;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      int64_t t_lo = chunk * chunk_steps_, t_hi = std::min(steps_, t_lo + chunk_steps_);
      if (reverse) {
        t_lo = std::max<int64_t>(0, steps_ - (chunk + 1) * chunk_steps_);
        t_hi = steps_ - chunk * chunk_steps_;
      }
      project_inputs(layer, w, t_lo, t_hi);
      for (int64_t i = 0; i < t_hi - t_lo; ++i) step(layer, d, w, reverse ? t_hi - 1 - i : t_lo + i, t_lo);
    }

    for (int64_t s = 0; s < batch_; ++s) {
      const int64_t t_last = reverse ? 0 : length_[s] - 1;
      std::memcpy(req_.h_n + state_index(layer, d, s) * h_out_, output_row(layer, d, t_last, s), h_out_ * sizeof(T));
      std::memcpy(req_.c_n + state_index(layer, d, s) * H, c_.data() + s * Hp, H * sizeof(T));
    }
  }

  // z = x W_ih^T + b_ih + b_hh for every running row of steps [t_lo, t_hi): one GEMM.
  void project_inputs(int64_t layer, const DirectionWeights& w, int64_t t_lo, int64_t t_hi) {
    int64_t rows = 0;
    for (int64_t t = t_lo; t < t_hi; ++t) {
      for (int64_t s = 0; s < active_[t]; ++s, ++rows) {
        a_rows_[rows] = input_row(layer, t, s);
        z_rows_[rows] = z_row(t, t_lo, s);
        std::memcpy(z_rows_[rows], w.bias.data(), gate_row_ * sizeof(T));
      }
    }
    GemmArgs<T> gemm;
    gemm.rows = rows;
    gemm.a = a_rows_.data();
    gemm.k = w.input_size;
    gemm.w = w.w_ih.data();
    gemm.gates = kGates;
    gemm.panel_begin = 0;
    gemm.panel_end = model_.hidden_padded_ / kPanelWidth<T>;
    gemm.c = z_rows_.data();
    gemm.a_pack = a_pack_.data();
    kernels_.gemm_accumulate(gemm);
  }

  T* z_row(int64_t t, int64_t t_lo, int64_t s) { return z_.data() + ((t - t_lo) * batch_ + s) * gate_row_; }

  void step(int64_t layer, int64_t d, const DirectionWeights& w, int64_t t, int64_t t_lo) {
    const bool reverse = d == 1;
    const int64_t rows = active_[t];
    const bool project = dims_.proj_size > 0;
    for (int64_t s = 0; s < rows; ++s) {
      // A row's first step reads h0: t = 0 going forward, its own last step going backward.
      const bool first = reverse ? t == length_[s] - 1 : t == 0;
      if (first) {
        h_rows_[s] = req_.h0 != nullptr ? req_.h0 + state_index(layer, d, s) * h_out_ : zeros_.data();
      } else {
        h_rows_[s] = output_row(layer, d, reverse ? t + 1 : t - 1, s);
      }
      z_rows_[s] = z_row(t, t_lo, s);
      out_rows_[s] = project ? h_raw_.data() + s * model_.hidden_padded_ : output_row(layer, d, t, s);
    }

    StepArgs<T> args;
    args.rows = rows;
    args.h_prev = h_rows_.data();
    args.z = z_rows_.data();
    args.w_hh = w.w_hh.data();
    args.k = h_out_;
    args.hidden_size = dims_.hidden_size;
    args.panel_begin = 0;
    args.panel_end = model_.hidden_padded_ / kPanelWidth<T>;
    args.c = c_.data();
    args.c_stride = model_.hidden_padded_;
    args.h_out = out_rows_.data();
    if (rows <= kFusedStepMaxRows) {
      kernels_.lstm_step_fused(args);
    } else {
      GemmArgs<T> gemm;
      gemm.rows = rows;
      gemm.a = h_rows_.data();
      gemm.k = h_out_;
      gemm.w = w.w_hh.data();
      gemm.gates = kGates;
      gemm.panel_begin = args.panel_begin;
      gemm.panel_end = args.panel_end;
      gemm.c = z_rows_.data();
      gemm.a_pack = a_pack_.data();
      kernels_.gemm_accumulate(gemm);
      kernels_.lstm_cell_update(args);
    }
    if (project) project_hidden(layer, d, w, t, rows);
    for (int64_t s = rows; s < batch_; ++s) std::fill_n(output_row(layer, d, t, s), h_out_, T(0));
  }

  // h = (o * tanh(c)) W_hr^T, written to the output rows.
  void project_hidden(int64_t layer, int64_t d, const DirectionWeights& w, int64_t t, int64_t rows) {
    for (int64_t s = 0; s < rows; ++s) {
      h_rows_[s] = h_raw_.data() + s * model_.hidden_padded_;
      out_rows_[s] = proj_acc_.data() + s * model_.proj_padded_;
      std::fill_n(out_rows_[s], model_.proj_padded_, T(0));
    }
    GemmArgs<T> gemm;
    gemm.rows = rows;
    gemm.a = h_rows_.data();
    gemm.k = dims_.hidden_size;
    gemm.w = w.w_hr.data();
    gemm.gates = 1;
    gemm.panel_begin = 0;
    gemm.panel_end = model_.proj_padded_ / kPanelWidth<T>;
    gemm.c = out_rows_.data();
    gemm.a_pack = a_pack_.data();
    kernels_.gemm_accumulate(gemm);
    for (int64_t s = 0; s < rows; ++s) std::memcpy(output_row(layer, d, t, s), out_rows_[s], h_out_ * sizeof(T));
  }

  const PackedLstm& model_;
  const ForwardRequest<T>& req_;
  const KernelTable<T>& kernels_;
  const LstmDims& dims_;
  int64_t steps_ = 0, batch_ = 0, h_out_ = 0, row_width_ = 0, gate_row_ = 0, chunk_steps_ = 1;
  std::vector<int64_t> order_, length_, active_;
  AlignedBuffer<T> layer_out_[2], z_, c_, h_raw_, proj_acc_, zeros_, a_pack_;
  std::vector<const T*> a_rows_, h_rows_;
  std::vector<T*> z_rows_, out_rows_;
};

template <typename T>
void PackedLstm<T>::forward(const ForwardRequest<T>& request) const {
  if (request.batch == 0 || request.seq_len == 0) return;
  Pass pass(*this, request);
  pass.run();
}

template class PackedLstm<float>;
template class PackedLstm<double>;

}  // namespace fastlstm
