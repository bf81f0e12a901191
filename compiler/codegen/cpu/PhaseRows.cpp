//===- PhaseRows.cpp - strided convolutions of wide rows per phase plane --===//
//
// A forward convolution of stride s >= 2 reads its input rows at a stride:
// each vector of output columns needs a load pair and a shuffle per tap
// (RowLanes), and the shuffles compete with the multiply-adds for the same
// ports. Split once into its s x s phase planes (rows ph, ph + s, ...;
// columns likewise), the input is read at a unit stride: tap (p, q) reads
// plane ((p - pad) mod s, (q - pad) mod s) shifted by floor((p - pad) / s)
// rows and floor((q - pad) / s) columns, one load a vector, masked only at
// the padding. The split copies the input once per call; the convolution
// reads it (kernel taps x output channels / block) times.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LoopEmitter.h"
#include "compiler/codegen/cpu/Tiling.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace nnc::cpu::loops {

void blockFMAs(Emitter &e, MutableArrayRef<Value> acc, int64_t block, int64_t n, function_ref<Value(int64_t k)> weight,
               function_ref<Value(int64_t v)> input) {
  auto fma = [&](int64_t k, int64_t v, Value wk, Value xv) {
    acc[k * n + v] = e.b.create<vector::FMAOp>(e.loc, wk, xv, acc[k * n + v]);
  };
  if (n < block) {
    SmallVector<Value> inputs;
    for (int64_t v = 0; v < n; ++v)
      inputs.push_back(input(v));
    for (int64_t k = 0; k < block; ++k) {
      Value wk = weight(k);
      for (int64_t v = 0; v < n; ++v)
        fma(k, v, wk, inputs[v]);
    }
    return;
  }
  SmallVector<Value> weights;
  for (int64_t k = 0; k < block; ++k)
    weights.push_back(weight(k));
  for (int64_t v = 0; v < n; ++v) {
    Value xv = input(v);
    for (int64_t k = 0; k < block; ++k)
      fma(k, v, weights[k], xv);
  }
}

void rowChunks(Emitter &e, int64_t width, int64_t chunk, function_ref<bool(int64_t from, int64_t to)> inside,
               function_ref<void(Value first, int64_t count, bool known, std::optional<int64_t> from)> run) {
  OpBuilder &b = e.b;
  int64_t vectors = (width + kLanes - 1) / kLanes;
  int64_t chunks = chunk < vectors ? width / kLanes / chunk : 0;
  int64_t jLo = 0, jHi = 0; // the chunks inside
  while (jLo < chunks && !inside(jLo * chunk, (jLo + 1) * chunk))
    ++jLo;
  for (jHi = jLo; jHi < chunks && inside(jHi * chunk, (jHi + 1) * chunk);)
    ++jHi;
  auto chunkLoop = [&](int64_t lo, int64_t hi, bool known) {
    if (lo >= hi)
      return;
    // The few chunks at a row's edges one by one: each then knows which of
    // its vectors read inside, and masks only the others.
    if (!known && hi - lo <= 2) {
      for (int64_t j = lo; j < hi; ++j)
        run(e.idx(j * chunk), chunk, false, j * chunk);
      return;
    }
    auto jLoop = b.create<scf::ForOp>(e.loc, e.idx(lo), e.idx(hi), e.idx(1));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(jLoop.getBody());
    run(e.mul(jLoop.getInductionVar(), e.idx(chunk)), chunk, known, std::nullopt);
  };
  chunkLoop(0, jLo, false);
  chunkLoop(jLo, jHi, true);
  chunkLoop(jHi, chunks, false);
  if (int64_t done = chunks * chunk; done < vectors)
    run(e.idx(done), vectors - done, false, done);
}

/// Copies samples [n0, n0 + count) of X (N, C, H, W) into `phases`
/// (chunk, C * s * s, H / s * ow), or (chunk, C * s * s, H / s, ow):
/// channel c's phase plane (ph, pw), its rows ph, ph + s, ... and columns
/// likewise, at c * s * s + ph * s + pw.
static void splitPhases(Emitter &e, Value X, Value phases, Value n0, Value count, int64_t s, int64_t ow) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  ArrayRef<int64_t> x = shapeOf(X);
  e.loops(
      ArrayRef<Value>{e.idx(x[1]), count, e.idx(x[2]), e.idx(x[3])},
      [&](ValueRange iv) {
        Value c = iv[0], m = iv[1], r = iv[2], col = iv[3];
        Value phase = e.add(e.mul(b.create<arith::RemUIOp>(loc, r, e.idx(s)), e.idx(s)),
                            b.create<arith::RemUIOp>(loc, col, e.idx(s)));
        Value pr = b.create<arith::DivUIOp>(loc, r, e.idx(s)), pc = b.create<arith::DivUIOp>(loc, col, e.idx(s));
        Value plane = e.add(e.mul(c, e.idx(s * s)), phase);
        SmallVector<Value> at = shapeOf(phases).size() == 4
                                    ? SmallVector<Value>{m, plane, pr, pc}
                                    : SmallVector<Value>{m, plane, e.add(e.mul(pr, e.idx(ow)), pc)};
        e.store(e.load(X, {e.add(n0, m), c, r, col}), phases, at);
      },
      /*parallel=*/true);
}

/// Runs `body(n0, count)` over the samples of `batch`, `chunk` at a time,
/// in order, each chunk's phase planes split into `phases` first: samples
/// [n0, n0 + count) of X.
void inPhaseChunks(Emitter &e, Value X, Value batch, Value phases, int64_t chunk, int64_t s, int64_t ow,
                   function_ref<void(Value n0, Value count)> body) {
  OpBuilder &b = e.b;
  Value chunks = b.create<arith::CeilDivUIOp>(e.loc, batch, e.idx(chunk));
  auto kLoop = b.create<scf::ForOp>(e.loc, e.idx(0), chunks, e.idx(1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(kLoop.getBody());
  Value n0 = e.mul(kLoop.getInductionVar(), e.idx(chunk));
  Value count = b.create<arith::MinUIOp>(e.loc, e.idx(chunk), e.sub(batch, n0));
  splitPhases(e, X, phases, n0, count, s, ow);
  body(n0, count);
}

bool forwardPhasePlanes(nnops::Conv2dOp op, Value X) {
  return cast<MemRefType>(X.getType()).getLayout().isIdentity() && cpu::phasePlanesApply(op);
}

/// Register-blocked as conv2dRows: for one sample and output row, a block
/// of output channels times a chunk of the row's vectors (`row_vectors`,
/// Tiling.cpp), over the input channels and the kernel rows inside the
/// input (loops) and columns (unrolled), each input vector loaded once from
/// its phase plane for the whole block. Chunks whose taps all read inside
/// the plane's row load without masks.
void conv2dForwardPhaseRows(Emitter &e, ArrayRef<int64_t> stride, ArrayRef<int64_t> pad) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value X = e.in[0], W = e.in[1], Y = e.out[0];
  ArrayRef<int64_t> x = shapeOf(X), w = shapeOf(W), y = shapeOf(e.op->getResult(0));
  int64_t s = stride[0], oh = y[2], ow = y[3];
  int64_t vectors = (ow + kLanes - 1) / kLanes;
  int64_t block = tilingOf(e.op, "channel_block"); // (Tiling.cpp)
  int64_t chunk = std::clamp<int64_t>(tilingOr(e.op, "row_vectors", vectors), 1, vectors);
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  // Tap column q reads its plane `shift` columns from the output column.
  auto shiftOf = [&](int64_t q) {
    int64_t dq = q - pad[1], pw = ((dq % s) + s) % s;
    return std::pair{pw, (dq - pw) / s};
  };
  int64_t least = shiftOf(0).second, most = shiftOf(w[3] - 1).second;
  // Whether every tap of the vectors [from, to) reads inside the row.
  auto inside = [&](int64_t from, int64_t to) { return from * kLanes + least >= 0 && to * kLanes + most <= ow; };
  // Samples a chunk: their phase planes (the input's size) in half of L2.
  int64_t samples = std::max<int64_t>(1, cpu::host().l2 / 2 / (x[1] * x[2] * x[3] * 4));
  Value phases = e.scratch(MemRefType::get({samples, x[1] * s * s, oh, ow}, b.getF32Type()));
  // Rows inside channel blocks where the weights overflow L2 (Tiling.cpp).
  bool oOuter = tilingOr(e.op, "channels_outer", 0) == 1;
  inPhaseChunks(e, X, e.valueDim(e.op->getResult(0), 0), phases, samples, s, ow, [&](Value n0, Value count) {
    e.loops(
        oOuter ? SmallVector<Value>{count, e.idx(y[1] / block), e.idx(oh)}
               : SmallVector<Value>{count, e.idx(oh), e.idx(y[1] / block)},
        [&](ValueRange iv) {
          Value m = iv[0], i = oOuter ? iv[2] : iv[1], o0 = e.mul(oOuter ? iv[1] : iv[2], e.idx(block));
          auto [pLo, pHi] = kernelRows(e, i, s, pad[0], x[2], w[2]);
          // The sums of `count` vectors from vector `first` (`known`: they
          // read inside the row), then their stores (`from`: `first` where
          // it is a constant, whose vectors past the row's end are masked).
          auto run = [&](Value first, int64_t n, bool known, std::optional<int64_t> from) {
            auto cLoop =
                b.create<scf::ForOp>(loc, e.idx(0), e.idx(x[1]), e.idx(1), SmallVector<Value>(block * n, zero));
            {
              OpBuilder::InsertionGuard guard(b);
              b.setInsertionPointToStart(cLoop.getBody());
              Value c = cLoop.getInductionVar();
              auto pLoop = b.create<scf::ForOp>(loc, pLo, pHi, e.idx(1), cLoop.getRegionIterArgs());
              b.setInsertionPointToStart(pLoop.getBody());
              Value p = pLoop.getInductionVar();
              // Input row r = i * s + p - pad (inside: pLo and pHi say so)
              // is row r / s of its phase r mod s.
              Value r = e.tap(i, s, pad[0], p);
              Value planes = e.add(e.mul(c, e.idx(s * s)), e.mul(b.create<arith::RemUIOp>(loc, r, e.idx(s)), e.idx(s)));
              Value row = b.create<arith::DivUIOp>(loc, r, e.idx(s));
              SmallVector<Value> acc(pLoop.getRegionIterArgs());
              for (int64_t q = 0; q < w[3]; ++q) {
                auto [pw, shift] = shiftOf(q);
                blockFMAs(
                    e, acc, block, n,
                    [&](int64_t k) -> Value {
                      return b.create<vector::BroadcastOp>(loc, vt, e.load(W, {e.add(o0, e.idx(k)), c, p, e.idx(q)}));
                    },
                    [&](int64_t v) {
                      Value col = e.add(e.mul(e.add(first, e.idx(v)), e.idx(kLanes)), e.idx(shift));
                      bool in = known || (from && inside(*from + v, *from + v + 1));
                      return RowLanes(e, col, 1, ow, Value(), in).load(e, phases, {m, e.add(planes, e.idx(pw)), row});
                    });
              }
              b.create<scf::YieldOp>(loc, acc);
              b.setInsertionPointAfter(pLoop);
              b.create<scf::YieldOp>(loc, pLoop.getResults());
            }
            for (int64_t k = 0; k < block; ++k)
              for (int64_t v = 0; v < n; ++v) {
                Value sum = cLoop.getResult(k * n + v);
                SmallVector<Value> at{e.add(n0, m), e.add(o0, e.idx(k)), i,
                                      e.mul(e.add(first, e.idx(v)), e.idx(kLanes))};
                if (e.epilogue) // through the epilogue, on whole vectors
                  e.emit(sum, at);
                else
                  b.create<vector::TransferWriteOp>(loc, sum, Y, at,
                                                    ArrayRef<bool>{from && (*from + v + 1) * kLanes <= ow});
              }
          };
          rowChunks(e, ow, chunk, inside, run);
        },
        /*parallel=*/true, /*collapse=*/2);
  });
}

} // namespace nnc::cpu::loops
