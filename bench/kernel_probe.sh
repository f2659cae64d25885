#!/usr/bin/env bash
# Builds bench/kernel_probe.cc against the kernels in csrc/ (AVX2 + FMA) and runs it:
#
#   bench/kernel_probe.sh              # one recurrent step of batch32's network (32 rows, H 256)
#   bench/kernel_probe.sh 128 512      # batch128's
#
# Needs g++ and a CPU with AVX2 and FMA. About 20 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo || { echo "kernel_probe: needs AVX2 and FMA" >&2; exit 2; }
binary=$(mktemp -d)/kernel_probe
g++ -std=c++17 -O3 -mavx2 -mfma -o "$binary" bench/kernel_probe.cc
"$binary" "$@"
