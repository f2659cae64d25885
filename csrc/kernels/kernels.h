// The per-ISA kernel interface: plain structs of arguments and one table of function pointers per
// (ISA, dtype). Everything ISA-specific lives behind this table; the orchestration in lstm.cc
// never sees a vector type.
//
// Packed weight layout (see pack_weights.h): for panel p of P = kPanelWidth hidden units, the
// reduction dimension in blocks of kKBlock k (the last one may be shorter, L values long); within
// a block, gate after gate, one run of P values per k:
//   packed[p * K * gates * P + k0 * gates * P + (g * L + (k - k0)) * P + u] = W[g * H + p * P + u][k]
// for k in the block starting at k0. Each gate's part of a block is one contiguous stretch, which
// the GEMM's micro-kernel reads in place, k after k.
// Accumulator rows (z) use the matching layout: row[(p * gates + g) * P + u].
//
// Weights may be stored as W = T, bf16 or int8 (weight_formats.h), P being the panel width of T
// whatever W is. Their runs interleave S = kKStep consecutive k per unit (S = 1: the layout above;
// 2 for bf16, 4 for int8), over K padded to Ks = stored_k<W>(K) and blocks of stored length Ls:
//   packed[p * Ks * gates * P + k0 * gates * P + g * Ls * P + ((k - k0) / S * P + u) * S + (k - k0) % S]
// so that one 32-bit word holds one unit's weights for S consecutive k. int8 scales go beside
// them, one run of P per gate and k group:
//   scales[((p * groups + k / kInt8Group) * gates + g) * P + u], groups = scale_groups(K),
// and in the same layout the int32 sum of each group's int8 weights (the VNNI kernels need it).
#pragma once

#include <cstdint>

#include "../lstm_dims.h"
#include "../weight_formats.h"

namespace fastlstm {

template <typename T, typename W = T>
struct GemmArgs {
  int64_t rows = 0;
  const T* const* a = nullptr;  // rows pointers to K contiguous values
  int64_t k = 0;
  const W* w = nullptr;  // packed weights
  const T* w_scales = nullptr;  // their scales, for int8
  const int32_t* w_sums = nullptr;  // and their group sums
  int64_t gates = 0;     // 4 for the LSTM gates, 1 for the projection
  int64_t panel_begin = 0, panel_end = 0;
  T* const* c = nullptr;  // rows pointers to accumulator rows (packed layout), updated in place
  T* a_pack = nullptr;    // scratch of at least rows * (k + 16) values
};

// One LSTM time step for `rows` rows on panels [panel_begin, panel_end):
//   z += h_prev W_hh^T (fused step only), then the gate activations and the cell update.
template <typename T, typename W = T>
struct StepArgs {
  int64_t rows = 0;
  const T* const* h_prev = nullptr;  // rows pointers, k values each
  const T* const* z = nullptr;       // rows pointers to x W_ih^T + bias (packed layout); see x
  // Fused step only: when x is set, z is not read; the step starts from the bias and adds x W_ih^T
  // itself (one sweep instead of a separate projection, for single-step calls).
  const T* const* x = nullptr;       // rows pointers, k_in values each
  const W* w_ih = nullptr;           // packed input weights
  const T* w_ih_scales = nullptr;    // their scales, for int8
  const int32_t* w_ih_sums = nullptr;  // and their group sums
  const T* bias = nullptr;           // packed b_ih + b_hh, one z row
  int64_t k_in = 0;
  const W* w_hh = nullptr;           // packed recurrent weights
  const T* w_hh_scales = nullptr;    // their scales, for int8
  const int32_t* w_hh_sums = nullptr;  // and their group sums
  // Scratch for the int8 kernels with VNNI, which quantize the fused step's rows: at least
  // rows * (k_in + k + 16) values.
  T* scratch = nullptr;
  int64_t k = 0;                     // H_out
  int64_t hidden_size = 0;           // valid units; the last panel may be partial
  int64_t panel_begin = 0, panel_end = 0;
  T* c = nullptr;           // cell state, rows x c_stride, updated in place
  int64_t c_stride = 0;     // padded hidden size
  T* const* h_out = nullptr;  // rows pointers, hidden_size values written each
  // Fused step: rows go in groups, one sweep over the panels each; the first sweep is upward when
  // sweep_parity is even, and each next one turns around.
  int64_t sweep_parity = 0;
};

template <typename T, typename W = T>
struct KernelTable {
  const char* isa = "";
  // c[r] += a[r] @ W for every row, on the given panels.
  void (*gemm_accumulate)(const GemmArgs<T, W>&) = nullptr;
  // Matrix-vector recurrence fused with the cell update; best for a few rows.
  // Returns the sweeps it made over the weights (they depend on the ISA's rows per group).
  int64_t (*lstm_step_fused)(const StepArgs<T, W>&) = nullptr;
  // Steps of up to this many rows take lstm_step_fused, more rows lstm_step_gemm.
  int64_t fused_step_max_rows = 0;
  // The step for many rows: the GEMM args add h_prev W_hh^T to the step's z, each panel followed by
  // its cell update.
  void (*lstm_step_gemm)(const GemmArgs<T, W>& gemm, const StepArgs<T, W>& step) = nullptr;
};

// One getter per ISA and weight format, each defined in its ISA's own translation unit. The
// reduced-precision tables widen the weights to float32 in registers and compute as the float32
// table does (see lstm_kernels_impl.h).
#define FASTLSTM_DECLARE_KERNEL_GETTERS                 \
  const KernelTable<float>& kernels_f32();              \
  const KernelTable<double>& kernels_f64();             \
  const KernelTable<float, Bf16>& kernels_bf16();       \
  const KernelTable<float, int8_t>& kernels_i8();
namespace scalar { FASTLSTM_DECLARE_KERNEL_GETTERS }
namespace avx2 { FASTLSTM_DECLARE_KERNEL_GETTERS }
namespace avx512 { FASTLSTM_DECLARE_KERNEL_GETTERS }
namespace avx512_vnni { const KernelTable<float, int8_t>& kernels_i8(); }
#undef FASTLSTM_DECLARE_KERNEL_GETTERS

}  // namespace fastlstm
