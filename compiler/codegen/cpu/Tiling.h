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

#include "llvm/ADT/SmallVector.h"

#include <string>

namespace nnc::nn {
class Conv2dOp;
} // namespace nnc::nn

namespace nnc::cpu {

inline constexpr llvm::StringLiteral kTilingAttr = "nnc.tiling";

/// The choices for `op` on this host: for a matmul `rows`, `vectors`,
/// `depth` and `group`; for a convolution or input gradient
/// `channel_block` (and, where they pay, `row_vectors`, `channels_outer`);
/// for a weight gradient `channel_block`, `input_block`, `kernel_rows` (per
/// pass: 1 or all) and `batch_chunk` (and, where it pays, `inputs_outer`);
/// for any of the three, where Winograd
/// pays, `winograd` (tile rows a block, Winograd.cpp). Null for other ops.
/// Sized for `machine`: its vector registers and caches.
mlir::DictionaryAttr chooseTiling(mlir::Operation *op, const Machine &machine = host());

/// Whether `op` is a convolution Winograd's F(2x2, 3x3) can compute (the
/// `winograd` choice): a forward convolution or input gradient, 3x3, unit
/// strides, one group, padding of at most 2, an output of 2x2 or more.
bool winogradApplies(mlir::Operation *op);
/// Whether a forward convolution reads its input split into phase planes
/// (Convolutions.cpp, PhaseRows.cpp): equal strides of 2 or more, one
/// group, an input the output's size times the stride, more than one tap
/// (a single tap reads one plane of s * s: splitting the others would cost
/// more than it saves). Its rows then read at a unit stride.
bool phasePlanesApply(nnc::nn::Conv2dOp op);

/// The most a Winograd block's transformed input and products take (on the
/// stack of the thread running the block): 16 positions by the block's
/// tiles by the channels read and written, 4 bytes each.
inline constexpr int64_t kMaxWinogradBlockBytes = int64_t{1} << 20;

/// Checks recorded choices against the op's shapes (blocks that divide the
/// channels, sizes in range); errors are located at the op.
mlir::LogicalResult verifyTiling(mlir::Operation *op);

/// `op`'s choice `name`: recorded, or chosen now.
int64_t tilingOf(mlir::Operation *op, llvm::StringRef name);

/// The choice `name` of `op` as tilingOf gives it, or `otherwise` where
/// neither the op nor the rules make one (a choice for some shapes only).
int64_t tilingOr(mlir::Operation *op, llvm::StringRef name, int64_t otherwise);

/// What a tuned choice is keyed by: the op's name, operand and result
/// types and attributes (strides, padding, groups), as text.
std::string tilingSignature(mlir::Operation *op);

/// The choices worth timing for `op` on `machine` (`nnc tune`): the chosen
/// one first, then a few alternatives that each change one choice; all
/// pass verifyTiling. Empty for ops the backend does not tile.
llvm::SmallVector<mlir::DictionaryAttr> tilingCandidates(mlir::Operation *op,
                                                         const Machine &machine = host());

/// Tuned choices by signature (`nnc tune` measures them): nnc-choose-tiling
/// takes the table's choice for an op on the host where it has one that
/// verifies. The table is read once from `tuningPath()` (lines of
/// signature, a tab, the choices as an MLIR dictionary; lines that do not
/// parse are skipped: the file is a cache).
void setTunedTiling(llvm::StringRef signature, llvm::StringRef choices);
void clearTunedTilings();
/// Forgets the table's entries and reads the file again at the next use.
void reloadTunedTilings();
/// The tuned choices for `op`'s signature, parsed in its context; null if
/// none.
mlir::DictionaryAttr tunedTiling(mlir::Operation *op);
/// The table's file for this CPU in the cache directory (empty when the
/// cache is off).
std::string tuningPath();
/// Writes the table (tuned entries merged over the file's), sealed and
/// renamed into place; false with `error` set when it cannot.
bool saveTunedTilings(std::string &error);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_TILING_H
