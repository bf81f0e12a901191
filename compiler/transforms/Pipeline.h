//===- Pipeline.h - the nnc compilation pipeline ----------------*- C++ -*-===//

#ifndef NNC_COMPILER_TRANSFORMS_PIPELINE_H
#define NNC_COMPILER_TRANSFORMS_PIPELINE_H

#include "mlir/Pass/PassManager.h"

namespace nnc {

/// How far the pipeline runs (one stage per --emit kind).
enum class Stage { Nn, Grad, Train };

/// Adds every pass up to `stage`, in order.
void buildPipeline(mlir::OpPassManager &pm, Stage stage);

/// Registers the passes and the pipeline with the global registry (nnc-opt).
void registerPasses();

} // namespace nnc

#endif // NNC_COMPILER_TRANSFORMS_PIPELINE_H
