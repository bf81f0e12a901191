//===- ScalarMath.h - each elementwise op's math, written once --*- C++ -*-===//
//
// The value of every elementwise nn op at one element, as a formula over a
// few primitives. Both backends instantiate it with a builder of their own:
// the CPU's builds arith and math ops (over scalars or vectors), CUDA's
// writes C expressions. So an op means the same on both, and a change to
// its formula (a stabler softplus, a faster tanh) reaches both at once.
//
// A builder B provides, over its value type B::V:
//   V c(double)                      an f32 literal
//   V add, sub, mul, div (V, V)      f32 or i32, as the operands are
//   V neg, exp, log, log1p, sqrt, abs (V)
//   V pow(V, V)                      i32 operands: through f32, truncated
//   V fma(V a, V b, V c)             a * b + c, rounded once
//   V min(V a, V b)                  the smaller; NaN when a is NaN
//   V copysign(V mag, V sign)
//   V greater(V a, V b), less(V a, V b)   conditions
//   V select(V cond, V a, V b)
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_COMMON_SCALARMATH_H
#define NNC_COMPILER_CODEGEN_COMMON_SCALARMATH_H

#include "dialects/nn/NNOps.h"

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/TypeSwitch.h"

#include <optional>

namespace nnc::codegen {

/// tanh: below |x| = 0.625 an odd polynomial, x + x^3 P(x^2) (Cephes'
/// tanhf coefficients); above, 1 - 2 / (e^(2|x|) + 1), which rounds to 1
/// from |x| = 9 on (clamped there, so e^(2|x|) stays finite). Within 1-2
/// ULPs (tests/unit/CpuBackendTest.cpp, CompiledMath), vectorizable, one exp
/// and one division. The sign is x's, -0 included.
template <class B>
typename B::V tanhOf(B &b, typename B::V x) {
  using V = typename B::V;
  V a = b.min(b.abs(x), b.c(9.0));
  V z = b.mul(x, x);
  V p = b.c(-5.70498872745e-3);
  for (double c : {2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1})
    p = b.fma(p, z, b.c(c));
  V small = b.fma(b.mul(x, z), p, x);
  V large = b.sub(b.c(1.0), b.div(b.c(2.0), b.add(b.exp(b.add(a, a)), b.c(1.0))));
  return b.copysign(b.select(b.less(a, b.c(0.625)), small, large), x);
}

/// The value of elementwise `op` (nn::isElementwise: every op of
/// nn::elementwiseOps) with operands read through `operand(k)` (read only
/// when the formula needs them); nothing for other ops.
template <class B>
std::optional<typename B::V> scalarMath(mlir::Operation *op, B &b,
                                        llvm::function_ref<typename B::V(unsigned)> operand) {
  using V = typename B::V;
  namespace n = nnc::nn;
  auto x = [&] { return operand(0); };
  return llvm::TypeSwitch<mlir::Operation *, std::optional<V>>(op)
      .Case([&](n::NegOp) { return b.neg(x()); })
      .Case([&](n::ExpOp) { return b.exp(x()); })
      .Case([&](n::LogOp) { return b.log(x()); })
      .Case([&](n::SqrtOp) { return b.sqrt(x()); })
      .Case([&](n::AbsOp) { return b.abs(x()); })
      .Case([&](n::TanhOp) { return tanhOf(b, x()); })
      .Case([&](n::SigmoidOp) { return b.div(b.c(1.0), b.add(b.c(1.0), b.exp(b.neg(x())))); })
      .Case([&](n::ReluOp) {
        V v = x();
        return b.select(b.greater(v, b.c(0.0)), v, b.c(0.0));
      })
      .Case([&](n::StepOp) { return b.select(b.greater(x(), b.c(0.0)), b.c(1.0), b.c(0.0)); })
      .Case([&](n::IdentityOp) { return x(); })
      .Case([&](n::SoftplusOp) {
        // max(x, 0) + log1p(exp(-|x|)): no overflow for large |x|.
        V v = x();
        V m = b.select(b.greater(v, b.c(0.0)), v, b.c(0.0));
        return b.add(m, b.log1p(b.exp(b.neg(b.abs(v)))));
      })
      .Case([&](n::LeakyReluOp l) {
        V v = x();
        return b.select(b.greater(v, b.c(0.0)), v, b.mul(v, b.c(l.getAlpha().convertToDouble())));
      })
      .Case([&](n::AddOp) { return b.add(x(), operand(1)); })
      .Case([&](n::SubOp) { return b.sub(x(), operand(1)); })
      .Case([&](n::MulOp) { return b.mul(x(), operand(1)); })
      .Case([&](n::DivOp) { return b.div(x(), operand(1)); })
      .Case([&](n::PowOp) { return b.pow(x(), operand(1)); })
      // The second operand gives only the shape.
      .Case([&](n::BroadcastLikeOp) { return x(); })
      .Default([](mlir::Operation *) { return std::nullopt; });
}

} // namespace nnc::codegen

#endif // NNC_COMPILER_CODEGEN_COMMON_SCALARMATH_H
