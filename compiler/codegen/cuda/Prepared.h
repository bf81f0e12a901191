//===- Prepared.h - a function emitted for CUDA, and its tensors -*- C++ -*-===//
//
// What both CUDA executors (the host emulation and the device) share: the
// function prepared and emitted once (kept per function name), the batch
// size of a call, buffer sizes, and the 32-bit words the kernels read and
// write for the evaluator's tensors (f32, or i32 in the same words).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_PREPARED_H
#define NNC_COMPILER_CODEGEN_CUDA_PREPARED_H

#include "compiler/codegen/cuda/CudaEmitter.h"
#include "compiler/reference/Evaluator.h"

#include "mlir/IR/BuiltinOps.h"

#include <memory>

namespace nnc::cuda {

struct Prepared {
  mlir::OwningOpRef<mlir::ModuleOp> module; // holds `fn`
  mlir::func::FuncOp fn;                     // decomposed, fused
  codegen::BatchScaling scaling;
  CudaModule code;

  /// Prepares and emits `fn` (fails with a located error).
  static mlir::FailureOr<std::unique_ptr<Prepared>> emit(mlir::func::FuncOp fn);
  /// Result `i` as a tensor, from the words of its buffer.
  ref::Tensor result(unsigned i, int64_t batch, const float *words, size_t count) const;
};

/// The batch size of a call: the size of an argument's dynamic axis (1
/// when there is none).
int64_t batchOf(mlir::func::FuncOp fn, llvm::ArrayRef<ref::Tensor> args);

/// Words of a buffer of `shape` (negative sizes per batch element), at
/// least one.
size_t wordsOf(const std::vector<int64_t> &shape, int64_t batch);

/// The words of argument `t` (i32 when `integer`), at least one.
std::vector<float> toWords(const ref::Tensor &t, bool integer);

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_PREPARED_H
