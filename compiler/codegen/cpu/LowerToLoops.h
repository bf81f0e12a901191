//===- LowerToLoops.h - nn functions to loops over buffers ------*- C++ -*-===//
//
// Turns a decomposed nn function (core ops) into a function over memrefs
// built from scf loops, arith and math. One function serves every batch
// size: sizes that depend on the batch are multiples of a run-time `batch`
// argument (BatchScaling gives the multiples). The results are written into
// caller-provided buffers (destination passing); intermediates live in a
// caller-provided workspace laid out by a liveness-based memory plan.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_LOWERTOLOOPS_H
#define NNC_COMPILER_CODEGEN_CPU_LOWERTOLOOPS_H

#include "compiler/codegen/common/Prepare.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

namespace nnc::cpu {

using codegen::BatchScaling;

/// Adds to `target` a function `name` computing `fn` over memrefs:
///   (args..., results..., cache: memref<1xi8>, rng: memref<3xi64>,
///    batch: index, slots...) -> ()
/// Buffers of static shape are passed as such; batch-dependent ones and the
/// slots of the memory plan as memref<1xi8> (their address). The rng buffer
/// holds the seed, the step and the batch's first row for dropout. The function carries `nnc.slots =
/// [perBatch0, fixed0, perBatch1, ...]`: slot i takes perBatch_i * batch +
/// fixed_i bytes, 64-byte aligned. No two buffers may overlap.
/// Where `fn` has the kCacheWeightsAttr attribute, weight-only work of its
/// kernels (Winograd's transformed weights) is kept across calls in the
/// cache, `nnc.cache` bytes (0: none; 64-byte aligned, zeroed before the
/// first call, kept by the caller between calls): its first word is the
/// weights' version, which the caller sets before each call and changes
/// whenever an argument that is not an input changes (0: unknown,
/// recomputed every call).
/// Kernels are the `nn.kernel` ops of `fn` (the fusion pass's; flattened
/// here, in place); without any, every op is a kernel of its own. The
/// function lists its kernels in `nnc.kernels`: per kernel the member ops,
/// their DSL locations, and the floating-point operations and bytes moved
/// as [per batch element, fixed]. With `profile`, every kernel is
/// bracketed by calls to nnc_profile_begin/end(id) (runtime/Profile.h).
/// Each kernel is emitted as an `scf.execute_region` carrying its index in
/// this attribute, for outlineKernels.
inline constexpr llvm::StringLiteral kKernelAttr = "nnc.kernel";
/// On an nn function: its arguments other than inputs (weights) change
/// only between calls the caller tells apart by the cache's version.
inline constexpr llvm::StringLiteral kCacheWeightsAttr = "nnc.cache_weights";

mlir::LogicalResult lowerToLoops(mlir::func::FuncOp fn, const BatchScaling &scaling,
                                 mlir::ModuleOp target, llvm::StringRef name,
                                 bool profile = false);

/// The passes from an nn function to loops: codegen::buildPreparePipeline,
/// nnc-choose-tiling (Tiling.h), then nnc-lower-to-loops (every nn function of the module becomes a
/// loop function of the same name).
void buildLoopsPipeline(mlir::OpPassManager &pm, std::optional<int64_t> batch, bool fuse,
                        bool profile);

/// Registers the CPU backend's passes and pipelines (for nnc-opt).
void registerPasses();

/// Moves each kernel of the functions of `module` (the execute_regions
/// lowerToLoops marks) into a private function of its own, `NAME_kI`, which
/// the function calls. Its arguments are the buffers, rng and batch
/// arguments it uses; the views it reads are rebuilt inside. Kernels stay
/// out of line (never inlined back): LLVM's cost per function (OpenMP
/// region outlining, scalar evolution) then grows with a kernel, not with
/// the whole step, so compile time grows linearly with the model, and
/// kernels are the units compiled in parallel.
mlir::LogicalResult outlineKernels(mlir::ModuleOp module);

/// Moves every function of `module` into one of `parts` nested modules
/// (largest first into the lightest), each declaring what it calls in the
/// others: the units lowered, translated and compiled in parallel.
mlir::LogicalResult partitionCode(mlir::ModuleOp module, unsigned parts);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_LOWERTOLOOPS_H
