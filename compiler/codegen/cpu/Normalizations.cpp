//===- Normalizations.cpp - normalizations as loops -------------------------===//
//
// Batch norm (statistics, normalization, gradient) and the channel window
// sums of local response normalization.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LoopEmitter.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace nnc::cpu::loops {


/// Batch normalization in two passes per channel (statistics in registers,
/// then the normalization), channels in parallel.
/// `m` (N, C, spatial...) as (N, C, product of the spatial sizes): one
/// long contiguous run per (sample, channel), so that loops over it
/// vectorize (28-wide rows do not: a vector loop needs more iterations).
Value flattenSpatial(Emitter &e, Value m) {
  auto t = cast<MemRefType>(m.getType());
  if (t.getRank() <= 3 || !t.getLayout().isIdentity())
    return m;
  return e.b.create<memref::CollapseShapeOp>(e.loc, m, collapsedFrom(2, t.getRank()));
}

/// The axes a channel's statistics reduce (all but axis 1, of a buffer of
/// `sizes`), and how many elements they hold.
static std::pair<SmallVector<Value>, Value> channelAxes(Emitter &e, ArrayRef<Value> sizes) {
  SmallVector<Value> rest = {sizes[0]};
  rest.append(sizes.begin() + 2, sizes.end());
  Value count = e.idx(1);
  for (Value d : rest)
    count = e.mul(count, d);
  return {rest, count};
}

/// The index of element `r` (over channelAxes) of channel `c`.
static SmallVector<Value> inChannel(ValueRange r, Value c) {
  SmallVector<Value> i = {r[0], c};
  i.append(r.begin() + 1, r.end());
  return i;
}

LogicalResult batchNorm(Emitter &e) {
  auto op = self<nnops::BatchNormOp>(e);
  SmallVector<Value> x = e.sizes(e.in[0]);
  auto [rest, count] = channelAxes(e, x);
  OpBuilder &b = e.b;
  Location loc = e.loc;
  e.loops(ArrayRef<Value>{x[1]}, [&](ValueRange cv) {
    Value c = cv[0];
    auto at = [&](ValueRange r) { return inChannel(r, c); };
    Value mean, var;
    if (op.getTraining()) {
      Value n = e.toF32(count);
      // The statistics over one long run per (sample, channel).
      Value xf = flattenSpatial(e, e.in[0]);
      SmallVector<Value> flat = {x[0], e.sizes(xf).back()};
      bool flattened = xf != e.in[0];
      if (!flattened)
        flat = rest;
      auto atf = [&](ValueRange r) { return flattened ? SmallVector<Value>{r[0], c, r.back()} : at(r); };
      mean = b.create<arith::DivFOp>(loc, e.sumOver(flat, [&](ValueRange r) { return e.load(xf, atf(r)); }), n);
      Value ss = e.sumOver(flat, [&](ValueRange r) {
        Value d = b.create<arith::SubFOp>(loc, e.load(xf, atf(r)), mean);
        return b.create<arith::MulFOp>(loc, d, d).getResult();
      });
      var = b.create<arith::DivFOp>(loc, ss, n);
    } else {
      mean = e.load(e.in[3], {c});
      var = e.load(e.in[4], {c});
    }
    e.store(mean, e.out[1], {c});
    e.store(var, e.out[2], {c});
    Value rstd = b.create<arith::DivFOp>(
        loc, e.f32(1.0),
        b.create<math::SqrtOp>(loc, b.create<arith::AddFOp>(loc, var, e.f32(op.getEps().convertToDouble()))));
    Value scale = b.create<arith::MulFOp>(loc, rstd, e.load(e.in[1], {c}));
    Value shift = e.load(e.in[2], {c});
    e.loops(rest, [&](ValueRange r) {
      Value d = b.create<arith::SubFOp>(loc, e.load(e.in[0], at(r)), mean);
      e.emit(b.create<arith::AddFOp>(loc, b.create<arith::MulFOp>(loc, d, scale), shift), at(r));
    });
  }, /*parallel=*/true);
  return success();
}

/// The training-mode batch-norm gradient, per channel (channels in
/// parallel): the statistics, the two sums of the output gradient, then
/// the input gradient; a channel's data stays in cache across the passes.
LogicalResult batchNormGrad(Emitter &e) {
  auto op = self<nnops::BatchNormGradOp>(e);
  Value dy = flattenSpatial(e, e.in[0]), x = flattenSpatial(e, e.in[1]), gamma = e.in[2];
  Value dx = flattenSpatial(e, e.out[0]);
  SmallVector<Value> sizes = e.sizes(x);
  auto [rest, count] = channelAxes(e, sizes);
  OpBuilder &b = e.b;
  Location loc = e.loc;
  e.loops(ArrayRef<Value>{sizes[1]}, [&](ValueRange cv) {
    Value c = cv[0];
    auto at = [&](ValueRange r) { return inChannel(r, c); };
    Value n = e.toF32(count);
    // The channel's run in sample i + 1 of each buffer, asked for (a
    // prefetch per 64-byte line) while sample i is read: runs of a channel
    // lie a sample apart, too far for the hardware prefetcher to follow
    // (the MNIST CNN's step gained from it; batch norm's forward pass did
    // not, so it has none).
    auto prefetchNext = [&](Value i, ArrayRef<Value> bufs, bool write) {
      if (rest.size() != 2)
        return;
      constexpr int64_t kPerLine = 64 / sizeof(float);
      Value next = b.create<arith::MinSIOp>(loc, e.add(i, e.idx(1)), e.sub(rest[0], e.idx(1)));
      e.loops(ArrayRef<Value>{b.create<arith::CeilDivSIOp>(loc, rest[1], e.idx(kPerLine))}, [&](ValueRange l) {
        for (Value m : bufs)
          b.create<memref::PrefetchOp>(loc, m, ValueRange{next, c, e.mul(l[0], e.idx(kPerLine))}, write,
                                       /*localityHint=*/3, /*isDataCache=*/true);
      });
    };
    Value mean = b.create<arith::DivFOp>(
        loc, e.sumsOver(rest, 1, [&](ValueRange r) { return SmallVector<Value>{e.load(x, at(r))}; },
                        [&](Value i) { prefetchNext(i, {x, dy}, false); })[0],
        n);
    // One pass for the variance and both sums of the gradient.
    SmallVector<Value> sums = e.sumsOver(rest, 3, [&](ValueRange r) {
      Value d = b.create<arith::SubFOp>(loc, e.load(x, at(r)), mean), g = e.load(dy, at(r));
      return SmallVector<Value>{b.create<arith::MulFOp>(loc, d, d), g, b.create<arith::MulFOp>(loc, g, d)};
    });
    Value rstd = b.create<arith::DivFOp>(
        loc, e.f32(1.0),
        b.create<math::SqrtOp>(loc, b.create<arith::AddFOp>(loc, b.create<arith::DivFOp>(loc, sums[0], n),
                                                            e.f32(op.getEps().convertToDouble()))));
    auto xhat = [&](ValueRange r) {
      return b.create<arith::MulFOp>(loc, b.create<arith::SubFOp>(loc, e.load(x, at(r)), mean), rstd);
    };
    Value sdy = sums[1], sdyx = b.create<arith::MulFOp>(loc, sums[2], rstd);
    e.store(sdyx, e.out[1], {c});
    e.store(sdy, e.out[2], {c});
    Value scale = b.create<arith::MulFOp>(loc, e.load(gamma, {c}), rstd);
    Value a = b.create<arith::DivFOp>(loc, sdy, n), k = b.create<arith::DivFOp>(loc, sdyx, n);
    e.loops(ArrayRef<Value>{rest[0]}, [&](ValueRange i) {
      prefetchNext(i[0], {dx}, true);
      e.loops(ArrayRef<Value>(rest).drop_front(), [&](ValueRange r) {
        SmallVector<Value> ri = {i[0]};
        ri.append(r.begin(), r.end());
        Value v = b.create<arith::SubFOp>(
            loc, b.create<arith::SubFOp>(loc, e.load(dy, at(ri)), a), b.create<arith::MulFOp>(loc, xhat(ri), k));
        e.store(b.create<arith::MulFOp>(loc, scale, v), dx, at(ri));
      });
    });
  }, /*parallel=*/true);
  return success();
}

LogicalResult channelWindowSum(Emitter &e) {
  auto op = self<nnops::ChannelWindowSumOp>(e);
  ArrayRef<int64_t> s = shapeOf(e.in[0]);
  int64_t before = op.getBefore(), after = op.getAfter();
  e.fill(e.out[0], e.f32(0));
  e.loops(e.sizes(e.in[0]), [&](ValueRange iv) {
    e.loops({before + after + 1}, [&](ValueRange d) {
      Value c = e.b.create<arith::SubIOp>(e.loc, e.b.create<arith::AddIOp>(e.loc, iv[1], d[0]),
                                          e.idx(before));
      Value ok = e.b.create<arith::AndIOp>(
          e.loc, e.b.create<arith::CmpIOp>(e.loc, arith::CmpIPredicate::sge, c, e.idx(0)),
          e.b.create<arith::CmpIOp>(e.loc, arith::CmpIPredicate::slt, c, e.idx(s[1])));
      e.when(ok, [&] {
        SmallVector<Value> src(iv);
        src[1] = c;
        e.accumulate(e.load(e.in[0], src), e.out[0], iv);
      });
    });
  });
  return success();
}

} // namespace nnc::cpu::loops
