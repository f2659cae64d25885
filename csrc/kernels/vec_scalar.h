// The portable fallback "vector" of one element; the compiler may still auto-vectorise loops.
#pragma once

#include <cmath>

template <typename Scalar>
struct VecScalar {
  using T = Scalar;
  using Reg = Scalar;
  static constexpr int kWidth = 1;
  static constexpr int kRegisters = 16;  // architectural vector registers
  static Reg zero() { return Reg(0); }
  static Reg set1(T v) { return v; }
  static Reg load(const T* p) { return *p; }
  static void store(T* p, Reg v) { *p = v; }
  static Reg add(Reg a, Reg b) { return a + b; }
  static Reg sub(Reg a, Reg b) { return a - b; }
  static Reg mul(Reg a, Reg b) { return a * b; }
  static Reg div(Reg a, Reg b) { return a / b; }
  static Reg fmadd(Reg a, Reg b, Reg c) { return a * b + c; }
  static Reg sigmoid(Reg a) { return T(1) / (T(1) + std::exp(-a)); }
  static Reg tanh(Reg a) { return std::tanh(a); }
};
