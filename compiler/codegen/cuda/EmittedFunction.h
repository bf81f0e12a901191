//===- EmittedFunction.h - a function prepared and emitted for CUDA -*- C++ -*-===//
//
// What the CUDA model compiler and the host emulation share: the function
// prepared and emitted once, and the size of its buffers.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_EMITTEDFUNCTION_H
#define NNC_COMPILER_CODEGEN_CUDA_EMITTEDFUNCTION_H

#include "compiler/codegen/cuda/CudaEmitter.h"

#include "mlir/IR/BuiltinOps.h"

#include <memory>

namespace nnc::cuda {

struct EmittedFunction {
  mlir::OwningOpRef<mlir::ModuleOp> module; // holds `fn`
  mlir::func::FuncOp fn;                     // decomposed, fused
  codegen::BatchScaling scaling;
  CudaModule code;

  /// Prepares and emits `fn` (fails with a located error).
  static mlir::FailureOr<std::unique_ptr<EmittedFunction>> emit(mlir::func::FuncOp fn);
};

/// Words of a buffer of `shape` (negative sizes per batch element), at
/// least one.
size_t wordsOf(const std::vector<int64_t> &shape, int64_t batch);

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_EMITTEDFUNCTION_H
