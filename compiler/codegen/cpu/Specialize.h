//===- Specialize.h - fixed batch sizes and core ops ------------*- C++ -*-===//
//
// The nn-to-nn steps that prepare a function for the CPU backend:
// specializeBatch gives every dynamic (batch) size a value and re-infers all
// result types (batchScaling uses it to relate sizes to the batch); decompose
// rewrites composite ops (softmax, group norm, LRN, losses, means) into the
// core ops the loop lowering implements (batch norm has loops of its own).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_SPECIALIZE_H
#define NNC_COMPILER_CODEGEN_CPU_SPECIALIZE_H

#include "compiler/codegen/cpu/LowerToLoops.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace nnc::cpu {

/// Replaces every dynamic size of `fn`'s arguments by `batch` and re-infers
/// the types of all ops and results.
mlir::LogicalResult specializeBatch(mlir::func::FuncOp fn, int64_t batch);

/// The size per batch element of every batch-dependent size in `fn`,
/// found by specializing copies to batch 1 and 2 (sizes must be
/// proportional to the batch).
mlir::FailureOr<BatchScaling> batchScaling(mlir::func::FuncOp fn);

/// Rewrites composite nn ops of `fn` into core ops.
mlir::LogicalResult decompose(mlir::func::FuncOp fn);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_SPECIALIZE_H
