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

/// Emits the taps of a convolution with input shape `x`, weight `w`, output
/// `y`; `tap(xIdx, wIdx, yIdx)` runs for every in-bounds multiply. Loops run
/// batch, output channel, input channel, kernel row and column, then the
/// in-bounds output rows and columns (innermost, contiguous for stride 1).
void convTaps(Emitter &e, Value xm, ArrayRef<int64_t> w, Value ym,
              ArrayRef<int64_t> stride, ArrayRef<int64_t> pad, int64_t groups,
              function_ref<void(ValueRange, ValueRange, ValueRange)> tap) {
  ArrayRef<int64_t> x = shapeOf(xm), y = shapeOf(ym);
  int64_t og = w[0] / groups, cg = x[1] / groups;
  OpBuilder &b = e.b;
  Location loc = e.loc;
  e.loops(ArrayRef<Value>{e.dim(ym, 0), e.idx(y[1]), e.idx(cg), e.idx(w[2]), e.idx(w[3])},
          [&](ValueRange iv) {
    Value n = iv[0], o = iv[1], c = iv[2], p = iv[3], q = iv[4];
    // (Parallel over the batch: each sample's taps write only its own slice.)
    Value g = b.create<arith::DivUIOp>(loc, o, e.idx(og));
    Value ic = b.create<arith::AddIOp>(loc, b.create<arith::MulIOp>(loc, g, e.idx(cg)), c);
    auto [iLo, iHi] = tapRange(e, p, stride[0], pad[0], x[2], y[2]);
    auto [jLo, jHi] = tapRange(e, q, stride[1], pad[1], x[3], y[3]);
    auto rows = b.create<scf::ForOp>(loc, iLo, iHi, e.idx(1));
    OpBuilder::InsertionGuard g1(b);
    b.setInsertionPointToStart(rows.getBody());
    Value i = rows.getInductionVar();
    Value ih = e.tap(i, stride[0], pad[0], p);
    auto cols = b.create<scf::ForOp>(loc, jLo, jHi, e.idx(1));
    OpBuilder::InsertionGuard g2(b);
    b.setInsertionPointToStart(cols.getBody());
    Value j = cols.getInductionVar();
    Value iw = e.tap(j, stride[1], pad[1], q);
    tap(ValueRange{n, ic, ih, iw}, ValueRange{o, c, p, q}, ValueRange{n, o, i, j});
  }, /*parallel=*/true);
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

/// Convolution with unit column stride, register-blocked: for one sample
/// and output row, a block of output channels times the row's vectors is
/// accumulated in registers over input channels and kernel taps (each
/// input row vector, loaded once with its padding masked to zero, serves
/// every channel of the block), then stored once. Samples run in parallel.
void conv2dRows(Emitter &e, ArrayRef<int64_t> stride, ArrayRef<int64_t> pad, int64_t groups) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value X = e.in[0], W = e.in[1], Y = e.out[0];
  ArrayRef<int64_t> x = shapeOf(X), w = shapeOf(W), y = shapeOf(e.op->getResult(0));
  int64_t og = w[0] / groups, cg = w[1];
  // Up to 16 accumulators: output channels of the block times the row's
  // vectors (a 16-wide row with 4 channels kept 4 FMA chains in flight, too
  // few to hide the FMA latency; the weights are broadcast from memory
  // into the FMAs and take no registers).
  int64_t vectors = (y[3] + kLanes - 1) / kLanes;
  int64_t block = tilingOf(e.op, "channel_block"); // (Tiling.cpp)
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  e.loops(ArrayRef<Value>{e.valueDim(e.op->getResult(0), 0), e.idx(y[2]), e.idx(y[1] / block)}, [&](ValueRange iv) {
    Value n = iv[0], i = iv[1], o0 = e.mul(iv[2], e.idx(block));
    Value g = b.create<arith::DivUIOp>(loc, o0, e.idx(og));
    auto [pLo, pHi] = kernelRows(e, i, stride[0], pad[0], x[2], w[2]);
    SmallVector<Value> init(block * vectors, zero);
    auto cLoop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(cg), e.idx(1), init);
    {
      OpBuilder::InsertionGuard g1(b);
      b.setInsertionPointToStart(cLoop.getBody());
      Value c = cLoop.getInductionVar();
      Value ic = e.add(e.mul(g, e.idx(cg)), c);
      auto pLoop = b.create<scf::ForOp>(loc, pLo, pHi, e.idx(1), cLoop.getRegionIterArgs());
      {
        OpBuilder::InsertionGuard g2(b);
        b.setInsertionPointToStart(pLoop.getBody());
        Value p = pLoop.getInductionVar();
        Value ih = e.tap(i, stride[0], pad[0], p);
        auto qLoop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(w[3]), e.idx(1), pLoop.getRegionIterArgs());
        {
          OpBuilder::InsertionGuard g3(b);
          b.setInsertionPointToStart(qLoop.getBody());
          Value q = qLoop.getInductionVar();
          SmallVector<Value> weights;
          for (int64_t k = 0; k < block; ++k)
            weights.push_back(b.create<vector::BroadcastOp>(
                loc, vt, e.load(W, {e.add(o0, e.idx(k)), c, p, q})));
          SmallVector<Value> acc(qLoop.getRegionIterArgs());
          for (int64_t v = 0; v < vectors; ++v) {
            Value col = b.create<arith::SubIOp>(loc, e.add(q, e.idx(v * kLanes)), e.idx(pad[1]));
            Value xv = b.create<vector::MaskedLoadOp>(loc, vt, X, ValueRange{n, ic, ih, col},
                                                      columnMask(e, col, x[3]), zero);
            for (int64_t k = 0; k < block; ++k)
              acc[k * vectors + v] = b.create<vector::FMAOp>(loc, weights[k], xv, acc[k * vectors + v]);
          }
          b.create<scf::YieldOp>(loc, acc);
        }
        b.create<scf::YieldOp>(loc, qLoop.getResults());
      }
      b.create<scf::YieldOp>(loc, pLoop.getResults());
    }
    for (int64_t k = 0; k < block; ++k)
      for (int64_t v = 0; v < vectors; ++v) {
        SmallVector<Value> at{n, e.add(o0, e.idx(k)), i, e.idx(v * kLanes)};
        if (e.epilogue) // through the epilogue, on whole vectors
          e.emit(cLoop.getResult(k * vectors + v), at);
        else
          b.create<vector::TransferWriteOp>(loc, cLoop.getResult(k * vectors + v), Y, at,
                                            ArrayRef<bool>{(v + 1) * kLanes <= y[3]});
      }
  }, /*parallel=*/true);
}

LogicalResult conv2d(Emitter &e) {
  auto op = self<nnops::Conv2dOp>(e);
  if (op.getStride()[1] == 1) {
    conv2dRows(e, op.getStride(), op.getPadding(), op.getGroups());
    return success();
  }
  e.fill(e.out[0], e.f32(0));
  convTaps(e, e.in[0], shapeOf(e.in[1]), e.out[0], op.getStride(),
           op.getPadding(), op.getGroups(), [&](ValueRange xi, ValueRange wi, ValueRange yi) {
             e.multiplyAdd(e.load(e.in[0], xi), e.load(e.in[1], wi), e.out[0], yi);
           });
  return success();
}

LogicalResult conv2dGradInput(Emitter &e) {
  auto op = self<nnops::Conv2dGradInputOp>(e);
  ArrayRef<int64_t> st = op.getStride(), pd = op.getPadding(), w = shapeOf(e.in[1]);
  int64_t groups = op.getGroups(), og = w[0] / groups, cg = w[1];
  // With unit strides the input gradient is a forward convolution of the
  // output gradient with the weights flipped and transposed per group,
  // W'[g*cg + c, o, i, j] = W[g*og + o, c, KH-1-i, KW-1-j], padded by
  // K-1-P: it runs on the forward pass's register-blocked rows. W' lives
  // on the stack up to 256 KiB, on the heap above (128 channels of 3x3
  // taps are 576 KiB, and the scalar loop below is far slower).
  if (st[0] == 1 && st[1] == 1 && pd[0] <= w[2] - 1 && pd[1] <= w[3] - 1) {
    OpBuilder &b = e.b;
    Location loc = e.loc;
    Value W = e.in[1];
    auto flippedType = MemRefType::get({groups * cg, og, w[2], w[3]}, b.getF32Type());
    bool onHeap = w[0] * w[1] * w[2] * w[3] * 4 > (256 << 10);
    Value flipped = onHeap ? b.create<memref::AllocOp>(loc, flippedType, b.getI64IntegerAttr(64)).getResult()
                           : b.create<memref::AllocaOp>(loc, flippedType, b.getI64IntegerAttr(64)).getResult();
    e.loops(ArrayRef<Value>{e.idx(w[0]), e.idx(cg), e.idx(w[2]), e.idx(w[3])}, [&](ValueRange iv) {
      Value o = iv[0], c = iv[1];
      Value g = b.create<arith::DivUIOp>(loc, o, e.idx(og));
      Value oi = b.create<arith::RemUIOp>(loc, o, e.idx(og));
      Value fi = e.sub(e.idx(w[2] - 1), iv[2]), fj = e.sub(e.idx(w[3] - 1), iv[3]);
      e.store(e.load(W, {o, c, fi, fj}), flipped, {e.add(e.mul(g, e.idx(cg)), c), oi, iv[2], iv[3]});
    });
    SmallVector<Value> saved(e.in.begin(), e.in.end());
    e.in[1] = flipped;
    int64_t unit[2] = {1, 1}, pad[2] = {w[2] - 1 - pd[0], w[3] - 1 - pd[1]};
    conv2dRows(e, unit, pad, groups);
    e.in.assign(saved.begin(), saved.end());
    if (onHeap)
      b.create<memref::DeallocOp>(loc, flipped);
    return success();
  }
  e.fill(e.out[0], e.f32(0));
  convTaps(e, e.out[0], shapeOf(e.in[1]), e.in[0], op.getStride(),
           op.getPadding(), op.getGroups(), [&](ValueRange xi, ValueRange wi, ValueRange yi) {
             e.multiplyAdd(e.load(e.in[1], wi), e.load(e.in[0], yi), e.out[0], xi);
           });
  return success();
}

/// The weight gradient with unit column stride: for a block of output
/// channels and one input channel, the products of every (channel, kernel
/// tap) pair are accumulated in a vector register each over the batch and
/// the output rows: a row vector of the input, loaded once per tap, serves
/// the whole channel block, and a row of the output gradient serves every
/// tap (and, for kernels of one or two taps, every input channel of a
/// block). Small kernels (3x3) take all their taps at once, larger ones one
/// kernel row per pass. Lanes are reduced at the end.
void conv2dGradWeightRows(Emitter &e, ArrayRef<int64_t> stride, ArrayRef<int64_t> pad,
                          int64_t groups) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value X = e.in[0], DY = e.in[1], DW = e.out[0];
  ArrayRef<int64_t> x = shapeOf(X), w = shapeOf(DW), y = shapeOf(DY);
  int64_t og = w[0] / groups, cg = w[1], kh = w[2], kw = w[3];
  int64_t vectors = (y[3] + kLanes - 1) / kLanes;
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
  bool allRows = kh * kw <= 12;
  int64_t taps = allRows ? kh * kw : kw;
  int64_t block = tilingOf(e.op, "channel_block"), inBlock = tilingOf(e.op, "input_block"); // (Tiling.cpp)
  int64_t perIn = block * taps; // accumulators per input channel of the block
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  Value none = b.create<arith::ConstantOp>(
      loc, DenseElementsAttr::get(VectorType::get({kLanes}, b.getI1Type()), false));
  // The batch in chunks whose output gradient for one channel block fits
  // in half of L2, each chunk's sums added to the previous ones': every
  // (input channel, kernel row) pass re-reads that block, from L2 instead
  // of L3 (VGG-small's 32 x 32 x 32 x 32 gradient: a 1 MiB block).
  int64_t chunk = tilingOf(e.op, "batch_chunk");
  Value N = e.dim(DY, 0);
  auto chunks = b.create<scf::ForOp>(loc, e.idx(0), N, e.idx(chunk));
  OpBuilder::InsertionGuard outer(b);
  b.setInsertionPointToStart(chunks.getBody());
  Value n0 = chunks.getInductionVar(), n1 = b.create<arith::MinSIOp>(loc, N, e.add(n0, e.idx(chunk)));
  Value firstChunk = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, n0, e.idx(0));
  SmallVector<Value> bounds = {e.idx(w[0] / block), e.idx(cg / inBlock)};
  if (!allRows)
    bounds.push_back(e.idx(kh));
  e.loops(bounds, [&](ValueRange iv) {
    Value o0 = e.mul(iv[0], e.idx(block)), c0 = inBlock > 1 ? e.mul(iv[1], e.idx(inBlock)) : iv[1];
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
      auto iLoop = b.create<scf::ForOp>(loc, iLo, iHi, e.idx(1), nLoop.getRegionIterArgs());
      {
        OpBuilder::InsertionGuard g2(b);
        b.setInsertionPointToStart(iLoop.getBody());
        Value i = iLoop.getInductionVar();
        SmallVector<Value> acc(iLoop.getRegionIterArgs());
        for (int64_t v = 0; v < vectors; ++v) {
          // Lanes past the row's end read as zero and add nothing.
          SmallVector<Value> dy;
          for (int64_t k = 0; k < block; ++k)
            dy.push_back(b.create<vector::TransferReadOp>(
                loc, vt, DY, ValueRange{n, e.add(o0, e.idx(k)), i, e.idx(v * kLanes)}, e.f32(0),
                ArrayRef<bool>{(v + 1) * kLanes <= y[3]}));
          for (auto [r, p] : llvm::enumerate(rows)) {
            Value ih, rowOk;
            if (allRows) { // (a row past the edge: loads clamped in and masked off)
              auto [at, ok] = e.window(i, stride[0], pad[0], p, x[2]);
              ih = select(e, ok, at, e.idx(0));
              rowOk = ok;
            } else {
              ih = e.tap(i, stride[0], pad[0], p);
            }
            for (int64_t q = 0; q < kw; ++q) {
              Value col = e.idx(v * kLanes + q - pad[1]);
              Value mask = columnMask(e, col, x[3]);
              if (rowOk)
                mask = select(e, rowOk, mask, none);
              int64_t t = static_cast<int64_t>(r) * kw + q;
              for (int64_t ci = 0; ci < inBlock; ++ci) {
                Value xv = b.create<vector::MaskedLoadOp>(
                    loc, vt, X, ValueRange{n, ci ? e.add(ic0, e.idx(ci)) : ic0, ih, col}, mask, zero);
                for (int64_t k = 0; k < block; ++k) {
                  Value &a = acc[ci * perIn + k * taps + t];
                  a = b.create<vector::FMAOp>(loc, xv, dy[k], a);
                }
              }
            }
          }
        }
        b.create<scf::YieldOp>(loc, acc);
      }
      b.create<scf::YieldOp>(loc, iLoop.getResults());
    }
    for (int64_t ci = 0; ci < inBlock; ++ci)
      for (int64_t k = 0; k < block; ++k)
        for (auto [r, p] : llvm::enumerate(rows))
          for (int64_t q = 0; q < kw; ++q) {
            int64_t t = static_cast<int64_t>(r) * kw + q;
            Value sum = b.create<vector::ReductionOp>(loc, vector::CombiningKind::ADD,
                                                      nLoop.getResult(ci * perIn + k * taps + t),
                                                      arith::FastMathFlags::reassoc);
            SmallVector<Value> at{e.add(o0, e.idx(k)), ci ? e.add(c0, e.idx(ci)) : c0, p, e.idx(q)};
            Value before = select(e, firstChunk, e.f32(0), e.load(DW, at));
            e.store(b.create<arith::AddFOp>(loc, before, sum), DW, at);
          }
  }, /*parallel=*/true);
}

LogicalResult conv2dGradWeight(Emitter &e) {
  auto op = self<nnops::Conv2dGradWeightOp>(e);
  // Register accumulators for one kernel row's columns.
  if (op.getStride()[1] == 1 && shapeOf(e.out[0])[3] <= 16) {
    conv2dGradWeightRows(e, op.getStride(), op.getPadding(), op.getGroups());
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
