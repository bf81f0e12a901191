//===- CudaSource.h - C text for generated CUDA kernels --------*- C++ -*-===//
//
// Internal to the CUDA backend (CudaEmitter.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_CUDASOURCE_H
#define NNC_COMPILER_CODEGEN_CUDA_CUDASOURCE_H

#include "compiler/codegen/cuda/CudaEmitter.h"

#include "mlir/IR/Operation.h"

#include <string>

namespace nnc::cuda {

/// The C expression of elementwise `op` (codegen::scalarMath) over its
/// operands' expressions.
std::string scalarExpr(mlir::Operation *op, llvm::ArrayRef<std::string> operands);

/// An f32 literal in C, exact to the float (infinities by name).
std::string floatLiteral(double v);

/// The statements of a training dropout's `mask` for element `i` of the
/// launch: the evaluator's stream keyed by the step (rng[1]) and the op's
/// DSL position `location`, counted from the rank's first row rng[2] in the
/// global batch (`perRow` elements a row), so that a data-parallel rank
/// draws the masks one process draws for those rows.
std::string dropoutMask(uint64_t location, double rate, const std::string &perRow);

/// The source of launch `l`: its kernel, `total` threads running `body`;
/// for a collective, a comment where it stands (no kernel: the runtime
/// combines its first buffer into its second over the ranks).
std::string launchSource(const Launch &l, const std::string &total, const std::string &body);

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_CUDASOURCE_H
