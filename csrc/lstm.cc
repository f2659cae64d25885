#include "lstm.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <numeric>

#include "cpu_features.h"
#include "kernels/kernels.h"
#include "pack_weights.h"
#include "thread_pool.h"

namespace fastlstm {
namespace {

// The input projection runs over chunks of time steps, each one GEMM. Bigger chunks read W_ih
// fewer times, which matters when W_ih comes from L3 or memory; the accumulators need not stay in
// cache, as each step then reads only its own row.
constexpr int64_t kChunkBytes = 1024 * 1024;

// A step's hidden units are shared among threads only when each member's share is big enough to
// pay for the sync that ends every step (~0.1-0.3 us between cores): about half a microsecond of
// FMAs per member.
constexpr int64_t kMinMemberStepMacs = int64_t(1) << 16;
// With this many rows per thread, threads take whole sequences (no per-step sync) rather than
// sharing each step's hidden units: on `medium`'s network at 2 threads the hidden split wins up to
// batch 5, the two tie at 6-7, and whole sequences win from 8 (python bench/lab.py threads).
constexpr int64_t kMinRowsPerThread = 4;

// Scratch one thread of a forward call uses privately.
template <typename T>
struct MemberScratch {
  AlignedBuffer<T> a_pack;  // GEMM scratch
  std::vector<const T*> a_rows, h_rows;
  std::vector<T*> z_rows, out_rows;
  uint64_t sweeps = 0;  // fused-step sweeps over the weights so far (their direction alternates)
};

// Scratch one direction of a layer uses; both directions may run at once on different threads.
template <typename T>
struct DirectionScratch {
  AlignedBuffer<T> z, c, h_raw, proj_acc;
};

template <typename T>
std::size_t bytes_of(const AlignedBuffer<T>& buffer) {
  return buffer.size() * sizeof(T);
}

template <typename V>
std::size_t bytes_of(const std::vector<V>& vector) {
  return vector.capacity() * sizeof(V);
}

// Scratch memory of the forward pass, kept per calling thread and grown to its high-water mark,
// so that repeated calls (a service's steady state, a stream of single steps) allocate nothing.
// A call that needed more than the workspace limit gives it back when it ends: one huge call must
// not leave every service thread that ever made one holding gigabytes.
template <typename T>
struct Workspace {
  std::vector<int64_t> order, length, active;
  AlignedBuffer<T> layer_out[2], zeros;
  DirectionScratch<T> directions[2];
  std::vector<MemberScratch<T>> members;
  PhaseSync sync;  // shares out each phase's chunks among the team of a call from this thread

  static Workspace& for_this_thread() {
    thread_local Workspace workspace;
    return workspace;
  }

  std::size_t bytes() const {
    std::size_t total = bytes_of(order) + bytes_of(length) + bytes_of(active) + bytes_of(layer_out[0]) +
                        bytes_of(layer_out[1]) + bytes_of(zeros) + bytes_of(members);
    for (const DirectionScratch<T>& d : directions)
      total += bytes_of(d.z) + bytes_of(d.c) + bytes_of(d.h_raw) + bytes_of(d.proj_acc);
    for (const MemberScratch<T>& m : members)
      total += bytes_of(m.a_pack) + bytes_of(m.a_rows) + bytes_of(m.h_rows) + bytes_of(m.z_rows) + bytes_of(m.out_rows);
    return total;
  }

  void release() {
    order = {};
    length = {};
    active = {};
    for (AlignedBuffer<T>& buffer : layer_out) buffer = AlignedBuffer<T>();
    zeros = AlignedBuffer<T>();
    for (DirectionScratch<T>& d : directions) d = DirectionScratch<T>();
    std::vector<MemberScratch<T>>().swap(members);
  }
};

std::atomic<int64_t> g_workspace_limit{kDefaultWorkspaceLimit};

template <typename T>
void grow(AlignedBuffer<T>& buffer, int64_t count) {
  if (buffer.size() < static_cast<std::size_t>(count)) buffer.resize(count);
}

template <typename V>
void grow(std::vector<V>& vector, int64_t count) {
  if (vector.size() < static_cast<std::size_t>(count)) vector.resize(count);
}

// The share [begin, end) of `count` items that member `rank` of `size` takes.
struct Range {
  int64_t begin, end;
};
inline Range split(int64_t count, int rank, int size) {
  return {count * rank / size, count * (rank + 1) / size};
}

// One member's place in the team running a direction: its rank among `size` members. Members share
// each phase's work through `sync` (hidden units by default), or, with split_rows, each runs its
// own interleaved batch rows alone.
struct TeamMember {
  int rank, size;
  PhaseSync* sync;
  uint64_t* phase;  // this member's phase counter for `sync`
  bool split_rows;
};

}  // namespace

namespace {

// Packs one matrix (and its scales, for a scaled format) into the panel layout.
template <typename T, typename W>
void pack_matrix(const MatrixSource<T, W>& source, int64_t gates, int64_t units, int64_t k, AlignedBuffer<W>& values,
                 AlignedBuffer<T>& scales, AlignedBuffer<int32_t>& sums) {
  values = pack_panels<T, W>(source.values, gates, units, k);
  if constexpr (WeightFormat<W>::kScaled) {
    scales = pack_scales<T>(source.scales, gates, units, k);
    sums = pack_group_sums<T>(source.values, gates, units, k);
  }
}

}  // namespace

template <typename T, typename W>
PackedLstm<T, W>::PackedLstm(const LstmDims& dims, const std::vector<DirectionSource<T, W>>& directions)
    : dims_(dims) {
  const int64_t H = dims.hidden_size;
  hidden_padded_ = round_up(H, kPanelWidth<T>);
  proj_padded_ = round_up(dims.proj_size, kPanelWidth<T>);
  for (int64_t layer = 0; layer < dims.num_layers; ++layer) {
    for (int64_t d = 0; d < dims.num_directions(); ++d) {
      const DirectionSource<T, W>& source = directions.at(layer * dims.num_directions() + d);
      DirectionWeights dir;
      dir.input_size = dims.layer_input_size(layer);
      pack_matrix(source.w_ih, kGates, H, dir.input_size, dir.w_ih, dir.w_ih_scales, dir.w_ih_sums);
      pack_matrix(source.w_hh, kGates, H, dims.output_size(), dir.w_hh, dir.w_hh_scales, dir.w_hh_sums);
      dir.bias = pack_bias(dims.bias ? source.b_ih : nullptr, dims.bias ? source.b_hh : nullptr, H);
      if (dims.proj_size > 0) pack_matrix(source.w_hr, 1, dims.proj_size, H, dir.w_hr, dir.w_hr_scales, dir.w_hr_sums);
      directions_.push_back(std::move(dir));
    }
  }
}

// Everything one forward call needs beyond the packed weights. Scratch is sized before the time
// loop; the loop itself only moves pointers. With a team of threads, every member runs the same
// loop, sharing each phase (a step's gates, say) by hidden units through a PhaseSync, or taking
// whole directions or whole batch rows.
template <typename T, typename W>
class PackedLstm<T, W>::ForwardCall {
 public:
  ForwardCall(const PackedLstm& model, const ForwardRequest<T>& request, int threads)
      : model_(model),
        req_(request),
        kernels_(active_kernels<T, W>()),
        dims_(model.dims_),
        ws_(Workspace<T>::for_this_thread()),
        order_(ws_.order),
        length_(ws_.length),
        active_(ws_.active),
        sync_(ws_.sync) {
    steps_ = req_.seq_len;
    batch_ = req_.batch;
    h_out_ = dims_.output_size();
    row_width_ = dims_.num_directions() * h_out_;
    gate_row_ = kGates * model.hidden_padded_;
    sort_batch_by_length();
    team_size_ = choose_team_size(threads);
    // A member of a row split runs only its own rows; every other member sees them all.
    const int64_t member_batch = split_rows_ ? (batch_ + team_size_ - 1) / team_size_ : batch_;

    // Chunks of equal length: a short last chunk would stream all of W_ih for a few rows.
    const int64_t max_chunk_steps =
        std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(1, batch_ * gate_row_ * sizeof(T)), 1, steps_);
    const int64_t chunks = (steps_ + max_chunk_steps - 1) / max_chunk_steps;  // steps_ >= 1 here
    chunk_steps_ = (steps_ + chunks - 1) / chunks;
    const int64_t chunk_rows = chunk_steps_ * batch_;
    if (dims_.num_layers > 1) grow(ws_.layer_out[0], steps_ * batch_ * row_width_);
    if (dims_.num_layers > 2) grow(ws_.layer_out[1], steps_ * batch_ * row_width_);
    grow(ws_.zeros, h_out_);
    std::fill_n(ws_.zeros.data(), h_out_, T(0));  // the h0 of rows given none
    for (int64_t d = 0; d < dims_.num_directions(); ++d) {
      DirectionScratch<T>& dir = ws_.directions[d];
      grow(dir.z, chunk_rows * gate_row_);
      grow(dir.c, batch_ * model.hidden_padded_);
      if (dims_.proj_size > 0) {
        grow(dir.h_raw, batch_ * model.hidden_padded_);
        grow(dir.proj_acc, batch_ * model.proj_padded_);
      }
    }
    grow(ws_.members, team_size_);
    const int64_t widest_input = std::max(dims_.input_size, row_width_);
    const int64_t member_chunk_rows = chunk_steps_ * member_batch;
    for (int m = 0; m < team_size_; ++m) {
      MemberScratch<T>& member = ws_.members[m];
      // GEMM rows packed (k + 16 values a row: the int8 kernels' quantized rows fit too), or a fused
      // step's rows quantized (input and hidden, at most the widest input's room twice).
      grow(member.a_pack, std::max(member_chunk_rows * (widest_input + 16),
                                   member_batch * (2 * std::max({widest_input, h_out_, dims_.hidden_size}) + 16)));
      grow(member.a_rows, member_chunk_rows);
      grow(member.z_rows, member_chunk_rows);
      grow(member.h_rows, member_batch);
      grow(member.out_rows, member_batch);
    }
  }

  void run() {
    if (team_size_ == 1) return run_member(0);  // the common small call: no pool, no std::function
    sync_.reset(team_size_);
    std::function<void(int)> job = [&](int member) { run_member(member); };
    ThreadPool& pool = ThreadPool::instance();
    const bool helpers_left = pool.run(team_size_, job);
    pool.report_team_call(sync_.solo() || !helpers_left);
  }

 private:
  int choose_team_size(int threads) {
    int size = worthwhile_team_size(threads);
    // Checked last: it reads the clock, which a call too small to split need not pay for.
    if (size > 1 && ThreadPool::instance().backing_off()) size = 1;
    split_rows_ = size > 1 && batch_ >= 2 * kMinRowsPerThread;
    return size;
  }

  // Any thread count works: a row split gives each member at least kMinRowsPerThread rows, a
  // hidden-unit split at least one panel and kMinMemberStepMacs of each step.
  int worthwhile_team_size(int threads) const {
    const int64_t H = dims_.hidden_size;
    if (threads <= 1 || batch_ == 0) return 1;
    if (batch_ >= 2 * kMinRowsPerThread) return static_cast<int>(std::min<int64_t>(threads, batch_ / kMinRowsPerThread));
    const int64_t panels = model_.hidden_padded_ / kPanelWidth<T>;
    const int64_t step_macs = batch_ * 4 * H * h_out_;
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({threads, panels, step_macs / kMinMemberStepMacs})));
  }

  // Every member runs the same sequence of phases; whichever members are present share each
  // phase's chunks, so the result is the same with one member or all of them.
  void run_member(int member) {
    uint64_t phase = 0;
    for (int64_t layer = 0; layer < dims_.num_layers; ++layer) {
      // Directions run one after the other, each split like a unidirectional layer: running them
      // on separate cores would need no synchronisation, but a late or descheduled thread would
      // then hold up the call by a whole direction instead of one step's chunk.
      if (split_rows_) {
        // Each chunk is a group of whole sequences, run by one thread through every step.
        for (int64_t d = 0; d < dims_.num_directions(); ++d)
          sync_.run_phase(member, phase, [&](int rows) {
            run_direction(layer, d, {rows, team_size_, nullptr, nullptr, true}, member);
          });
      } else {
        for (int64_t d = 0; d < dims_.num_directions(); ++d)
          run_direction(layer, d, {member, team_size_, &sync_, &phase, false}, member);
      }
    }
  }

  // Slots are batch rows sorted by decreasing length, so the rows still running at any step are
  // a prefix: active_[t] of them.
  void sort_batch_by_length() {
    order_.resize(batch_);  // within capacity after the first calls: no allocation
    std::iota(order_.begin(), order_.end(), 0);
    length_.assign(batch_, steps_);
    if (req_.lengths != nullptr) {
      std::stable_sort(order_.begin(), order_.end(),
                       [&](int64_t a, int64_t b) { return req_.lengths[a] > req_.lengths[b]; });
      // Clamped although the bindings validated them: an index out of [1, steps] must never
      // become an out-of-bounds read, whatever the caller passed.
      for (int64_t s = 0; s < batch_; ++s) length_[s] = std::clamp<int64_t>(req_.lengths[order_[s]], 1, steps_);
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

  // What one member of a direction's team owns: hidden panels, their units, projection panels,
  // and the batch slots first, first + stride, ...
  struct WorkShare {
    Range panels, units, proj_panels, out_units;
    int64_t first_row = 0, row_stride = 1;
  };

  WorkShare share_of(const TeamMember& team, int chunk) const {
    constexpr int64_t P = kPanelWidth<T>;
    const int64_t H = dims_.hidden_size;
    const int rank = team.split_rows ? 0 : chunk, size = team.split_rows ? 1 : team.size;
    WorkShare share;
    if (team.split_rows) {
      share.first_row = chunk;
      share.row_stride = team.size;
    }
    share.panels = split(model_.hidden_padded_ / P, rank, size);
    share.units = {std::min(share.panels.begin * P, H), std::min(share.panels.end * P, H)};
    share.proj_panels = split(model_.proj_padded_ / P, rank, size);
    share.out_units = dims_.proj_size > 0 ? Range{std::min(share.proj_panels.begin * P, dims_.proj_size),
                                                  std::min(share.proj_panels.end * P, dims_.proj_size)}
                                          : share.units;
    return share;
  }

  // Runs work(share) for every share of the team's work in this phase: the member's own when it
  // works alone, else whichever chunks it claims.
  template <typename Work>
  void phase(const TeamMember& team, Work&& work) {
    if (team.size == 1 || team.split_rows) return work(share_of(team, team.rank));
    team.sync->run_phase(team.rank, *team.phase, [&](int chunk) { work(share_of(team, chunk)); });
  }

  // One layer and direction. Work is grouped into as few phases as the data dependencies allow,
  // one per step (two with a projection): what a share needs that depends only on its own units
  // (initial c, the chunk's input projection) rides along with its gates. The final state gets a
  // phase of its own because h_n may be h0 itself (a stream updated in place), which every share's
  // first step reads in full.
  void run_direction(int64_t layer, int64_t d, const TeamMember& team, int member) {
    const DirectionWeights& w = model_.directions_[layer * dims_.num_directions() + d];
    DirectionScratch<T>& scratch = ws_.directions[d];
    MemberScratch<T>& own_scratch = ws_.members[member];
    const bool reverse = d == 1;
    const bool project = dims_.proj_size > 0;

    const int64_t chunks = (steps_ + chunk_steps_ - 1) / chunk_steps_;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      int64_t t_lo = chunk * chunk_steps_, t_hi = std::min(steps_, t_lo + chunk_steps_);
      if (reverse) {
        t_lo = std::max<int64_t>(0, steps_ - (chunk + 1) * chunk_steps_);
        t_hi = steps_ - chunk * chunk_steps_;
      }
      for (int64_t i = 0; i < t_hi - t_lo; ++i) {
        const int64_t t = reverse ? t_hi - 1 - i : t_lo + i;
        phase(team, [&](const WorkShare& share) {
          if (chunk == 0 && i == 0) init_cell_state(layer, d, scratch, share);
          // A one-step chunk of few rows (a streaming step) adds its input projection inside the
          // fused step: one sweep over the weights, no z round trip.
          const bool input_in_step = t_hi - t_lo == 1 && rows_at(share, t) <= kernels_.fused_step_max_rows;
          if (i == 0 && !input_in_step) project_inputs(layer, w, scratch, own_scratch, share, t_lo, t_hi);
          step_gates(layer, d, w, scratch, own_scratch, share, t, t_lo, input_in_step);
        });
        if (project) phase(team, [&](const WorkShare& share) { step_projection(layer, d, w, scratch, own_scratch, share, t); });
      }
    }
    phase(team, [&](const WorkShare& share) { copy_final_state(layer, d, scratch, share); });
  }

  void init_cell_state(int64_t layer, int64_t d, DirectionScratch<T>& scratch, const WorkShare& share) {
    const int64_t H = dims_.hidden_size, Hp = model_.hidden_padded_;
    for (int64_t s = share.first_row; s < batch_; s += share.row_stride) {
      T* c = scratch.c.data() + s * Hp;
      std::fill(c + share.panels.begin * kPanelWidth<T>, c + share.panels.end * kPanelWidth<T>, T(0));
      if (req_.c0 != nullptr)
        std::copy(req_.c0 + state_index(layer, d, s) * H + share.units.begin,
                  req_.c0 + state_index(layer, d, s) * H + share.units.end, c + share.units.begin);
    }
  }

  // h_n and c_n: each row's state at its own last step (step 0 going backward).
  void copy_final_state(int64_t layer, int64_t d, DirectionScratch<T>& scratch, const WorkShare& share) {
    const int64_t H = dims_.hidden_size, Hp = model_.hidden_padded_;
    for (int64_t s = share.first_row; s < batch_; s += share.row_stride) {
      const int64_t t_last = d == 1 ? 0 : length_[s] - 1;
      const T* h_last = output_row(layer, d, t_last, s);
      std::copy(h_last + share.out_units.begin, h_last + share.out_units.end,
                req_.h_n + state_index(layer, d, s) * h_out_ + share.out_units.begin);
      std::copy(scratch.c.data() + s * Hp + share.units.begin, scratch.c.data() + s * Hp + share.units.end,
                req_.c_n + state_index(layer, d, s) * H + share.units.begin);
    }
  }

  T* z_row(DirectionScratch<T>& scratch, int64_t t, int64_t t_lo, int64_t s) {
    return scratch.z.data() + ((t - t_lo) * batch_ + s) * gate_row_;
  }

  // z = x W_ih^T + b_ih + b_hh for every running row of steps [t_lo, t_hi): one GEMM.
  void project_inputs(int64_t layer, const DirectionWeights& w, DirectionScratch<T>& scratch, MemberScratch<T>& own_scratch,
                      const WorkShare& share, int64_t t_lo, int64_t t_hi) {
    const int64_t first = share.panels.begin * kGates * kPanelWidth<T>;
    const int64_t count = (share.panels.end - share.panels.begin) * kGates * kPanelWidth<T>;
    int64_t rows = 0;
    for (int64_t t = t_lo; t < t_hi; ++t) {
      for (int64_t s = share.first_row; s < active_[t]; s += share.row_stride, ++rows) {
        own_scratch.a_rows[rows] = input_row(layer, t, s);
        own_scratch.z_rows[rows] = z_row(scratch, t, t_lo, s);
        std::memcpy(own_scratch.z_rows[rows] + first, w.bias.data() + first, count * sizeof(T));
      }
    }
    kernels_.gemm_accumulate(gemm_args(own_scratch, rows, own_scratch.a_rows.data(), w.input_size, w.w_ih.data(),
                                       w.w_ih_scales.data(), w.w_ih_sums.data(), kGates, share.panels,
                                       own_scratch.z_rows.data()));
  }

  // Arguments for c[r] += a[r] @ W on the given panels, for `rows` rows, with this member's scratch.
  GemmArgs<T, W> gemm_args(MemberScratch<T>& own_scratch, int64_t rows, const T* const* a, int64_t k, const W* w,
                           const T* w_scales, const int32_t* w_sums, int64_t gates, Range panels, T* const* c) {
    GemmArgs<T, W> args;
    args.rows = rows;
    args.a = a;
    args.k = k;
    args.w = w;
    args.w_scales = w_scales;
    args.w_sums = w_sums;
    args.gates = gates;
    args.panel_begin = panels.begin;
    args.panel_end = panels.end;
    args.c = c;
    args.a_pack = own_scratch.a_pack.data();
    return args;
  }

  // The share's rows running at step t.
  int64_t rows_at(const WorkShare& share, int64_t t) const {
    return active_[t] > share.first_row ? (active_[t] - share.first_row + share.row_stride - 1) / share.row_stride : 0;
  }

  // The gates and cell update of step t for one share; h goes to h_raw when projecting. With
  // input_in_step, the fused step also computes the input projection (z is then not used).
  void step_gates(int64_t layer, int64_t d, const DirectionWeights& w, DirectionScratch<T>& scratch,
                  MemberScratch<T>& own_scratch, const WorkShare& share, int64_t t, int64_t t_lo, bool input_in_step) {
    const bool reverse = d == 1;
    const bool project = dims_.proj_size > 0;
    int64_t rows = 0;  // this member's running rows; row r is slot first_row + r * row_stride
    for (int64_t s = share.first_row; s < active_[t]; s += share.row_stride, ++rows) {
      // A row's first step reads h0: t = 0 going forward, its own last step going backward.
      const bool first = reverse ? t == length_[s] - 1 : t == 0;
      if (first) {
        own_scratch.h_rows[rows] = req_.h0 != nullptr ? req_.h0 + state_index(layer, d, s) * h_out_ : ws_.zeros.data();
      } else {
        own_scratch.h_rows[rows] = output_row(layer, d, reverse ? t + 1 : t - 1, s);
      }
      own_scratch.z_rows[rows] = z_row(scratch, t, t_lo, s);
      if (input_in_step) own_scratch.a_rows[rows] = input_row(layer, t, s);
      own_scratch.out_rows[rows] = project ? scratch.h_raw.data() + s * model_.hidden_padded_ : output_row(layer, d, t, s);
    }

    StepArgs<T, W> args;
    args.rows = rows;
    args.h_prev = own_scratch.h_rows.data();
    args.z = own_scratch.z_rows.data();
    args.w_hh = w.w_hh.data();
    args.w_hh_scales = w.w_hh_scales.data();
    args.w_hh_sums = w.w_hh_sums.data();
    args.scratch = own_scratch.a_pack.data();
    args.k = h_out_;
    args.hidden_size = dims_.hidden_size;
    args.panel_begin = share.panels.begin;
    args.panel_end = share.panels.end;
    args.c = scratch.c.data() + share.first_row * model_.hidden_padded_;
    args.c_stride = share.row_stride * model_.hidden_padded_;
    args.h_out = own_scratch.out_rows.data();
    if (input_in_step) {
      args.x = own_scratch.a_rows.data();
      args.w_ih = w.w_ih.data();
      args.w_ih_scales = w.w_ih_scales.data();
      args.w_ih_sums = w.w_ih_sums.data();
      args.bias = w.bias.data();
      args.k_in = w.input_size;
    }
    if (rows <= kernels_.fused_step_max_rows) {
      // A few rows: the matrix-vector recurrence fused with the cell update. More rows amortise a
      // GEMM over the packed weights, each panel's cell update following its GEMM.
      // Each member's sweeps over its panels alternate direction, within a step and across steps.
      args.sweep_parity = own_scratch.sweeps & 1;
      own_scratch.sweeps += kernels_.lstm_step_fused(args);
    } else {
      kernels_.lstm_step_gemm(gemm_args(own_scratch, rows, own_scratch.h_rows.data(), h_out_, w.w_hh.data(),
                                        w.w_hh_scales.data(), w.w_hh_sums.data(), kGates, share.panels,
                                        own_scratch.z_rows.data()),
                              args);
    }
    if (!project) zero_finished_rows(layer, d, t, share);
  }

  // Rows whose sequence has ended output zeros, as PackedSequence semantics ask.
  void zero_finished_rows(int64_t layer, int64_t d, int64_t t, const WorkShare& share) {
    for (int64_t s = share.first_row; s < batch_; s += share.row_stride) {
      if (s < active_[t]) continue;
      T* row = output_row(layer, d, t, s);
      std::fill(row + share.out_units.begin, row + share.out_units.end, T(0));
    }
  }

  // h = (o * tanh(c)) W_hr^T on one share's projection panels, written to the output rows. Runs
  // once the whole of h_raw for step t exists.
  void step_projection(int64_t layer, int64_t d, const DirectionWeights& w, DirectionScratch<T>& scratch,
                       MemberScratch<T>& own_scratch, const WorkShare& share, int64_t t) {
    constexpr int64_t P = kPanelWidth<T>;
    const int64_t rows = rows_at(share, t);
    for (int64_t r = 0, s = share.first_row; r < rows; ++r, s += share.row_stride) {
      own_scratch.h_rows[r] = scratch.h_raw.data() + s * model_.hidden_padded_;
      own_scratch.out_rows[r] = scratch.proj_acc.data() + s * model_.proj_padded_;
      std::fill(own_scratch.out_rows[r] + share.proj_panels.begin * P, own_scratch.out_rows[r] + share.proj_panels.end * P, T(0));
    }
    kernels_.gemm_accumulate(gemm_args(own_scratch, rows, own_scratch.h_rows.data(), dims_.hidden_size, w.w_hr.data(),
                                       w.w_hr_scales.data(), w.w_hr_sums.data(), 1, share.proj_panels,
                                       own_scratch.out_rows.data()));
    for (int64_t r = 0, s = share.first_row; r < rows; ++r, s += share.row_stride)
      std::copy(own_scratch.out_rows[r] + share.out_units.begin, own_scratch.out_rows[r] + share.out_units.end,
                output_row(layer, d, t, s) + share.out_units.begin);
    zero_finished_rows(layer, d, t, share);
  }

  const PackedLstm& model_;
  const ForwardRequest<T>& req_;
  const KernelTable<T, W>& kernels_;
  const LstmDims& dims_;
  Workspace<T>& ws_;
  std::vector<int64_t>& order_;   // slot -> caller's batch index
  std::vector<int64_t>& length_;  // per slot
  std::vector<int64_t>& active_;  // per step: rows still running
  int64_t steps_ = 0, batch_ = 0, h_out_ = 0, row_width_ = 0, gate_row_ = 0, chunk_steps_ = 1;
  int team_size_ = 1;        // chunks per phase, and the most threads that may share them
  bool split_rows_ = false;  // members take batch rows rather than hidden units
  PhaseSync& sync_;          // shares out each phase's chunks among the team (ws_.sync)
};

template <typename T, typename W>
void PackedLstm<T, W>::forward(const ForwardRequest<T>& request, int threads) const {
  if (request.batch == 0 || request.seq_len == 0) return;
  if (threads <= 0) threads = ThreadPool::instance().num_threads();
  {
    ForwardCall call(*this, request, threads);
    call.run();
  }
  Workspace<T>& workspace = Workspace<T>::for_this_thread();
  if (workspace.bytes() > static_cast<std::size_t>(g_workspace_limit.load(std::memory_order_relaxed)))
    workspace.release();
}

void set_workspace_limit(int64_t bytes) { g_workspace_limit.store(std::max<int64_t>(0, bytes), std::memory_order_relaxed); }

int64_t workspace_limit() { return g_workspace_limit.load(std::memory_order_relaxed); }

template class PackedLstm<float>;
template class PackedLstm<double>;
template class PackedLstm<float, Bf16>;
template class PackedLstm<float, int8_t>;

}  // namespace fastlstm
