//===- Reductions.cpp - shapes, reductions and products ---------------------===//
//
// Copies and views (transpose, slice, concat), reductions (row and column
// sums, maxima), counts, one-hot, argmax, and the register-blocked matrix
// product.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LoopEmitter.h"
#include "compiler/codegen/cpu/Machine.h"
#include "compiler/codegen/cpu/Tiling.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace nnc::cpu::loops {

//===----------------------------------------------------------------------===//
// Shapes, reductions, linear algebra
//===----------------------------------------------------------------------===//

LogicalResult constant(Emitter &e) {
  auto value = cast<DenseElementsAttr>(self<nnops::ConstantOp>(e).getValue());
  if (value.isSplat()) {
    Attribute v = value.getSplatValue<Attribute>();
    e.fill(e.out[0], e.b.create<arith::ConstantOp>(e.loc, cast<TypedAttr>(v)));
    return success();
  }
  auto type = cast<MemRefType>(e.out[0].getType());
  std::string name = (e.kernel + "_const" + std::to_string(e.globals++)).str();
  {
    OpBuilder::InsertionGuard guard(e.b);
    e.b.setInsertionPointToStart(e.module.getBody());
    e.b.create<memref::GlobalOp>(e.loc, name, e.b.getStringAttr("private"), type, value,
                                 /*constant=*/true, IntegerAttr());
  }
  Value g = e.b.create<memref::GetGlobalOp>(e.loc, type, name);
  e.b.create<memref::CopyOp>(e.loc, g, e.out[0]);
  return success();
}

LogicalResult transpose(Emitter &e) {
  ArrayRef<int64_t> perm = self<nnops::TransposeOp>(e).getPerm();
  e.loops(e.sizes(e.out[0]), [&](ValueRange ivs) {
    SmallVector<Value> src(perm.size());
    for (size_t i = 0; i < perm.size(); ++i)
      src[perm[i]] = ivs[i];
    e.store(e.load(e.in[0], src), e.out[0], ivs);
  });
  return success();
}

LogicalResult slice(Emitter &e) {
  auto op = self<nnops::SliceOp>(e);
  e.loops(e.sizes(e.out[0]), [&](ValueRange ivs) {
    SmallVector<Value> src(ivs);
    src[op.getAxis()] = e.b.create<arith::AddIOp>(e.loc, ivs[op.getAxis()], e.idx(op.getStart()));
    e.store(e.load(e.in[0], src), e.out[0], ivs);
  });
  return success();
}

LogicalResult concat(Emitter &e) {
  int64_t axis = self<nnops::ConcatOp>(e).getAxis();
  Value offset = e.idx(0);
  for (Value in : e.in) {
    e.loops(e.sizes(in), [&](ValueRange ivs) {
      SmallVector<Value> dst(ivs);
      dst[axis] = e.add(ivs[axis], offset);
      e.store(e.load(in, ivs), e.out[0], dst);
    });
    offset = e.add(offset, e.dim(in, axis));
  }
  return success();
}

/// Lanes of f32 in the host's widest vector register (Machine.cpp).
const int64_t kLanes = host().lanes;

/// Whether reduction `op` sums (or maximizes) down leading axes, keeping
/// trailing ones whose innermost is a whole number of vectors: column sums,
/// bias gradients over the batch. Such a reduction accumulates whole
/// vectors of outputs, and computes its fused producers and its epilogue as
/// vectors too (the lowering binds it in vector mode).
bool columnSums(Operation *op) {
  if (!nnops::isReduction(op))
    return false;
  ArrayRef<int64_t> axes = nnops::reductionAxes(op);
  ArrayRef<int64_t> in = shapeOf(op->getOperand(0));
  int64_t rank = static_cast<int64_t>(in.size());
  if (axes.empty() || rank < 2 || static_cast<int64_t>(axes.size()) >= rank)
    return false;
  for (int64_t i = 0; i < rank; ++i)
    if (llvm::is_contained(axes, i) != (i < static_cast<int64_t>(axes.size())))
      return false; // not the leading axes
  return !ShapedType::isDynamic(in.back()) && in.back() > 0 && in.back() % kLanes == 0;
}

/// The reassociation of a rank-`rank` buffer that keeps axes [0, tail) and
/// collapses the rest into one.
SmallVector<ReassociationIndices> collapsedFrom(int64_t tail, int64_t rank) {
  SmallVector<ReassociationIndices> groups;
  for (int64_t d = 0; d < tail; ++d)
    groups.push_back({d});
  groups.emplace_back();
  for (int64_t d = tail; d < rank; ++d)
    groups.back().push_back(d);
  return groups;
}

/// Reduced leading axes, kept trailing axes (column sums, bias gradients
/// over the batch): up to 4 vectors of 16 outputs accumulate down the
/// reduced axes, each step contiguous loads (or vectors of the fused
/// producers), instead of one output at a time walking the input a row
/// apart per element. The outputs go out as vectors.
static LogicalResult reduceColumns(Emitter &e, bool max, ArrayRef<int64_t> in, bool keepdims,
                                   ArrayRef<int64_t> kept, ArrayRef<int64_t> reduced,
                                   ArrayRef<Value> outer, ArrayRef<Value> inner) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  int64_t lastKept = kept.back();
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value init = b.create<arith::ConstantOp>(
      loc, DenseElementsAttr::get(vt, max ? -std::numeric_limits<float>::infinity() : 0.0f));
  auto combine = [&](Value acc, Value x) -> Value {
    return max ? b.create<arith::MaximumFOp>(loc, acc, x).getResult()
               : b.create<arith::AddFOp>(loc, acc, x).getResult();
  };
  // An input beyond the caches with one kept axis: each row's run of
  // `panel` columns (up to 16 KiB) is read in turn, contiguously, into
  // accumulators in an L1 buffer (walking down a column of vectors
  // instead touches a new page every load, about twice as slow on
  // 4096x4096 column sums). Every output still sums its rows in order,
  // as in registers.
  int64_t n = in[lastKept], rows = 1;
  for (int64_t d : reduced)
    rows *= typicalDim(e.op->getOperand(0), d);
  int64_t panel = 0;
  if (kept.size() == 1 && rows >= 16 && rows * n >= (1 << 18))
    for (int64_t p = std::min<int64_t>(n, 4096) / kLanes * kLanes; p >= 256 && !panel; p -= kLanes)
      if (n % p == 0)
        panel = p;
  if (panel) {
    bool parallel = worthThreads(e.op->getOperand(0));
    auto bufType = MemRefType::get({panel}, b.getF32Type());
    auto newBuf = [&]() -> Value { return b.create<memref::AllocaOp>(loc, bufType, b.getI64IntegerAttr(64)); };
    Value shared = parallel ? Value() : newBuf();
    Value pad = b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(0));
    auto overPanel = [&](function_ref<void(Value)> body) {
      b.create<scf::ForOp>(loc, e.idx(0), e.idx(panel), e.idx(kLanes), std::nullopt,
                           [&](OpBuilder &, Location, Value j, ValueRange) {
                             body(j);
                             b.create<scf::YieldOp>(loc);
                           });
    };
    e.loops(ArrayRef<Value>{e.idx(n / panel)}, [&](ValueRange ov) {
      Value buf = shared ? shared : newBuf();
      Value p0 = e.mul(ov[0], e.idx(panel));
      overPanel([&](Value j) { b.create<vector::TransferWriteOp>(loc, init, buf, j, ArrayRef<bool>{true}); });
      SmallVector<Value> idx(in.size());
      std::function<void(size_t)> rec = [&](size_t d) {
        if (d == reduced.size()) {
          overPanel([&](Value j) {
            idx[lastKept] = e.add(p0, j);
            Value acc = b.create<vector::TransferReadOp>(loc, vt, buf, j, pad, ArrayRef<bool>{true});
            b.create<vector::TransferWriteOp>(loc, combine(acc, e.read(0, idx)), buf, j, ArrayRef<bool>{true});
          });
          return;
        }
        b.create<scf::ForOp>(loc, e.idx(0), inner[d], e.idx(1), std::nullopt,
                             [&](OpBuilder &, Location, Value r, ValueRange) {
                               idx[reduced[d]] = r;
                               rec(d + 1);
                               b.create<scf::YieldOp>(loc);
                             });
      };
      rec(0);
      overPanel([&](Value j) {
        SmallVector<Value> o(keepdims ? in.size() - 1 : 0, e.idx(0));
        o.push_back(e.add(p0, j));
        e.emit(b.create<vector::TransferReadOp>(loc, vt, buf, j, pad, ArrayRef<bool>{true}), o);
      });
    }, parallel);
    return success();
  }
  const int64_t vecs = in[lastKept] % (4 * kLanes) == 0 ? 4 : 1, width = vecs * kLanes;
  SmallVector<Value> chunks(outer.begin(), outer.end());
  chunks.back() = e.idx(in[lastKept] / width);
  e.loops(chunks, [&](ValueRange ov) {
    SmallVector<Value> idx(in.size());
    for (auto [k, d] : llvm::enumerate(kept))
      idx[d] = ov[k];
    Value j0 = e.mul(ov.back(), e.idx(width));
    std::function<SmallVector<Value>(size_t, ValueRange)> rec = [&](size_t d, ValueRange acc) {
      SmallVector<Value> next;
      if (d == reduced.size()) {
        for (int64_t v = 0; v < vecs; ++v) {
          idx[lastKept] = e.add(j0, e.idx(v * kLanes));
          next.push_back(combine(acc[v], e.read(0, idx)));
        }
        return next;
      }
      auto f = b.create<scf::ForOp>(loc, e.idx(0), inner[d], e.idx(1), acc);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(f.getBody());
      idx[reduced[d]] = f.getInductionVar();
      b.create<scf::YieldOp>(loc, rec(d + 1, f.getRegionIterArgs()));
      return SmallVector<Value>(f.getResults());
    };
    SmallVector<Value> acc = rec(0, SmallVector<Value>(vecs, init));
    for (int64_t v = 0; v < vecs; ++v) {
      SmallVector<Value> o;
      for (size_t i = 0; i < in.size(); ++i) {
        if (llvm::is_contained(kept, static_cast<int64_t>(i)))
          o.push_back(static_cast<int64_t>(i) == lastKept ? e.add(j0, e.idx(v * kLanes)) : idx[i]);
        else if (keepdims)
          o.push_back(e.idx(0));
      }
      e.emit(acc[v], o);
    }
  }, worthThreads(e.op->getOperand(0)));
  return success();
}

/// sum (max = false) or max over `axes`: outer loops over the output, inner
/// loops over the reduced axes accumulating in a register (a `reassoc`
/// reduction LLVM vectorizes when the innermost axis is reduced).
LogicalResult reduce(Emitter &e, bool max) {
  ArrayRef<int64_t> axes = nnops::reductionAxes(e.op);
  ArrayRef<int64_t> in = shapeOf(e.op->getOperand(0));
  bool keepdims = nnops::keepsReducedAxes(e.op);
  SmallVector<int64_t> kept, reduced;
  for (int64_t i = 0; i < static_cast<int64_t>(in.size()); ++i)
    (axes.empty() || llvm::is_contained(axes, i) ? reduced : kept).push_back(i);
  SmallVector<Value> outer, inner;
  for (int64_t i : kept)
    outer.push_back(e.valueDim(e.op->getOperand(0), i));
  for (int64_t i : reduced)
    inner.push_back(e.valueDim(e.op->getOperand(0), i));
  OpBuilder &b = e.b;
  Location loc = e.loc;
  // An operand read from memory whose trailing axes are all reduced (the
  // spatial axes of a per-channel sum) is read as one contiguous run per
  // leading index: a loop that long vectorizes, 28-wide rows do not.
  int64_t rank = static_cast<int64_t>(in.size()), tail = rank;
  while (tail > 0 && llvm::is_contained(reduced, tail - 1))
    --tail;
  Value source = e.in.empty() ? Value() : e.in[0];
  bool fromMemory = source && !(e.gen.size() > 0 && e.gen[0]) && !e.lanes;
  auto sourceType = fromMemory ? dyn_cast<MemRefType>(source.getType()) : MemRefType();
  bool leading = e.lanes == kLanes;
  assert((!e.lanes || (leading && columnSums(e.op))) && "a reduction in vector mode sums columns");
  if (leading)
    return reduceColumns(e, max, in, keepdims, kept, reduced, outer, inner);
  bool flatten = (fromMemory && !axes.empty() && rank - tail >= 2 && tail >= 1 && sourceType &&
                  sourceType.getLayout().isIdentity()) ||
                 (e.flatTail > 0 && e.flatTail == tail);
  if (flatten && e.flatTail) {
    // The producers read and write collapsed views (lowerOne's
    // flattenReduction): one run of the trailing axes' product.
    int64_t run = 1;
    for (int64_t d = tail; d < rank; ++d)
      run *= in[d];
    inner.clear();
    for (int64_t i : reduced)
      if (i < tail)
        inner.push_back(e.valueDim(e.op->getOperand(0), i));
    inner.push_back(e.idx(run));
  } else if (flatten) {
    source = b.create<memref::CollapseShapeOp>(loc, e.in[0], collapsedFrom(tail, rank));
    inner.clear();
    for (int64_t i : reduced)
      if (i < tail)
        inner.push_back(e.valueDim(e.op->getOperand(0), i));
    inner.push_back(e.dim(source, tail));
  }
  auto flags = arith::FastMathFlags::reassoc | arith::FastMathFlags::contract;
  Value init = e.f32(max ? -std::numeric_limits<float>::infinity() : 0.0);
  e.loops(outer, [&](ValueRange ov) {
    SmallVector<Value> idx(in.size());
    for (auto [k, d] : llvm::enumerate(kept))
      idx[d] = ov[k];
    // Nested loops over the reduced axes, carrying the accumulator.
    SmallVector<int64_t> loopAxes;
    for (int64_t i : reduced)
      if (!flatten || i < tail)
        loopAxes.push_back(i);
    if (flatten)
      loopAxes.push_back(tail);
    SmallVector<Value> flatIdx(flatten ? tail + 1 : 0);
    // A sum or maximum over a contiguous run in memory, in vectors: four
    // accumulators over blocks of four vectors (independent chains, enough
    // loads in flight to stream from memory), one over the remaining whole
    // vectors, a masked tail, then across the lanes. LLVM does not
    // vectorize NaN-propagating maximum reductions at all; the maximum
    // does not depend on the order (exact), sums are reassociated as the
    // scalar loop's `reassoc` allows.
    bool vectorRun = fromMemory && sourceType && sourceType.getLayout().isIdentity() &&
                     !loopAxes.empty() && (flatten || loopAxes.back() == rank - 1);
    auto runVector = [&](Value acc) -> Value {
      constexpr int64_t kChains = 4;
      auto vt = VectorType::get({kLanes}, b.getF32Type());
      float identity = max ? -std::numeric_limits<float>::infinity() : 0.0f;
      Value pad = b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(identity));
      Value init = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, identity));
      auto combine = [&](Value x, Value y) -> Value {
        return max ? b.create<arith::MaximumFOp>(loc, x, y).getResult()
                   : b.create<arith::AddFOp>(loc, x, y, flags).getResult();
      };
      auto at = [&](Value j) {
        SmallVector<Value> i = flatten ? flatIdx : idx;
        if (flatten)
          for (int64_t k = 0; k < tail; ++k)
            i[k] = idx[k];
        i.back() = j;
        return i;
      };
      auto read = [&](Value j, bool inBounds) -> Value {
        return b.create<vector::TransferReadOp>(loc, vt, source, at(j), pad, ArrayRef<bool>{inBounds});
      };
      auto below = [&](Value n, int64_t step) {
        return e.mul(b.create<arith::DivUIOp>(loc, n, e.idx(step)), e.idx(step));
      };
      Value n = inner.back();
      Value blocks = below(n, kChains * kLanes), whole = below(n, kLanes);
      auto wide = b.create<scf::ForOp>(loc, e.idx(0), blocks, e.idx(kChains * kLanes),
                                       SmallVector<Value>(kChains, init));
      {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(wide.getBody());
        SmallVector<Value> next;
        for (int64_t c = 0; c < kChains; ++c)
          next.push_back(combine(wide.getRegionIterArgs()[c],
                                 read(e.add(wide.getInductionVar(), e.idx(c * kLanes)), true)));
        b.create<scf::YieldOp>(loc, next);
      }
      Value lanes = combine(combine(wide.getResult(0), wide.getResult(1)),
                            combine(wide.getResult(2), wide.getResult(3)));
      auto one = b.create<scf::ForOp>(loc, blocks, whole, e.idx(kLanes), ValueRange{lanes});
      {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(one.getBody());
        b.create<scf::YieldOp>(loc, ValueRange{combine(one.getRegionIterArgs()[0],
                                                       read(one.getInductionVar(), true))});
      }
      lanes = combine(one.getResult(0), read(whole, false));
      Value r = max ? b.create<vector::ReductionOp>(loc, vector::CombiningKind::MAXIMUMF, lanes).getResult()
                    : b.create<vector::ReductionOp>(loc, vector::CombiningKind::ADD, lanes, Value(),
                                                    flags).getResult();
      return max ? b.create<arith::MaximumFOp>(loc, acc, r).getResult()
                 : b.create<arith::AddFOp>(loc, acc, r, flags).getResult();
    };
    std::function<Value(size_t, Value)> rec = [&](size_t d, Value acc) -> Value {
      if (vectorRun && d + 1 == loopAxes.size())
        return runVector(acc);
      if (d == loopAxes.size()) {
        Value v;
        if (flatten) {
          for (int64_t i = 0; i < tail; ++i)
            flatIdx[i] = idx[i];
          v = e.flatTail ? e.read(0, flatIdx) : e.load(source, flatIdx);
        } else {
          v = e.read(0, idx);
        }
        return max ? b.create<arith::MaximumFOp>(loc, acc, v).getResult()
                   : b.create<arith::AddFOp>(loc, acc, v, flags).getResult();
      }
      auto f = b.create<scf::ForOp>(loc, e.idx(0), inner[d], e.idx(1), ValueRange{acc});
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(f.getBody());
      if (flatten && loopAxes[d] == tail)
        flatIdx[tail] = f.getInductionVar();
      else
        idx[loopAxes[d]] = f.getInductionVar();
      b.create<scf::YieldOp>(loc, rec(d + 1, f.getRegionIterArgs()[0]));
      return f.getResult(0);
    };
    Value r = rec(0, init);
    SmallVector<Value> o;
    for (size_t i = 0; i < in.size(); ++i) {
      if (llvm::is_contained(kept, static_cast<int64_t>(i)))
        o.push_back(idx[i]);
      else if (keepdims)
        o.push_back(e.idx(0));
    }
    e.emit(r, o);
  }, worthThreads(e.op->getOperand(0)));
  return success();
}

LogicalResult count(Emitter &e) {
  ArrayRef<int64_t> axes = self<nnops::CountOp>(e).getAxes();
  Value n = e.idx(1);
  for (int64_t i = 0; i < static_cast<int64_t>(shapeOf(e.in[0]).size()); ++i)
    if (axes.empty() || llvm::is_contained(axes, i))
      n = e.mul(n, e.dim(e.in[0], i));
  e.store(e.toF32(n), e.out[0], {});
  return success();
}

/// A register- and cache-blocked matrix product C = A B (row-major, f32),
/// blocked as the op's nnc.tiling says (Tiling.cpp chooses). The register
/// block: `rows` rows of C times `vectors` vectors of kLanes columns,
/// accumulated in vector registers over a block of `depth` steps of the
/// reduction (an outer product per k: `vectors` loads of a row of B, `rows`
/// broadcasts from A), then carried to the next depth block. The cache
/// block: a group of up to `group` row blocks runs each (column block,
/// depth block) in turn; the depth x vectors*kLanes panel of B is first
/// copied to a contiguous buffer on the thread's stack (B's rows are a
/// power of two apart in large products, and read in place the panel
/// evicts itself from L1), then served from L1 to every row block of the
/// group. Groups are as few as the thread count allows (a multiple of it,
/// decided at run time) and run in parallel when the product is large
/// enough. Leftover rows take blocks of 4, then one-row blocks; the last
/// column block of a ragged width uses masked loads and stores, unpacked.
/// Every element of C sums its products in k order (between depth blocks
/// through a contiguous buffer of the group's partial sums, exact in f32),
/// so the result does not depend on the blocking or the thread count.

namespace {

/// The register-blocked product of one matmul (see above): its
/// operands, and the loops over blocks that matmul sizes.
struct Product {
  Emitter &e;
  OpBuilder &b;
  Location loc;
  Value B, C, M, K, N;
  VectorType vt;
  Value pad, zero;
  int64_t rows, vectors, depth, group; // the op's nnc.tiling (Tiling.cpp)

  void block(Value i0, int64_t rows, Value j0, int64_t vectors, bool inBounds, Value k0, Value k1,
             Value packed, Value local, Value localBase);
  void columns(Value rb0, Value rb1, int64_t rows, Value pack, Value base, Value local = Value());
};

} // namespace


// One register block: `rows` rows from i0, `vectors` vectors from column
// j0, reduction steps [k0, k1).
// `local`, when given, holds the partial sums between depth blocks
// (row i0 at its row i0 - localBase): only the last depth block stores
// to C.
void Product::block(Value i0, int64_t rows, Value j0, int64_t vectors, bool inBounds, Value k0, Value k1,
                    Value packed, Value local, Value localBase) {
  SmallVector<Value> cols, rowIdx, init;
  for (int64_t v = 0; v < vectors; ++v)
    cols.push_back(e.add(j0, e.idx(v * kLanes)));
  for (int64_t r = 0; r < rows; ++r)
    rowIdx.push_back(e.add(i0, e.idx(r)));
  auto first = b.create<scf::IfOp>(loc, SmallVector<Type>(rows * vectors, vt),
                                   b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, k0, e.idx(0)),
                                   /*withElseRegion=*/true);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&first.getThenRegion().front());
    b.create<scf::YieldOp>(loc, SmallVector<Value>(rows * vectors, zero));
    b.setInsertionPointToStart(&first.getElseRegion().front());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t v = 0; v < vectors; ++v)
        init.push_back(local ? b.create<vector::TransferReadOp>(
                                   loc, vt, local, ValueRange{e.sub(rowIdx[r], localBase), e.idx(v * kLanes)},
                                   pad, ArrayRef<bool>{true})
                             : b.create<vector::TransferReadOp>(loc, vt, C, ValueRange{rowIdx[r], cols[v]}, pad,
                                                                ArrayRef<bool>{inBounds}));
    b.create<scf::YieldOp>(loc, init);
    init.assign(first.getResults().begin(), first.getResults().end());
  }
  auto k = b.create<scf::ForOp>(loc, k0, k1, e.idx(1), init);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(k.getBody());
    Value kv = k.getInductionVar();
    SmallVector<Value> row;
    for (int64_t v = 0; v < vectors; ++v)
      row.push_back(packed ? b.create<vector::TransferReadOp>(loc, vt, packed,
                                                              ValueRange{e.sub(kv, k0), e.idx(v * kLanes)},
                                                              pad, ArrayRef<bool>{true})
                           : b.create<vector::TransferReadOp>(loc, vt, B, ValueRange{kv, cols[v]}, pad,
                                                              ArrayRef<bool>{inBounds}));
    SmallVector<Value> next;
    for (int64_t r = 0; r < rows; ++r) {
      Value a = b.create<vector::BroadcastOp>(loc, vt, e.read(0, {rowIdx[r], kv}));
      for (int64_t v = 0; v < vectors; ++v)
        next.push_back(b.create<vector::FMAOp>(loc, a, row[v], k.getRegionIterArgs()[r * vectors + v]));
    }
    b.create<scf::YieldOp>(loc, next);
  }
  auto write = [&] {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t v = 0; v < vectors; ++v)
        b.create<vector::TransferWriteOp>(loc, k.getResult(r * vectors + v), C,
                                          ValueRange{rowIdx[r], cols[v]}, ArrayRef<bool>{inBounds});
  };
  if (!e.epilogue && !local) {
    write();
    return;
  }
  // The last depth block stores to C (through the epilogue, if any).
  auto last = b.create<scf::IfOp>(loc, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, k1, K),
                                  /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&last.getThenRegion().front());
  if (e.epilogue) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t v = 0; v < vectors; ++v)
        e.emit(k.getResult(r * vectors + v), {rowIdx[r], cols[v]});
  } else {
    write();
  }
  b.setInsertionPointToStart(&last.getElseRegion().front());
  if (!local) {
    write();
    return;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t v = 0; v < vectors; ++v)
      b.create<vector::TransferWriteOp>(loc, k.getResult(r * vectors + v), local,
                                        ValueRange{e.sub(rowIdx[r], localBase), e.idx(v * kLanes)},
                                        ArrayRef<bool>{true});
}

// Every column block, in depth blocks, for row blocks [rb0, rb1) of
// `rows` rows each, from row `base`.
void Product::columns(Value rb0, Value rb1, int64_t rows, Value pack, Value base, Value local) {
  auto depthBlocks = [&](Value j0, int64_t vectors, bool inBounds) {
    // A full-width panel of B is first copied to `pack` (contiguous rows
    // of 64 floats): B's rows are a large power of two apart in the big
    // products, and a panel read in place evicts itself from L1.
    Value packed = inBounds ? pack : Value();
    Value sums = packed ? local : Value(), sumsBase = e.add(base, e.mul(rb0, e.idx(rows)));
    b.create<scf::ForOp>(loc, e.idx(0), K, e.idx(depth), std::nullopt,
                         [&](OpBuilder &, Location, Value k0, ValueRange) {
                           Value k1 = b.create<arith::MinSIOp>(loc, K, e.add(k0, e.idx(depth)));
                           if (packed)
                             b.create<scf::ForOp>(
                                 loc, k0, k1, e.idx(1), std::nullopt,
                                 [&](OpBuilder &, Location, Value kk, ValueRange) {
                                   for (int64_t v = 0; v < vectors; ++v) {
                                     Value x = b.create<vector::TransferReadOp>(
                                         loc, vt, B, ValueRange{kk, e.add(j0, e.idx(v * kLanes))}, pad,
                                         ArrayRef<bool>{true});
                                     b.create<vector::TransferWriteOp>(
                                         loc, x, packed, ValueRange{e.sub(kk, k0), e.idx(v * kLanes)},
                                         ArrayRef<bool>{true});
                                   }
                                   b.create<scf::YieldOp>(loc);
                                 });
                           // While the group's row blocks run, each fetches its
                           // share of the next depth block's rows of the panel:
                           // they lie far apart in B, too few lines each for the
                           // hardware to prefetch, and packing them at the miss
                           // latency took 8% of a 2048^3 product.
                           Value per = packed ? b.create<arith::CeilDivUIOp>(
                                                    loc, e.idx(depth),
                                                    b.create<arith::MaxUIOp>(loc, e.idx(1), e.sub(rb1, rb0)))
                                              : Value();
                           b.create<scf::ForOp>(loc, rb0, rb1, e.idx(1), std::nullopt,
                                                [&](OpBuilder &, Location, Value rb, ValueRange) {
                                                  if (packed) {
                                                    Value r0 = e.add(k1, e.mul(e.sub(rb, rb0), per));
                                                    Value r1 = b.create<arith::MinSIOp>(
                                                        loc, K, b.create<arith::MinSIOp>(
                                                                    loc, e.add(k1, e.idx(depth)), e.add(r0, per)));
                                                    b.create<scf::ForOp>(
                                                        loc, r0, b.create<arith::MaxSIOp>(loc, r0, r1), e.idx(1),
                                                        std::nullopt,
                                                        [&](OpBuilder &, Location, Value kk, ValueRange) {
                                                          for (int64_t v = 0; v < vectors; ++v)
                                                            b.create<memref::PrefetchOp>(
                                                                loc, B, ValueRange{kk, e.add(j0, e.idx(v * kLanes))},
                                                                /*isWrite=*/false, /*localityHint=*/2,
                                                                /*isDataCache=*/true);
                                                          b.create<scf::YieldOp>(loc);
                                                        });
                                                  }
                                                  block(e.add(base, e.mul(rb, e.idx(rows))), rows, j0,
                                                        vectors, inBounds, k0, k1, packed, sums, sumsBase);
                                                  b.create<scf::YieldOp>(loc);
                                                });
                           b.create<scf::YieldOp>(loc);
                         });
  };
  const int64_t width = kLanes * vectors;
  std::optional<int64_t> n = getConstantIntValue(N);
  if (!n) {
    b.create<scf::ForOp>(loc, e.idx(0), N, e.idx(width), std::nullopt,
                         [&](OpBuilder &, Location, Value j0, ValueRange) {
                           depthBlocks(j0, vectors, false);
                           b.create<scf::YieldOp>(loc);
                         });
    return;
  }
  int64_t full = *n / width, rest = *n % width;
  if (full > 0)
    b.create<scf::ForOp>(loc, e.idx(0), e.idx(full * width), e.idx(width), std::nullopt,
                         [&](OpBuilder &, Location, Value j0, ValueRange) {
                           depthBlocks(j0, vectors, true);
                           b.create<scf::YieldOp>(loc);
                         });
  if (rest > 0)
    depthBlocks(e.idx(full * width), (rest + kLanes - 1) / kLanes, false);
}

LogicalResult matmul(Emitter &e) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value B = e.in[1], C = e.out[0];
  // A may be a transpose fused into the product (read through e.read).
  Value M = e.valueDim(e.op->getOperand(0), 0), K = e.valueDim(e.op->getOperand(0), 1);
  Value N = e.dim(B, 1);
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value pad = e.f32(0);
  // The first depth block starts its accumulators at zero, so C needs no
  // filling (a pass over C less; and a parallel fill would leave parts of
  // C in another core's cache for the product to fetch back) except when
  // there is no depth block at all.
  std::optional<int64_t> depth = getConstantIntValue(K);
  if (!depth)
    e.when(b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, K, e.idx(0)), [&] { e.fill(C, e.f32(0)); });
  else if (*depth == 0)
    e.fill(C, e.f32(0));
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(VectorType::get({kLanes}, b.getF32Type()), 0.0f));
  Product product{e, b, loc, B, C, M, K, N, vt, pad, zero, tilingOf(e.op, "rows"), tilingOf(e.op, "vectors"),
                  tilingOf(e.op, "depth"), tilingOf(e.op, "group")};
  const int64_t kVectors = product.vectors, kDepth = product.depth, kGroupMax = product.group;
  // The blocking (rows, vectors, depth, group) is the op's nnc.tiling
  // (Tiling.cpp).
  int64_t typicalRows = typicalDim(e.op->getOperand(0), 0);
  const int64_t kRows = product.rows;
  Value blocks = b.create<arith::DivUIOp>(loc, M, e.idx(kRows));
  int64_t typicalBlocks = typicalRows / kRows;
  // Threads pay off from about 16 million multiply-adds (80 us on one
  // core): a second core first fetches its share of the operands from the
  // first core's caches, and the products of the MNIST MLP at batch 64 (6.4
  // million) ran slower on two threads than on one. With a batch-sized
  // dimension the product is measured at run time (the same layer at batch
  // 512 is worth splitting).
  Value a = e.op->getOperand(0), c = e.op->getOperand(1);
  constexpr int64_t kWorthThreads = int64_t(1) << 24;
  bool dynamic = ShapedType::isDynamic(shapeOf(a)[0]) || ShapedType::isDynamic(shapeOf(a)[1]) ||
                 ShapedType::isDynamic(shapeOf(c)[1]);
  bool parallel = dynamic || typicalDim(a, 0) * typicalDim(a, 1) * typicalDim(c, 1) >= kWorthThreads;
  // Groups of equal size, as large as kGroupMax allows (every row block of
  // a group reuses the packed panels of B), and a multiple of the thread
  // count in number, so that threads get equal shares: decided at run time
  // (one thread runs the MNIST MLP's first product, 10 blocks, faster as
  // one group than as the four groups two threads want).
  Value threads = parallel ? e.threads() : e.idx(1);
  if (dynamic) {
    Value big = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::uge, e.mul(e.mul(M, K), N),
                                        e.idx(kWorthThreads));
    threads = b.create<arith::SelectOp>(loc, big, threads, e.idx(1));
  }
  Value perThread = b.create<arith::MaxUIOp>(
      loc, e.idx(1), b.create<arith::CeilDivUIOp>(loc, blocks, e.mul(threads, e.idx(kGroupMax))));
  Value size = b.create<arith::CeilDivUIOp>(loc, blocks, e.mul(threads, perThread));
  size = b.create<arith::MinUIOp>(loc, e.idx(kGroupMax), b.create<arith::MaxUIOp>(loc, e.idx(1), size));
  Value groups = b.create<arith::CeilDivUIOp>(loc, blocks, size);
  // The packed panel (only when a group has several row blocks to reuse
  // it): on the stack of the thread running the group. In a parallel loop
  // the alloca is in the loop body, which the OpenMP lowering scopes per
  // iteration; otherwise one alloca before the loop serves every group.
  auto packType = MemRefType::get({kDepth, kVectors * kLanes}, b.getF32Type());
  auto newPack = [&]() -> Value { return b.create<memref::AllocaOp>(loc, packType, b.getI64IntegerAttr(64)); };
  bool pack = typicalBlocks >= 2;
  Value shared = pack && !parallel ? newPack() : Value();
  // The group's partial sums of one column block, between depth blocks:
  // contiguous, where C's rows are often a power of two apart and, read in
  // place, compete for a few sets of the caches with B's and A's rows (a
  // sixth of the time of a 2048^3 product went to reloading C).
  bool sumsWanted = pack && (!depth || *depth > kDepth);
  auto sumsType = MemRefType::get({kGroupMax * kRows, kVectors * kLanes}, b.getF32Type());
  auto newSums = [&]() -> Value {
    return sumsWanted ? b.create<memref::AllocaOp>(loc, sumsType, b.getI64IntegerAttr(64)) : Value();
  };
  Value sharedSums = !parallel ? newSums() : Value();
  e.loops(ArrayRef<Value>{groups}, [&](ValueRange iv) {
    Value rb0 = e.mul(iv[0], size);
    Value rb1 = b.create<arith::MinUIOp>(loc, blocks, e.add(rb0, size));
    product.columns(rb0, rb1, kRows, pack && parallel ? newPack() : shared, e.idx(0),
            pack && parallel ? newSums() : sharedSums);
  }, parallel);
  Value done = e.mul(blocks, e.idx(kRows));
  if (kRows > 4) {
    Value quads = b.create<arith::DivUIOp>(loc, e.sub(M, done), e.idx(4));
    product.columns(e.idx(0), quads, 4, Value(), done);
    done = e.add(done, e.mul(quads, e.idx(4)));
  }
  product.columns(done, M, 1, Value(), e.idx(0));
  return success();
}

LogicalResult oneHot(Emitter &e) {
  int64_t classes = shapeOf(e.out[0]).back();
  e.fill(e.out[0], e.f32(0));
  e.loops(e.sizes(e.in[0]), [&](ValueRange ivs) {
    Value label = e.b.create<arith::IndexCastOp>(e.loc, e.b.getIndexType(), e.load(e.in[0], ivs));
    Value ok = e.b.create<arith::AndIOp>(
        e.loc, e.b.create<arith::CmpIOp>(e.loc, arith::CmpIPredicate::sge, label, e.idx(0)),
        e.b.create<arith::CmpIOp>(e.loc, arith::CmpIPredicate::slt, label, e.idx(classes)));
    e.when(ok, [&] {
      SmallVector<Value> o(ivs);
      o.push_back(label);
      e.store(e.f32(1.0), e.out[0], o);
    });
  });
  return success();
}

LogicalResult argmax(Emitter &e) {
  int64_t axis = self<nnops::ArgmaxOp>(e).getAxis();
  e.loops(e.sizes(e.out[0]), [&](ValueRange ivs) {
    auto at = [&](Value k) {
      SmallVector<Value> i(ivs.begin(), ivs.begin() + axis);
      i.push_back(k);
      i.append(ivs.begin() + axis, ivs.end());
      return i;
    };
    Value first = e.load(e.in[0], at(e.idx(0)));
    auto loop = e.b.create<scf::ForOp>(e.loc, e.idx(1), e.dim(e.in[0], axis), e.idx(1),
                                       ValueRange{first, e.idx(0)});
    {
      OpBuilder::InsertionGuard guard(e.b);
      e.b.setInsertionPointToStart(loop.getBody());
      Value k = loop.getInductionVar();
      Value v = e.load(e.in[0], at(k));
      Value better = e.b.create<arith::CmpFOp>(e.loc, arith::CmpFPredicate::OGT, v,
                                               loop.getRegionIterArgs()[0]);
      e.b.create<scf::YieldOp>(e.loc, ValueRange{select(e, better, v, loop.getRegionIterArgs()[0]),
                                                 select(e, better, k, loop.getRegionIterArgs()[1])});
    }
    Value best = e.b.create<arith::IndexCastOp>(e.loc, e.b.getI32Type(), loop.getResult(1));
    e.store(best, e.out[0], ivs);
  });
  return success();
}

/// The lane sums of the vectors `vs`, kLanes vectors at a time as one tree
/// of shuffles and adds: each level halves the lanes per vector and
/// doubles the vectors per register (a transpose folded into the sums), 3
/// operations per pair of registers a level, where summing each vector on
/// its own takes log2(kLanes) shuffles and adds apiece. Weight gradients
/// sum their accumulators' lanes so at the end of every batch chunk.
SmallVector<Value> laneSums(Emitter &e, ArrayRef<Value> vs) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  auto flags = arith::FastMathFlags::reassoc | arith::FastMathFlags::contract;
  SmallVector<Value> sums;
  for (size_t first = 0; first < vs.size(); first += kLanes) {
    SmallVector<Value> level(vs.begin() + first, vs.begin() + std::min<size_t>(vs.size(), first + kLanes));
    size_t count = level.size();
    level.resize(kLanes, zero);
    // A register holds `rows` vectors' partial sums, `width` lanes each.
    for (int64_t width = kLanes, rows = 1; width > 1; width /= 2, rows *= 2) {
      SmallVector<int64_t> lo, hi;
      for (int64_t from = 0; from < 2; ++from) // the pair's first register, then its second
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < width / 2; ++j) {
            lo.push_back(from * kLanes + r * width + j);
            hi.push_back(from * kLanes + r * width + width / 2 + j);
          }
      SmallVector<Value> next;
      for (size_t i = 0; i + 1 < level.size(); i += 2)
        next.push_back(b.create<arith::AddFOp>(loc, b.create<vector::ShuffleOp>(loc, level[i], level[i + 1], lo),
                                               b.create<vector::ShuffleOp>(loc, level[i], level[i + 1], hi), flags));
      level = std::move(next);
    }
    for (size_t i = 0; i < count; ++i)
      sums.push_back(b.create<vector::ExtractOp>(loc, level[0], static_cast<int64_t>(i)));
  }
  return sums;
}

} // namespace nnc::cpu::loops
