//===- Winograd.cpp - 3x3 unit-stride convolutions by F(2x2, 3x3) ---------===//
//
// Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016): each
// 2x2 tile of the output is computed from a 4x4 tile of the input with 16
// multiplies per channel pair instead of 36, the multiplies becoming 16
// independent products over the channels (one per transformed position):
//
//   U[e][o][i] = (G g G^T)[e]      g: the 3x3 weights of output o, input i
//   V[e][i][t] = (B^T d B)[e]      d: the 4x4 input patch of tile t
//   M[e][o][t] = sum over i of U[e][o][i] V[e][i][t]
//   Y tile t   = A^T M[.][o][t] A
//
// F(2x2, 3x3)'s transforms use only halves and sums, so its rounding stays
// that of a direct convolution (larger tiles save more multiplies but lose
// digits: F(4x4, 3x3)'s transforms scale by up to 4 and 1/24).
//
// Layout: tiles are vectorized (lanes of consecutive tiles of a tile row),
// which keeps NCHW's rows contiguous in both transforms; a block of tile
// rows (of the batch: small planes fill a block from several samples) is
// transformed, multiplied and transformed back before the next, so
// its V and M stay in L2 (the block's rows are the `winograd` tiling
// choice, Tiling.cpp). U is made once per call, before the blocks; an
// inference keeps it across calls (Emitter::cached), and large U (past half
// of L2) is packed in the multiply's order and read once a larger block.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LoopEmitter.h"
#include "compiler/codegen/cpu/Tiling.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace nnc::cpu::loops {

namespace {

/// One Winograd convolution: the forward one (X the input, W its weights),
/// or the input gradient, a forward convolution of the output gradient with
/// the weights flipped and their channel axes swapped, padded by 2 - pad;
/// or the weight gradient (X the input, Y the output gradient, W the
/// weight gradient), whose tiles are the forward convolution's.
struct Winograd {
  Emitter &e;
  OpBuilder &b;
  Location loc;
  Value X, W, Y;             // input, OIHW weights of the forward convolution, output (null: epilogue)
  bool transposed;
  int64_t in, out;           // channels read and written
  int64_t h, w, oh, ow;      // input and output planes
  int64_t q0, q1;            // padding of the convolution computed
  int64_t th, tw;            // tile rows and columns
  int64_t rows, tiles;       // tile rows a block (of the batch's), and its tiles padded to whole vectors
  int64_t chunks;            // vectors per tile row
  int64_t vectors, block;    // the multiply's register block: vectors of tiles by output channels
  VectorType vt;
  Value zero;

  /// `y`: the shape of the output (of the forward convolution, for the
  /// weight gradient).
  Winograd(Emitter &e, Value X, Value W, Value Y, ArrayRef<int64_t> pad, bool transposed, ArrayRef<int64_t> y)
      : e(e), b(e.b), loc(e.loc), X(X), W(W), Y(Y), transposed(transposed) {
    ArrayRef<int64_t> x = shapeOf(X);
    in = x[1];
    out = y[1];
    h = x[2];
    w = x[3];
    oh = y[2];
    ow = y[3];
    q0 = transposed ? 2 - pad[0] : pad[0];
    q1 = transposed ? 2 - pad[1] : pad[1];
    th = (oh + 1) / 2;
    tw = (ow + 1) / 2;
    chunks = (tw + kLanes - 1) / kLanes;
    vt = VectorType::get({kLanes}, b.getF32Type());
    zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
    setRows(tilingOf(e.op, "winograd"));
  }

  /// `r` tile rows a block; the multiply's register block follows: as
  /// many accumulators as a convolution's register block takes
  /// (Tiling.cpp: 12 with AVX2, 16 with AVX-512), over `vectors` vectors
  /// of tiles by `block` output channels (a divisor of `out`).
  void setRows(int64_t r) {
    rows = r;
    tiles = (rows * tw + kLanes - 1) / kLanes * kLanes;
    int64_t accumulators = std::min<int64_t>(16, cpu::host().registers - 4);
    vectors = std::min<int64_t>(tiles / kLanes, accumulators / 4);
    block = 1;
    for (int64_t k = std::max<int64_t>(1, accumulators / vectors); k >= 1; --k)
      if (out % k == 0) {
        block = k;
        break;
      }
  }

  /// Tile row `g` of the batch's `total`: its sample, its row in the
  /// sample, and whether it exists (the last block may pass the end; it
  /// then reads the last row, and computes zeros it never stores).
  std::tuple<Value, Value, Value> tileRow(Value g, Value total) {
    Value inRange = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, g, total);
    Value at = b.create<arith::MinUIOp>(loc, g, e.sub(total, e.idx(1)));
    return {b.create<arith::DivUIOp>(loc, at, e.idx(th)), b.create<arith::RemUIOp>(loc, at, e.idx(th)), inRange};
  }

  using Matrix = SmallVector<SmallVector<Value, 4>, 4>;
  /// The 1-D transform `f` (a column of values in, its transform out)
  /// applied to each column of `x`, then to each row of the result: F x F^T
  /// for the matrix F of `f`. Every transform here is one.
  Matrix separable(const Matrix &x, function_ref<SmallVector<Value, 4>(ArrayRef<Value>)> f) {
    Matrix t;
    for (size_t c = 0; c < x.front().size(); ++c) {
      SmallVector<Value, 4> column;
      for (const auto &row : x)
        column.push_back(row[c]);
      SmallVector<Value, 4> z = f(column);
      t.resize(z.size());
      for (size_t i = 0; i < z.size(); ++i)
        t[i].push_back(z[i]);
    }
    Matrix out;
    for (const auto &row : t)
      out.push_back(f(row));
    return out;
  }

  Value add(Value x, Value y) { return b.create<arith::AddFOp>(loc, x, y); }
  Value sub(Value x, Value y) { return b.create<arith::SubFOp>(loc, x, y); }
  Value half(Value x) {
    Value h = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.5f));
    return b.create<arith::MulFOp>(loc, x, h);
  }
  Value shuffle(Value x, Value y, ArrayRef<int64_t> lanes) {
    return b.create<vector::ShuffleOp>(loc, x, y, lanes);
  }
  /// A block's scratch, on the stack of the thread running it (at most
  /// kMaxWinogradBlockBytes, Tiling.h).
  Value stackBuffer(ArrayRef<int64_t> shape) {
    return b.create<memref::AllocaOp>(loc, MemRefType::get(shape, b.getF32Type()), b.getI64IntegerAttr(64));
  }

  /// Runs `body` for every output channel o (in parallel) and vector of
  /// input channels from i0, the weights viewed flat (`flat`), lane l at
  /// `lanes[l]` = l * `laneStride` from a kernel's first weight, `mask` the
  /// lanes of channels that exist. The weight transforms' loops.
  void kernelVectors(int64_t laneStride,
                     function_ref<void(Value flat, Value o, Value i0, Value lanes, Value mask)> body) {
    ArrayRef<int64_t> ws = shapeOf(W);
    auto flatType = MemRefType::get({ws[0] * ws[1] * 9}, b.getF32Type());
    Value flat = b.create<memref::CollapseShapeOp>(loc, flatType, W, ArrayRef<ReassociationIndices>{{0, 1, 2, 3}});
    auto i32v = VectorType::get({kLanes}, b.getI32Type());
    SmallVector<int32_t> offsets;
    for (int64_t l = 0; l < kLanes; ++l)
      offsets.push_back(static_cast<int32_t>(l * laneStride));
    e.loops(ArrayRef<int64_t>{out}, [&](ValueRange ov) {
      Value lanes = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32v, ArrayRef<int32_t>(offsets)));
      auto loop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(in), e.idx(kLanes));
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(loop.getBody());
      Value i0 = loop.getInductionVar();
      body(flat, ov[0], i0, lanes, columnMask(e, i0, in));
    }, /*parallel=*/out * in >= 4096);
  }

  /// U[e][o][i] = G g G^T for every weight kernel g, input channels in
  /// vectors (gathered: a kernel's nine weights are contiguous).
  void transformWeights(Value U) {
    int64_t stride1 = shapeOf(W)[1];
    // Lane l reads input channel i0 + l: 9 floats apart forward, a whole
    // output channel's kernels apart transposed.
    kernelVectors(transposed ? stride1 * 9 : 9, [&](Value flat, Value o, Value i0, Value lanes, Value mask) {
      Matrix g(3, SmallVector<Value, 4>(3));
      for (int64_t r = 0; r < 3; ++r)
        for (int64_t s = 0; s < 3; ++s) {
          // Forward W[o][i][r][s]; transposed W[i][o][2 - r][2 - s].
          Value base = transposed ? e.add(e.mul(e.add(e.mul(i0, e.idx(stride1)), o), e.idx(9)), e.idx((2 - r) * 3 + 2 - s))
                                  : e.add(e.mul(e.add(e.mul(o, e.idx(stride1)), i0), e.idx(9)), e.idx(r * 3 + s));
          g[r][s] = b.create<vector::GatherOp>(loc, vt, flat, ValueRange{base}, lanes, mask, zero);
        }
      // G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
      Matrix u = separable(g, [&](ArrayRef<Value> v) -> SmallVector<Value, 4> {
        Value ac = add(v[0], v[2]);
        return {v[0], half(add(ac, v[1])), half(sub(ac, v[1])), v[2]};
      });
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 4; ++j)
          b.create<vector::TransferWriteOp>(loc, u[i][j], U, ValueRange{e.idx(i * 4 + j), o, i0},
                                            ArrayRef<bool>{false});
    });
  }

  /// The four columns b of a 4x4 input patch, for the vector of tiles
  /// from tile column 8j, from input row `row` (zero where `valid` is
  /// false): lanes x = 2 (8j + l) - q1 + b, read as three vectors (masked
  /// where they leave the row) and split into their even and odd lanes.
  void patchRow(Value n, Value c, Value row, Value valid, int64_t j, Value d[4]) {
    int64_t s0 = 2 * kLanes * j - q1;
    Value v[3];
    for (int64_t k = 0; k < 3; ++k) {
      int64_t from = s0 + k * kLanes;
      if (from >= w || from + kLanes <= 0) {
        v[k] = zero;
        continue;
      }
      SmallVector<Value> at{n, c, row, e.idx(from)};
      if (from >= 0 && from + kLanes <= w) {
        v[k] = b.create<vector::LoadOp>(loc, vt, X, at);
      } else {
        SmallVector<bool> lanes;
        for (int64_t l = 0; l < kLanes; ++l)
          lanes.push_back(from + l >= 0 && from + l < w);
        Value mask = b.create<arith::ConstantOp>(
            loc, DenseElementsAttr::get(VectorType::get({kLanes}, b.getI1Type()), ArrayRef<bool>(lanes)));
        // (Lanes masked off are never touched, left of the row included.)
        v[k] = b.create<vector::MaskedLoadOp>(loc, vt, X, at, mask, zero);
      }
      v[k] = b.create<arith::SelectOp>(loc, valid, v[k], zero);
    }
    // d[2] and d[3] are d[0] and d[1] a column pair on: their last lanes
    // come from the third vector.
    SmallVector<int64_t> even, odd, next, nextOdd;
    for (int64_t l = 0; l < kLanes; ++l) {
      even.push_back(2 * l);
      odd.push_back(2 * l + 1);
      next.push_back(l + 1);
      nextOdd.push_back(l + 1 < kLanes ? l + 1 : kLanes + 1);
    }
    d[0] = shuffle(v[0], v[1], even);
    d[1] = shuffle(v[0], v[1], odd);
    d[2] = shuffle(d[0], v[2], next);
    d[3] = shuffle(d[1], v[2], nextOdd);
  }

  /// V[e][c][t] for the block's tiles: B^T d B, with B^T = [1 0 -1 0; 0 1
  /// 1 0; 0 -1 1 0; 0 1 0 -1]. Tile rows in order: a vector's lanes past
  /// its row land on the next row's first tiles, which overwrite them.
  void transformInput(Value V, Value g0, Value total, bool parallel = false) {
    e.loops(ArrayRef<int64_t>{in, rows}, [&](ValueRange iv) {
      Value c = iv[0], r = iv[1];
      auto [n, ty, inRange] = tileRow(e.add(g0, r), total);
      for (int64_t j = 0; j < chunks; ++j) {
        Matrix d(4, SmallVector<Value, 4>(4));
        for (int64_t a = 0; a < 4; ++a) {
          Value y = e.sub(e.add(e.mul(ty, e.idx(2)), e.idx(a)), e.idx(q0));
          Value valid = b.create<arith::AndIOp>(
              loc, inRange,
              b.create<arith::AndIOp>(loc, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sge, y, e.idx(0)),
                                      b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, y, e.idx(h))));
          Value row = b.create<arith::MinSIOp>(loc, e.idx(h - 1), b.create<arith::MaxSIOp>(loc, e.idx(0), y));
          patchRow(n, c, row, valid, j, d[a].data());
        }
        Matrix v = separable(d, [&](ArrayRef<Value> p) -> SmallVector<Value, 4> {
          return {sub(p[0], p[2]), add(p[1], p[2]), sub(p[2], p[1]), sub(p[1], p[3])};
        });
        Value at = e.add(e.mul(r, e.idx(tw)), e.idx(j * kLanes));
        for (int64_t i = 0; i < 4; ++i)
          for (int64_t jj = 0; jj < 4; ++jj)
            b.create<vector::TransferWriteOp>(loc, v[i][jj], V, ValueRange{e.idx(i * 4 + jj), c, at},
                                              ArrayRef<bool>{false});
      }
    }, parallel);
  }

  /// M[e] = U[e] V[e]: register blocks of `block` output channels by
  /// `vectors` vectors of tiles, over the input channels. U is [16][out][in],
  /// or `packed` (packWeights) [16][out / block][in][block], where a
  /// block's weights are read as one stream.
  void multiply(Value U, Value V, Value M, bool packed = false, bool parallel = false) {
    int64_t total = tiles / kLanes;
    auto product = [&](Value pos, Value o0, int64_t t0, int64_t count) {
      SmallVector<Value> init(block * count, zero);
      auto loop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(in), e.idx(1), init);
      {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(loop.getBody());
        Value c = loop.getInductionVar();
        SmallVector<Value> v, acc(loop.getRegionIterArgs());
        for (int64_t k = 0; k < count; ++k)
          v.push_back(b.create<vector::LoadOp>(loc, vt, V, ValueRange{pos, c, e.idx(t0 + k * kLanes)}));
        if (packed) {
          // Packed weights stream from memory once they pass the caches:
          // fetched a DRAM access's time ahead (the hardware's prefetchers
          // measured short of it), `block * count` multiply-adds a step.
          // (Prefetches never fault past the end.)
          constexpr int64_t kAheadCycles = 512;
          int64_t ahead = (kAheadCycles + block * count - 1) / (block * count);
          b.create<memref::PrefetchOp>(
              loc, U, ValueRange{pos, b.create<arith::DivUIOp>(loc, o0, e.idx(block)), e.add(c, e.idx(ahead)), e.idx(0)},
              /*isWrite=*/false, /*localityHint=*/3, /*isDataCache=*/true);
        }
        for (int64_t o = 0; o < block; ++o) {
          Value u = b.create<vector::BroadcastOp>(
              loc, vt,
              packed ? e.load(U, {pos, b.create<arith::DivUIOp>(loc, o0, e.idx(block)), c, e.idx(o)})
                     : e.load(U, {pos, e.add(o0, e.idx(o)), c}));
          for (int64_t k = 0; k < count; ++k)
            acc[o * count + k] = b.create<vector::FMAOp>(loc, u, v[k], acc[o * count + k]);
        }
        b.create<scf::YieldOp>(loc, acc);
      }
      for (int64_t o = 0; o < block; ++o)
        for (int64_t k = 0; k < count; ++k)
          b.create<vector::StoreOp>(loc, loop.getResult(o * count + k), M,
                                    ValueRange{pos, e.add(o0, e.idx(o)), e.idx(t0 + k * kLanes)});
    };
    e.loops(ArrayRef<int64_t>{16, out / block}, [&](ValueRange iv) {
      Value o0 = e.mul(iv[1], e.idx(block));
      // The tiles in as few chunks of at most `vectors` as they take, of
      // sizes that differ by one at most: a last chunk of what is left (7
      // vectors as 3, 3 and 1) would hold too few sums to hide the
      // multiply-add's latency (3, 2 and 2 do).
      int64_t parts = (total + vectors - 1) / vectors, t0 = 0;
      for (int64_t k = 0; k < parts; ++k) {
        int64_t count = total / parts + (k < total % parts ? 1 : 0);
        product(iv[0], o0, t0 * kLanes, count);
        t0 += count;
      }
    }, parallel);
  }

  /// U [16][out][in] rearranged into `P` [16][out / block][in][block]: a
  /// register block's weights in the order the multiply reads them. A
  /// block of a power of two channels (up to a vector) is a transpose of
  /// its rows a vector of input channels at a time: log2(block) rounds of
  /// interleaving rows i and i + block / 2 into rows 2i and 2i + 1,
  /// contiguous loads and stores; other blocks, and input channels past
  /// whole vectors, move one element at a time.
  void packWeights(Value U, Value P) {
    bool zip = block <= kLanes && (block & (block - 1)) == 0;
    int64_t whole = zip ? in / kLanes * kLanes : 0;
    auto flatType = MemRefType::get({16 * (out / block) * in * block}, b.getF32Type());
    Value flat = b.create<memref::CollapseShapeOp>(loc, flatType, P, ArrayRef<ReassociationIndices>{{0, 1, 2, 3}});
    SmallVector<int64_t> lo, hi;
    for (int64_t l = 0; l < kLanes / 2; ++l) {
      lo.append({l, l + kLanes});
      hi.append({l + kLanes / 2, l + kLanes / 2 + kLanes});
    }
    if (whole > 0)
      e.loops(ArrayRef<int64_t>{16, out / block, whole / kLanes}, [&](ValueRange iv) {
        Value c0 = e.mul(iv[2], e.idx(kLanes));
        SmallVector<Value> rows;
        for (int64_t o = 0; o < block; ++o)
          rows.push_back(b.create<vector::LoadOp>(loc, vt, U,
                                                  ValueRange{iv[0], e.add(e.mul(iv[1], e.idx(block)), e.idx(o)), c0}));
        for (int64_t round = 1; round < block; round *= 2) {
          SmallVector<Value> next(rows.size());
          for (int64_t i = 0, h = block / 2; i < h; ++i) {
            next[2 * i] = shuffle(rows[i], rows[i + h], lo);
            next[2 * i + 1] = shuffle(rows[i], rows[i + h], hi);
          }
          rows = std::move(next);
        }
        // The tile's block * kLanes values from P[pos][ob][c0][0] on.
        Value at = e.mul(e.add(e.mul(e.add(e.mul(iv[0], e.idx(out / block)), iv[1]), e.idx(in)), c0), e.idx(block));
        for (int64_t k = 0; k < block; ++k)
          b.create<vector::StoreOp>(loc, rows[k], flat, ValueRange{e.add(at, e.idx(k * kLanes))});
      }, /*parallel=*/true);
    if (whole < in)
      e.loops(ArrayRef<int64_t>{16, out / block, in - whole}, [&](ValueRange iv) {
        Value c = e.add(iv[2], e.idx(whole));
        for (int64_t o = 0; o < block; ++o)
          b.create<memref::StoreOp>(loc, e.load(U, {iv[0], e.add(e.mul(iv[1], e.idx(block)), e.idx(o)), c}), P,
                                    ValueRange{iv[0], iv[1], c, e.idx(o)});
      }, /*parallel=*/true);
  }

  /// The output tiles A^T m A, A^T = [1 1 1 0; 0 1 -1 -1], each row's pair
  /// of columns interleaved into whole output vectors, stored through the
  /// epilogue where there is one.
  void transformOutput(Value M, Value g0, Value total, bool parallel = false) {
    e.loops(ArrayRef<int64_t>{out, rows}, [&](ValueRange iv) {
      Value o = iv[0], r = iv[1];
      auto [n, ty, inRange] = tileRow(e.add(g0, r), total);
      Value scalarZero = b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(0.0f));
      for (int64_t j = 0; j < chunks; ++j) {
        Value at = e.add(e.mul(r, e.idx(tw)), e.idx(j * kLanes));
        Matrix m(4);
        for (int64_t i = 0; i < 4; ++i)
          for (int64_t jj = 0; jj < 4; ++jj)
            m[i].push_back(b.create<vector::TransferReadOp>(loc, vt, M, ValueRange{e.idx(i * 4 + jj), o, at},
                                                            scalarZero, ArrayRef<bool>{false}));
        Matrix z2 = separable(m, [&](ArrayRef<Value> p) -> SmallVector<Value, 4> {
          return {add(add(p[0], p[1]), p[2]), sub(sub(p[1], p[2]), p[3])};
        });
        SmallVector<int64_t> lo, hi;
        for (int64_t l = 0; l < kLanes / 2; ++l) {
          lo.append({l, l + kLanes});
          hi.append({l + kLanes / 2, l + kLanes / 2 + kLanes});
        }
        for (int64_t i = 0; i < 2; ++i) {
          ArrayRef<Value> z = z2[i];
          Value oy = e.add(e.mul(ty, e.idx(2)), e.idx(i));
          Value first = shuffle(z[0], z[1], lo), second = shuffle(z[0], z[1], hi);
          e.when(b.create<arith::AndIOp>(loc, inRange,
                                         b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, oy, e.idx(oh))),
                 [&] {
            for (int64_t k = 0; k < 2; ++k) {
              int64_t col = 2 * kLanes * j + k * kLanes;
              if (col >= ow)
                continue;
              Value v = k == 0 ? first : second;
              SmallVector<Value> idx{n, o, oy, e.idx(col)};
              if (e.epilogue)
                e.emit(v, idx);
              else
                b.create<vector::TransferWriteOp>(loc, v, Y, idx, ArrayRef<bool>{col + kLanes <= ow});
            }
          });
        }
      }
    }, parallel);
  }

  /// dM[e][o][t] = A dY A^T for the block's tiles of the output gradient
  /// Y (A = [1 0; 1 1; 1 -1; 0 -1]): the transpose of the output
  /// transform. A tile's two columns are a row's even and odd lanes; lanes
  /// past the output are zero.
  void transformOutputGradient(Value DM, Value g0, Value total) {
    e.loops(ArrayRef<int64_t>{out, rows}, [&](ValueRange iv) {
      Value o = iv[0], r = iv[1];
      auto [n, ty, inRange] = tileRow(e.add(g0, r), total);
      SmallVector<int64_t> even, odd;
      for (int64_t l = 0; l < kLanes; ++l) {
        even.push_back(2 * l);
        odd.push_back(2 * l + 1);
      }
      for (int64_t j = 0; j < chunks; ++j) {
        Matrix y(2, SmallVector<Value, 4>(2));
        for (int64_t i = 0; i < 2; ++i) {
          Value oy = e.add(e.mul(ty, e.idx(2)), e.idx(i));
          Value valid = b.create<arith::AndIOp>(loc, inRange,
                                                b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, oy, e.idx(oh)));
          Value row = b.create<arith::MinUIOp>(loc, oy, e.idx(oh - 1));
          Value v[2];
          for (int64_t k = 0; k < 2; ++k) {
            int64_t from = 2 * kLanes * j + k * kLanes;
            if (from >= ow) {
              v[k] = zero;
              continue;
            }
            SmallVector<Value> at{n, o, row, e.idx(from)};
            if (from + kLanes <= ow) {
              v[k] = b.create<vector::LoadOp>(loc, vt, Y, at);
            } else {
              SmallVector<bool> lanes;
              for (int64_t l = 0; l < kLanes; ++l)
                lanes.push_back(from + l < ow);
              Value mask = b.create<arith::ConstantOp>(
                  loc, DenseElementsAttr::get(VectorType::get({kLanes}, b.getI1Type()), ArrayRef<bool>(lanes)));
              v[k] = b.create<vector::MaskedLoadOp>(loc, vt, Y, at, mask, zero);
            }
            v[k] = b.create<arith::SelectOp>(loc, valid, v[k], zero);
          }
          y[i][0] = shuffle(v[0], v[1], even);
          y[i][1] = shuffle(v[0], v[1], odd);
        }
        Matrix dm = separable(y, [&](ArrayRef<Value> p) -> SmallVector<Value, 4> {
          return {p[0], add(p[0], p[1]), sub(p[0], p[1]), b.create<arith::NegFOp>(loc, p[1])};
        });
        Value at = e.add(e.mul(r, e.idx(tw)), e.idx(j * kLanes));
        for (int64_t a = 0; a < 4; ++a)
          for (int64_t bb = 0; bb < 4; ++bb)
            b.create<vector::TransferWriteOp>(loc, dm[a][bb], DM, ValueRange{e.idx(a * 4 + bb), o, at},
                                              ArrayRef<bool>{false});
      }
    }, /*parallel=*/true);
  }

  /// dU[e][o][i] (+)= sum over the block's tiles t of dM[e][o][t] V[e][i][t]:
  /// register blocks of ob x ib channel pairs, each a vector of partial sums
  /// over the tiles, reduced across lanes at the end (one tree for the
  /// block). The block fills the registers with its ob output-gradient
  /// vectors and one input vector at a time: 4 x 4 with AVX-512's 32, 2 x 4
  /// with AVX2's 16 (4 x 4 there spills accumulators every step). `first`:
  /// the first block stores, later ones add.
  void multiplyWeightGrad(Value DU, Value V, Value DM, Value first) {
    int64_t ob = 1, ib = 1;
    for (int64_t o : {4, 2, 1})
      for (int64_t i : {4, 2, 1})
        if (out % o == 0 && in % i == 0 && o * i + o + 1 <= cpu::host().registers && o * i > ob * ib) {
          ob = o;
          ib = i;
        }
    e.loops(ArrayRef<Value>{e.idx(16), e.idx(out / ob), e.idx(in / ib)}, [&](ValueRange iv) {
      Value pos = iv[0], o0 = e.mul(iv[1], e.idx(ob)), i0 = e.mul(iv[2], e.idx(ib));
      SmallVector<Value> init(ob * ib, zero);
      auto loop = b.create<scf::ForOp>(loc, e.idx(0), e.idx(tiles), e.idx(kLanes), init);
      {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(loop.getBody());
        Value t = loop.getInductionVar();
        SmallVector<Value> m, v, acc(loop.getRegionIterArgs());
        for (int64_t o = 0; o < ob; ++o)
          m.push_back(b.create<vector::LoadOp>(loc, vt, DM, ValueRange{pos, e.add(o0, e.idx(o)), t}));
        for (int64_t i = 0; i < ib; ++i)
          v.push_back(b.create<vector::LoadOp>(loc, vt, V, ValueRange{pos, e.add(i0, e.idx(i)), t}));
        for (int64_t o = 0; o < ob; ++o)
          for (int64_t i = 0; i < ib; ++i)
            acc[o * ib + i] = b.create<vector::FMAOp>(loc, m[o], v[i], acc[o * ib + i]);
        b.create<scf::YieldOp>(loc, acc);
      }
      SmallVector<Value> sums = laneSums(e, SmallVector<Value>(loop.getResults()));
      for (int64_t o = 0; o < ob; ++o)
        for (int64_t i = 0; i < ib; ++i) {
          Value sum = sums[o * ib + i];
          SmallVector<Value> at{pos, e.add(o0, e.idx(o)), e.add(i0, e.idx(i))};
          Value before = select(e, first, b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(0.0f)), e.load(DU, at));
          e.store(b.create<arith::AddFOp>(loc, before, sum), DU, at);
        }
    }, /*parallel=*/true, /*collapse=*/2);
  }

  /// W[o][i] = G^T dU[.][o][i] G, input channels in vectors (scattered:
  /// a kernel's nine weights are contiguous).
  void transformWeightGrad(Value DU) {
    int64_t stride1 = shapeOf(W)[1];
    kernelVectors(9, [&](Value flat, Value o, Value i0, Value lanes, Value mask) {
      Matrix u(4);
      Value scalarZero = b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(0.0f));
      for (int64_t a = 0; a < 4; ++a)
        for (int64_t c = 0; c < 4; ++c)
          u[a].push_back(b.create<vector::TransferReadOp>(loc, vt, DU, ValueRange{e.idx(a * 4 + c), o, i0},
                                                          scalarZero, ArrayRef<bool>{false}));
      // G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1].
      Matrix g = separable(u, [&](ArrayRef<Value> p) -> SmallVector<Value, 4> {
        Value s12 = half(add(p[1], p[2]));
        return {add(p[0], s12), half(sub(p[1], p[2])), add(s12, p[3])};
      });
      for (int64_t r = 0; r < 3; ++r)
        for (int64_t q = 0; q < 3; ++q) {
          Value base = e.add(e.mul(e.add(e.mul(o, e.idx(stride1)), i0), e.idx(9)), e.idx(r * 3 + q));
          b.create<vector::ScatterOp>(loc, flat, ValueRange{base}, lanes, mask, g[r][q]);
        }
    });
  }

  /// The weight gradient: the batch's tiles in blocks (the transformed input
  /// and output gradient of a block in scratch slots), their products summed
  /// into dU, transformed into W at the end.
  void runWeightGrad() {
    Value DU = e.scratch(MemRefType::get({16, out, in}, b.getF32Type()));
    Value V = e.scratch(MemRefType::get({16, in, tiles}, b.getF32Type()));
    Value DM = e.scratch(MemRefType::get({16, out, tiles}, b.getF32Type()));
    Value total = e.mul(e.dim(X, 0), e.idx(th));
    Value blocks = b.create<arith::CeilDivUIOp>(loc, total, e.idx(rows));
    auto loop = b.create<scf::ForOp>(loc, e.idx(0), blocks, e.idx(1));
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(loop.getBody());
      Value blk = loop.getInductionVar();
      Value g0 = e.mul(blk, e.idx(rows));
      transformInput(V, g0, total, /*parallel=*/true);
      transformOutputGradient(DM, g0, total);
      multiplyWeightGrad(DU, V, DM, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, blk, e.idx(0)));
    }
    transformWeightGrad(DU);
  }

  void run(bool cache) {
    if (cache)
      return runCached();
    if (16 * out * in * 4 > cpu::host().l2 / 2)
      return runLarge();
    // The transformed weights in the workspace (the memory plan's scratch).
    Value U = e.scratch(MemRefType::get({16, out, in}, b.getF32Type()));
    transformWeights(U);
    // Blocks of tile rows of the whole batch (small planes fill a block
    // from several samples).
    Value total = e.mul(e.valueDim(e.op->getResult(0), 0), e.idx(th));
    Value blocks = b.create<arith::CeilDivUIOp>(loc, total, e.idx(rows));
    e.loops(ArrayRef<Value>{blocks}, [&](ValueRange iv) {
      // The scope frees the block's stack scratch at each iteration.
      auto scope = b.create<memref::AllocaScopeOp>(loc, TypeRange{});
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(b.createBlock(&scope.getBodyRegion()));
      Value V = stackBuffer({16, in, tiles}), M = stackBuffer({16, out, tiles});
      Value g0 = e.mul(iv[0], e.idx(rows));
      transformInput(V, g0, total);
      multiply(U, V, M);
      transformOutput(M, g0, total);
      b.create<memref::AllocaScopeReturnOp>(loc);
    }, /*parallel=*/true);
  }

  /// The packed weights' type for the current register block.
  MemRefType packedType() { return MemRefType::get({16, out / block, in, block}, b.getF32Type()); }

  /// The batch's tiles a block of `rows` tile rows at a time, the packed
  /// weights U read once a block, each step of a block in parallel (its
  /// transformed input and products in scratch slots).
  void packedBlocks(Value U) {
    Value V = e.scratch(MemRefType::get({16, in, tiles}, b.getF32Type()));
    Value M = e.scratch(MemRefType::get({16, out, tiles}, b.getF32Type()));
    Value total = e.mul(e.valueDim(e.op->getResult(0), 0), e.idx(th));
    Value blocks = b.create<arith::CeilDivUIOp>(loc, total, e.idx(rows));
    auto loop = b.create<scf::ForOp>(loc, e.idx(0), blocks, e.idx(1));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    Value g0 = e.mul(loop.getInductionVar(), e.idx(rows));
    transformInput(V, g0, total, /*parallel=*/true);
    multiply(U, V, M, /*packed=*/true, /*parallel=*/true);
    transformOutput(M, g0, total, /*parallel=*/true);
  }

  /// With the transformed weights kept across calls (an inference, often
  /// of one sample): they are packed in the multiply's order once, and
  /// each step of a block runs in parallel (one sample's block fills every
  /// thread). The weights are read once a block, from memory where they
  /// pass the caches, so where they take more than half of L2 a block
  /// holds at least a sample.
  void runCached() {
    if (16 * out * in * 4 > cpu::host().l2 / 2)
      setRows(std::max(rows, th));
    Value U = e.cached(packedType(), [&](Value P) {
      Value plain = e.scratch(MemRefType::get({16, out, in}, b.getF32Type()));
      transformWeights(plain);
      packWeights(plain, P);
    });
    packedBlocks(U);
  }

  /// Transformed weights past half of L2, made every call (a training
  /// step): blocks of the stack's size would each stream all of them from
  /// L3, so they are packed and read once a block of as many tiles as
  /// keep one position's transformed input and products in half of L2
  /// (the multiply's working set), where the batch has that many; smaller
  /// batches take a sample a block (a branch at run time).
  void runLarge() {
    Value plain = e.scratch(MemRefType::get({16, out, in}, b.getF32Type()));
    transformWeights(plain);
    int64_t small = std::max(rows, th);
    int64_t most = cpu::host().l2 / 2 / (4 * (in + out)); // tiles
    int64_t large = std::max<int64_t>(small, most / kLanes * kLanes / tw);
    auto variant = [&](int64_t r) {
      setRows(r);
      Value U = e.scratch(packedType());
      packWeights(plain, U);
      packedBlocks(U);
    };
    if (large == small)
      return variant(small);
    Value total = e.mul(e.valueDim(e.op->getResult(0), 0), e.idx(th));
    auto branch = b.create<scf::IfOp>(loc, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::uge, total,
                                                                   e.idx(large)),
                                      /*withElseRegion=*/true);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&branch.getThenRegion().front());
    variant(large);
    b.setInsertionPointToStart(&branch.getElseRegion().front());
    variant(small);
  }
};

} // namespace

bool conv2dWinograd(Emitter &e, Value X, Value W, Value Y, ArrayRef<int64_t> pad, bool transposed,
                    function_ref<void()> direct) {
  if (tilingOr(e.op, "winograd", 0) < 1 || !cpu::winogradApplies(e.op))
    return false;
  // The transforms index the input and the weights as plain arrays.
  for (Value m : {X, W})
    if (!cast<MemRefType>(m.getType()).getLayout().isIdentity())
      return false;
  // The forward convolution's output: the weight gradient's tiles are its.
  bool weightGrad = isa<nnops::Conv2dGradWeightOp>(e.op);
  ArrayRef<int64_t> y = weightGrad ? shapeOf(e.op->getOperand(1)) : shapeOf(e.op->getResult(0));
  // Weights that are arguments of a function whose weights change only
  // between calls (an inference) keep their transform across calls
  // (Emitter::cached).
  bool cache = false;
  if (e.cached && !weightGrad && !transposed)
    if (auto arg = dyn_cast<BlockArgument>(e.op->getOperand(1))) {
      auto fn = dyn_cast<func::FuncOp>(arg.getOwner()->getParentOp());
      auto role = fn ? fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), nnops::attr::kRole) : StringAttr();
      cache = role && role.getValue() != "input";
    }
  // The weights' transform costs about as much as the products save on 48
  // to 64 tiles (it writes and rereads 16/9 of the weights): fewer tiles a
  // call (a batch of one on 7x7 planes) are computed directly, decided
  // at run time where the batch is not known before. Kept across calls,
  // the transform costs nothing a call, and one vector of tiles pays.
  int64_t minTiles = cache ? kLanes : 48;
  int64_t perSample = ((y[2] + 1) / 2) * ((y[3] + 1) / 2);
  auto winograd = [&] {
    Winograd w(e, X, W, Y, pad, transposed, y);
    if (weightGrad)
      w.runWeightGrad();
    else
      w.run(cache);
  };
  if (!ShapedType::isDynamic(y[0])) {
    if (y[0] * perSample >= minTiles)
      winograd();
    else
      direct();
    return true;
  }
  OpBuilder &b = e.b;
  Value enough = b.create<arith::CmpIOp>(e.loc, arith::CmpIPredicate::uge, e.mul(e.batch, e.idx(perSample)),
                                         e.idx(minTiles));
  auto branch = b.create<scf::IfOp>(e.loc, enough, /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&branch.getThenRegion().front());
  winograd();
  b.setInsertionPointToStart(&branch.getElseRegion().front());
  direct();
  return true;
}

} // namespace nnc::cpu::loops
