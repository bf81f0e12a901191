//===- Pooling.cpp - pooling as loops ---------------------------------------===//
//
// Max and average pooling and their gradients: window rows, 2x2 windows
// read as even and odd columns.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LoopEmitter.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace nnc::cpu::loops {


/// The first maximum of a pooling window: (value, h, w) and whether found.
struct WindowMax {
  Value value, h, w, found;
};

WindowMax windowMax(Emitter &e, Value x, ValueRange nc, Value i, Value j, ArrayRef<int64_t> k,
                    ArrayRef<int64_t> s, ArrayRef<int64_t> p, ArrayRef<int64_t> in) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value init[] = {e.f32(-std::numeric_limits<float>::infinity()), e.idx(0), e.idx(0),
                  b.create<arith::ConstantOp>(loc, b.getBoolAttr(false))};
  auto outer = b.create<scf::ForOp>(loc, e.idx(0), e.idx(k[0]), e.idx(1), ValueRange(init));
  {
    OpBuilder::InsertionGuard g1(b);
    b.setInsertionPointToStart(outer.getBody());
    auto inner = b.create<scf::ForOp>(loc, e.idx(0), e.idx(k[1]), e.idx(1), outer.getRegionIterArgs());
    {
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(inner.getBody());
      auto [ih, okh] = e.window(i, s[0], p[0], outer.getInductionVar(), in[2]);
      auto [iw, okw] = e.window(j, s[1], p[1], inner.getInductionVar(), in[3]);
      Value ok = b.create<arith::AndIOp>(loc, okh, okw);
      // Clamp the indices so the (discarded) load of a padded tap is in bounds.
      Value ch = select(e, ok, ih, e.idx(0)), cw = select(e, ok, iw, e.idx(0));
      Value v = e.load(x, {nc[0], nc[1], ch, cw});
      ValueRange acc = inner.getRegionIterArgs();
      Value firstFound = b.create<arith::AndIOp>(
          loc, ok, b.create<arith::XOrIOp>(loc, acc[3], b.create<arith::ConstantOp>(loc, b.getBoolAttr(true))));
      Value greater = b.create<arith::AndIOp>(
          loc, ok, b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, v, acc[0]));
      Value take = b.create<arith::OrIOp>(loc, firstFound, greater);
      b.create<scf::YieldOp>(loc, ValueRange{select(e, take, v, acc[0]), select(e, take, ih, acc[1]),
                                             select(e, take, iw, acc[2]),
                                             b.create<arith::OrIOp>(loc, acc[3], ok)});
    }
    b.create<scf::YieldOp>(loc, inner.getResults());
  }
  return {outer.getResult(0), outer.getResult(1), outer.getResult(2), outer.getResult(3)};
}

/// Rows of 2x2, stride-2 windows of X (N, C, H, W), 16 windows at a time:
/// two input rows of 32 columns are loaded as vectors and split into the
/// four taps (row-major window order: even and odd columns of each row).
/// `body` gets the sample, channel and output row, the first output column,
/// whether the 16 windows lie within the row (else transfers are masked),
/// the two input rows and the taps. `out` is the output (or output
/// gradient) shape, `batch` a buffer whose axis 0 is the batch.
void windowRows2x2(Emitter &e, Value X, Value batch, ArrayRef<int64_t> out,
                   function_ref<void(Value n, Value c, Value i, int64_t j0, bool full, Value h0, Value h1,
                                     ArrayRef<Value> taps)>
                       body) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  ArrayRef<int64_t> in = shapeOf(X);
  auto wide = VectorType::get({2 * kLanes}, b.getF32Type());
  SmallVector<int64_t> even, odd;
  for (int64_t l = 0; l < kLanes; ++l) {
    even.push_back(2 * l);
    odd.push_back(2 * l + 1);
  }
  Value pad = e.f32(0);
  e.loops(ArrayRef<Value>{e.dim(batch, 0), e.idx(out[1]), e.idx(out[2])}, [&](ValueRange iv) {
    Value n = iv[0], c = iv[1], i = iv[2];
    Value h0 = e.mul(i, e.idx(2)), h1 = e.add(h0, e.idx(1));
    for (int64_t j0 = 0; j0 < out[3]; j0 += kLanes) {
      bool full = j0 + kLanes <= out[3] && 2 * (j0 + kLanes) <= in[3];
      auto read = [&](Value h) {
        return b.create<vector::TransferReadOp>(loc, wide, X, ValueRange{n, c, h, e.idx(2 * j0)}, pad,
                                                ArrayRef<bool>{full});
      };
      Value r0 = read(h0), r1 = read(h1);
      Value taps[4] = {b.create<vector::ShuffleOp>(loc, r0, r0, even), b.create<vector::ShuffleOp>(loc, r0, r0, odd),
                       b.create<vector::ShuffleOp>(loc, r1, r1, even), b.create<vector::ShuffleOp>(loc, r1, r1, odd)};
      body(n, c, i, j0, full, h0, h1, taps);
    }
  }, /*parallel=*/true);
}

/// The 2x2, stride-2 max pool on whole rows of windows (windowRows2x2):
/// the taps taken in window order with the scalar rule (a later tap wins
/// only if greater: NaNs are skipped, ties keep the first).
void maxPool2x2(Emitter &e) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value Y = e.out[0];
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value lowest = b.create<arith::ConstantOp>(
      loc, DenseElementsAttr::get(vt, -std::numeric_limits<float>::infinity()));
  windowRows2x2(e, e.in[0], Y, shapeOf(Y),
                [&](Value n, Value c, Value i, int64_t j0, bool full, Value, Value, ArrayRef<Value> taps) {
                  Value acc = lowest;
                  for (Value tap : taps) {
                    Value take = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, tap, acc);
                    acc = b.create<arith::SelectOp>(loc, take, tap, acc);
                  }
                  b.create<vector::TransferWriteOp>(loc, acc, Y, ValueRange{n, c, i, e.idx(j0)},
                                                    ArrayRef<bool>{full});
                });
}

/// Any max pool on rows of output vectors, where the code stays small (the
/// window's columns times the row's vectors, unrolled): each tap of a
/// window is a RowLanes load of its input row, masked at the padding, taken
/// lane by lane by the scalar rule (windowMax: the first tap inside the
/// input, then a later one only if greater, so NaNs are skipped and ties
/// keep the first). Which lanes lie inside is known when the kernel is
/// emitted; the rows run over those inside the input.
bool maxPoolRows(Emitter &e) {
  auto op = self<nnops::MaxPool2dOp>(e);
  ArrayRef<int64_t> k = op.getKernel(), s = op.getStride(), p = op.getPadding();
  Value X = e.in[0], Y = e.out[0];
  ArrayRef<int64_t> in = shapeOf(X), out = shapeOf(Y);
  int64_t vectors = (out[3] + kLanes - 1) / kLanes;
  if (e.epilogue || vectors * k[1] > 64)
    return false;
  OpBuilder &b = e.b;
  Location loc = e.loc;
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  auto mt = VectorType::get({kLanes}, b.getI1Type());
  auto lanesInside = [&](int64_t start) { // columns start + l * s[1]
    SmallVector<bool> inside;
    for (int64_t l = 0; l < kLanes; ++l)
      inside.push_back(start + l * s[1] >= 0 && start + l * s[1] < in[3]);
    return b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(mt, ArrayRef<bool>(inside))).getResult();
  };
  Value lowest = b.create<arith::ConstantOp>(
      loc, DenseElementsAttr::get(vt, -std::numeric_limits<float>::infinity()));
  Value none = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(mt, false));
  e.loops(ArrayRef<Value>{e.dim(Y, 0), e.idx(out[1]), e.idx(out[2])}, [&](ValueRange iv) {
    Value n = iv[0], c = iv[1], i = iv[2];
    // Per vector of the row: the maxima so far and the lanes that found one.
    SmallVector<Value> init;
    for (int64_t v = 0; v < vectors; ++v)
      init.append({lowest, none});
    // Only the window rows inside the input: every load then knows its
    // lanes when the kernel is emitted, and most need no mask.
    auto [pLo, pHi] = kernelRows(e, i, s[0], p[0], in[2], k[0]);
    auto rows = b.create<scf::ForOp>(loc, pLo, pHi, e.idx(1), init);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(rows.getBody());
      Value row = e.tap(i, s[0], p[0], rows.getInductionVar());
      // Elements a tap's loads touch from its first column (RowLanes).
      int64_t touched = s[1] == 1 ? kLanes : s[1] == 2 ? 2 * kLanes : (kLanes - 1) * s[1] + 1;
      SmallVector<Value> state(rows.getRegionIterArgs());
      for (int64_t v = 0; v < vectors; ++v)
        for (int64_t q = 0; q < k[1]; ++q) {
          int64_t start = v * kLanes * s[1] - p[1] + q;
          bool inside = start >= 0 && start + touched <= in[3];
          Value tap = RowLanes(e, e.idx(start), s[1], in[3], Value(), inside).load(e, X, {n, c, row});
          Value ok = lanesInside(start);
          Value &acc = state[2 * v], &found = state[2 * v + 1];
          Value first = b.create<arith::AndIOp>(
              loc, ok, b.create<arith::XOrIOp>(loc, found, b.create<arith::ConstantOp>(
                                                             loc, DenseElementsAttr::get(mt, true))));
          Value greater = b.create<arith::AndIOp>(
              loc, ok, b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, tap, acc));
          acc = b.create<arith::SelectOp>(loc, b.create<arith::OrIOp>(loc, first, greater), tap, acc);
          found = b.create<arith::OrIOp>(loc, found, ok);
        }
      b.create<scf::YieldOp>(loc, state);
    }
    for (int64_t v = 0; v < vectors; ++v)
      b.create<vector::TransferWriteOp>(loc, rows.getResult(2 * v), Y, ValueRange{n, c, i, e.idx(v * kLanes)},
                                        ArrayRef<bool>{(v + 1) * kLanes <= out[3]});
  }, /*parallel=*/true);
  return true;
}

LogicalResult maxPool(Emitter &e) {
  auto op = self<nnops::MaxPool2dOp>(e);
  ArrayRef<int64_t> k = op.getKernel(), st = op.getStride(), pd = op.getPadding();
  ArrayRef<int64_t> in = shapeOf(e.in[0]), out = shapeOf(e.out[0]);
  if (k[0] == 2 && k[1] == 2 && st[0] == 2 && st[1] == 2 && pd[0] == 0 && pd[1] == 0 && !e.epilogue &&
      in[2] >= 2 * out[2] && in[3] >= 2 * out[3]) {
    maxPool2x2(e);
    return success();
  }
  if (maxPoolRows(e))
    return success();
  e.loops(e.sizes(e.out[0]), [&](ValueRange iv) {
    WindowMax m = windowMax(e, e.in[0], iv.take_front(2), iv[2], iv[3], op.getKernel(),
                            op.getStride(), op.getPadding(), shapeOf(e.in[0]));
    e.store(m.value, e.out[0], iv);
  }, /*parallel=*/true);
  return success();
}

/// Whether a max-pool gradient takes the 2x2 row path (maxPoolGrad2x2),
/// which stores rows of 2 * kLanes elements (through an epilogue, if any).
bool poolGradRows2x2(nnops::MaxPool2dGradOp op) {
  ArrayRef<int64_t> k = op.getKernel();
  return op.windowsTileInput() && k[0] == 2 && k[1] == 2;
}

/// The 2x2, stride-2 max-pool gradient on whole rows of windows
/// (windowRows2x2): the first maximum of each window is chosen lane by
/// lane, and the gradients are interleaved back into two output rows.
void maxPoolGrad2x2(Emitter &e) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value DY = e.in[0], DX = e.out[0];
  ArrayRef<int64_t> out = shapeOf(DY);
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  SmallVector<int64_t> interleave;
  for (int64_t l = 0; l < kLanes; ++l)
    interleave.append({l, l + kLanes});
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  Value pad = e.f32(0);
  windowRows2x2(e, e.in[1], DY, out, [&](Value n, Value c, Value i, int64_t j0, bool full, Value h0, Value h1,
                                       ArrayRef<Value> taps) {
    Value m = b.create<arith::MaxNumFOp>(loc, b.create<arith::MaxNumFOp>(loc, taps[0], taps[1]),
                                        b.create<arith::MaxNumFOp>(loc, taps[2], taps[3]));
    Value dy = b.create<vector::TransferReadOp>(loc, vt, DY, ValueRange{n, c, i, e.idx(j0)}, pad,
                                                ArrayRef<bool>{j0 + kLanes <= out[3]});
    Value taken;
    Value grads[4];
    for (int t = 0; t < 4; ++t) {
      Value eq = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ, taps[t], m);
      Value hit = taken ? b.create<arith::AndIOp>(
                              loc, eq, b.create<arith::XOrIOp>(
                                           loc, taken,
                                           b.create<arith::ConstantOp>(
                                               loc, DenseElementsAttr::get(
                                                        VectorType::get({kLanes}, b.getI1Type()), true))))
                        : eq;
      taken = taken ? b.create<arith::OrIOp>(loc, taken, eq).getResult() : eq;
      grads[t] = b.create<arith::SelectOp>(loc, hit, dy, zero);
    }
    auto write = [&](Value a, Value c2, Value h) {
      Value row = b.create<vector::ShuffleOp>(loc, a, c2, interleave);
      if (e.epilogue) // (its stores are masked past the row's end)
        e.epilogue(row, {n, c, h, e.idx(2 * j0)});
      else
        b.create<vector::TransferWriteOp>(loc, row, DX, ValueRange{n, c, h, e.idx(2 * j0)},
                                          ArrayRef<bool>{full});
    };
    write(grads[0], grads[1], h0);
    write(grads[2], grads[3], h1);
  });
}

LogicalResult maxPoolGrad(Emitter &e) {
  auto op = self<nnops::MaxPool2dGradOp>(e);
  ArrayRef<int64_t> k = op.getKernel(), st = op.getStride(), pad = op.getPadding();
  ArrayRef<int64_t> in = shapeOf(e.in[1]), out = shapeOf(e.in[0]);
  if (poolGradRows2x2(op)) {
    maxPoolGrad2x2(e);
    return success();
  }
  if (k == st && pad[0] == 0 && pad[1] == 0) {
    // Windows that tile the input: every input element belongs to at most
    // one window, so each window writes its elements once (the gradient at
    // its first maximum, zeros elsewhere; through the epilogue, which only
    // windows tiling the whole input have) instead of zero-filling the
    // whole input and scattering into it. Rows and columns past the last
    // window are zeroed apart.
    if (in[2] != out[2] * k[0] || in[3] != out[3] * k[1])
      e.fill(e.out[0], e.f32(0));
    // The window's maximum as a tree of independent maxima, then the first
    // tap equal to it: no chain of dependent selects, so the windows of a
    // row overlap in the pipeline (maxnumf skips NaN, like the scan).
    OpBuilder &b = e.b;
    Location loc = e.loc;
    e.loops(e.sizes(e.in[0]), [&](ValueRange iv) {
      SmallVector<Value> taps;
      SmallVector<std::pair<Value, Value>> at;
      for (int64_t p = 0; p < k[0]; ++p)
        for (int64_t q = 0; q < k[1]; ++q) {
          Value h = e.add(e.mul(iv[2], e.idx(k[0])), e.idx(p));
          Value w = e.add(e.mul(iv[3], e.idx(k[1])), e.idx(q));
          at.push_back({h, w});
          taps.push_back(e.load(e.in[1], {iv[0], iv[1], h, w}));
        }
      SmallVector<Value> level(taps);
      while (level.size() > 1) {
        SmallVector<Value> next;
        for (size_t i = 0; i + 1 < level.size(); i += 2)
          next.push_back(b.create<arith::MaxNumFOp>(loc, level[i], level[i + 1]));
        if (level.size() % 2)
          next.push_back(level.back());
        level = std::move(next);
      }
      Value dy = e.load(e.in[0], iv);
      Value taken = b.create<arith::ConstantOp>(loc, b.getBoolAttr(false));
      for (size_t t = 0; t < taps.size(); ++t) {
        Value eq = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ, taps[t], level[0]);
        Value hit = b.create<arith::AndIOp>(
            loc, eq, b.create<arith::XOrIOp>(loc, taken, b.create<arith::ConstantOp>(loc, b.getBoolAttr(true))));
        taken = b.create<arith::OrIOp>(loc, taken, eq);
        e.emit(select(e, hit, dy, e.f32(0)), {iv[0], iv[1], at[t].first, at[t].second});
      }
    }, /*parallel=*/true);
    return success();
  }
  e.fill(e.out[0], e.f32(0));
  e.loops(e.sizes(e.in[0]), [&](ValueRange iv) {
    WindowMax m = windowMax(e, e.in[1], iv.take_front(2), iv[2], iv[3], op.getKernel(),
                            op.getStride(), op.getPadding(), shapeOf(e.in[1]));
    e.when(m.found, [&] { e.accumulate(e.load(e.in[0], iv), e.out[0], {iv[0], iv[1], m.h, m.w}); });
  }, /*parallel=*/true); // each sample writes its own slice
  return success();
}

/// Average pooling forward (grad = false) or backward.
/// The 2x2, stride-2 average pool without padding on whole rows of
/// windows (windowRows2x2), and its gradient where the windows tile the
/// input: 16 windows at a time, with the general loop's arithmetic (each
/// tap divided by 4, summed in window order; the gradient spreads dy / 4
/// to its window with one interleaving shuffle per pair of rows).
void avgPool2x2(Emitter &e, bool grad) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value four = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 4.0f));
  if (!grad) {
    Value Y = e.out[0];
    windowRows2x2(e, e.in[0], Y, shapeOf(Y),
                  [&](Value n, Value c, Value i, int64_t j0, bool full, Value, Value, ArrayRef<Value> taps) {
                    Value acc = b.create<arith::DivFOp>(loc, taps[0], four);
                    for (Value tap : taps.drop_front())
                      acc = b.create<arith::AddFOp>(loc, acc, b.create<arith::DivFOp>(loc, tap, four));
                    b.create<vector::TransferWriteOp>(loc, acc, Y, ValueRange{n, c, i, e.idx(j0)},
                                                      ArrayRef<bool>{full});
                  });
    return;
  }
  Value DY = e.in[0], DX = e.out[0];
  ArrayRef<int64_t> out = shapeOf(DY);
  SmallVector<int64_t> interleave;
  for (int64_t l = 0; l < kLanes; ++l)
    interleave.append({l, l + kLanes});
  e.loops(ArrayRef<Value>{e.dim(DY, 0), e.idx(out[1]), e.idx(out[2])}, [&](ValueRange iv) {
    Value n = iv[0], c = iv[1], i = iv[2];
    Value h0 = e.mul(i, e.idx(2)), h1 = e.add(h0, e.idx(1));
    for (int64_t j0 = 0; j0 < out[3]; j0 += kLanes) {
      bool full = j0 + kLanes <= out[3];
      Value dy = b.create<vector::TransferReadOp>(loc, vt, DY, ValueRange{n, c, i, e.idx(j0)}, e.f32(0),
                                                  ArrayRef<bool>{full});
      Value q = b.create<arith::DivFOp>(loc, dy, four);
      Value row = b.create<vector::ShuffleOp>(loc, q, q, interleave);
      for (Value h : {h0, h1})
        b.create<vector::TransferWriteOp>(loc, row, DX, ValueRange{n, c, h, e.idx(2 * j0)}, ArrayRef<bool>{full});
    }
  }, /*parallel=*/true);
}

LogicalResult avgPool(Emitter &e, bool grad) {
  ArrayRef<int64_t> k = cast<DenseI64ArrayAttr>(e.op->getAttr("kernel")).asArrayRef();
  ArrayRef<int64_t> s = cast<DenseI64ArrayAttr>(e.op->getAttr("stride")).asArrayRef();
  ArrayRef<int64_t> p = cast<DenseI64ArrayAttr>(e.op->getAttr("padding")).asArrayRef();
  auto include = e.op->getAttrOfType<BoolAttr>("count_include_pad");
  bool includePad = !include || include.getValue();
  Value x = grad ? e.in[1] : e.in[0];
  ArrayRef<int64_t> in = shapeOf(x), out = shapeOf(grad ? e.in[0] : e.out[0]);
  if (k[0] == 2 && k[1] == 2 && s[0] == 2 && s[1] == 2 && p[0] == 0 && p[1] == 0 && !e.epilogue &&
      (grad ? in[2] == 2 * out[2] && in[3] == 2 * out[3] : in[2] >= 2 * out[2] && in[3] >= 2 * out[3])) {
    avgPool2x2(e, grad);
    return success();
  }
  e.fill(e.out[0], e.f32(0));
  e.loops(e.sizes(grad ? e.in[0] : e.out[0]), [&](ValueRange iv) {
    // The divisor: the window size, or its in-bounds part.
    Value div = e.f32(static_cast<double>(k[0] * k[1]));
    if (!includePad) {
      auto count = [&](Value i, int64_t st, int64_t pd, int64_t kk, int64_t size) {
        Value lo = e.b.create<arith::MaxSIOp>(
            e.loc, e.b.create<arith::SubIOp>(e.loc, e.b.create<arith::MulIOp>(e.loc, i, e.idx(st)), e.idx(pd)),
            e.idx(0));
        Value hi = e.b.create<arith::MinSIOp>(
            e.loc, e.b.create<arith::AddIOp>(
                       e.loc, e.b.create<arith::SubIOp>(e.loc, e.b.create<arith::MulIOp>(e.loc, i, e.idx(st)), e.idx(pd)),
                       e.idx(kk)),
            e.idx(size));
        return e.b.create<arith::SubIOp>(e.loc, hi, lo);
      };
      Value n = e.b.create<arith::MulIOp>(e.loc, count(iv[2], s[0], p[0], k[0], in[2]),
                                          count(iv[3], s[1], p[1], k[1], in[3]));
      div = e.b.create<arith::SIToFPOp>(
          e.loc, e.b.getF32Type(), e.b.create<arith::IndexCastOp>(e.loc, e.b.getI64Type(), n));
    }
    Value dy = grad ? e.b.create<arith::DivFOp>(e.loc, e.load(e.in[0], iv), div).getResult() : Value();
    e.loops({k[0], k[1]}, [&](ValueRange kk) {
      auto [ih, okh] = e.window(iv[2], s[0], p[0], kk[0], in[2]);
      auto [iw, okw] = e.window(iv[3], s[1], p[1], kk[1], in[3]);
      e.when(e.b.create<arith::AndIOp>(e.loc, okh, okw), [&] {
        SmallVector<Value> xi = {iv[0], iv[1], ih, iw};
        if (grad)
          e.accumulate(dy, e.out[0], xi);
        else
          e.accumulate(e.b.create<arith::DivFOp>(e.loc, e.load(x, xi), div), e.out[0], iv);
      });
    });
  }, /*parallel=*/true); // each sample writes its own slice
  return success();
}

} // namespace nnc::cpu::loops
