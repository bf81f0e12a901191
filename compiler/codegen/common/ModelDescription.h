//===- ModelDescription.h - a model's tensors for the runtime ---*- C++ -*-===//
//
// What the runtime needs to know of a compiled model, whichever backend
// compiled it: every argument and result of its functions (names, roles,
// element types, sizes that grow with the batch, label class counts) and
// its initializers. The backends add their kernels and memory plans.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_COMMON_MODELDESCRIPTION_H
#define NNC_COMPILER_CODEGEN_COMMON_MODELDESCRIPTION_H

#include "runtime/CompiledModel.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace nnc::codegen {

/// The arguments and results of `fn` (a function of the training
/// pipeline's output): names, roles, element types and sizes, a size that
/// grows with the batch written as -(size per batch element).
mlir::FailureOr<rt::FunctionDesc> describeSignature(mlir::func::FuncOp fn);

/// Fills `m`'s name, loss result and initializers from `model`, once
/// `m.model` is described.
mlir::LogicalResult describeModel(mlir::func::FuncOp model, rt::ModelDesc &m);

} // namespace nnc::codegen

#endif // NNC_COMPILER_CODEGEN_COMMON_MODELDESCRIPTION_H
