//===- NNOps.h - nn dialect operations --------------------------*- C++ -*-===//
//
// Declares the nn ops (generated from NNOps.td).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_DIALECTS_NN_NNOPS_H
#define NNC_DIALECTS_NN_NNOPS_H

#include "dialects/nn/NNDialect.h"

#include "runtime/Init.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "dialects/nn/NNOps.h.inc"

namespace nnc::nn {
/// Names of the attributes the frontend attaches to a model's function
/// arguments and results, and to the module.
namespace attr {
inline constexpr llvm::StringLiteral kName = "nn.name";
inline constexpr llvm::StringLiteral kRole = "nn.role";
inline constexpr llvm::StringLiteral kInit = "nn.init";
inline constexpr llvm::StringLiteral kDims = "nn.dims";
inline constexpr llvm::StringLiteral kModel = "nn.model";
inline constexpr llvm::StringLiteral kTrain = "nn.train";
/// On a scalar argument the runtime sets (the learning rate): its value
/// when nothing sets it.
inline constexpr llvm::StringLiteral kValue = "nn.value";
} // namespace attr

/// Whether every element of `op`'s result is a function of its operands'
/// elements at the same (numpy-broadcast) index alone: the unary and binary
/// math ops, the activations and `broadcast_like`. Backends compute such
/// ops inside the loops of their consumers (see compiler/transforms/Fusion.h).
bool isElementwise(mlir::Operation *op);
/// Those ops, by TypeID (each backend's table of elementwise math is keyed
/// by them; compiler/codegen/common/ScalarMath.h defines their formulas).
llvm::ArrayRef<mlir::TypeID> elementwiseOps();

/// Whether `op` sums or maximizes its one operand over axes (reading each
/// element once).
bool isReduction(mlir::Operation *op);

/// Whether `op` can apply the elementwise consumers of its first result as
/// it stores each element (an epilogue, compiler/transforms/Fusion.cpp):
/// batch norms (their statistics, the other results, are stored as they
/// are), products, convolutions, reductions, and max-pool gradients whose
/// windows tile the input (each element is stored exactly once).
bool hostsEpilogue(mlir::Operation *op);
/// A reduction's axes (every axis when empty) and whether it keeps them
/// as size 1 (reduce_sum, reduce_mean, reduce_max).
llvm::ArrayRef<int64_t> reductionAxes(mlir::Operation *op);
bool keepsReducedAxes(mlir::Operation *op);

/// How many classes the i32 value `v` indexes where it is used as class
/// labels (one_hot, cross_entropy, softmax_cross_entropy; followed through
/// ops that only move values): the smallest such count, or 0 when no use
/// indexes with it. Data for a model input is checked against it, since
/// compiled code reads `logits[n, label]` unchecked.
int64_t classCount(mlir::Value v);

/// A number for a DSL location that is the same in every process. Dropout
/// masks are keyed by it (with the seed and step), so every copy of a
/// function, on every backend and in the evaluator, draws the same masks.
uint64_t locationId(mlir::Location loc);

/// The initializer of argument `index` of `fn`, from its `nn.init`
/// attribute (a located error when there is none).
mlir::FailureOr<rt::InitSpec> initSpec(mlir::func::FuncOp fn, unsigned index);

} // namespace nnc::nn

#endif // NNC_DIALECTS_NN_NNOPS_H
