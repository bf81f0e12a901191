//===- Convolutions.cpp - convolutions as loops -----------------------------===//
//
// Convolutions in all three directions (forward, input gradient, weight
// gradient): register blocks over output channels and row vectors, taps
// masked at the padding.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LoopEmitter.h"
#include "compiler/codegen/cpu/Tiling.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace nnc::cpu::loops {

//===----------------------------------------------------------------------===//
// Convolution, pooling, channel windows
//===----------------------------------------------------------------------===//

/// The output positions [lo, hi) whose tap `k` falls inside an input of
/// `size`: 0 <= i * stride - pad + k < size. Computing the range up front
/// keeps conditionals out of the inner loops, so they vectorize.
std::pair<Value, Value> tapRange(Emitter &e, Value k, int64_t stride, int64_t pad,
                                 int64_t size, int64_t out) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value num = b.create<arith::SubIOp>(loc, e.idx(pad), k); // pad - k
  Value lo = b.create<arith::MaxSIOp>(
      loc, e.idx(0), b.create<arith::CeilDivSIOp>(loc, num, e.idx(stride)));
  Value last = b.create<arith::FloorDivSIOp>(
      loc, b.create<arith::AddIOp>(loc, num, e.idx(size - 1)), e.idx(stride));
  Value hi = b.create<arith::MinSIOp>(loc, e.idx(out),
                                      b.create<arith::AddIOp>(loc, last, e.idx(1)));
  return {lo, b.create<arith::MaxSIOp>(loc, lo, hi)};
}

/// Lanes of a vector of kLanes columns from column `start` (possibly
/// negative) that lie inside a row of `width`: the mask of a padded load.
Value columnMask(Emitter &e, Value start, int64_t width) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  auto i32v = VectorType::get({kLanes}, b.getI32Type());
  SmallVector<int32_t> lanes;
  for (int32_t l = 0; l < kLanes; ++l)
    lanes.push_back(l);
  Value iota = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32v, ArrayRef<int32_t>(lanes)));
  Value s32 = b.create<arith::IndexCastOp>(loc, b.getI32Type(), start);
  Value cols = b.create<arith::AddIOp>(loc, iota, b.create<vector::BroadcastOp>(loc, i32v, s32));
  auto splat = [&](int32_t v) {
    return b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32v, v));
  };
  return b.create<arith::AndIOp>(
      loc, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sge, cols, splat(0)),
      b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, cols, splat(static_cast<int32_t>(width))));
}

/// The loop bounds [lo, hi) of kernel rows p that an output row `i` reads
/// inside an input of `size` rows: 0 <= i * stride - pad + p < size.
std::pair<Value, Value> kernelRows(Emitter &e, Value i, int64_t stride, int64_t pad, int64_t size,
                                   int64_t k) {
  OpBuilder &b = e.b;
  Value base = b.create<arith::SubIOp>(e.loc, e.idx(pad), e.mul(i, e.idx(stride))); // pad - i*s
  Value lo = b.create<arith::MaxSIOp>(e.loc, e.idx(0), base);
  Value hi = b.create<arith::MinSIOp>(e.loc, e.idx(k), e.add(base, e.idx(size)));
  return {lo, b.create<arith::MaxSIOp>(e.loc, lo, hi)};
}

RowLanes::RowLanes(Emitter &e, Value start, int64_t stride, int64_t width, Value valid, bool inside) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  if (inside && stride <= 2 && !valid) {
    this->start = start;
    this->stride = stride;
    return;
  }
  if (stride <= 2) {
    this->start = start;
    this->stride = stride;
    mask = columnMask(e, start, width);
    if (stride == 2)
      next = columnMask(e, e.add(start, e.idx(kLanes)), width);
  } else {
    auto i32v = VectorType::get({kLanes}, b.getI32Type());
    SmallVector<int32_t> lanes;
    for (int32_t l = 0; l < kLanes; ++l)
      lanes.push_back(l * static_cast<int32_t>(stride));
    auto splat = [&](int64_t v) -> Value {
      return b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32v, static_cast<int32_t>(v)));
    };
    columns = b.create<arith::AddIOp>(
        loc, b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32v, ArrayRef<int32_t>(lanes))),
        b.create<vector::BroadcastOp>(loc, i32v, b.create<arith::IndexCastOp>(loc, b.getI32Type(), start)));
    mask = b.create<arith::AndIOp>(loc, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sge, columns, splat(0)),
                                   b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, columns, splat(width)));
  }
  if (valid) {
    Value none = b.create<arith::ConstantOp>(
        loc, DenseElementsAttr::get(VectorType::get({kLanes}, b.getI1Type()), false));
    mask = select(e, valid, mask, none);
    if (next)
      next = select(e, valid, next, none);
  }
}

Value RowLanes::load(Emitter &e, Value mem, ValueRange row) const {
  auto vt = VectorType::get({kLanes}, e.b.getF32Type());
  Value zero = e.b.create<arith::ConstantOp>(e.loc, DenseElementsAttr::get(vt, 0.0f));
  SmallVector<Value> at(row);
  at.push_back(columns ? e.idx(0) : start);
  auto vload = [&](Value m) -> Value {
    if (!mask)
      return e.b.create<vector::LoadOp>(e.loc, vt, mem, at);
    return e.b.create<vector::MaskedLoadOp>(e.loc, vt, mem, at, m, zero);
  };
  if (!columns && stride == 1)
    return vload(mask);
  if (!columns) {
    Value lo = vload(mask);
    at.back() = e.add(start, e.idx(kLanes));
    Value hi = vload(next);
    SmallVector<int64_t> even;
    for (int64_t l = 0; l < kLanes; ++l)
      even.push_back(2 * l);
    return e.b.create<vector::ShuffleOp>(e.loc, lo, hi, even);
  }
  return e.b.create<vector::GatherOp>(e.loc, vt, mem, at, columns, mask, zero);
}

/// How many outer loops of a row convolution run in parallel: samples and
/// rows (2) where one sample is worth splitting over threads (a batch of
/// one at inference), else samples only (1): a parallel region costs a few
/// microseconds, as much as a small layer's whole sample (MNIST's first
/// convolution: 0.6 million multiply-adds).
static int rowsInParallel(ArrayRef<int64_t> y, int64_t inChannels, ArrayRef<int64_t> w) {
  int64_t perSample = y[1] * y[2] * y[3] * inChannels * w[2] * w[3];
  return perSample >= (int64_t{1} << 22) ? 2 : 1;
}

namespace {

/// A convolution computed a block of output channels by an output row's
/// vectors at a time (conv2dRows): the forward convolution, or (transposed)
/// the input gradient, which reads the output gradient through the same
/// weights: dX[c, h, w] = sum over o, p, q of W[o, c, p, q] dY[o, (h + pad
/// - p) / stride, (w + pad - q) / stride] where those divide exactly.
struct RowConvolution {
  Value X, Y;                  // read, written (NCHW; Y null with an epilogue)
  Value W;                     // OIHW: the forward convolution's weights
  ArrayRef<int64_t> stride, pad;
  int64_t groups;
  bool transposed;
};

} // namespace

/// The weight read for output channel `o` (of group `g`, `oy` channels a
/// group) from input channel `ci` (`ic` counted over all groups) at tap (p,
/// q): W[o, ci, p, q] forward; W[ic, o - g * oy, p, q] transposed, where the
/// roles of the channels swap.
static SmallVector<Value> weightIndex(Emitter &e, bool transposed, Value o, Value g, int64_t oy, Value ic, Value ci,
                                      Value p, Value q) {
  if (transposed)
    return {ic, e.sub(o, e.mul(g, e.idx(oy))), p, q};
  return {o, ci, p, q};
}

/// Register-blocked: for one sample and output row, a block of output
/// channels times the row's vectors is accumulated in registers over input
/// channels and kernel taps (each input row vector, loaded once with its
/// padding masked to zero, serves every channel of the block; RowLanes
/// reads strided rows), then stored once (through the epilogue, if any).
/// Samples run in parallel.
static void conv2dRows(Emitter &e, const RowConvolution &c) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value X = c.X, W = c.W, Y = c.Y;
  // (Y is null when the result goes through the epilogue.)
  ArrayRef<int64_t> x = shapeOf(X), w = shapeOf(W), y = shapeOf(e.op->getResult(0));
  // Channels per group of the output and of the input read.
  int64_t oy = y[1] / c.groups, cx = x[1] / c.groups;
  int64_t vectors = (y[3] + kLanes - 1) / kLanes;
  int64_t block = tilingOf(e.op, "channel_block"); // (Tiling.cpp)
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  int64_t s0 = c.stride[0], s1 = c.stride[1], p0 = c.pad[0], p1 = c.pad[1];
  // A transposed convolution with column stride s1 runs per phase: the
  // output columns phi, phi + s1, ... meet only the taps q = phi + p1 (mod
  // s1), and read the output gradient contiguously there (lanes of
  // consecutive output columns would each divide by s1 and gather, half of
  // them for nothing).
  bool phased = c.transposed && s1 > 1;
  // Rows inside channel blocks where the weights overflow L2 (Tiling.cpp).
  bool oOuter = tilingOr(e.op, "channels_outer", 0) == 1;
  Value nDim = e.valueDim(e.op->getResult(0), 0);
  SmallVector<Value> bounds = oOuter ? SmallVector<Value>{nDim, e.idx(y[1] / block), e.idx(y[2])}
                                     : SmallVector<Value>{nDim, e.idx(y[2]), e.idx(y[1] / block)};
  e.loops(bounds, [&](ValueRange iv) {
    Value n = iv[0], i = oOuter ? iv[2] : iv[1], o0 = e.mul(oOuter ? iv[1] : iv[2], e.idx(block));
    Value g = b.create<arith::DivUIOp>(loc, o0, e.idx(oy));
    // The kernel rows that meet the input for output row i, in steps.
    Value pLo, pHi;
    int64_t pStep = 1;
    if (!c.transposed) {
      std::tie(pLo, pHi) = kernelRows(e, i, s0, p0, x[2], w[2]);
    } else { // p = i + pad - s0 * r for the rows r of the output gradient
      Value top = e.add(i, e.idx(p0));
      Value least = b.create<arith::MaxSIOp>(loc, e.idx(0), e.sub(top, e.idx(s0 * (x[2] - 1))));
      Value phase = b.create<arith::RemUIOp>(loc, e.sub(e.add(top, e.idx(s0 * w[2])), least), e.idx(s0));
      pLo = e.add(least, phase);
      pHi = b.create<arith::MaxSIOp>(loc, pLo, b.create<arith::MinSIOp>(loc, e.idx(w[2]), e.add(top, e.idx(1))));
      pStep = s0;
    }
    // The accumulators of `count` vectors per channel of the block, over
    // the input channels, the kernel rows and the taps `qs` (every column
    // when empty, as a loop), the input read through `lanesAt(v, q)`; of
    // several such parts at once (a transposed convolution's column
    // phases), one after the other.
    struct Part {
      int64_t count;
      SmallVector<int64_t> qs;
      std::function<RowLanes(int64_t v, Value q)> lanesAt;
    };
    auto accumulateParts = [&](ArrayRef<Part> parts) -> SmallVector<Value> {
      SmallVector<int64_t> offsets;
      int64_t total = 0;
      for (const Part &part : parts) {
        offsets.push_back(total);
        total += block * part.count;
      }
      SmallVector<Value> init(total, zero);
      auto cLoop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(cx), e.idx(1), init);
      OpBuilder::InsertionGuard g1(b);
      b.setInsertionPointToStart(cLoop.getBody());
      Value ci = cLoop.getInductionVar();
      Value ic = e.add(e.mul(g, e.idx(cx)), ci);
      auto pLoop = b.create<scf::ForOp>(loc, pLo, pHi, e.idx(pStep), cLoop.getRegionIterArgs());
      b.setInsertionPointToStart(pLoop.getBody());
      Value p = pLoop.getInductionVar();
      Value ih = c.transposed ? b.create<arith::DivUIOp>(loc, e.sub(e.add(i, e.idx(p0)), p), e.idx(s0)).getResult()
                              : e.tap(i, s0, p0, p);
      auto tap = [&](const Part &part, int64_t base, Value q, SmallVector<Value> &acc) {
        blockFMAs(
            e, MutableArrayRef<Value>(acc).slice(base, block * part.count), block, part.count,
            [&](int64_t k) -> Value {
              Value o = e.add(o0, e.idx(k));
              return b.create<vector::BroadcastOp>(loc, vt,
                                                   e.load(W, weightIndex(e, c.transposed, o, g, oy, ic, ci, p, q)));
            },
            [&](int64_t v) {
              return part.lanesAt(v, q).load(e, X, {n, ic, ih});
            });
      };
      if (parts.size() == 1 && parts[0].qs.empty()) {
        auto qLoop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(w[3]), e.idx(1), pLoop.getRegionIterArgs());
        {
          OpBuilder::InsertionGuard g3(b);
          b.setInsertionPointToStart(qLoop.getBody());
          SmallVector<Value> acc(qLoop.getRegionIterArgs());
          tap(parts[0], 0, qLoop.getInductionVar(), acc);
          b.create<scf::YieldOp>(loc, acc);
        }
        b.create<scf::YieldOp>(loc, qLoop.getResults());
      } else {
        SmallVector<Value> acc(pLoop.getRegionIterArgs());
        for (auto [part, base] : llvm::zip(parts, offsets))
          for (int64_t q : part.qs)
            tap(part, base, e.idx(q), acc);
        b.create<scf::YieldOp>(loc, acc);
      }
      b.setInsertionPointAfter(pLoop);
      b.create<scf::YieldOp>(loc, pLoop.getResults());
      return SmallVector<Value>(cLoop.getResults());
    };
    auto accumulate = [&](int64_t count, ArrayRef<int64_t> qs,
                          std::function<RowLanes(int64_t v, Value q)> lanesAt) -> SmallVector<Value> {
      return accumulateParts({Part{count, SmallVector<int64_t>(qs), std::move(lanesAt)}});
    };
    // Stores `count` vectors a channel of the block from vector `first` of
    // the row (`from`, a constant where it is one: its vectors past the
    // row's end are masked).
    auto storeFrom = [&](ArrayRef<Value> sums, int64_t count, Value first, std::optional<int64_t> from) {
      for (int64_t k = 0; k < block; ++k)
        for (int64_t v = 0; v < count; ++v) {
          SmallVector<Value> at{n, e.add(o0, e.idx(k)), i, e.mul(e.add(first, e.idx(v)), e.idx(kLanes))};
          if (e.epilogue) // through the epilogue, on whole vectors
            e.emit(sums[k * count + v], at);
          else
            b.create<vector::TransferWriteOp>(loc, sums[k * count + v], Y, at,
                                              ArrayRef<bool>{!from || (*from + v + 1) * kLanes <= y[3]});
        }
    };
    auto store = [&](ArrayRef<Value> sums) { storeFrom(sums, vectors, e.idx(0), 0); };
    if (!phased) {
      // Whether every tap of the vectors [from, to) of the row reads inside
      // the input row (no padding, no lane past the end): their loads then
      // need no masks.
      auto inside = [&](int64_t from, int64_t to) {
        int64_t lo = from * kLanes, hi = to * kLanes - 1; // output columns
        if (c.transposed) // columns col + p1 - q, q in [0, kw)
          return lo + p1 - (w[3] - 1) >= 0 && hi + p1 < x[3];
        // The first vector's first tap starts at lo * s1 - p1; the last
        // vector's (first column hi + 1 - kLanes) last tap touches `span`
        // elements from its start.
        int64_t span = s1 <= 2 ? kLanes * s1 : (kLanes - 1) * s1 + 1;
        return lo * s1 - p1 >= 0 && (hi + 1 - kLanes) * s1 - p1 + (w[3] - 1) + span <= x[3];
      };
      // The input lanes of the row's vector `first` + v (`known`: inside).
      auto lanesFrom = [&](Value first, bool known) {
        return [&, first, known](int64_t v, Value q) {
          Value col = e.mul(e.add(first, e.idx(v)), e.idx(kLanes)); // its first output column
          std::optional<int64_t> f = getConstantIntValue(first);
          bool in = known || (f && inside(*f + v, *f + v + 1));
          return c.transposed ? RowLanes(e, e.sub(e.add(col, e.idx(p1)), q), 1, x[3], Value(), in)
                              : RowLanes(e, e.sub(e.add(q, e.mul(col, e.idx(s1))), e.idx(p1)), s1, x[3], Value(), in);
        };
      };
      // Wide rows in chunks of `row_vectors` (Tiling.cpp).
      int64_t chunk = std::clamp<int64_t>(tilingOr(e.op, "row_vectors", vectors), 1, vectors);
      rowChunks(e, y[3], chunk, inside, [&](Value first, int64_t count, bool known, std::optional<int64_t> from) {
        storeFrom(accumulate(count, {}, lanesFrom(first, known)), count, first, from);
      });
      return;
    }
    // Every phase's sums in registers, accumulated in one pass over the
    // channels (each weight and channel iteration then serves all the
    // row's taps), then interleaved lane by lane into whole vectors of the
    // row (LLVM makes the moves shuffles).
    SmallVector<SmallVector<Value>> phases(s1);
    SmallVector<int64_t> counts, computed;
    SmallVector<Part> parts;
    for (int64_t phi = 0; phi < s1; ++phi) {
      int64_t columns = std::max<int64_t>(0, (y[3] - phi + s1 - 1) / s1), count = (columns + kLanes - 1) / kLanes;
      SmallVector<int64_t> qs;
      for (int64_t q = 0; q < w[3]; ++q)
        if (((q - phi - p1) % s1 + s1) % s1 == 0)
          qs.push_back(q);
      counts.push_back(count);
      phases[phi].assign(block * count, zero);
      if (qs.empty() || count == 0)
        continue;
      computed.push_back(phi);
      parts.push_back({count, qs, [&, phi](int64_t v, Value q) {
                         int64_t shift = (phi + p1 - *getConstantIntValue(q)) / s1;
                         return RowLanes(e, e.idx(v * kLanes + shift), 1, x[3]);
                       }});
    }
    if (!parts.empty()) {
      SmallVector<Value> sums = accumulateParts(parts);
      int64_t at = 0;
      for (int64_t phi : computed)
        for (Value &sum : phases[phi])
          sum = sums[at++];
    }
    SmallVector<Value> whole;
    for (int64_t k = 0; k < block; ++k)
      for (int64_t v = 0; v < vectors; ++v) {
        Value row = zero;
        for (int64_t l = 0; l < kLanes && v * kLanes + l < y[3]; ++l) {
          int64_t col = v * kLanes + l, phi = col % s1, j = col / s1;
          Value from = phases[phi][k * counts[phi] + j / kLanes];
          row = b.create<vector::InsertOp>(loc, b.create<vector::ExtractOp>(loc, from, j % kLanes), row, l);
        }
        whole.push_back(row);
      }
    store(whole);
  }, /*parallel=*/true, rowsInParallel(y, cx, w)); // samples x (rows or channel blocks)
}

/// The lanes of a vector over R whole rows of OW columns (R * OW <= kLanes;
/// images narrower than a vector) of an input plane as wide as the output
/// (unit strides), viewed as one axis: lane l reads row row0 + l / OW and
/// column col0 + l % OW, consecutive in the plane, so one masked load takes
/// them all. Lanes past the group's rows, or outside the input, are masked
/// off.
struct GroupLanes {
  Value offset, mask;

  GroupLanes(Emitter &e, Value row0, Value col0, int64_t ow, int64_t rows, int64_t h, int64_t w) {
    OpBuilder &b = e.b;
    Location loc = e.loc;
    auto i32v = VectorType::get({kLanes}, b.getI32Type());
    SmallVector<int32_t> r, j;
    for (int64_t l = 0; l < kLanes; ++l) {
      r.push_back(static_cast<int32_t>(l < rows * ow ? l / ow : -(1 << 20))); // unused lanes: never in range
      j.push_back(static_cast<int32_t>(l % ow));
    }
    auto constant = [&](ArrayRef<int32_t> v) -> Value {
      return b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32v, v));
    };
    auto splat = [&](Value index) -> Value {
      return b.create<vector::BroadcastOp>(loc, i32v, b.create<arith::IndexCastOp>(loc, b.getI32Type(), index));
    };
    auto within = [&](Value v, int64_t n) {
      return b.create<arith::AndIOp>(
          loc, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sge, v, constant(SmallVector<int32_t>(kLanes, 0))),
          b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, v,
                                  constant(SmallVector<int32_t>(kLanes, static_cast<int32_t>(n)))));
    };
    mask = b.create<arith::AndIOp>(loc, within(b.create<arith::AddIOp>(loc, constant(r), splat(row0)), h),
                                   within(b.create<arith::AddIOp>(loc, constant(j), splat(col0)), w));
    offset = e.add(e.mul(row0, e.idx(w)), col0);
  }

  /// The lanes from the plane `plane[n, c, :]`.
  Value load(Emitter &e, Value plane, Value n, Value c) const {
    auto vt = VectorType::get({kLanes}, e.b.getF32Type());
    Value zero = e.b.create<arith::ConstantOp>(e.loc, DenseElementsAttr::get(vt, 0.0f));
    return e.b.create<vector::MaskedLoadOp>(e.loc, vt, plane, ValueRange{n, c, offset}, mask, zero);
  }
};

/// How many output rows a vector takes (1: rows are not grouped). Rows are
/// grouped where one vector then loads several rows at once: unit strides,
/// the input as wide as the output, a contiguous buffer. With `rowByRow`
/// (the forward convolution) also where each row is loaded on its own and
/// the rows shuffled together: any row stride, column strides of 1 or 2.
int64_t groupedRows(Value x, ArrayRef<int64_t> stride, int64_t ow, bool rowByRow = false) {
  auto type = dyn_cast<MemRefType>(x.getType());
  if (ow <= 0 || ow * 2 > kLanes || !type)
    return 1;
  bool flat = type.getLayout().isIdentity() && stride[0] == 1 && stride[1] == 1 && shapeOf(x)[3] == ow;
  bool rows = rowByRow && stride[1] <= 2 && stride[1] * (ow - 1) < kLanes;
  return flat || rows ? kLanes / ow : 1;
}

/// A vector over `rows` output rows of `ow` columns (lane r * ow + j) read
/// row by row: row r's lanes from input row `rowOf(r)` at columns col0 + j *
/// stride (one masked load per row, the rows then shuffled together; rows
/// outside the input read as zero).
Value rowsVector(Emitter &e, Value X, Value n, Value c, function_ref<Value(int64_t)> rowOf, Value col0, int64_t ow,
                 int64_t rows, int64_t stride) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  ArrayRef<int64_t> x = shapeOf(X);
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  Value none = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(VectorType::get({kLanes}, b.getI1Type()), false));
  Value columns = columnMask(e, col0, x[3]);
  Value acc;
  for (int64_t r = 0; r < rows; ++r) {
    Value ih = rowOf(r);
    Value ok = b.create<arith::AndIOp>(loc, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sge, ih, e.idx(0)),
                                       b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, ih, e.idx(x[2])));
    Value v = b.create<vector::MaskedLoadOp>(loc, vt, X, ValueRange{n, c, select(e, ok, ih, e.idx(0)), col0},
                                             select(e, ok, columns, none), zero);
    if (r == 0 && rows > 1) {
      acc = v;
      continue;
    }
    // Lanes [0, r * ow) as they are (the first row: its columns), then row
    // r's columns.
    SmallVector<int64_t> lanes;
    for (int64_t l = 0; l < kLanes; ++l) {
      int64_t row = l / ow, j = l % ow;
      if (l >= rows * ow)
        lanes.push_back(0);
      else if (row < r)
        lanes.push_back(r == 1 ? j * stride : l);
      else if (row == r)
        lanes.push_back(kLanes + j * stride);
      else
        lanes.push_back(0);
    }
    acc = b.create<vector::ShuffleOp>(loc, acc, v, lanes);
  }
  return acc;
}

/// Stores the sums of a group of `rows` output rows (lane r * ow + j: row
/// i0 + r, column j), one vector per channel from o0, each row shifted down
/// to lane 0; through the epilogue where there is one. Rows past the
/// output's end are not stored.
static void storeRowGroup(Emitter &e, Value Y, ArrayRef<Value> sums, Value n, Value o0, Value i0, int64_t rows) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  ArrayRef<int64_t> y = shapeOf(e.op->getResult(0));
  int64_t ow = y[3];
  for (int64_t r = 0; r < rows; ++r) {
    SmallVector<int64_t> lanes;
    for (int64_t l = 0; l < kLanes; ++l)
      lanes.push_back(l < ow ? r * ow + l : 0);
    Value i = e.add(i0, e.idx(r));
    auto row = [&] {
      for (auto [k, sum] : llvm::enumerate(sums)) {
        Value v = sum;
        if (r > 0)
          v = b.create<vector::ShuffleOp>(loc, v, v, lanes);
        SmallVector<Value> at{n, e.add(o0, e.idx(static_cast<int64_t>(k))), i, e.idx(0)};
        if (e.epilogue) // through the epilogue: lanes past the row's end are not stored
          e.emit(v, at);
        else
          b.create<vector::TransferWriteOp>(loc, v, Y, at, ArrayRef<bool>{false});
      }
    };
    if (y[2] % rows == 0)
      row();
    else
      e.when(b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, i, e.idx(y[2])), row);
  }
}

/// Rows of the output narrower than a vector, as many per vector as fit
/// (a 4 x 4 image fills 8 lanes with two rows, not half of them with one).
/// The input is read a vector of rows at a time (GroupLanes, rowsVector),
/// the accumulators hold `rows` output rows each, and each row is shifted
/// down to lane 0 when stored.
static void conv2dRowGroups(Emitter &e, Value X, Value W, Value Y, ArrayRef<int64_t> stride,
                            ArrayRef<int64_t> pad, int64_t groups, int64_t rows, bool transposed) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  ArrayRef<int64_t> x = shapeOf(X), w = shapeOf(W), y = shapeOf(e.op->getResult(0));
  int64_t oy = y[1] / groups, cx = x[1] / groups, ow = y[3];
  int64_t block = tilingOf(e.op, "channel_block"); // (Tiling.cpp)
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  // One load per vector where the rows lie back to back in the plane.
  bool flat = stride[0] == 1 && stride[1] == 1 && x[3] == ow && cast<MemRefType>(X.getType()).getLayout().isIdentity();
  Value plane = flat ? b.create<memref::CollapseShapeOp>(loc, X, SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}})
                           .getResult()
                     : Value();
  int64_t rowGroups = (y[2] + rows - 1) / rows;
  e.loops(ArrayRef<Value>{e.valueDim(e.op->getResult(0), 0), e.idx(rowGroups), e.idx(y[1] / block)}, [&](ValueRange iv) {
    Value n = iv[0], i0 = e.mul(iv[1], e.idx(rows)), o0 = e.mul(iv[2], e.idx(block));
    Value g = b.create<arith::DivUIOp>(loc, o0, e.idx(oy));
    // The kernel rows any row of the group meets the input with (the
    // transposed form has unit strides: p = i + pad - r for the rows r of
    // the output gradient).
    Value last = b.create<arith::MinSIOp>(loc, e.add(i0, e.idx(rows - 1)), e.idx(y[2] - 1));
    Value pLo, pHi;
    if (transposed) {
      pLo = b.create<arith::MaxSIOp>(loc, e.idx(0), e.sub(e.add(i0, e.idx(pad[0])), e.idx(x[2] - 1)));
      pHi = b.create<arith::MinSIOp>(loc, e.idx(w[2]), e.add(last, e.idx(pad[0] + 1)));
    } else {
      pLo = kernelRows(e, last, stride[0], pad[0], x[2], w[2]).first;
      pHi = kernelRows(e, i0, stride[0], pad[0], x[2], w[2]).second;
    }
    SmallVector<Value> init(block, zero);
    auto cLoop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(cx), e.idx(1), init);
    {
      OpBuilder::InsertionGuard g1(b);
      b.setInsertionPointToStart(cLoop.getBody());
      Value ci = cLoop.getInductionVar();
      Value ic = e.add(e.mul(g, e.idx(cx)), ci);
      // One tap: the group's input vector times the block's weights.
      auto tap = [&](Value p, Value q, SmallVector<Value> &acc) {
        Value row0 = transposed ? e.sub(e.add(i0, e.idx(pad[0])), p)
                                : e.add(e.sub(e.mul(i0, e.idx(stride[0])), e.idx(pad[0])), p);
        Value col0 = transposed ? e.sub(e.idx(pad[1]), q) : e.sub(q, e.idx(pad[1]));
        Value xv = flat ? GroupLanes(e, row0, col0, ow, rows, x[2], x[3]).load(e, plane, n, ic)
                        : rowsVector(e, X, n, ic, [&](int64_t r) { return e.add(row0, e.idx(r * stride[0])); }, col0,
                                     ow, rows, stride[1]);
        for (int64_t k = 0; k < block; ++k) {
          Value o = e.add(o0, e.idx(k));
          Value wk = b.create<vector::BroadcastOp>(loc, vt, e.load(W, weightIndex(e, transposed, o, g, oy, ic, ci, p, q)));
          acc[k] = b.create<vector::FMAOp>(loc, wk, xv, acc[k]);
        }
      };
      if (!flat && w[2] * w[3] <= 9) {
        // Rows read one by one (strided) with a small kernel: every tap
        // unrolled, so that each tap's rows, masks and shuffles (which
        // depend on the group of rows only) are worked out once for all
        // input channels; kernel rows outside the input are masked off like
        // the padding. (Contiguous groups measured no faster so.)
        SmallVector<Value> acc(cLoop.getRegionIterArgs());
        for (int64_t p = 0; p < w[2]; ++p)
          for (int64_t q = 0; q < w[3]; ++q)
            tap(e.idx(p), e.idx(q), acc);
        b.create<scf::YieldOp>(loc, acc);
      } else {
        auto pLoop = b.create<scf::ForOp>(loc, pLo, b.create<arith::MaxSIOp>(loc, pLo, pHi), e.idx(1),
                                          cLoop.getRegionIterArgs());
        b.setInsertionPointToStart(pLoop.getBody());
        auto qLoop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(w[3]), e.idx(1), pLoop.getRegionIterArgs());
        b.setInsertionPointToStart(qLoop.getBody());
        SmallVector<Value> acc(qLoop.getRegionIterArgs());
        tap(pLoop.getInductionVar(), qLoop.getInductionVar(), acc);
        b.create<scf::YieldOp>(loc, acc);
        b.setInsertionPointAfter(qLoop);
        b.create<scf::YieldOp>(loc, qLoop.getResults());
        b.setInsertionPointAfter(pLoop);
        b.create<scf::YieldOp>(loc, pLoop.getResults());
      }
    }
    storeRowGroup(e, Y, SmallVector<Value>(cLoop.getResults()), n, o0, i0, rows);
  }, /*parallel=*/true, rowsInParallel(y, cx, w)); // samples x groups of rows
}

/// The rows of a phase plane a vector takes in conv2dGradInputPhases, or 0
/// where it does not apply: an input gradient with equal strides of 2 or
/// more, one group, whose every output phase plane (rows ph, ph + s, ...;
/// columns likewise) is as large as the output gradient and no wider than
/// `widest`, contiguous buffers.
static int64_t phaseRows(Emitter &e, Value DY, Value DX, ArrayRef<int64_t> stride, int64_t groups,
                         int64_t widest) {
  ArrayRef<int64_t> d = shapeOf(DY), x = shapeOf(DX);
  for (Value m : {DY, DX})
    if (!m || !cast<MemRefType>(m.getType()).getLayout().isIdentity())
      return 0;
  int64_t s = stride[0];
  if (groups != 1 || s < 2 || stride[1] != s || x[2] != s * d[2] || x[3] != s * d[3] || d[3] > widest)
    return 0;
  return kLanes / d[3];
}

/// The sums over channels [0, n) of each tap's vector of input lanes
/// (`lanes(t, c)`, t < taps) times a block of weights broadcast
/// (`weight(t, k, c)`, k < block), in `block` vector registers carried by
/// one loop over the channels.
static SmallVector<Value> tapSums(Emitter &e, int64_t n, int64_t taps, int64_t block,
                                  function_ref<Value(int64_t t, Value c)> lanes,
                                  function_ref<Value(int64_t t, int64_t k, Value c)> weight) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  SmallVector<Value> init(block, b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f)));
  auto cLoop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(n), e.idx(1), init);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(cLoop.getBody());
  Value c = cLoop.getInductionVar();
  SmallVector<Value> acc(cLoop.getRegionIterArgs());
  for (int64_t t = 0; t < taps; ++t) {
    Value v = lanes(t, c);
    for (int64_t k = 0; k < block; ++k)
      acc[k] = b.create<vector::FMAOp>(loc, b.create<vector::BroadcastOp>(loc, vt, weight(t, k, c)), v, acc[k]);
  }
  b.create<scf::YieldOp>(loc, acc);
  return SmallVector<Value>(cLoop.getResults());
}

/// A strided input gradient per output phase (ph, pw): the outputs (s i +
/// ph, s j + pw) meet only the taps p = ph + pad (mod s), q likewise, each
/// at the output gradient's (i + (ph + pad - p) / s, j + ...), a unit-stride
/// read. Each phase plane is as wide as the output gradient, so a vector
/// takes several of its rows in one masked load (GroupLanes), where a row
/// of one phase alone would fill a fraction of the lanes; the sums are
/// scattered to their rows and columns, s apart.
static void conv2dGradInputPhases(Emitter &e, Value DY, Value W, Value DX, ArrayRef<int64_t> stride,
                                  ArrayRef<int64_t> pad, int64_t rows) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  ArrayRef<int64_t> d = shapeOf(DY), w = shapeOf(W), x = shapeOf(e.op->getResult(0));
  int64_t s = stride[0], hd = d[2], wd = d[3];
  int64_t block = tilingOf(e.op, "channel_block"); // (Tiling.cpp)
  auto i32v = VectorType::get({kLanes}, b.getI32Type());
  Value plane = b.create<memref::CollapseShapeOp>(loc, DY, SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}});
  Value out = b.create<memref::CollapseShapeOp>(loc, DX, SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}});
  int64_t groupsOfRows = (hd + rows - 1) / rows;
  e.loops(ArrayRef<Value>{e.valueDim(e.op->getResult(0), 0), e.idx(x[1] / block)}, [&](ValueRange iv) {
    Value n = iv[0], c0 = e.mul(iv[1], e.idx(block));
    for (int64_t ph = 0; ph < s; ++ph)
      for (int64_t pw = 0; pw < s; ++pw) {
        SmallVector<std::pair<int64_t, int64_t>> taps;
        for (int64_t p = 0; p < w[2]; ++p)
          for (int64_t q = 0; q < w[3]; ++q)
            if ((ph + pad[0] - p) % s == 0 && (pw + pad[1] - q) % s == 0)
              taps.push_back({p, q});
        auto rowLoop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(groupsOfRows), e.idx(1));
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(rowLoop.getBody());
        Value r0 = e.mul(rowLoop.getInductionVar(), e.idx(rows));
        SmallVector<GroupLanes> lanes;
        for (auto [p, q] : taps)
          lanes.emplace_back(e, e.add(r0, e.idx((ph + pad[0] - p) / s)), e.idx((pw + pad[1] - q) / s), wd, rows, hd,
                             wd);
        SmallVector<Value> sums = tapSums(
            e, w[0], static_cast<int64_t>(taps.size()), block,
            [&](int64_t t, Value o) { return lanes[t].load(e, plane, n, o); },
            [&](int64_t t, int64_t k, Value o) {
              return e.load(W, {o, e.add(c0, e.idx(k)), e.idx(taps[t].first), e.idx(taps[t].second)});
            });
        // Lane r * wd + j holds output (s (r0 + r) + ph, s j + pw); rows
        // past the plane are masked off.
        SmallVector<int32_t> at, row;
        for (int64_t l = 0; l < kLanes; ++l) {
          int64_t r = l / wd, j = l % wd;
          at.push_back(static_cast<int32_t>((r * s + ph) * x[3] + j * s + pw));
          row.push_back(static_cast<int32_t>(l < rows * wd ? r : 1 << 20));
        }
        auto splat = [&](Value i) -> Value {
          return b.create<vector::BroadcastOp>(loc, i32v, b.create<arith::IndexCastOp>(loc, b.getI32Type(), i));
        };
        Value rowsLeft = splat(e.sub(e.idx(hd), r0));
        Value mask = b.create<arith::CmpIOp>(
            loc, arith::CmpIPredicate::slt, b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32v, ArrayRef<int32_t>(row))),
            rowsLeft);
        Value base = e.mul(r0, e.idx(s * x[3]));
        Value index = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32v, ArrayRef<int32_t>(at)));
        for (int64_t k = 0; k < block; ++k)
          b.create<vector::ScatterOp>(loc, out, ValueRange{n, e.add(c0, e.idx(k)), base}, index, mask,
                                      sums[k]);
      }
  }, /*parallel=*/true, rowsInParallel(x, w[0], w));
}

/// Per tap (p, q) of a kernel of `k` rows and columns at padding `pad`: the
/// rows of its phase plane (ph, pw) = ((p - pad) mod s, (q - pad) mod s)
/// that a group of `rows` output rows from i0 reads, at (i + floor((p -
/// pad) / s), j + ...), the same masks for every channel (GroupLanes); and
/// the plane's index among a channel's s * s.
static void tapPlanes(Emitter &e, Value i0, ArrayRef<int64_t> k, ArrayRef<int64_t> pad, int64_t s, int64_t oh,
                      int64_t ow, int64_t rows, SmallVector<GroupLanes> &in, SmallVector<int64_t> &planeOf) {
  for (int64_t p = 0; p < k[0]; ++p)
    for (int64_t q = 0; q < k[1]; ++q) {
      int64_t dp = p - pad[0], dq = q - pad[1];
      int64_t ph = ((dp % s) + s) % s, pw = ((dq % s) + s) % s;
      in.emplace_back(e, e.add(i0, e.idx((dp - ph) / s)), e.idx((dq - pw) / s), ow, rows, oh, ow);
      planeOf.push_back(ph * s + pw);
    }
}

/// The rows of a phase plane a vector takes in conv2dForwardPhases, or 0
/// where it does not apply: phase planes (forwardPhasePlanes), output rows
/// no wider than half a vector (wider ones: conv2dForwardPhaseRows).
static int64_t forwardPhaseRows(nnops::Conv2dOp op, Value X) {
  int64_t ow = shapeOf(op.getResult())[3];
  return forwardPhasePlanes(op, X) && 2 * ow <= kLanes ? kLanes / ow : 0;
}

/// A strided forward convolution of small planes per input phase: each
/// sample chunk's input is split into its s x s phase planes (rows ph, ph
/// + s, ...; columns likewise), as large as the output, so that every tap
/// reads one plane at a unit stride, several of its rows to a vector in one
/// masked load (GroupLanes), where strided rows cost a load pair and a
/// shuffle each and more shuffles to join them. Applies where phaseRows
/// does (the output and input in the roles of the output gradient and
/// input gradient there).
static void conv2dForwardPhases(Emitter &e, ArrayRef<int64_t> stride, ArrayRef<int64_t> pad, int64_t rows) {
  OpBuilder &b = e.b;
  Value X = e.in[0], W = e.in[1], Y = e.out[0];
  ArrayRef<int64_t> x = shapeOf(X), w = shapeOf(W), y = shapeOf(e.op->getResult(0));
  int64_t s = stride[0], oh = y[2], ow = y[3];
  int64_t block = tilingOf(e.op, "channel_block"); // (Tiling.cpp)
  // Samples a chunk: their phase planes (the input's size) in half of L2.
  int64_t chunk = std::max<int64_t>(1, cpu::host().l2 / 2 / (x[1] * x[2] * x[3] * 4));
  Value phases = e.scratch(MemRefType::get({chunk, x[1] * s * s, oh * ow}, b.getF32Type()));
  int64_t rowGroups = (oh + rows - 1) / rows;
  inPhaseChunks(e, X, e.valueDim(e.op->getResult(0), 0), phases, chunk, s, ow, [&](Value n0, Value count) {
    e.loops(
        ArrayRef<Value>{count, e.idx(rowGroups), e.idx(y[1] / block)},
        [&](ValueRange iv) {
          Value m = iv[0], i0 = e.mul(iv[1], e.idx(rows)), o0 = e.mul(iv[2], e.idx(block));
          SmallVector<GroupLanes> in;
          SmallVector<int64_t> planeOf;
          tapPlanes(e, i0, w.drop_front(2), pad, s, oh, ow, rows, in, planeOf);
          SmallVector<Value> sums = tapSums(
              e, x[1], w[2] * w[3], block,
              [&](int64_t t, Value c) {
                return in[t].load(e, phases, m, e.add(e.mul(c, e.idx(s * s)), e.idx(planeOf[t])));
              },
              [&](int64_t t, int64_t k, Value c) {
                return e.load(W, {e.add(o0, e.idx(k)), c, e.idx(t / w[3]), e.idx(t % w[3])});
              });
          storeRowGroup(e, Y, sums, e.add(n0, m), o0, i0, rows);
        },
        /*parallel=*/true, /*collapse=*/2);
  });
}

LogicalResult conv2d(Emitter &e) {
  auto op = self<nnops::Conv2dOp>(e);
  auto direct = [&] {
    if (int64_t rows = forwardPhaseRows(op, e.in[0]); rows > 0) {
      conv2dForwardPhases(e, op.getStride(), op.getPadding(), rows);
      return;
    }
    if (forwardPhasePlanes(op, e.in[0])) {
      conv2dForwardPhaseRows(e, op.getStride(), op.getPadding());
      return;
    }
    if (int64_t rows = groupedRows(e.in[0], op.getStride(), shapeOf(e.op->getResult(0))[3], /*rowByRow=*/true);
        rows > 1) {
      conv2dRowGroups(e, e.in[0], e.in[1], e.out[0], op.getStride(), op.getPadding(), op.getGroups(), rows,
                      /*transposed=*/false);
      return;
    }
    conv2dRows(e, {e.in[0], e.out[0], e.in[1], op.getStride(), op.getPadding(), static_cast<int64_t>(op.getGroups()),
                   /*transposed=*/false});
  };
  if (!conv2dWinograd(e, e.in[0], e.in[1], e.out[0], op.getPadding(), /*transposed=*/false, direct))
    direct();
  return success();
}

LogicalResult conv2dGradInput(Emitter &e) {
  auto op = self<nnops::Conv2dGradInputOp>(e);
  auto direct = [&] {
    // (Rows of a vector or more are read whole per phase by conv2dRows.)
    if (int64_t rows = phaseRows(e, e.in[0], e.out[0], op.getStride(), op.getGroups(), kLanes / 2); rows > 0) {
      conv2dGradInputPhases(e, e.in[0], e.in[1], e.out[0], op.getStride(), op.getPadding(), rows);
      return;
    }
    if (int64_t rows = groupedRows(e.in[0], op.getStride(), shapeOf(e.op->getResult(0))[3]); rows > 1) {
      conv2dRowGroups(e, e.in[0], e.in[1], e.out[0], op.getStride(), op.getPadding(), op.getGroups(), rows,
                      /*transposed=*/true);
      return;
    }
    conv2dRows(e, {e.in[0], e.out[0], e.in[1], op.getStride(), op.getPadding(), static_cast<int64_t>(op.getGroups()),
                   /*transposed=*/true});
  };
  if (!conv2dWinograd(e, e.in[0], e.in[1], e.out[0], op.getPadding(), /*transposed=*/true, direct))
    direct();
  return success();
}

/// The weight gradient with unit column stride: for a block of output
/// channels and one input channel, the products of every (channel, kernel
/// tap) pair are accumulated in a vector register each over the batch and
/// the output rows: a row vector of the input, loaded once per tap, serves
/// the whole channel block, and a row of the output gradient serves every
/// tap (and, for kernels of one or two taps, every input channel of a
/// block). Small kernels (3x3) take all their taps at once, larger ones (and
/// strided rows) one kernel row per pass. Lanes are reduced at the end.
void conv2dGradWeightRows(Emitter &e, ArrayRef<int64_t> stride, ArrayRef<int64_t> pad,
                          int64_t groups) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value X = e.in[0], DY = e.in[1], DW = e.out[0];
  ArrayRef<int64_t> x = shapeOf(X), w = shapeOf(DW), y = shapeOf(DY);
  int64_t og = w[0] / groups, cg = w[1], kh = w[2], kw = w[3];
  // Output rows narrower than half a vector: several to a vector, the
  // planes of the input and output gradient viewed as one axis each.
  auto dyType = dyn_cast<MemRefType>(DY.getType());
  int64_t grouped = dyType && dyType.getLayout().isIdentity() ? groupedRows(X, stride, y[3], /*rowByRow=*/true) : 1;
  SmallVector<ReassociationIndices> planeAxes{{0}, {1}, {2, 3}};
  bool flat = stride[0] == 1 && stride[1] == 1 && x[3] == y[3] && cast<MemRefType>(X.getType()).getLayout().isIdentity();
  Value xPlane = grouped > 1 && flat ? b.create<memref::CollapseShapeOp>(loc, X, planeAxes).getResult() : Value();
  Value dyPlane = grouped > 1 ? b.create<memref::CollapseShapeOp>(loc, DY, planeAxes).getResult() : Value();
  int64_t vectors = grouped > 1 ? 1 : (y[3] + kLanes - 1) / kLanes;
  // Accumulators: block * taps, within the 32 vector registers with the
  // loads. Each input vector serves the block's channels and each output
  // gradient vector the taps: the more taps at once, the fewer bytes of
  // the output gradient from L2 per multiply-add (with one kernel row at a
  // time, reading the output gradient from L2 is the limit; all 9 taps of
  // a 3x3 kernel with 2 channels beat 4 or 8 channels by one row:
  // benchmarks/README.md). An output row then meets input rows past the
  // edge for some kernel rows: their loads are masked to zero. With one or
  // two taps, a block of input channels as well: each output-gradient
  // vector then serves every channel of it (otherwise, for 1x1 kernels,
  // loads outnumber the multiply-adds).
  bool allRows = tilingOf(e.op, "kernel_rows") == kh; // (Tiling.cpp)
  int64_t taps = allRows ? kh * kw : kw;
  int64_t block = tilingOf(e.op, "channel_block"), inBlock = tilingOf(e.op, "input_block"); // (Tiling.cpp)
  int64_t perIn = block * taps; // accumulators per input channel of the block
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  // The batch in chunks whose output gradient and input fit in L2
  // (Tiling.cpp), each chunk's sums added to the previous ones': the
  // passes over (channel block, input channel block, kernel row) then
  // re-read the chunk from L2 instead of L3.
  int64_t chunk = tilingOf(e.op, "batch_chunk");
  Value N = e.dim(DY, 0);
  auto chunks = b.create<scf::ForOp>(loc, e.idx(0), N, e.idx(chunk));
  OpBuilder::InsertionGuard outer(b);
  b.setInsertionPointToStart(chunks.getBody());
  Value n0 = chunks.getInductionVar(), n1 = b.create<arith::MinSIOp>(loc, N, e.add(n0, e.idx(chunk)));
  Value firstChunk = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, n0, e.idx(0));
  // (Input channel blocks outside channel blocks: Tiling.cpp.)
  bool inOuter = tilingOr(e.op, "inputs_outer", 0) == 1;
  SmallVector<Value> bounds = {e.idx(w[0] / block), e.idx(cg / inBlock)};
  if (inOuter)
    std::swap(bounds[0], bounds[1]);
  if (!allRows)
    bounds.push_back(e.idx(kh));
  e.loops(
      bounds,
      [&](ValueRange iv) {
        Value oi = iv[inOuter ? 1 : 0], ci = iv[inOuter ? 0 : 1];
        Value o0 = e.mul(oi, e.idx(block)), c0 = inBlock > 1 ? e.mul(ci, e.idx(inBlock)) : ci;
        Value g = b.create<arith::DivUIOp>(loc, o0, e.idx(og));
        Value ic0 = e.add(e.mul(g, e.idx(cg)), c0);
        // The kernel rows of this pass, and the output rows that meet the
        // input for at least one of them.
        SmallVector<Value> rows;
        Value iLo = e.idx(0), iHi = e.idx(y[2]);
        if (allRows) {
          for (int64_t p = 0; p < kh; ++p)
            rows.push_back(e.idx(p));
        } else {
          rows.push_back(iv[2]);
          std::tie(iLo, iHi) = tapRange(e, iv[2], stride[0], pad[0], x[2], y[2]);
        }
        SmallVector<Value> init(inBlock * perIn, zero);
        auto nLoop = b.create<scf::ForOp>(loc, n0, n1, e.idx(1), init);
        {
          OpBuilder::InsertionGuard g1(b);
          b.setInsertionPointToStart(nLoop.getBody());
          Value n = nLoop.getInductionVar();
          // The input vectors of a row vector, each with the first of its
          // accumulators (acc[at + k * taps] for channel k of the block), times
          // the block's output-gradient vectors (`dyAt(k)`): the inputs loaded
          // first where they are fewer (strided rows: three taps, four
          // channels), so that one of the two sets is live beside the
          // accumulators (as blockFMAs).
          using Inputs = SmallVector<std::pair<int64_t, std::function<Value()>>>;
          auto accumulateInputs = [&](SmallVector<Value> &acc, const Inputs &inputs,
                                      function_ref<Value(int64_t)> dyAt) {
            if (static_cast<int64_t>(inputs.size()) < block) {
              SmallVector<Value> xs;
              for (const auto &in : inputs)
                xs.push_back(in.second());
              for (int64_t k = 0; k < block; ++k) {
                Value d = dyAt(k);
                for (auto [j, in] : llvm::enumerate(inputs)) {
                  Value &sum = acc[in.first + k * taps];
                  sum = b.create<vector::FMAOp>(loc, xs[j], d, sum);
                }
              }
              return;
            }
            SmallVector<Value> dy;
            for (int64_t k = 0; k < block; ++k)
              dy.push_back(dyAt(k));
            for (const auto &in : inputs) {
              Value xv = in.second();
              for (int64_t k = 0; k < block; ++k) {
                Value &sum = acc[in.first + k * taps];
                sum = b.create<vector::FMAOp>(loc, xv, dy[k], sum);
              }
            }
          };
          // Output rows [lo, hi); `inside` when every kernel row of the pass
          // meets the input there, so no load needs a row mask (and the
          // column masks, constant, leave all but the row's edge vectors
          // plain loads).
          auto rowLoop = [&](Value lo, Value hi, ValueRange init, bool inside) -> ValueRange {
            auto iLoop = b.create<scf::ForOp>(loc, lo, hi, e.idx(grouped), init);
            OpBuilder::InsertionGuard g2(b);
            b.setInsertionPointToStart(iLoop.getBody());
            Value i = iLoop.getInductionVar();
            SmallVector<Value> acc(iLoop.getRegionIterArgs());
            if (grouped > 1) {
              // Lanes past the group's rows or the plane's end read as zero.
              auto i32v = VectorType::get({kLanes}, b.getI32Type());
              SmallVector<int32_t> lane;
              for (int64_t l = 0; l < kLanes; ++l)
                lane.push_back(static_cast<int32_t>(l < grouped * y[3] ? l : 1 << 20));
              Value start = e.mul(i, e.idx(y[3]));
              Value left = b.create<vector::BroadcastOp>(
                  loc, i32v, b.create<arith::IndexCastOp>(loc, b.getI32Type(), e.sub(e.idx(y[2] * y[3]), start)));
              Value inPlane = b.create<arith::CmpIOp>(
                  loc, arith::CmpIPredicate::slt,
                  b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32v, ArrayRef<int32_t>(lane))), left);
              auto dyAt = [&](int64_t k) -> Value {
                return b.create<vector::MaskedLoadOp>(loc, vt, dyPlane, ValueRange{n, e.add(o0, e.idx(k)), start},
                                                      inPlane, zero);
              };
              Inputs inputs;
              for (auto [r, p] : llvm::enumerate(rows))
                for (int64_t q = 0; q < kw; ++q) {
                  Value row0 = e.add(e.sub(e.mul(i, e.idx(stride[0])), e.idx(pad[0])), p);
                  std::optional<GroupLanes> lanes;
                  if (flat)
                    lanes.emplace(e, row0, e.idx(q - pad[1]), y[3], grouped, x[2], x[3]);
                  int64_t t = static_cast<int64_t>(r) * kw + q;
                  for (int64_t ci = 0; ci < inBlock; ++ci)
                    inputs.emplace_back(ci * perIn + t, [&, lanes, row0, q, ci]() -> Value {
                      Value c = ci ? e.add(ic0, e.idx(ci)) : ic0;
                      return flat ? lanes->load(e, xPlane, n, c)
                                  : rowsVector(
                                        e, X, n, c, [&](int64_t rr) { return e.add(row0, e.idx(rr * stride[0])); },
                                        e.idx(q - pad[1]), y[3], grouped, stride[1]);
                    });
                }
              accumulateInputs(acc, inputs, dyAt);
            }
            for (int64_t v = 0; grouped == 1 && v < vectors; ++v) {
              // Lanes past the row's end read as zero and add nothing.
              auto dyAt = [&](int64_t k) -> Value {
                return b.create<vector::TransferReadOp>(loc, vt, DY,
                                                        ValueRange{n, e.add(o0, e.idx(k)), i, e.idx(v * kLanes)},
                                                        e.f32(0), ArrayRef<bool>{(v + 1) * kLanes <= y[3]});
              };
              Inputs inputs;
              for (auto [r, p] : llvm::enumerate(rows)) {
                Value ih, rowOk;
                if (allRows && !inside) { // (a row past the edge: loads clamped in and masked off)
                  auto [at, ok] = e.window(i, stride[0], pad[0], p, x[2]);
                  ih = select(e, ok, at, e.idx(0));
                  rowOk = ok;
                } else {
                  ih = e.tap(i, stride[0], pad[0], p);
                }
                for (int64_t q = 0; q < kw; ++q) {
                  RowLanes lanes(e, e.idx(v * kLanes * stride[1] + q - pad[1]), stride[1], x[3], rowOk);
                  int64_t t = static_cast<int64_t>(r) * kw + q;
                  for (int64_t ci = 0; ci < inBlock; ++ci)
                    inputs.emplace_back(ci * perIn + t, [&, lanes, ih, ci]() -> Value {
                      return lanes.load(e, X, {n, ci ? e.add(ic0, e.idx(ci)) : ic0, ih});
                    });
                }
              }
              accumulateInputs(acc, inputs, dyAt);
            }
            b.create<scf::YieldOp>(loc, acc);
            return iLoop.getResults();
          };
          ValueRange sums = nLoop.getRegionIterArgs();
          // Rows [a, b) read kernel rows 0..kh-1 all inside the input:
          // a * stride >= pad and (b - 1) * stride - pad + kh <= height.
          int64_t a = (pad[0] + stride[0] - 1) / stride[0];
          int64_t last = x[2] - kh + pad[0] >= 0 ? (x[2] - kh + pad[0]) / stride[0] : -1;
          int64_t bEnd = std::clamp<int64_t>(last + 1, a, y[2]);
          if (allRows && grouped == 1 && a < bEnd) {
            sums = rowLoop(e.idx(0), e.idx(a), sums, false);
            sums = rowLoop(e.idx(a), e.idx(bEnd), sums, true);
            sums = rowLoop(e.idx(bEnd), e.idx(y[2]), sums, false);
          } else {
            sums = rowLoop(iLo, iHi, sums, false);
          }
          b.create<scf::YieldOp>(loc, sums);
        }
        SmallVector<Value> sums = laneSums(e, SmallVector<Value>(nLoop.getResults()));
        for (int64_t ci = 0; ci < inBlock; ++ci)
          for (int64_t k = 0; k < block; ++k)
            for (auto [r, p] : llvm::enumerate(rows))
              for (int64_t q = 0; q < kw; ++q) {
                int64_t t = static_cast<int64_t>(r) * kw + q;
                Value sum = sums[ci * perIn + k * taps + t];
                SmallVector<Value> at{e.add(o0, e.idx(k)), ci ? e.add(c0, e.idx(ci)) : c0, p, e.idx(q)};
                Value before = select(e, firstChunk, e.f32(0), e.load(DW, at));
                e.store(b.create<arith::AddFOp>(loc, before, sum), DW, at);
              }
      },
      /*parallel=*/true);
}

/// The weight gradient of a strided convolution of small planes by output
/// phases: each sample chunk's input is first split into its s x s phase
/// planes (rows ph, ph + s, ...; columns likewise), as large as the output
/// gradient, so that every tap reads one phase plane at a unit stride; a
/// vector then takes several rows of the output gradient and of the
/// tap's plane in one masked load each (GroupLanes), where rows alone would
/// fill a fraction of the lanes. Accumulators per (output channel, tap)
/// are reduced across lanes once a chunk. Applies where phaseRows does
/// (with the input and output gradient in the roles of the input gradient
/// and output gradient there).
static void conv2dGradWeightPhases(Emitter &e, ArrayRef<int64_t> stride, ArrayRef<int64_t> pad, int64_t rows) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value X = e.in[0], DY = e.in[1], DW = e.out[0];
  ArrayRef<int64_t> x = shapeOf(X), d = shapeOf(DY), w = shapeOf(DW);
  int64_t s = stride[0], oh = d[2], ow = d[3], taps = w[2] * w[3];
  int64_t chunk = tilingOf(e.op, "batch_chunk"); // (Tiling.cpp)
  // Output channels a register block: their accumulators (one per tap)
  // beside the loads.
  int64_t most = std::max<int64_t>(1, (cpu::host().registers - 8) / taps), block = 1;
  for (int64_t k = std::min(most, w[0]); k >= 1; --k)
    if (w[0] % k == 0) {
      block = k;
      break;
    }
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  Value phases = e.scratch(MemRefType::get({chunk, x[1] * s * s, oh * ow}, b.getF32Type()));
  Value dy = b.create<memref::CollapseShapeOp>(loc, DY, SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}});
  int64_t groupsOfRows = (oh + rows - 1) / rows;
  inPhaseChunks(e, X, e.valueDim(e.op->getOperand(0), 0), phases, chunk, s, ow, [&](Value n0, Value count) {
    Value first = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, n0, e.idx(0));
    e.loops(
        ArrayRef<Value>{e.idx(w[0] / block), e.idx(w[1])},
        [&](ValueRange iv) {
          Value o0 = e.mul(iv[0], e.idx(block)), c = iv[1];
          SmallVector<Value> init(block * taps, zero);
          auto rgLoop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(groupsOfRows), e.idx(1), init);
          {
            OpBuilder::InsertionGuard g1(b);
            b.setInsertionPointToStart(rgLoop.getBody());
            Value r0 = e.mul(rgLoop.getInductionVar(), e.idx(rows));
            // The output gradient's rows of the group, and each tap's rows
            // of its phase plane (the same masks for every sample).
            GroupLanes out(e, r0, e.idx(0), ow, rows, oh, ow);
            SmallVector<GroupLanes> in;
            SmallVector<int64_t> planes;
            tapPlanes(e, r0, w.drop_front(2), pad, s, oh, ow, rows, in, planes);
            SmallVector<Value> planeOf;
            for (int64_t plane : planes)
              planeOf.push_back(e.add(e.mul(c, e.idx(s * s)), e.idx(plane)));
            auto mLoop = b.create<scf::ForOp>(loc, e.idx(0), count, e.idx(1), rgLoop.getRegionIterArgs());
            {
              OpBuilder::InsertionGuard g2(b);
              b.setInsertionPointToStart(mLoop.getBody());
              Value m = mLoop.getInductionVar();
              SmallVector<Value> acc(mLoop.getRegionIterArgs()), grads;
              for (int64_t k = 0; k < block; ++k)
                grads.push_back(out.load(e, dy, e.add(n0, m), e.add(o0, e.idx(k))));
              for (int64_t t = 0; t < taps; ++t) {
                Value v = in[t].load(e, phases, m, planeOf[t]);
                for (int64_t k = 0; k < block; ++k)
                  acc[k * taps + t] = b.create<vector::FMAOp>(loc, grads[k], v, acc[k * taps + t]);
              }
              b.create<scf::YieldOp>(loc, acc);
            }
            b.create<scf::YieldOp>(loc, mLoop.getResults());
          }
          SmallVector<Value> sums = laneSums(e, SmallVector<Value>(rgLoop.getResults()));
          for (int64_t k = 0; k < block; ++k)
            for (int64_t t = 0; t < taps; ++t) {
              Value sum = sums[k * taps + t];
              SmallVector<Value> at{e.add(o0, e.idx(k)), c, e.idx(t / w[3]), e.idx(t % w[3])};
              Value before =
                  select(e, first, b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(0.0f)), e.load(DW, at));
              e.store(b.create<arith::AddFOp>(loc, before, sum), DW, at);
            }
        },
        /*parallel=*/true, /*collapse=*/2);
  });
}

LogicalResult conv2dGradWeight(Emitter &e) {
  auto op = self<nnops::Conv2dGradWeightOp>(e);
  // Register accumulators for one kernel row's columns.
  if (shapeOf(e.out[0])[3] <= 16) {
    auto direct = [&] {
      // (The input and the output gradient in the roles phaseRows names.)
      // Even a row a vector gains where there are several taps, each then
      // reading its plane at a unit stride (a 1x1 kernel's one strided
      // read costs less than the split).
      ArrayRef<int64_t> k = shapeOf(e.out[0]);
      int64_t widest = k[2] * k[3] > 1 ? kLanes : kLanes / 2;
      if (int64_t rows = phaseRows(e, e.in[1], e.in[0], op.getStride(), op.getGroups(), widest); rows > 0) {
        conv2dGradWeightPhases(e, op.getStride(), op.getPadding(), rows);
        return;
      }
      conv2dGradWeightRows(e, op.getStride(), op.getPadding(), op.getGroups());
    };
    if (!conv2dWinograd(e, e.in[0], e.out[0], e.in[1], op.getPadding(), /*transposed=*/false, direct))
      direct();
    return success();
  }
  // Each weight element is a sum over the batch and the output positions:
  // accumulate it in a register (a reduction LLVM vectorizes), not in memory.
  ArrayRef<int64_t> x = shapeOf(e.in[0]), w = shapeOf(e.out[0]), y = shapeOf(e.in[1]);
  ArrayRef<int64_t> stride = op.getStride(), pad = op.getPadding();
  int64_t groups = op.getGroups(), og = w[0] / groups, cg = x[1] / groups;
  OpBuilder &b = e.b;
  Location loc = e.loc;
  auto flags = arith::FastMathFlags::contract | arith::FastMathFlags::reassoc;
  e.loops(w, [&](ValueRange iv) {
    Value o = iv[0], c = iv[1], p = iv[2], q = iv[3];
    Value g = b.create<arith::DivUIOp>(loc, o, e.idx(og));
    Value ic = b.create<arith::AddIOp>(loc, b.create<arith::MulIOp>(loc, g, e.idx(cg)), c);
    auto [iLo, iHi] = tapRange(e, p, stride[0], pad[0], x[2], y[2]);
    auto [jLo, jHi] = tapRange(e, q, stride[1], pad[1], x[3], y[3]);
    auto batch = b.create<scf::ForOp>(loc, e.idx(0), e.dim(e.in[1], 0), e.idx(1), ValueRange{e.f32(0)});
    {
      OpBuilder::InsertionGuard g0(b);
      b.setInsertionPointToStart(batch.getBody());
      Value n = batch.getInductionVar();
      auto rows = b.create<scf::ForOp>(loc, iLo, iHi, e.idx(1), batch.getRegionIterArgs());
      {
        OpBuilder::InsertionGuard g1(b);
        b.setInsertionPointToStart(rows.getBody());
        Value i = rows.getInductionVar();
        Value ih = e.tap(i, stride[0], pad[0], p);
        auto cols = b.create<scf::ForOp>(loc, jLo, jHi, e.idx(1), rows.getRegionIterArgs());
        {
          OpBuilder::InsertionGuard g2(b);
          b.setInsertionPointToStart(cols.getBody());
          Value j = cols.getInductionVar();
          Value iw = e.tap(j, stride[1], pad[1], q);
          Value prod = b.create<arith::MulFOp>(loc, e.load(e.in[0], {n, ic, ih, iw}),
                                               e.load(e.in[1], {n, o, i, j}), flags);
          b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::AddFOp>(
                                          loc, cols.getRegionIterArgs()[0], prod, flags)});
        }
        b.create<scf::YieldOp>(loc, cols.getResults());
      }
      b.create<scf::YieldOp>(loc, rows.getResults());
    }
    e.store(batch.getResult(0), e.out[0], iv);
  }, /*parallel=*/true);
  return success();
}

} // namespace nnc::cpu::loops
