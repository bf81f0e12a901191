//===- CpuExecutor.h - running nn functions as compiled CPU code -*- C++ -*-===//
//
// An Executor that compiles each function once, for every batch size: the
// function is cloned, composite ops decomposed, lowered to loops over a
// run-time batch size and to LLVM, and JIT-compiled for the host. Tensors
// cross the boundary as f32 (i32 for integer tensors).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_CPUEXECUTOR_H
#define NNC_COMPILER_CODEGEN_CPU_CPUEXECUTOR_H

#include "compiler/codegen/cpu/LowerToLoops.h"
#include "compiler/reference/Evaluator.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <memory>
#include <optional>

namespace nnc::cpu {

/// The compiled CPU code as an Executor; without `fuse`, every op is a
/// kernel of its own (to test fusion against).
std::unique_ptr<ref::Executor> createExecutor(bool fuse = true);

/// The loops-level module of `fn`: a function `kernel(args..., results...,
/// rng, workspace, batch)` over memrefs (what --emit=loops shows), for any
/// batch size, or for `batch` alone when given.
mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>>
buildLoops(mlir::func::FuncOp fn, std::optional<int64_t> batch = std::nullopt, bool fuse = true);

/// Adds the loops-level function of `fn` to `target` under `name`.
mlir::LogicalResult addLoops(mlir::func::FuncOp fn, std::optional<int64_t> batch,
                             mlir::ModuleOp target, llvm::StringRef name, bool profile = false,
                             bool fuse = true);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_CPUEXECUTOR_H
