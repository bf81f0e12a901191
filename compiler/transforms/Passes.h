//===- Passes.h - nnc compiler passes ---------------------------*- C++ -*-===//

#ifndef NNC_COMPILER_TRANSFORMS_PASSES_H
#define NNC_COMPILER_TRANSFORMS_PASSES_H

#include "dialects/nn/NNDialect.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <memory>

namespace nnc {

#define GEN_PASS_DECL
#include "compiler/transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/transforms/Passes.h.inc"

/// Name suffixes of the functions the passes add to a model `@m`.
inline constexpr llvm::StringLiteral kGradSuffix = "_grad";
inline constexpr llvm::StringLiteral kTrainStepSuffix = "_train_step";

/// Whether a model's loss sums over the batch (a loss with reduction
/// "sum", or a sum) rather than averaging: a data-parallel step then adds
/// the ranks' gradients instead of averaging them (TrainStep.cpp).
bool lossIsSum(mlir::Value loss);

} // namespace nnc

#endif // NNC_COMPILER_TRANSFORMS_PASSES_H
