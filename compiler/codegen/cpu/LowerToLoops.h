//===- LowerToLoops.h - nn functions to loops over buffers ------*- C++ -*-===//
//
// Turns a specialized, decomposed nn function (static shapes, core ops) into
// a function over memrefs built from scf loops, arith and math: every value
// gets a buffer, the results are written into caller-provided buffers
// (destination passing), and a final memref<2xi64> argument carries the
// random seed and step for dropout. The generated code is plain loops that
// LLVM vectorizes; tiling and threading come later.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_LOWERTOLOOPS_H
#define NNC_COMPILER_CODEGEN_CPU_LOWERTOLOOPS_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

namespace nnc::cpu {

/// Adds to `target` a function `name` computing `fn` over memrefs:
/// (args..., results..., rng: memref<2xi64>) -> ().
mlir::LogicalResult lowerToLoops(mlir::func::FuncOp fn, mlir::ModuleOp target,
                                 llvm::StringRef name);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_LOWERTOLOOPS_H
