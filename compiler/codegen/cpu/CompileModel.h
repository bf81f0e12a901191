//===- CompileModel.h - a whole model compiled for the CPU -------*- C++ -*-===//
//
// The training step and evaluation function of a model, lowered to loops
// side by side in one module, with the table the runtime needs to run them
// (rt::ModelDesc: buffers, roles, batch scaling, memory-plan slots,
// initializers). `nnc train` JIT-compiles the module; `nnc build` compiles
// it to an object file and writes the table out as C++.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_COMPILEMODEL_H
#define NNC_COMPILER_CODEGEN_CPU_COMPILEMODEL_H

#include "runtime/CompiledModel.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <optional>

namespace nnc::cpu {

/// Kernel names in the module compileModel fills.
inline constexpr const char *kTrainStepKernel = "nnc_train_step";
inline constexpr const char *kModelKernel = "nnc_model";

/// Lowers `@model` and `@model_train_step` of `module` (the training
/// pipeline's output) into `code` and describes them; the kernels (`call`)
/// and train settings are left for the caller.
/// With `profile`, the kernels report their times (see lowerToLoops);
/// without `fuse`, every op is a kernel of its own (for comparisons).
mlir::FailureOr<rt::ModelDesc> compileModel(mlir::ModuleOp module, llvm::StringRef model,
                                            mlir::ModuleOp code, bool profile = false,
                                            bool fuse = true);

/// Lowers `fn` (an nn function) to loops as `name` in `target`: the
/// preparation and lowering passes (buildLoopsPipeline) on a copy, the
/// result and its declarations moved into `target`. With `cacheWeights`,
/// weight-only work is kept across calls (kCacheWeightsAttr): for
/// functions that do not update their weights (inference).
mlir::LogicalResult addLoops(mlir::func::FuncOp fn, std::optional<int64_t> batch,
                             mlir::ModuleOp target, llvm::StringRef name, bool profile = false,
                             bool fuse = true, bool cacheWeights = false);

/// The loops-level module of `fn`: a function `kernel(args..., results...,
/// cache, rng, batch, slots...)` over memrefs (what --emit=loops shows), for
/// any batch size, or for `batch` alone when given.
mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>>
buildLoops(mlir::func::FuncOp fn, std::optional<int64_t> batch = std::nullopt, bool fuse = true);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_COMPILEMODEL_H
