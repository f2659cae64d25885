// A floor for the benchmark: how fast this core streams a block of weights (widest loads, alternating
// direction between passes; the faster of one stream and the fused step's four per weight block).
#pragma once

#include <cstdint>

namespace fastlstm {

// Best time, in seconds, of one pass over `bytes` of resident data (best of `repeats` batches of
// `passes` passes each, after a warm-up). Uses the active ISA's loads.
double measure_read_seconds(int64_t bytes, int passes, int repeats);

}  // namespace fastlstm
