//===- Prepare.h - the fused function both backends lower -------*- C++ -*-===//
//
// The nn-to-nn steps that prepare a function for a backend (CPU loops or
// CUDA kernels alike):
// specializeBatch gives every dynamic (batch) size a value and re-infers all
// result types (batchScaling uses it to relate sizes to the batch); decompose
// rewrites composite ops (softmax, group norm, LRN, losses, means) into the
// core ops the backends implement (batch norm has kernels of its own);
// prepare runs them, the frozen-constant and batch-norm folds, cleanup and
// fusion, in that order.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_COMMON_PREPARE_H
#define NNC_COMPILER_CODEGEN_COMMON_PREPARE_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/ADT/DenseMap.h"

#include <optional>

namespace nnc::codegen {

/// For every value of a function with a symbolic batch size: its shape with
/// each batch-dependent size replaced by its size per batch element.
using BatchScaling = llvm::DenseMap<mlir::Value, llvm::SmallVector<int64_t>>;

/// Replaces every dynamic size of `fn`'s arguments by `batch` and re-infers
/// the types of all ops and results.
mlir::LogicalResult specializeBatch(mlir::func::FuncOp fn, int64_t batch);

/// The size per batch element of every batch-dependent size in `fn`,
/// found by specializing copies to batch 1 and 2 (sizes must be
/// proportional to the batch).
mlir::FailureOr<BatchScaling> batchScaling(mlir::func::FuncOp fn);

/// The attribute batch scaling is recorded in: on each op with a dynamic
/// result, one array per result (empty for a static one); on each dynamic
/// argument, its array.
inline constexpr llvm::StringLiteral kPerBatchAttr = "nn.per_batch";

/// Computes `fn`'s batch scaling and records it (kPerBatchAttr).
mlir::LogicalResult recordBatchScaling(mlir::func::FuncOp fn);

/// The batch scaling recorded in `fn` (kernel results included).
BatchScaling readBatchScaling(mlir::func::FuncOp fn);

/// Rewrites composite nn ops of `fn` into core ops.
mlir::LogicalResult decompose(mlir::func::FuncOp fn);

/// The passes that prepare every function of a module for a backend:
/// specialization to `batch` when given, decomposition, frozen literals and
/// batch-norm folds, cleanup, (with `fuse`) rematerialization, batch
/// scaling recorded, (with `fuse`) fusion into nn.kernel ops.
void buildPreparePipeline(mlir::OpPassManager &pm, std::optional<int64_t> batch, bool fuse);

/// Registers the passes above (for nnc-opt) and the `nnc-prepare` pipeline.
void registerPasses();

/// What the driver asks of every pass manager the compiler runs:
/// `--mlir-print-ir-after-all` (each function or module after each pass,
/// to standard error) and `--mlir-timing` (a report per pass manager).
struct Instrumentation {
  bool printAfterAll = false;
  bool timing = false;
};
void setInstrumentation(Instrumentation i);
/// Applies the instrumentation set to `pm` (every pass manager of the
/// pipeline calls this).
void instrument(mlir::PassManager &pm);

/// The function a backend lowers (what --emit=fused shows): `fn` cloned
/// into a module of its own, specialized to `batch` when given, composite
/// ops decomposed, cleaned up, and with `fuse` grouped into nn.kernel ops.
/// `scaling` receives the batch scaling of its values.
mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> prepare(mlir::func::FuncOp fn,
                                                         std::optional<int64_t> batch, bool fuse,
                                                         BatchScaling *scaling = nullptr);

} // namespace nnc::codegen

#endif // NNC_COMPILER_CODEGEN_COMMON_PREPARE_H
