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

/// Batch norm works on whole vectors along the last axis when it is a
/// static run of the spatial axes: written as scalar loops, a short run
/// (a 4x4 map) is unrolled by LLVM and the sample loop vectorized with a
/// gather per element, slow and large.
namespace {
struct Runs {
  Emitter &e;
  int64_t width; // elements along the last axis

  /// Calls `body(j, mask, acc)` for the vector starting at each `j` of
  /// the run, `mask` null for whole vectors and the lanes inside the run
  /// for the last, partial one; `acc` is threaded through as loop values.
  SmallVector<Value> over(ValueRange acc,
                          function_ref<SmallVector<Value>(Value j, Value mask, ValueRange acc)> body) {
    OpBuilder &b = e.b;
    int64_t whole = width / kLanes * kLanes;
    SmallVector<Value> cur(acc);
    if (whole > 0) {
      auto f = b.create<scf::ForOp>(e.loc, e.idx(0), e.idx(whole), e.idx(kLanes), cur);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(f.getBody());
      SmallVector<Value> next = body(f.getInductionVar(), nullptr, f.getRegionIterArgs());
      if (!cur.empty()) // (without loop values the builder made the yield)
        b.create<scf::YieldOp>(e.loc, next);
      cur.assign(f.getResults().begin(), f.getResults().end());
    }
    if (whole < width)
      cur = body(e.idx(whole), columnMask(e, e.idx(whole), width), cur);
    return cur;
  }
  /// The vector of `m` at `ivs` (the last index the first lane's); lanes
  /// past the run read as 0.
  Value read(Value m, ValueRange ivs, Value mask) {
    Value pad = e.b.create<arith::ConstantOp>(e.loc, e.b.getF32FloatAttr(0.0f));
    return e.b.create<vector::TransferReadOp>(e.loc, VectorType::get({kLanes}, e.b.getF32Type()), m, ivs, pad,
                                              ArrayRef<bool>{!mask});
  }
  void write(Value v, Value m, ValueRange ivs, Value mask) {
    e.b.create<vector::TransferWriteOp>(e.loc, v, m, ivs, ArrayRef<bool>{!mask});
  }
  /// `v` where the lanes lie inside the run, else 0 (so that they add
  /// nothing to a sum).
  Value inside(Value v, Value mask) {
    if (!mask)
      return v;
    Value zero = e.b.create<arith::ConstantOp>(e.loc, DenseElementsAttr::get(cast<ShapedType>(v.getType()), 0.0f));
    return e.b.create<arith::SelectOp>(e.loc, mask, v, zero);
  }
  Value splat(Value s) {
    return e.b.create<vector::BroadcastOp>(e.loc, VectorType::get({kLanes}, s.getType()), s);
  }
  /// The sums of `count` vector terms over `outer` (loops) and the run,
  /// each reduced to a scalar.
  SmallVector<Value> sums(ArrayRef<Value> outer, unsigned count,
                          function_ref<SmallVector<Value>(ValueRange ivs, Value mask)> terms,
                          function_ref<void(Value)> atOuter = nullptr) {
    OpBuilder &b = e.b;
    auto flags = arith::FastMathFlags::reassoc | arith::FastMathFlags::contract;
    auto vt = VectorType::get({kLanes}, b.getF32Type());
    Value zero = b.create<arith::ConstantOp>(e.loc, DenseElementsAttr::get(vt, 0.0f));
    // Vector accumulators through the outer loops too; reduced to scalars
    // once, at the end.
    SmallVector<Value> lanes;
    {
      SmallVector<Value> ivsOuter;
      std::function<SmallVector<Value>(size_t, ValueRange)> rec = [&](size_t d, ValueRange acc) {
        if (d == outer.size())
          return over(acc, [&](Value j, Value mask, ValueRange a) {
            SmallVector<Value> ivs(ivsOuter);
            ivs.push_back(j);
            SmallVector<Value> t = terms(ivs, mask), next;
            for (unsigned k = 0; k < count; ++k)
              next.push_back(b.create<arith::AddFOp>(e.loc, a[k], inside(t[k], mask), flags));
            return next;
          });
        auto f = b.create<scf::ForOp>(e.loc, e.idx(0), outer[d], e.idx(1), acc);
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(f.getBody());
        ivsOuter.push_back(f.getInductionVar());
        if (d == 0 && atOuter)
          atOuter(f.getInductionVar());
        b.create<scf::YieldOp>(e.loc, rec(d + 1, f.getRegionIterArgs()));
        ivsOuter.pop_back();
        return SmallVector<Value>(f.getResults());
      };
      lanes = rec(0, SmallVector<Value>(count, zero));
    }
    SmallVector<Value> r;
    for (Value v : lanes)
      r.push_back(b.create<vector::ReductionOp>(e.loc, vector::CombiningKind::ADD, v, Value(), flags));
    return r;
  }
};
} // namespace

/// The static size of the last axis of `m`, when its rank is at least 3
/// (a run of spatial elements), else 0.
static int64_t runWidth(Value m) {
  auto t = cast<MemRefType>(m.getType());
  return t.getRank() >= 3 && !t.isDynamicDim(t.getRank() - 1) ? t.getShape().back() : 0;
}

/// Batch normalization in two passes per channel (statistics in registers,
/// then the normalization), channels in parallel.
LogicalResult batchNorm(Emitter &e) {
  auto op = self<nnops::BatchNormOp>(e);
  SmallVector<Value> x = e.sizes(e.in[0]);
  auto [rest, count] = channelAxes(e, x);
  OpBuilder &b = e.b;
  Location loc = e.loc;
  // The statistics over one long run per (sample, channel); the
  // normalization along rows when an epilogue takes it (its indices are
  // the op's), else along those runs too.
  Value xf = flattenSpatial(e, e.in[0]);
  bool flattened = xf != e.in[0];
  int64_t flatWidth = runWidth(xf);
  Value xo = e.epilogue ? e.in[0] : xf;
  Value yo = e.epilogue ? Value() : flattenSpatial(e, e.out[0]);
  int64_t width = runWidth(xo);
  bool vectors = width > 0 &&
                 (e.epilogue ? e.epilogueLanes == kLanes
                             : cast<MemRefType>(yo.getType()).getShape() == cast<MemRefType>(xo.getType()).getShape());
  e.loops(ArrayRef<Value>{x[1]}, [&](ValueRange cv) {
    Value c = cv[0];
    auto at = [&](ValueRange r) { return inChannel(r, c); };
    Value mean, var;
    if (op.getTraining()) {
      Value n = e.toF32(count);
      SmallVector<Value> flat = {x[0], e.sizes(xf).back()};
      if (!flattened)
        flat = rest;
      auto atf = [&](ValueRange r) { return flattened ? SmallVector<Value>{r[0], c, r.back()} : at(r); };
      if (flatWidth > 0) {
        Runs runs{e, flatWidth};
        SmallVector<Value> outer(flat.begin(), flat.end() - 1);
        mean = b.create<arith::DivFOp>(
            loc, runs.sums(outer, 1, [&](ValueRange r, Value mask) {
              return SmallVector<Value>{runs.read(xf, atf(r), mask)};
            })[0], n);
        Value m = runs.splat(mean);
        var = b.create<arith::DivFOp>(loc, runs.sums(outer, 1, [&](ValueRange r, Value mask) {
          Value d = b.create<arith::SubFOp>(loc, runs.read(xf, atf(r), mask), m);
          return SmallVector<Value>{b.create<arith::MulFOp>(loc, d, d)};
        })[0], n);
      } else {
        mean = b.create<arith::DivFOp>(loc, e.sumOver(flat, [&](ValueRange r) { return e.load(xf, atf(r)); }), n);
        Value ss = e.sumOver(flat, [&](ValueRange r) {
          Value d = b.create<arith::SubFOp>(loc, e.load(xf, atf(r)), mean);
          return b.create<arith::MulFOp>(loc, d, d).getResult();
        });
        var = b.create<arith::DivFOp>(loc, ss, n);
      }
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
    if (!vectors) {
      e.loops(rest, [&](ValueRange r) {
        Value d = b.create<arith::SubFOp>(loc, e.load(e.in[0], at(r)), mean);
        e.emit(b.create<arith::AddFOp>(loc, b.create<arith::MulFOp>(loc, d, scale), shift), at(r));
      });
      return;
    }
    Runs runs{e, width};
    Value m = runs.splat(mean), s = runs.splat(scale), t = runs.splat(shift);
    SmallVector<Value> outer = {x[0]};
    for (int64_t i = 2; i + 1 < cast<MemRefType>(xo.getType()).getRank(); ++i)
      outer.push_back(e.sizes(xo)[i]);
    e.loops(outer, [&](ValueRange r) {
      runs.over({}, [&](Value j, Value mask, ValueRange) {
        SmallVector<Value> ivs(r.begin(), r.end());
        ivs.push_back(j);
        Value d = b.create<arith::SubFOp>(loc, runs.read(xo, at(ivs), mask), m);
        Value v = b.create<arith::AddFOp>(loc, b.create<arith::MulFOp>(loc, d, s), t);
        if (e.epilogue)
          e.emit(v, at(ivs));
        else
          runs.write(v, yo, at(ivs), mask);
        return SmallVector<Value>{};
      });
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
  auto shape = [](Value m) { return cast<MemRefType>(m.getType()).getShape(); };
  int64_t width = shape(x) == shape(dy) && shape(x) == shape(dx) ? runWidth(x) : 0;
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
    Runs runs{e, width};
    ArrayRef<Value> outer = ArrayRef<Value>(rest).drop_back();
    auto prefetchInputs = [&](Value i) { prefetchNext(i, {x, dy}, false); };
    Value mean, meanV;
    SmallVector<Value> sums;
    if (width > 0) {
      mean = runs.sums(outer, 1, [&](ValueRange r, Value mask) {
        return SmallVector<Value>{runs.read(x, at(r), mask)};
      }, prefetchInputs)[0];
      mean = b.create<arith::DivFOp>(loc, mean, n);
      meanV = runs.splat(mean);
      // One pass for the variance and both sums of the gradient.
      sums = runs.sums(outer, 3, [&](ValueRange r, Value mask) {
        Value d = b.create<arith::SubFOp>(loc, runs.read(x, at(r), mask), meanV), g = runs.read(dy, at(r), mask);
        return SmallVector<Value>{b.create<arith::MulFOp>(loc, d, d), g, b.create<arith::MulFOp>(loc, g, d)};
      });
    } else {
      mean = b.create<arith::DivFOp>(
          loc, e.sumsOver(rest, 1, [&](ValueRange r) { return SmallVector<Value>{e.load(x, at(r))}; },
                          prefetchInputs)[0],
          n);
      sums = e.sumsOver(rest, 3, [&](ValueRange r) {
        Value d = b.create<arith::SubFOp>(loc, e.load(x, at(r)), mean), g = e.load(dy, at(r));
        return SmallVector<Value>{b.create<arith::MulFOp>(loc, d, d), g, b.create<arith::MulFOp>(loc, g, d)};
      });
    }
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
    if (width > 0) {
      Value rstdV = runs.splat(rstd), scaleV = runs.splat(scale), aV = runs.splat(a), kV = runs.splat(k);
      e.loops(outer, [&](ValueRange r) {
        prefetchNext(r[0], {dx}, true);
        runs.over({}, [&](Value j, Value mask, ValueRange) {
          SmallVector<Value> ri(r.begin(), r.end());
          ri.push_back(j);
          Value xhat = b.create<arith::MulFOp>(loc, b.create<arith::SubFOp>(loc, runs.read(x, at(ri), mask), meanV),
                                               rstdV);
          Value v = b.create<arith::SubFOp>(loc, b.create<arith::SubFOp>(loc, runs.read(dy, at(ri), mask), aV),
                                            b.create<arith::MulFOp>(loc, xhat, kV));
          runs.write(b.create<arith::MulFOp>(loc, scaleV, v), dx, at(ri), mask);
          return SmallVector<Value>{};
        });
      });
      return;
    }
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
