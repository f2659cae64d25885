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

// Scratch memory of the forward pass, kept per thread and grown to its high-water mark, so that
// repeated calls (a service's steady state, streaming one step at a time) allocate nothing.
template <typename T>
struct Workspace {
  std::vector<int64_t> order, length, active;
  AlignedBuffer<T> layer_out[2], z, c, h_raw, proj_acc, zeros, a_pack;
  std::vector<const T*> a_rows, h_rows;
  std::vector<T*> z_rows, out_rows;

  static Workspace& for_this_thread() {
    thread_local Workspace workspace;
    return workspace;
  }
};

template <typename T>
void grow(AlignedBuffer<T>& buffer, int64_t count) {
  if (buffer.size() < static_cast<std::size_t>(count)) buffer.resize(count);
}

template <typename V>
void grow(std::vector<V>& vector, int64_t count) {
  if (vector.size() < static_cast<std::size_t>(count)) vector.resize(count);
}

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
      : model_(model),
        req_(request),
        kernels_(active_kernels<T>()),
        dims_(model.dims_),
        ws_(Workspace<T>::for_this_thread()),
        order_(ws_.order),
        length_(ws_.length),
        active_(ws_.active) {
    steps_ = req_.seq_len;
    batch_ = req_.batch;
    h_out_ = dims_.output_size();
    row_width_ = dims_.num_directions() * h_out_;
    gate_row_ = kGates * model.hidden_padded_;
    sort_batch_by_length();

    chunk_steps_ = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(1, batch_ * gate_row_ * sizeof(T)), 1, steps_);
    const int64_t chunk_rows = chunk_steps_ * batch_;
    if (dims_.num_layers > 1) grow(ws_.layer_out[0], steps_ * batch_ * row_width_);
    if (dims_.num_layers > 2) grow(ws_.layer_out[1], steps_ * batch_ * row_width_);
    grow(ws_.z, chunk_rows * gate_row_);
    grow(ws_.c, batch_ * model.hidden_padded_);
    if (dims_.proj_size > 0) {
      grow(ws_.h_raw, batch_ * model.hidden_padded_);
      grow(ws_.proj_acc, batch_ * model.proj_padded_);
    }
    grow(ws_.zeros, h_out_);
    std::fill_n(ws_.zeros.data(), h_out_, T(0));  // the h0 of rows given none
    const int64_t widest_input = std::max(dims_.input_size, row_width_);
    grow(ws_.a_pack, std::max(chunk_rows * widest_input, batch_ * std::max(h_out_, dims_.hidden_size)));
    grow(ws_.a_rows, chunk_rows);
    grow(ws_.z_rows, chunk_rows);
    grow(ws_.h_rows, batch_);
    grow(ws_.out_rows, batch_);
  }

  void run() {
    for (int64_t layer = 0; layer < dims_.num_layers; ++layer)
      for (int64_t d = 0; d < dims_.num_directions(); ++d) run_direction(layer, d);
  }

 private:
  // Slots are batch rows sorted by decreasing length, so the rows still running at any step are
  // a prefix: active_[t] of them.
  void sort_batch_by_length() {
    order_.resize(batch_);  // within capacity after the first calls: no allocation
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
    return ws_.layer_out[(layer - 1) % 2].data() + (t * batch_ + s) * row_width_;
  }

  T* output_row(int64_t layer, int64_t d, int64_t t, int64_t s) {
    if (layer == dims_.num_layers - 1)
      return req_.out + t * req_.out_stride_t + order_[s] * req_.out_stride_b + d * h_out_;
    return ws_.layer_out[layer % 2].data() + (t * batch_ + s) * row_width_ + d * h_out_;
  }

  int64_t state_index(int64_t layer, int64_t d, int64_t s) const {
    return (layer * dims_.num_directions() + d) * batch_ + order_[s];
  }

  void run_direction(int64_t layer, int64_t d) {
    const DirectionWeights& w = model_.directions_[layer * dims_.num_directions() + d];
    const bool reverse = d == 1;
    const int64_t H = dims_.hidden_size, Hp = model_.hidden_padded_;

    for (int64_t s = 0; s < batch_; ++s) {
      T* c = ws_.c.data() + s * Hp;
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
      std::memcpy(req_.c_n + state_index(layer, d, s) * H, ws_.c.data() + s * Hp, H * sizeof(T));
    }
  }

  // z = x W_ih^T + b_ih + b_hh for every running row of steps [t_lo, t_hi): one GEMM.
  void project_inputs(int64_t layer, const DirectionWeights& w, int64_t t_lo, int64_t t_hi) {
    int64_t rows = 0;
    for (int64_t t = t_lo; t < t_hi; ++t) {
      for (int64_t s = 0; s < active_[t]; ++s, ++rows) {
        ws_.a_rows[rows] = input_row(layer, t, s);
        ws_.z_rows[rows] = z_row(t, t_lo, s);
        std::memcpy(ws_.z_rows[rows], w.bias.data(), gate_row_ * sizeof(T));
      }
    }
    GemmArgs<T> gemm;
    gemm.rows = rows;
    gemm.a = ws_.a_rows.data();
    gemm.k = w.input_size;
    gemm.w = w.w_ih.data();
    gemm.gates = kGates;
    gemm.panel_begin = 0;
    gemm.panel_end = model_.hidden_padded_ / kPanelWidth<T>;
    gemm.c = ws_.z_rows.data();
    gemm.a_pack = ws_.a_pack.data();
    kernels_.gemm_accumulate(gemm);
  }

  T* z_row(int64_t t, int64_t t_lo, int64_t s) { return ws_.z.data() + ((t - t_lo) * batch_ + s) * gate_row_; }

  void step(int64_t layer, int64_t d, const DirectionWeights& w, int64_t t, int64_t t_lo) {
    const bool reverse = d == 1;
    const int64_t rows = active_[t];
    const bool project = dims_.proj_size > 0;
    for (int64_t s = 0; s < rows; ++s) {
      // A row's first step reads h0: t = 0 going forward, its own last step going backward.
      const bool first = reverse ? t == length_[s] - 1 : t == 0;
      if (first) {
        ws_.h_rows[s] = req_.h0 != nullptr ? req_.h0 + state_index(layer, d, s) * h_out_ : ws_.zeros.data();
      } else {
        ws_.h_rows[s] = output_row(layer, d, reverse ? t + 1 : t - 1, s);
      }
      ws_.z_rows[s] = z_row(t, t_lo, s);
      ws_.out_rows[s] = project ? ws_.h_raw.data() + s * model_.hidden_padded_ : output_row(layer, d, t, s);
    }

    StepArgs<T> args;
    args.rows = rows;
    args.h_prev = ws_.h_rows.data();
    args.z = ws_.z_rows.data();
    args.w_hh = w.w_hh.data();
    args.k = h_out_;
    args.hidden_size = dims_.hidden_size;
    args.panel_begin = 0;
    args.panel_end = model_.hidden_padded_ / kPanelWidth<T>;
    args.c = ws_.c.data();
    args.c_stride = model_.hidden_padded_;
    args.h_out = ws_.out_rows.data();
    if (rows <= kFusedStepMaxRows) {
      kernels_.lstm_step_fused(args);
    } else {
      GemmArgs<T> gemm;
      gemm.rows = rows;
      gemm.a = ws_.h_rows.data();
      gemm.k = h_out_;
      gemm.w = w.w_hh.data();
      gemm.gates = kGates;
      gemm.panel_begin = args.panel_begin;
      gemm.panel_end = args.panel_end;
      gemm.c = ws_.z_rows.data();
      gemm.a_pack = ws_.a_pack.data();
      kernels_.gemm_accumulate(gemm);
      kernels_.lstm_cell_update(args);
    }
    if (project) project_hidden(layer, d, w, t, rows);
    for (int64_t s = rows; s < batch_; ++s) std::fill_n(output_row(layer, d, t, s), h_out_, T(0));
  }

  // h = (o * tanh(c)) W_hr^T, written to the output rows.
  void project_hidden(int64_t layer, int64_t d, const DirectionWeights& w, int64_t t, int64_t rows) {
    for (int64_t s = 0; s < rows; ++s) {
      ws_.h_rows[s] = ws_.h_raw.data() + s * model_.hidden_padded_;
      ws_.out_rows[s] = ws_.proj_acc.data() + s * model_.proj_padded_;
      std::fill_n(ws_.out_rows[s], model_.proj_padded_, T(0));
    }
    GemmArgs<T> gemm;
    gemm.rows = rows;
    gemm.a = ws_.h_rows.data();
    gemm.k = dims_.hidden_size;
    gemm.w = w.w_hr.data();
    gemm.gates = 1;
    gemm.panel_begin = 0;
    gemm.panel_end = model_.proj_padded_ / kPanelWidth<T>;
    gemm.c = ws_.out_rows.data();
    gemm.a_pack = ws_.a_pack.data();
    kernels_.gemm_accumulate(gemm);
    for (int64_t s = 0; s < rows; ++s) std::memcpy(output_row(layer, d, t, s), ws_.out_rows[s], h_out_ * sizeof(T));
  }

  const PackedLstm& model_;
  const ForwardRequest<T>& req_;
  const KernelTable<T>& kernels_;
  const LstmDims& dims_;
  int64_t steps_ = 0, batch_ = 0, h_out_ = 0, row_width_ = 0, gate_row_ = 0, chunk_steps_ = 1;
  Workspace<T>& ws_;
  std::vector<int64_t>& order_;   // slot -> caller's batch index
  std::vector<int64_t>& length_;  // per slot
  std::vector<int64_t>& active_;  // per step: rows still running
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
