// _read_probe: the benchmark lab's cache read probe as a Python module (built by __init__.py).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace read_probe {
double measure_read_seconds_scalar(int64_t bytes, int passes, int repeats);
#if defined(READ_PROBE_X86_64)
double measure_read_seconds_avx2(int64_t bytes, int passes, int repeats);
double measure_read_seconds_avx512(int64_t bytes, int passes, int repeats);
#endif
}  // namespace read_probe

namespace {

using Probe = double (*)(int64_t, int, int);

// The probe for an ISA name as fastlstm.cpu_info() spells it; refuses one this CPU lacks, whose
// instructions would fault.
Probe probe_for(const std::string& isa) {
  if (isa == "scalar") return &read_probe::measure_read_seconds_scalar;
#if defined(READ_PROBE_X86_64)
  __builtin_cpu_init();
  if (isa == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return &read_probe::measure_read_seconds_avx2;
  if (isa == "avx512" && __builtin_cpu_supports("avx512f")) return &read_probe::measure_read_seconds_avx512;
#endif
  throw std::invalid_argument("no read probe for ISA '" + isa + "' on this CPU");
}

}  // namespace

PYBIND11_MODULE(_read_probe, m) {
  m.def("measure_read_seconds", [](const std::string& isa, int64_t bytes, int passes, int repeats) {
    if (bytes < 1 || bytes > (int64_t(1) << 30))
      throw std::invalid_argument("bytes must be in [1, 2**30], got " + std::to_string(bytes));
    if (passes < 1 || repeats < 1)
      throw std::invalid_argument("passes and repeats must be at least 1, got " + std::to_string(passes) + " and " +
                                  std::to_string(repeats));
    const Probe probe = probe_for(isa);
    py::gil_scoped_release release;
    return probe(bytes, passes, repeats);
  }, py::arg("isa"), py::arg("bytes"), py::arg("passes"), py::arg("repeats"),
     "Best seconds per pass reading `bytes` of cached data with the ISA's widest loads.");
}
