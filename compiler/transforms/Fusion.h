//===- Fusion.h - grouping core ops into kernels ----------------*- C++ -*-===//
//
// The fusion policy, in one place for every backend: which ops of a
// decomposed function run together as one kernel. The groups are written
// into the IR as `nn.kernel` ops (see docs/fusion.md for the rules).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_TRANSFORMS_FUSION_H
#define NNC_COMPILER_TRANSFORMS_FUSION_H

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace nnc {

/// Rematerialization, the first step of the policy: a cheap elementwise op
/// (add, sub, mul, neg, abs, relu, step, leaky_relu) whose readers could
/// all compute it in place is copied into each of them instead of being
/// stored once and read back by each, provided every operand it reads from
/// memory lives until its last reader anyway (a function argument, or a
/// value read later still), so no buffer lives longer: a write and a buffer
/// saved. Creates values: a backend that annotates values (batch scaling)
/// runs it first. Returns how many copies were made.
unsigned rematerialize(mlir::func::FuncOp fn);

/// The longest chain of elementwise producers fused into one consumer.
/// Backends compute fused producers by recursion where they are read; a
/// model of thousands of chained statements is cut into kernels of this
/// depth instead of recursing that deep.
constexpr unsigned kMaxFusedChain = 200;

/// The roles fusion writes on kernel members, which both backends read:
/// computed where its one reader in the kernel reads it (unit attribute),
/// and, for such a member also read outside the kernel, stored as it is
/// computed.
inline constexpr llvm::StringLiteral kFusedAttr = "nn.fused";
inline constexpr llvm::StringLiteral kStoredAttr = "nn.stored";

/// Groups the ops of `fn` (a single block of core nn ops) into `nn.kernel`
/// ops. Every op that computes something lands in exactly one kernel;
/// reshapes (views), splat constants and element counts (literals) stay
/// outside. Kernels appear in the order they run. Members computed where
/// they are read are marked (kFusedAttr, kStoredAttr).
void fuseKernels(mlir::func::FuncOp fn);

/// Replaces every `nn.kernel` of `fn` by its ops, in place, and returns the
/// groups (each kernel's ops in order, kernels in order). Values keep their
/// identity: a kernel's results are replaced by the values it yielded.
std::vector<llvm::SmallVector<mlir::Operation *>> inlineKernels(mlir::func::FuncOp fn);

} // namespace nnc

#endif // NNC_COMPILER_TRANSFORMS_FUSION_H
