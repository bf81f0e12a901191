//===- Tiling.cpp - the CPU lowerings' blocking choices, as data ----------===//

#include "compiler/codegen/cpu/Tiling.h"
#include "compiler/codegen/cpu/LoopEmitter.h"
#include "compiler/transforms/Passes.h"

#include "dialects/nn/NNOps.h"

#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;
using cpu::loops::kLanes;
using cpu::loops::typicalDim;

namespace {

ArrayRef<int64_t> shapeOf(Value v) { return cast<ShapedType>(v.getType()).getShape(); }

/// The output channels a convolution kernel keeps in registers at once:
/// the largest divisor of `channels` up to `most` that keeps `perChannel`
/// accumulators each within `accumulators`. (Powers of two alone would
/// leave 6 channels, LeNet's C3 input gradient, with blocks of 2: two FMA
/// chains, too few to hide the FMA latency.)
int64_t channelBlock(int64_t channels, int64_t perChannel, int64_t accumulators, int64_t most) {
  for (int64_t c = most; c > 1; --c)
    if (channels % c == 0 && c * perChannel <= accumulators)
      return c;
  return 1;
}

/// A matmul: register blocks of `rows` rows times `vectors` vectors of
/// kLanes columns, over depth blocks of `depth`, in groups of up to `group`
/// row blocks that share each packed panel of B (Reductions.cpp, matmul).
DictionaryAttr productTiling(Builder &b, nnops::MatmulOp mm) {
  // Blocks of 6 rows (24 accumulators: 24 FMAs per 4 loads of B and 6
  // broadcasts), the rows left over in a block of 4 and then one at a
  // time; blocks of 4 throughout where that leaves fewer single rows (32
  // rows: 8 x 4, not 5 x 6 + 2 x 1). A product one vector wide (a
  // classifier's 10 outputs) takes blocks of 12 rows: 6 accumulators would
  // leave the multiply-add units waiting on their latency.
  int64_t typicalRows = typicalDim(mm->getOperand(0), 0);
  int64_t n = shapeOf(mm->getOperand(1))[1];
  int64_t rows = !ShapedType::isDynamic(n) && n <= kLanes                          ? 12
                 : typicalRows >= 192 || (typicalRows % 6) % 4 <= typicalRows % 4 ? 6
                                                                                  : 4;
  // 128-deep blocks of up to 64 row blocks sharing a packed 128 x 64 panel
  // of B (32 KiB with 16 lanes) beat 64-deep unpacked ones by far on large
  // products (benchmarks/README.md).
  return b.getDictionaryAttr({b.getNamedAttr("rows", b.getI64IntegerAttr(rows)),
                              b.getNamedAttr("vectors", b.getI64IntegerAttr(4)),
                              b.getNamedAttr("depth", b.getI64IntegerAttr(128)),
                              b.getNamedAttr("group", b.getI64IntegerAttr(64))});
}

/// A convolution with unit column stride: a block of output channels times
/// an output row's vectors, up to 16 accumulators (Convolutions.cpp,
/// conv2dRows).
DictionaryAttr convTiling(Builder &b, nnops::Conv2dOp conv) {
  ArrayRef<int64_t> w = shapeOf(conv.getWeight()), y = shapeOf(conv.getResult());
  int64_t og = w[0] / conv.getGroups(), vectors = (y[3] + kLanes - 1) / kLanes;
  return b.getDictionaryAttr(
      {b.getNamedAttr("channel_block", b.getI64IntegerAttr(channelBlock(og, vectors, 16, 16)))});
}

/// An input gradient with unit strides, a convolution of the output
/// gradient with flipped weights: a block of the input channels.
DictionaryAttr inputGradTiling(Builder &b, nnops::Conv2dGradInputOp op) {
  ArrayRef<int64_t> w = shapeOf(op->getOperand(1)), y = shapeOf(op.getResult());
  int64_t cg = w[1], vectors = (y[3] + kLanes - 1) / kLanes;
  return b.getDictionaryAttr(
      {b.getNamedAttr("channel_block", b.getI64IntegerAttr(channelBlock(cg, vectors, 16, 16)))});
}

/// A weight gradient: output channels by kernel taps in registers (and,
/// for one or two taps, a block of input channels), over the batch in
/// chunks whose output gradient for one channel block fits in half of a
/// 1 MiB L2 (Convolutions.cpp, conv2dGradWeightRows).
DictionaryAttr weightGradTiling(Builder &b, nnops::Conv2dGradWeightOp op) {
  ArrayRef<int64_t> w = shapeOf(op.getResult()), y = shapeOf(op->getOperand(1));
  int64_t groups = op.getGroups(), og = w[0] / groups, cg = w[1], kh = w[2], kw = w[3];
  int64_t taps = kh * kw <= 12 ? kh * kw : kw;
  int64_t block = channelBlock(og, taps <= 2 ? 4 * taps : taps, 24, 8);
  int64_t inBlock = taps <= 2 ? channelBlock(cg, block * taps, 24, 8) : 1;
  int64_t chunk = std::max<int64_t>(1, (512 << 10) / (block * y[2] * y[3] * 4));
  return b.getDictionaryAttr({b.getNamedAttr("channel_block", b.getI64IntegerAttr(block)),
                              b.getNamedAttr("input_block", b.getI64IntegerAttr(inBlock)),
                              b.getNamedAttr("batch_chunk", b.getI64IntegerAttr(chunk))});
}

} // namespace

DictionaryAttr cpu::chooseTiling(Operation *op) {
  Builder b(op->getContext());
  if (auto mm = dyn_cast<nnops::MatmulOp>(op))
    return productTiling(b, mm);
  if (auto conv = dyn_cast<nnops::Conv2dOp>(op))
    return convTiling(b, conv);
  if (auto gw = dyn_cast<nnops::Conv2dGradWeightOp>(op))
    return weightGradTiling(b, gw);
  if (auto gi = dyn_cast<nnops::Conv2dGradInputOp>(op))
    return inputGradTiling(b, gi);
  return nullptr;
}

int64_t cpu::tilingOf(Operation *op, StringRef name) {
  DictionaryAttr d = op->getAttrOfType<DictionaryAttr>(kTilingAttr);
  if (auto v = d ? d.getAs<IntegerAttr>(name) : IntegerAttr())
    return v.getInt();
  return cast<IntegerAttr>(chooseTiling(op).get(name)).getInt();
}

LogicalResult cpu::verifyTiling(Operation *op) {
  DictionaryAttr d = op->getAttrOfType<DictionaryAttr>(kTilingAttr);
  if (!d)
    return success();
  DictionaryAttr chosen = chooseTiling(op);
  if (!chosen)
    return op->emitError("'") << kTilingAttr << "' on an op the CPU backend does not tile";
  for (NamedAttribute a : d) {
    auto v = dyn_cast<IntegerAttr>(a.getValue());
    if (!chosen.get(a.getName()) || !v)
      return op->emitError("unknown or non-integer tiling choice '") << a.getName().getValue() << "'";
    if (v.getInt() < 1)
      return op->emitError("tiling choice '") << a.getName().getValue() << "' must be at least 1";
  }
  auto divides = [&](StringRef name, int64_t n) -> LogicalResult {
    int64_t v = tilingOf(op, name);
    if (n % v)
      return op->emitError("tiling choice '") << name << "' = " << v << " does not divide " << n;
    return success();
  };
  if (isa<nnops::MatmulOp>(op)) {
    if (tilingOf(op, "rows") > 16 || tilingOf(op, "vectors") > 8)
      return op->emitError("a register block of at most 16 rows and 8 vectors");
    return success();
  }
  int64_t groups = cast<IntegerAttr>(op->getAttr("groups")).getInt();
  if (isa<nnops::Conv2dGradInputOp>(op)) // blocks of the input channels
    return divides("channel_block", shapeOf(op->getOperand(1))[1]);
  ArrayRef<int64_t> w = shapeOf(isa<nnops::Conv2dOp>(op) ? op->getOperand(1) : op->getResult(0));
  if (isa<nnops::Conv2dGradWeightOp>(op) && failed(divides("input_block", w[1])))
    return failure();
  return divides("channel_block", w[0] / groups);
}

namespace nnc {
#define GEN_PASS_DEF_CHOOSETILING
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

namespace {
struct ChooseTilingPass : nnc::impl::ChooseTilingBase<ChooseTilingPass> {
  void runOnOperation() override {
    WalkResult r = getOperation().walk([](Operation *op) {
      if (op->hasAttr(cpu::kTilingAttr))
        return failed(cpu::verifyTiling(op)) ? WalkResult::interrupt() : WalkResult::advance();
      if (DictionaryAttr t = cpu::chooseTiling(op))
        op->setAttr(cpu::kTilingAttr, t);
      return WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
