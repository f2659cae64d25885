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
// bf16 has no kernels with AVX512_BF16's vdpbf16ps: on activations split in two bf16 (to keep
// float32's accuracy) it costs two instructions per 32 multiply-adds, as the FMAs on widened
// weights do, and measured no faster (docs/reduced_precision.md).
FASTLSTM_ACTIVE_TABLE(float, Bf16, kernels_bf16)
#undef FASTLSTM_ACTIVE_TABLE

// int8 weights: within the AVX-512 set, the VNNI kernels where the CPU has VNNI (and they are not
// disabled, for tests of the plain AVX-512 ones).
template <>
const KernelTable<float, int8_t>& active_kernels<float, int8_t>() {
  switch (active_isa()) {
#if defined(__x86_64__)
    case Isa::kAvx512: return dot_enabled() && g_cpu_has_vnni ? avx512_vnni::kernels_i8() : avx512::kernels_i8();
    case Isa::kAvx2: return avx2::kernels_i8();
#endif
    default: break;
  }
  return scalar::kernels_i8();
}

}  // namespace fastlstm
