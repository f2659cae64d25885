// A floor for the benchmark: how fast this core streams a block of weights, read the way the fused
// step reads W_hh (widest loads, alternating direction between passes).
#pragma once

#include <cstdint>

namespace fastlstm {

// Best time, in seconds, of one pass over `bytes` of resident data (best of `repeats` batches of
// `passes` passes each, after a warm-up). Uses the active ISA's loads.
double measure_read_seconds(int64_t bytes, int passes, int repeats);

}  // namespace fastlstm
