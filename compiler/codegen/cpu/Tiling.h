//===- Tiling.h - the CPU lowerings' blocking choices, as data --*- C++ -*-===//
//
// How a product or convolution is blocked (rows per register block, vectors
// per row, depth and group of a cache block, channel blocks, batch chunks)
// is decided here, apart from the code that emits the loops, in the manner
// of IREE's lowering_config: nnc-choose-tiling records each op's choices as
// the dictionary `nnc.tiling`, `--emit=fused` prints them, and the
// lowerings read them back. A choice already recorded (written by hand in a
// test, or by a tuner) is kept, so one can be changed without touching the
// lowering.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_TILING_H
#define NNC_COMPILER_CODEGEN_CPU_TILING_H

#include "compiler/codegen/cpu/Machine.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Operation.h"

namespace nnc::cpu {

inline constexpr llvm::StringLiteral kTilingAttr = "nnc.tiling";

/// The choices for `op` on this host: for a matmul `rows`, `vectors`,
/// `depth` and `group`; for a convolution `channel_block`; for a
/// convolution's weight gradient `channel_block`, `input_block`,
/// `kernel_rows` (per pass: 1 or all) and `batch_chunk`. Null for other ops. Sized for `machine`: its vector
/// registers and caches.
mlir::DictionaryAttr chooseTiling(mlir::Operation *op, const Machine &machine = host());

/// Checks recorded choices against the op's shapes (blocks that divide the
/// channels, sizes in range); errors are located at the op.
mlir::LogicalResult verifyTiling(mlir::Operation *op);

/// `op`'s choice `name`: recorded, or chosen now.
int64_t tilingOf(mlir::Operation *op, llvm::StringRef name);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_TILING_H
