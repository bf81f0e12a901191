//===- GradientRules.h - the per-op gradient table --------------*- C++ -*-===//
//
// One short rule per differentiable op, in one table (GradientRules.cpp).
// A rule reads the op, the adjoints of its results and which operands need
// a gradient, and writes one adjoint per operand (null for none). Ops
// without a rule stop the gradient; the autodiff pass reports an error when
// a gradient would have to flow through one.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_TRANSFORMS_GRADIENTRULES_H
#define NNC_COMPILER_TRANSFORMS_GRADIENTRULES_H

#include "compiler/transforms/GradBuilder.h"

#include <functional>

namespace nnc {

struct GradContext {
  GradBuilder &g;
  mlir::Operation *op;
  llvm::ArrayRef<mlir::Value> dResults;      // null where a result has none
  llvm::ArrayRef<bool> needs;                // per operand
  llvm::SmallVector<mlir::Value> dOperands;  // filled by the rule

  mlir::Value dy() const { return dResults[0]; }
  mlir::Value x(unsigned i = 0) const { return op->getOperand(i); }
  mlir::Value y() const { return op->getResult(0); }
};

using GradRule = std::function<void(GradContext &)>;

/// The rule for `op`, or null when the op has none.
const GradRule *lookupGradRule(mlir::Operation *op);

} // namespace nnc

#endif // NNC_COMPILER_TRANSFORMS_GRADIENTRULES_H
