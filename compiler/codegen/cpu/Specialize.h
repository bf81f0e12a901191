//===- Specialize.h - fixed batch sizes and core ops ------------*- C++ -*-===//
//
// Two nn-to-nn steps that prepare a function for the CPU backend:
// specializeBatch gives every dynamic (batch) size a value and re-infers all
// result types, so code generation sees static shapes only; decompose
// rewrites composite ops (softmax, group norm, LRN, losses, means) into the
// core ops the loop lowering implements (batch norm has loops of its own).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_SPECIALIZE_H
#define NNC_COMPILER_CODEGEN_CPU_SPECIALIZE_H

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace nnc::cpu {

/// Replaces every dynamic size of `fn`'s arguments by `batch` and re-infers
/// the types of all ops and results.
mlir::LogicalResult specializeBatch(mlir::func::FuncOp fn, int64_t batch);

/// Rewrites composite nn ops of `fn` into core ops.
mlir::LogicalResult decompose(mlir::func::FuncOp fn);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_SPECIALIZE_H
