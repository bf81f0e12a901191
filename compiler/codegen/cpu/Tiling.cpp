//===- Tiling.cpp - the CPU lowerings' blocking choices, as data ----------===//

#include "compiler/codegen/cpu/Tiling.h"
#include "compiler/codegen/cpu/LoopEmitter.h"
#include "compiler/codegen/cpu/Machine.h"
#include "compiler/transforms/Passes.h"

#include "dialects/nn/NNOps.h"

#include "compiler/codegen/common/CacheEntry.h"
#include "runtime/Cache.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"

#include "llvm/ADT/StringMap.h"

#include <cassert>
#include <mutex>
#include <optional>

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;
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
/// Sized from the machine: the block's accumulators, one register per
/// vector of B's row and one broadcast of A fit the vector registers; the
/// packed depth x width panel of B takes two thirds of L1; a group's rows
/// of A (group x rows x depth) half of L2.
DictionaryAttr productTiling(Builder &b, nnops::MatmulOp mm, const cpu::Machine &m) {
  // 4 vectors wide with 32 registers (24 accumulators), 2 with 16 (12).
  int64_t vectors = std::max<int64_t>(1, m.registers / 8);
  int64_t most = (m.registers - vectors - 1) / vectors;
  // Blocks of up to 6 rows, the rows left over in a block of 4 and then
  // one at a time; blocks of 4 throughout where that leaves fewer single
  // rows (32 rows: 8 x 4, not 5 x 6 + 2 x 1). A product one vector wide (a
  // classifier's 10 outputs) takes taller blocks: a few accumulators would
  // leave the multiply-add units waiting on their latency.
  int64_t typicalRows = typicalDim(mm->getOperand(0), 0);
  int64_t n = shapeOf(mm->getOperand(1))[1];
  int64_t tall = std::min<int64_t>(12, m.registers - 2);
  int64_t rows = !ShapedType::isDynamic(n) && n <= m.lanes ? tall
                 : typicalRows >= 192 || (typicalRows % 6) % 4 <= typicalRows % 4
                     ? std::min<int64_t>(6, most)
                     : std::min<int64_t>(4, most);
  if (!ShapedType::isDynamic(n)) // no wider than the product
    vectors = std::clamp<int64_t>((n + m.lanes - 1) / m.lanes, 1, vectors);
  int64_t rowBytes = vectors * m.lanes * 4;
  int64_t depth = std::clamp<int64_t>(m.l1 * 2 / 3 / rowBytes / 16 * 16, 32, 512);
  int64_t group = std::clamp<int64_t>(m.l2 / 2 / (rows * depth * 4), 1, 64);
  return b.getDictionaryAttr({b.getNamedAttr("rows", b.getI64IntegerAttr(rows)),
                              b.getNamedAttr("vectors", b.getI64IntegerAttr(vectors)),
                              b.getNamedAttr("depth", b.getI64IntegerAttr(depth)),
                              b.getNamedAttr("group", b.getI64IntegerAttr(group))});
}

/// Accumulators a convolution keeps in vector registers, leaving room for
/// its loads and broadcasts: 16 of AVX-512's 32 registers (more did not
/// pay), 12 of AVX2's 16 (without AVX-512's embedded broadcasts each
/// weight takes a register too).
int64_t convAccumulators(const cpu::Machine &m) { return std::min<int64_t>(16, m.registers - 4); }

/// Cycles from one multiply-add to the next on the same accumulator: 4 on
/// the x86-64 cores since Skylake and Zen 3 (two units, so 8 independent
/// sums keep them busy).
constexpr int64_t kFmaLatency = 4;

/// The register block of a row convolution (Convolutions.cpp, conv2dRows):
/// a block of `channels` times a row's `vectors`. The whole row while a
/// block of two or more channels fits beside it. On wider rows read with a
/// column stride, where a block of one channel would load and shuffle two
/// input vectors for a single multiply-add, chunks of `row_vectors`
/// vectors: the split with the fewest weight broadcasts and input loads
/// (`load`: three, two loads and a shuffle) per multiply-add; so too for
/// rows read from phase planes (an ImageNet stem: 112 columns, 14 AVX2
/// vectors; `load` one). An AVX-512 multiply-add takes its weight as
/// a broadcast memory operand, which costs a load-port slot and no
/// instruction of its own, so there a tall block of channels on one vector
/// wins; AVX2 broadcasts into a register first. (Unit-stride rows measured
/// slower in chunks: their loads are cheap, and the masks of an edge
/// chunk's columns are computed at run time.)
///
/// The rows of a sample run inside its channel blocks (`channels_outer`)
/// where the weights overflow L2 and the sample's input does not: each
/// block's weights are then read once per sample from L3, not once per row,
/// while the input stays in L2 (ResNet's last stages at batch 1).
DictionaryAttr rowTiling(Builder &b, int64_t channels, int64_t vectors, double load, int64_t weightBytes,
                         int64_t inputBytes, const cpu::Machine &m) {
  int64_t acc = convAccumulators(m);
  int64_t block = channelBlock(channels, vectors, acc, 16);
  SmallVector<NamedAttribute> choices;
  if (weightBytes > m.l2 && inputBytes <= m.l2 / 2)
    choices.push_back(b.getNamedAttr("channels_outer", b.getI64IntegerAttr(1)));
  if (vectors <= 1 || load == 0) {
    choices.push_back(b.getNamedAttr("channel_block", b.getI64IntegerAttr(block)));
    return b.getDictionaryAttr(choices);
  }
  double broadcast = m.registers >= 32 ? 0.25 : 1;
  // Per tap, a chunk of n vectors takes the longest of its multiply-adds
  // and of its broadcasts and loads (two of each a cycle), and of one
  // accumulator's chain (kFmaLatency cycles a multiply-add): a row's last
  // chunk, what is left of it, may hold too few accumulators to hide that.
  // The split with the fewest cycles per multiply-add over the whole row,
  // then with the fewest loads.
  auto cost = [&](int64_t c, int64_t cv) {
    auto chunk = [&](int64_t n) {
      return std::pair{std::max({c * n / 2.0, (broadcast * c + load * n) / 2.0, double(kFmaLatency)}),
                       broadcast * c + load * n};
    };
    int64_t full = vectors / cv, rest = vectors % cv;
    auto [cycles, loads] = chunk(cv);
    double fmas = double(c * vectors);
    if (rest == 0)
      return std::pair{full * cycles / fmas, full * loads / fmas};
    auto [restCycles, restLoads] = chunk(rest);
    return std::pair{(full * cycles + restCycles) / fmas, (full * loads + restLoads) / fmas};
  };
  int64_t bestBlock = block, bestVectors = vectors;
  auto best = cost(block, vectors);
  for (int64_t cv = 1; cv < vectors && cv <= acc; ++cv) {
    int64_t c = channelBlock(channels, cv, acc, 16);
    if (auto here = cost(c, cv); here < best) {
      best = here;
      bestBlock = c;
      bestVectors = cv;
    }
  }
  choices.push_back(b.getNamedAttr("channel_block", b.getI64IntegerAttr(bestBlock)));
  if (bestVectors < vectors)
    choices.push_back(b.getNamedAttr("row_vectors", b.getI64IntegerAttr(bestVectors)));
  return b.getDictionaryAttr(choices);
}

/// The tile rows of a Winograd block (Winograd.cpp), or 0 where the
/// direct convolution is kept: Winograd takes 3x3 unit-stride layers of 16
/// channels or more both ways (with fewer, the transforms cost as much as
/// the multiplies saved). A block's transformed input and products (16
/// positions by its tiles by the channels in and out) should stay in L2,
/// and its tiles fill whole vectors: the tile rows (of the batch: a block
/// may span samples) that fill them best within L2 (the most of those),
/// and none where that leaves a quarter of the lanes empty.
int64_t winogradRows(Operation *op, const cpu::Machine &m) {
  if (!cpu::winogradApplies(op))
    return 0;
  // The weight gradient's tiles are those of the forward convolution's
  // output, the output gradient.
  bool weightGrad = isa<nnops::Conv2dGradWeightOp>(op);
  int64_t in = shapeOf(op->getOperand(0))[1];
  ArrayRef<int64_t> y = shapeOf(weightGrad ? op->getOperand(1) : op->getResult(0));
  if (in < 16 || y[1] < 16)
    return 0;
  int64_t tw = (y[3] + 1) / 2;
  if ((tw + m.lanes - 1) / m.lanes > 16) // a tile row's vectors are unrolled
    return 0;
  // Blocks take tile rows of the whole batch, so no more than it has.
  int64_t most = typicalDim(op->getOperand(weightGrad ? 1 : 0), 0) * ((y[2] + 1) / 2);
  // A weight gradient's block lives in scratch slots and is read one
  // position at a time by the products: each position's share, L2. Its
  // sums are reduced across lanes once a block, so larger blocks pay.
  int64_t limit = weightGrad ? 16 * m.l2 : std::min(m.l2, cpu::kMaxWinogradBlockBytes);
  int64_t best = 0;
  double bestFill = 0;
  for (int64_t r = 1; r <= most; ++r) {
    int64_t tiles = (r * tw + m.lanes - 1) / m.lanes * m.lanes;
    if (r > 1 && 16 * (in + y[1]) * tiles * 4 > limit)
      break;
    double fill = static_cast<double>(r * tw) / static_cast<double>(tiles);
    if (fill >= bestFill) {
      best = r;
      bestFill = fill;
    }
  }
  return bestFill >= 0.75 ? best : 0;
}

DictionaryAttr withWinograd(Builder &b, Operation *op, DictionaryAttr d, const cpu::Machine &m) {
  int64_t rows = winogradRows(op, m);
  if (!rows)
    return d;
  SmallVector<NamedAttribute> attrs(d.getValue());
  attrs.push_back(b.getNamedAttr("winograd", b.getI64IntegerAttr(rows)));
  return b.getDictionaryAttr(attrs);
}

/// A convolution: a block of output channels times an output row's vectors.
DictionaryAttr convTiling(Builder &b, nnops::Conv2dOp conv, const cpu::Machine &m) {
  ArrayRef<int64_t> w = shapeOf(conv.getWeight()), y = shapeOf(conv.getResult());
  ArrayRef<int64_t> stride = conv.getStride();
  ArrayRef<int64_t> x = shapeOf(conv.getInput());
  return withWinograd(b, conv,
                      rowTiling(b, w[0] / conv.getGroups(), (y[3] + m.lanes - 1) / m.lanes,
                                cpu::phasePlanesApply(conv) ? 1 : stride[1] > 1 ? 3 : 0,
                                w[0] * w[1] * w[2] * w[3] * 4, x[1] * x[2] * x[3] * 4, m),
                      m);
}

/// An input gradient, the transposed convolution of the output gradient
/// (conv2dRows again): a block of the input channels, over whole rows (it
/// reads the output gradient with unit stride, per column phase).
DictionaryAttr inputGradTiling(Builder &b, nnops::Conv2dGradInputOp op, const cpu::Machine &m) {
  ArrayRef<int64_t> w = shapeOf(op->getOperand(1)), y = shapeOf(op.getResult());
  ArrayRef<int64_t> dy = shapeOf(op->getOperand(0));
  return withWinograd(b, op,
                      rowTiling(b, w[1], (y[3] + m.lanes - 1) / m.lanes, /*load=*/0,
                                w[0] * w[1] * w[2] * w[3] * 4, dy[1] * dy[2] * dy[3] * 4, m),
                      m);
}

/// A weight gradient: output channels by kernel taps in registers (and,
/// for one or two taps, a block of input channels; three quarters of the
/// registers, the rest for the loads), over the batch in chunks whose
/// output gradient and input fit in L2 (Convolutions.cpp,
/// conv2dGradWeightRows).
DictionaryAttr weightGradTiling(Builder &b, nnops::Conv2dGradWeightOp op, const cpu::Machine &m) {
  ArrayRef<int64_t> w = shapeOf(op.getResult()), y = shapeOf(op->getOperand(1));
  int64_t groups = op.getGroups(), og = w[0] / groups, cg = w[1], kh = w[2], kw = w[3];
  int64_t acc = m.registers * 3 / 4;
  // All kernel rows in one pass for small kernels (each output-gradient
  // vector serves every tap); one row per pass for large ones, and for
  // strided rows, whose input vectors cost more than one load: each then
  // serves a block of output channels (and no block of input channels).
  bool strided = op.getStride()[1] != 1;
  int64_t kernelRows = kh * kw <= 12 && !strided ? kh : 1;
  int64_t taps = kernelRows * kw;
  int64_t block = channelBlock(og, taps <= 2 && !strided ? 4 * taps : taps, acc, 8);
  int64_t inBlock = taps <= 2 && !strided ? channelBlock(cg, block * taps, acc, 8) : 1;
  // Every (channel block, input channel block) pass of a chunk reads the
  // chunk's output gradient for its channels and its input for its input
  // channels; together the passes read all of both, so the chunk's whole
  // output gradient and input should stay in L2 between passes. Where a
  // sample's input is the larger (a strided layer's) and a row vector
  // loads more of it than of the output gradient (three taps of strided
  // loads, two vectors each, against a block of four channels' one), the
  // input channel blocks run outside the channel blocks (`inputs_outer`):
  // the input block, the heavier stream, then stays in L1 while the
  // passes re-read the output gradient, which alone takes three quarters
  // of L2, in chunks of several samples where the other order fits one.
  // (Rows grouped several to a vector, and 1x1 kernels, measured slower
  // so.)
  ArrayRef<int64_t> x = shapeOf(op->getOperand(0));
  int64_t xBytes = x[1] * x[2] * x[3] * 4, dyBytes = y[1] * y[2] * y[3] * 4;
  int64_t inputLoads = taps * inBlock * (strided ? 2 : 1);
  bool inputsOuter = xBytes > dyBytes && inputLoads > block && 2 * y[3] > m.lanes;
  int64_t chunk = std::max<int64_t>(1, inputsOuter ? m.l2 * 3 / 4 / dyBytes : m.l2 / (xBytes + dyBytes));
  SmallVector<NamedAttribute> choices = {b.getNamedAttr("channel_block", b.getI64IntegerAttr(block)),
                                         b.getNamedAttr("input_block", b.getI64IntegerAttr(inBlock)),
                                         b.getNamedAttr("kernel_rows", b.getI64IntegerAttr(kernelRows)),
                                         b.getNamedAttr("batch_chunk", b.getI64IntegerAttr(chunk))};
  if (inputsOuter)
    choices.push_back(b.getNamedAttr("inputs_outer", b.getI64IntegerAttr(1)));
  return withWinograd(b, op, b.getDictionaryAttr(choices), m);
}

} // namespace

bool cpu::winogradApplies(Operation *op) {
  if (!isa<nnops::Conv2dOp, nnops::Conv2dGradInputOp, nnops::Conv2dGradWeightOp>(op))
    return false;
  bool weightGrad = isa<nnops::Conv2dGradWeightOp>(op);
  ArrayRef<int64_t> w = shapeOf(weightGrad ? op->getResult(0) : op->getOperand(1));
  ArrayRef<int64_t> y = shapeOf(weightGrad ? op->getOperand(1) : op->getResult(0));
  auto stride = cast<DenseI64ArrayAttr>(op->getAttr("stride")).asArrayRef();
  auto pad = cast<DenseI64ArrayAttr>(op->getAttr("padding")).asArrayRef();
  return cast<IntegerAttr>(op->getAttr("groups")).getInt() == 1 && w[2] == 3 && w[3] == 3 && stride[0] == 1 &&
         stride[1] == 1 && pad[0] <= 2 && pad[1] <= 2 && y[2] >= 2 && y[3] >= 2;
}

bool cpu::phasePlanesApply(nnops::Conv2dOp op) {
  ArrayRef<int64_t> x = shapeOf(op.getInput()), y = shapeOf(op.getResult()), w = shapeOf(op.getWeight());
  ArrayRef<int64_t> stride = op.getStride();
  int64_t s = stride[0];
  return op.getGroups() == 1 && s >= 2 && stride[1] == s && x[2] == s * y[2] && x[3] == s * y[3] && w[2] * w[3] > 1;
}

DictionaryAttr cpu::chooseTiling(Operation *op, const Machine &machine) {
  Builder b(op->getContext());
  if (auto mm = dyn_cast<nnops::MatmulOp>(op))
    return productTiling(b, mm, machine);
  if (auto conv = dyn_cast<nnops::Conv2dOp>(op))
    return convTiling(b, conv, machine);
  if (auto gw = dyn_cast<nnops::Conv2dGradWeightOp>(op))
    return weightGradTiling(b, gw, machine);
  if (auto gi = dyn_cast<nnops::Conv2dGradInputOp>(op))
    return inputGradTiling(b, gi, machine);
  return nullptr;
}

/// `op`'s choice `name`: recorded, or chosen now; none where neither makes
/// one.
static std::optional<int64_t> lookupTiling(Operation *op, StringRef name) {
  DictionaryAttr d = op->getAttrOfType<DictionaryAttr>(cpu::kTilingAttr);
  if (auto v = d ? d.getAs<IntegerAttr>(name) : IntegerAttr())
    return v.getInt();
  if (DictionaryAttr chosen = cpu::chooseTiling(op))
    if (auto v = chosen.getAs<IntegerAttr>(name))
      return v.getInt();
  return std::nullopt;
}

int64_t cpu::tilingOr(Operation *op, StringRef name, int64_t otherwise) {
  return lookupTiling(op, name).value_or(otherwise);
}

int64_t cpu::tilingOf(Operation *op, StringRef name) {
  std::optional<int64_t> v = lookupTiling(op, name);
  assert(v && "a choice the rules always make");
  return *v;
}

LogicalResult cpu::verifyTiling(Operation *op) {
  DictionaryAttr d = op->getAttrOfType<DictionaryAttr>(kTilingAttr);
  if (!d)
    return success();
  DictionaryAttr chosen = chooseTiling(op);
  if (!chosen)
    return op->emitError("'") << kTilingAttr << "' on an op the CPU backend does not tile";
  // Row convolutions' optional choices, which the rules make only where
  // they pay, may be set anywhere (a tuner, a test).
  bool rowConv = isa<nnops::Conv2dOp, nnops::Conv2dGradInputOp>(op);
  for (NamedAttribute a : d) {
    auto v = dyn_cast<IntegerAttr>(a.getValue());
    bool optional = (rowConv && (a.getName() == "row_vectors" || a.getName() == "channels_outer")) ||
                    (isa<nnops::Conv2dGradWeightOp>(op) && a.getName() == "inputs_outer") || a.getName() == "winograd";
    if ((!chosen.get(a.getName()) && !optional) || !v)
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
  if (std::optional<int64_t> outer = lookupTiling(op, "channels_outer"); outer && *outer != 1)
    return op->emitError("tiling choice 'channels_outer' = ") << *outer << " is not 1 (present: rows inside channel blocks)";
  if (std::optional<int64_t> outer = lookupTiling(op, "inputs_outer"); outer && *outer != 1)
    return op->emitError("tiling choice 'inputs_outer' = ")
           << *outer << " is not 1 (present: channel blocks inside input channel blocks)";
  if (std::optional<int64_t> rows = lookupTiling(op, "winograd")) {
    if (!winogradApplies(op))
      return op->emitError("tiling choice 'winograd' on a convolution that is not 3x3, unit-stride, one-group with "
                           "padding of at most 2");
    // A forward or input-gradient block lives on a thread's stack (a
    // weight gradient's in scratch slots, any size).
    ArrayRef<int64_t> y = shapeOf(op->getResult(0));
    int64_t lanes = host().lanes, tiles = (*rows * ((y[3] + 1) / 2) + lanes - 1) / lanes * lanes;
    int64_t bytes = 16 * (shapeOf(op->getOperand(0))[1] + y[1]) * tiles * 4;
    if (!isa<nnops::Conv2dGradWeightOp>(op) && bytes > kMaxWinogradBlockBytes)
      return op->emitError("tiling choice 'winograd' = ") << *rows << " takes " << bytes << " bytes a block, more than "
                                                          << kMaxWinogradBlockBytes;
  }
  int64_t groups = cast<IntegerAttr>(op->getAttr("groups")).getInt();
  if (isa<nnops::Conv2dGradInputOp>(op)) // blocks of the input channels
    return divides("channel_block", shapeOf(op->getOperand(1))[1]);
  ArrayRef<int64_t> w = shapeOf(isa<nnops::Conv2dOp>(op) ? op->getOperand(1) : op->getResult(0));
  if (isa<nnops::Conv2dGradWeightOp>(op)) {
    if (failed(divides("input_block", w[1])))
      return failure();
    if (int64_t rows = tilingOf(op, "kernel_rows"); rows != 1 && rows != w[2])
      return op->emitError("tiling choice 'kernel_rows' = ") << rows << " is neither 1 nor the kernel's " << w[2];
  }
  return divides("channel_block", w[0] / groups);
}

std::string cpu::tilingSignature(Operation *op) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << op->getName() << "(";
  llvm::interleaveComma(op->getOperandTypes(), os);
  os << ")->";
  llvm::interleaveComma(op->getResultTypes(), os);
  for (StringRef name : {"stride", "padding", "groups", "kernel"})
    if (Attribute a = op->getAttr(name))
      os << " " << name << "=" << a;
  return text;
}

SmallVector<DictionaryAttr> cpu::tilingCandidates(Operation *op, const Machine &machine) {
  DictionaryAttr chosen = chooseTiling(op, machine);
  if (!chosen)
    return {};
  SmallVector<DictionaryAttr> out{chosen};
  Builder b(op->getContext());
  // The chosen choices with `changes` made, if that verifies (checked on
  // the op with diagnostics off, its attribute restored).
  auto with = [&](std::initializer_list<std::pair<StringRef, int64_t>> changes) {
    SmallVector<NamedAttribute> attrs(chosen.getValue());
    for (auto [name, value] : changes) {
      if (value < 1)
        return;
      for (NamedAttribute &a : attrs)
        if (a.getName() == name)
          a.setValue(b.getI64IntegerAttr(value));
    }
    DictionaryAttr d = b.getDictionaryAttr(attrs);
    if (llvm::is_contained(out, d))
      return;
    ScopedDiagnosticHandler quiet(op->getContext(), [](Diagnostic &) { return success(); });
    Attribute before = op->getAttr(kTilingAttr);
    op->setAttr(kTilingAttr, d);
    bool ok = succeeded(verifyTiling(op));
    if (before)
      op->setAttr(kTilingAttr, before);
    else
      op->removeAttr(kTilingAttr);
    if (ok)
      out.push_back(d);
  };
  auto get = [&](StringRef name) { return cast<IntegerAttr>(chosen.get(name)).getInt(); };
  if (isa<nnops::MatmulOp>(op)) {
    with({{"depth", get("depth") * 2}});
    with({{"depth", get("depth") / 2}});
    with({{"rows", get("rows") == 6 ? 4 : 6}});
    return out;
  }
  // The choices without an optional one, `name`.
  auto without = [&](StringRef name) {
    SmallVector<NamedAttribute> rest;
    for (NamedAttribute a : chosen)
      if (a.getName() != name)
        rest.push_back(a);
    out.push_back(b.getDictionaryAttr(rest));
  };
  // A Winograd convolution is also timed direct.
  if (chosen.get("winograd"))
    without("winograd");
  // A convolution's channel block: the next smaller block that divides the
  // channels; for the weight gradient also the other kernel-rows choice and
  // a larger batch chunk.
  int64_t block = get("channel_block");
  ArrayRef<int64_t> w = cast<ShapedType>(isa<nnops::Conv2dGradWeightOp>(op) ? op->getResult(0).getType()
                                                                           : op->getOperand(1).getType())
                            .getShape();
  int64_t channels = isa<nnops::Conv2dGradInputOp>(op)
                         ? w[1]
                         : w[0] / cast<IntegerAttr>(op->getAttr("groups")).getInt();
  for (int64_t c = block - 1; c >= 1; --c)
    if (channels % c == 0) {
      with({{"channel_block", c}});
      break;
    }
  for (int64_t c = block + 1; c <= 16 && c <= channels; ++c) // (more accumulators than registers may still pay)
    if (channels % c == 0) {
      with({{"channel_block", c}});
      break;
    }
  if (isa<nnops::Conv2dGradWeightOp>(op)) {
    int64_t rows = get("kernel_rows"), kh = w[2], kw = w[3];
    if (kh > 1 && (rows == kh || kh * kw <= 12)) {
      // The other pass shape, with the channel block its accumulators allow.
      int64_t taps = (rows == 1 ? kh : 1) * kw, acc = machine.registers * 3 / 4;
      int64_t other = 1;
      for (int64_t c = std::min<int64_t>(8, std::max<int64_t>(1, acc / taps)); c >= 1; --c)
        if (channels % c == 0) {
          other = c;
          break;
        }
      with({{"kernel_rows", rows == 1 ? kh : 1}, {"channel_block", other}});
    }
    with({{"batch_chunk", get("batch_chunk") * 2}});
    if (get("batch_chunk") > 1)
      with({{"batch_chunk", get("batch_chunk") / 2}});
    // Channel blocks outside again, where the rules put input blocks there.
    if (chosen.get("inputs_outer"))
      without("inputs_outer");
  }
  return out;
}

namespace {

/// The tuned choices by signature, as dictionary text: read from the file
/// once, then set by `nnc tune`.
struct TunedTable {
  std::mutex lock;
  bool loaded = false;
  llvm::StringMap<std::string> entries;

  void load() {
    if (loaded)
      return;
    loaded = true;
    std::string path = cpu::tuningPath();
    if (path.empty())
      return;
    std::optional<std::string> text = codegen::readCacheEntry(path);
    if (!text)
      return;
    SmallVector<StringRef> lines;
    StringRef(*text).split(lines, '\n', -1, false);
    for (StringRef line : lines) {
      auto [key, value] = line.split('\t');
      if (!key.empty() && value.starts_with("{") && value.ends_with("}"))
        entries[key] = value.str();
    }
  }
};

TunedTable &table() {
  static TunedTable t;
  return t;
}

} // namespace

std::string cpu::tuningPath() {
  std::string dir = rt::cacheDirectory();
  return dir.empty() ? std::string() : dir + "/tuning-" + host().cpu + ".txt";
}

void cpu::setTunedTiling(StringRef signature, StringRef choices) {
  TunedTable &t = table();
  std::lock_guard<std::mutex> guard(t.lock);
  t.load();
  t.entries[signature] = choices.str();
}

void cpu::clearTunedTilings() {
  TunedTable &t = table();
  std::lock_guard<std::mutex> guard(t.lock);
  t.entries.clear();
  t.loaded = true; // nor read the file again
}

void cpu::reloadTunedTilings() {
  TunedTable &t = table();
  std::lock_guard<std::mutex> guard(t.lock);
  t.entries.clear();
  t.loaded = false;
}

DictionaryAttr cpu::tunedTiling(Operation *op) {
  TunedTable &t = table();
  std::string text;
  {
    std::lock_guard<std::mutex> guard(t.lock);
    t.load();
    auto it = t.entries.find(tilingSignature(op));
    if (it == t.entries.end())
      return nullptr;
    text = it->second;
  }
  ScopedDiagnosticHandler quiet(op->getContext(), [](Diagnostic &) { return success(); });
  return dyn_cast_or_null<DictionaryAttr>(parseAttribute(text, op->getContext()));
}

bool cpu::saveTunedTilings(std::string &error) {
  std::string path = tuningPath();
  if (path.empty()) {
    error = "the nnc cache is off (NNC_CACHE_DIR=off): nowhere to keep tuned choices";
    return false;
  }
  TunedTable &t = table();
  std::string text;
  {
    std::lock_guard<std::mutex> guard(t.lock);
    t.load();
    std::vector<std::string> keys;
    for (auto &e : t.entries)
      keys.push_back(e.getKey().str());
    llvm::sort(keys); // the same table, the same file
    for (const std::string &k : keys)
      text += k + "\t" + t.entries[k] + "\n";
  }
  if (!codegen::writeCacheEntry(path, text)) {
    error = "cannot write '" + path + "'";
    return false;
  }
  return true;
}

namespace nnc {
#define GEN_PASS_DEF_CHOOSETILING
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

namespace {
struct ChooseTilingPass : nnc::impl::ChooseTilingBase<ChooseTilingPass> {
  using ChooseTilingBase::ChooseTilingBase;
  void runOnOperation() override {
    cpu::Machine m = cpu::host();
    for (auto [option, fact] : {std::pair{int64_t(lanes), &m.lanes}, std::pair{int64_t(registers), &m.registers},
                                std::pair{int64_t(l1), &m.l1}, std::pair{int64_t(l2), &m.l2}})
      if (option > 0)
        *fact = option;
    // Tuned choices (`nnc tune`) apply to the host only, and only where
    // they still verify.
    bool onHost = lanes <= 0 && registers <= 0 && l1 <= 0 && l2 <= 0;
    WalkResult r = getOperation().walk([&](Operation *op) {
      if (op->hasAttr(cpu::kTilingAttr))
        return failed(cpu::verifyTiling(op)) ? WalkResult::interrupt() : WalkResult::advance();
      if (DictionaryAttr tuned = onHost && cpu::chooseTiling(op, m) ? cpu::tunedTiling(op) : nullptr) {
        op->setAttr(cpu::kTilingAttr, tuned);
        ScopedDiagnosticHandler quiet(op->getContext(), [](Diagnostic &) { return success(); });
        if (succeeded(cpu::verifyTiling(op)))
          return WalkResult::advance();
        op->removeAttr(cpu::kTilingAttr);
      }
      if (DictionaryAttr t = cpu::chooseTiling(op, m))
        op->setAttr(cpu::kTilingAttr, t);
      return WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
