//===- CudaSource.h - C text for generated CUDA kernels --------*- C++ -*-===//
//
// Internal to the CUDA backend (CudaEmitter.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_CUDASOURCE_H
#define NNC_COMPILER_CODEGEN_CUDA_CUDASOURCE_H

#include "mlir/IR/Operation.h"

#include <string>

namespace nnc::cuda {

/// The C expression of elementwise `op` (codegen::scalarMath) over its
/// operands' expressions.
std::string scalarExpr(mlir::Operation *op, llvm::ArrayRef<std::string> operands);

/// An f32 literal in C, exact to the float (infinities by name).
std::string floatLiteral(double v);

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_CUDASOURCE_H
