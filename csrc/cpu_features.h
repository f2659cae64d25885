// Which instruction sets this CPU (and OS) supports, and which kernel set is active.
#pragma once

#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace fastlstm {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);
std::vector<Isa> supported_isas();  // ascending; always contains kScalar
Isa best_isa();

// The active kernel set starts at best_isa(); set_active_isa lets users and tests force a lower
// one. It throws std::invalid_argument for an unknown or unsupported name.
Isa active_isa();
void set_active_isa(const std::string& name);

// Whether int8 weights use the kernels with VNNI's dot-product instruction when the AVX-512 set is
// active and the CPU has it: by default yes; tests switch them off to exercise the plain AVX-512
// int8 kernels.
bool dot_enabled();
void set_dot_enabled(bool enabled);

// The active set's table for activations T and weights stored as W (float, double, or float with
// Bf16 or int8_t weights).
template <typename T, typename W = T>
const KernelTable<T, W>& active_kernels();

}  // namespace fastlstm
