//===- CpuExecutor.h - running nn functions as compiled CPU code -*- C++ -*-===//
//
// An Executor that compiles each (function, batch size) once: the function
// is cloned, its batch size fixed, composite ops decomposed, lowered to
// loops and LLVM, and JIT-compiled for the host; later calls with the same
// batch size reuse the code. Tensors cross the boundary as f32 (i32 for
// integer tensors).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_CPUEXECUTOR_H
#define NNC_COMPILER_CODEGEN_CPU_CPUEXECUTOR_H

#include "compiler/reference/Evaluator.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <memory>

namespace nnc::cpu {

std::unique_ptr<ref::Executor> createExecutor();

/// The loops-level module of `fn` with its batch size fixed: a function
/// `kernel(args..., results..., rng)` over memrefs (what --emit=loops shows).
mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> buildLoops(mlir::func::FuncOp fn,
                                                              int64_t batch);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_CPUEXECUTOR_H
