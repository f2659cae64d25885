#include "cpu_features.h"

#include <atomic>
#include <stdexcept>

namespace fastlstm {
namespace {

bool cpu_supports(Isa isa) {
#if defined(__x86_64__)
  // libgcc's checks include the OS enabling the wider register state (XCR0).
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
                              __builtin_cpu_supports("fma");
  }
  return false;
#else
  return isa == Isa::kScalar;
#endif
}

std::atomic<int> g_active_isa{static_cast<int>(best_isa())};

#if defined(__x86_64__)
const bool g_cpu_has_vnni = cpu_supports(Isa::kAvx512) && __builtin_cpu_supports("avx512vnni");
const bool g_cpu_has_bf16 = cpu_supports(Isa::kAvx512) && __builtin_cpu_supports("avx512bf16");
#endif

std::atomic<bool> g_dot_enabled{true};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (cpu_supports(isa)) isas.push_back(isa);
  return isas;
}

Isa best_isa() { return supported_isas().back(); }

bool dot_enabled() { return g_dot_enabled.load(std::memory_order_relaxed); }

void set_dot_enabled(bool enabled) { g_dot_enabled.store(enabled, std::memory_order_relaxed); }

Isa active_isa() { return static_cast<Isa>(g_active_isa.load(std::memory_order_relaxed)); }

void set_active_isa(const std::string& name) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (name != isa_name(isa)) continue;
    if (!cpu_supports(isa)) throw std::invalid_argument("this CPU does not support the ISA '" + name + "'");
    g_active_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
    return;
  }
  throw std::invalid_argument("unknown ISA '" + name + "'; expected one of: scalar, avx2, avx512");
}

// One table getter per ISA for one weight format; the AVX translation units exist only on x86-64.
#if defined(__x86_64__)
#define FASTLSTM_ACTIVE_TABLE(T, W, getter)                 \
  template <>                                               \
  const KernelTable<T, W>& active_kernels<T, W>() {         \
    switch (active_isa()) {                                 \
      case Isa::kAvx512: return avx512::getter();           \
      case Isa::kAvx2: return avx2::getter();               \
      default: return scalar::getter();                     \
    }                                                       \
  }
#else
#define FASTLSTM_ACTIVE_TABLE(T, W, getter) \
  template <>                               \
  const KernelTable<T, W>& active_kernels<T, W>() { return scalar::getter(); }
#endif

FASTLSTM_ACTIVE_TABLE(float, float, kernels_f32)
FASTLSTM_ACTIVE_TABLE(double, double, kernels_f64)
#undef FASTLSTM_ACTIVE_TABLE

// Reduced-precision weights: within the AVX-512 set, the kernels with the format's dot-product
// instruction where the CPU has it (and they are not disabled, for tests of the plain ones).
#if defined(__x86_64__)
#define FASTLSTM_ACTIVE_DOT_TABLE(W, getter, dot_set, has_dot)                        \
  template <>                                                                         \
  const KernelTable<float, W>& active_kernels<float, W>() {                           \
    switch (active_isa()) {                                                           \
      case Isa::kAvx512: return dot_enabled() && has_dot ? dot_set::getter() : avx512::getter(); \
      case Isa::kAvx2: return avx2::getter();                                         \
      default: return scalar::getter();                                               \
    }                                                                                 \
  }
FASTLSTM_ACTIVE_DOT_TABLE(Bf16, kernels_bf16, avx512_bf16, g_cpu_has_bf16)
FASTLSTM_ACTIVE_DOT_TABLE(int8_t, kernels_i8, avx512_vnni, g_cpu_has_vnni)
#undef FASTLSTM_ACTIVE_DOT_TABLE
#else
template <>
const KernelTable<float, Bf16>& active_kernels<float, Bf16>() { return scalar::kernels_bf16(); }
template <>
const KernelTable<float, int8_t>& active_kernels<float, int8_t>() { return scalar::kernels_i8(); }
#endif

}  // namespace fastlstm
