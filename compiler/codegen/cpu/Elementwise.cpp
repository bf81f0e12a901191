//===- Elementwise.cpp - elementwise ops as loops ---------------------------===//
//
// The elementwise ops (one value per element from the operands' elements at
// the same broadcast index) and dropout, as one loop nest or computed in
// place inside their consumer's loops.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LoopEmitter.h"
#include "compiler/codegen/common/ScalarMath.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace nnc::cpu::loops {

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//


Value select(Emitter &e, Value cond, Value a, Value b) {
  return e.b.create<arith::SelectOp>(e.loc, cond, a, b);
}
Value positive(Emitter &e, Value x) {
  return e.b.create<arith::CmpFOp>(e.loc, arith::CmpFPredicate::OGT, x, e.f32(0));
}

namespace {

/// codegen::scalarMath's primitives as arith and math ops, on scalars or
/// (in vector mode) vectors; f32 or i32 as the operands are.
struct LoopMath {
  using V = Value;
  Emitter &e;

  bool isFloat(Value v) { return isa<FloatType>(getElementTypeOrSelf(v.getType())); }
  template <typename F, typename I>
  Value arith2(Value a, Value b) {
    if (isFloat(a))
      return e.b.create<F>(e.loc, a, b);
    return e.b.create<I>(e.loc, a, b);
  }
  template <typename Op, typename... Args>
  Value make(Args... args) {
    return e.b.create<Op>(e.loc, args...);
  }

  Value c(double v) { return e.f32(v); }
  Value add(Value a, Value b) { return arith2<arith::AddFOp, arith::AddIOp>(a, b); }
  Value sub(Value a, Value b) { return arith2<arith::SubFOp, arith::SubIOp>(a, b); }
  Value mul(Value a, Value b) { return arith2<arith::MulFOp, arith::MulIOp>(a, b); }
  Value div(Value a, Value b) { return arith2<arith::DivFOp, arith::DivSIOp>(a, b); }
  Value neg(Value x) { return make<arith::NegFOp>(x); }
  Value exp(Value x) { return make<math::ExpOp>(x); }
  Value log(Value x) { return make<math::LogOp>(x); }
  Value log1p(Value x) { return make<math::Log1pOp>(x); }
  Value sqrt(Value x) { return make<math::SqrtOp>(x); }
  Value abs(Value x) { return make<math::AbsFOp>(x); }
  Value pow(Value a, Value b) {
    if (isFloat(a))
      return make<math::PowFOp>(a, b);
    // Integer powers go through f32 (exact for the small values labels take).
    Type f = e.b.getF32Type(), i = a.getType();
    Value p = make<math::PowFOp>(make<arith::SIToFPOp>(f, a), make<arith::SIToFPOp>(f, b));
    return make<arith::FPToSIOp>(i, p);
  }
  Value fma(Value a, Value b, Value c) { return make<math::FmaOp>(a, b, c); }
  Value min(Value a, Value b) { return make<arith::MinimumFOp>(a, b); }
  Value copysign(Value m, Value s) { return make<math::CopySignOp>(m, s); }
  Value greater(Value a, Value b) { return make<arith::CmpFOp>(arith::CmpFPredicate::OGT, a, b); }
  Value less(Value a, Value b) { return make<arith::CmpFOp>(arith::CmpFPredicate::OLT, a, b); }
  Value select(Value cond, Value a, Value b) { return make<arith::SelectOp>(cond, a, b); }
};

} // namespace

/// The elementwise ops: one value per output element from the operands'
/// elements at the same (broadcast) index, as codegen::scalarMath defines
/// it. They lower to one loop nest, or fuse into the loops of their
/// consumer.
const llvm::DenseMap<TypeID, Scalar> &scalars() {
  static const llvm::DenseMap<TypeID, Scalar> table = [] {
    llvm::DenseMap<TypeID, Scalar> t;
    for (TypeID id : nnops::elementwiseOps())
      t[id] = [](Emitter &e, function_ref<Value(unsigned)> operand) {
        LoopMath m{e};
        return *codegen::scalarMath<LoopMath>(e.op, m, operand);
      };
    return t;
  }();
  return table;
}

Value Emitter::at(ValueRange ivs) {
  const Scalar &f = scalars().find(op->getName().getTypeID())->second;
  return f(*this, [&](unsigned k) {
    Value v = op->getOperand(k);
    if (!flat)
      return read(k, broadcastIdx(v, ivs));
    if (v.getType() == op->getResult(0).getType())
      return read(k, ivs);
    return read(k, SmallVector<Value>(shapeOf(v).size(), idx(0))); // one element
  });
}

/// Whether a loop nest over `v`'s elements is worth splitting across
/// threads: a fork and join costs about as much as a few thousand
/// elementwise operations.
/// Size `i` of `v` for deciding about threads: batch-dependent sizes count
/// at a typical mini-batch of 64.
int64_t typicalDim(Value v, int64_t i) {
  int64_t d = cast<ShapedType>(v.getType()).getDimSize(i);
  return ShapedType::isDynamic(d) ? 64 : d;
}

bool worthThreads(Value v) {
  int64_t n = 1;
  for (int64_t i = 0; i < cast<ShapedType>(v.getType()).getRank(); ++i)
    n *= typicalDim(v, i);
  return n >= (1 << 15);
}

LogicalResult elementwise(Emitter &e) {
  if (e.flat) {
    // One loop over the elements, in chunks for the threads: trailing axes
    // of 3 (a convolution's kernel) or 10 would leave the inner loops too
    // short to vectorize.
    constexpr int64_t kChunk = 4096;
    Value n = e.dim(e.out[0], 0);
    Value chunks = e.b.create<arith::CeilDivUIOp>(e.loc, n, e.idx(kChunk));
    e.loops(ArrayRef<Value>{chunks}, [&](ValueRange c) {
      Value lo = e.mul(c[0], e.idx(kChunk));
      Value hi = e.b.create<arith::MinUIOp>(e.loc, n, e.add(lo, e.idx(kChunk)));
      e.b.create<scf::ForOp>(e.loc, lo, hi, e.idx(1), std::nullopt,
                             [&](OpBuilder &, Location, Value i, ValueRange) {
                               e.store(e.at(i), e.out[0], i);
                               e.b.create<scf::YieldOp>(e.loc);
                             });
    }, worthThreads(e.op->getResult(0)));
    return success();
  }
  SmallVector<Value> sizes = e.sizes(e.out[0]);
  if (e.lanes) {
    // Vectors along the last axis (lanes past its end neither read nor
    // stored).
    Value last = sizes.back();
    sizes.back() = e.b.create<arith::CeilDivUIOp>(e.loc, last, e.idx(e.lanes));
    e.loops(sizes, [&](ValueRange ivs) {
      SmallVector<Value> at(ivs);
      at.back() = e.mul(at.back(), e.idx(e.lanes));
      e.store(e.at(at), e.out[0], at);
    }, worthThreads(e.op->getResult(0)));
    return success();
  }
  e.loops(sizes, [&](ValueRange ivs) { e.store(e.at(ivs), e.out[0], ivs); }, worthThreads(e.op->getResult(0)));
  return success();
}

/// The splitmix64 finalizer, as in runtime/Random.h.
Value mix64(Emitter &e, Value z) {
  auto c = [&](uint64_t v) {
    return e.b.create<arith::ConstantOp>(e.loc, e.b.getI64IntegerAttr(static_cast<int64_t>(v)));
  };
  auto xorShift = [&](Value v, int s) {
    return e.b.create<arith::XOrIOp>(e.loc, v, e.b.create<arith::ShRUIOp>(e.loc, v, c(s)));
  };
  z = e.b.create<arith::AddIOp>(e.loc, z, c(0x9e3779b97f4a7c15ULL));
  z = e.b.create<arith::MulIOp>(e.loc, xorShift(z, 30), c(0xbf58476d1ce4e5b9ULL));
  z = e.b.create<arith::MulIOp>(e.loc, xorShift(z, 27), c(0x94d049bb133111ebULL));
  return xorShift(z, 31);
}

LogicalResult dropout(Emitter &e) {
  auto op = self<nnops::DropoutOp>(e);
  double rate = op.getRate().convertToDouble();
  SmallVector<Value> shape = e.sizes(e.out[0]);
  if (!op.getTraining()) {
    e.loops(shape, [&](ValueRange ivs) {
      e.store(e.load(e.in[0], ivs), e.out[0], ivs);
      e.store(e.f32(1.0), e.out[1], ivs);
    });
    return success();
  }
  OpBuilder &b = e.b;
  Location loc = e.loc;
  auto i64 = [&](uint64_t v) {
    return b.create<arith::ConstantOp>(loc, b.getI64IntegerAttr(static_cast<int64_t>(v)));
  };
  Value seed = e.load(e.rng, {e.idx(0)}), step = e.load(e.rng, {e.idx(1)});
  // A data-parallel rank's batch is rows [first, first + B) of the global
  // batch: counting from the first row's first element, it draws the masks
  // one process would draw for those rows.
  Value first = e.load(e.rng, {e.idx(2)});
  Value perRow = e.idx(1);
  for (size_t i = 1; i < shape.size(); ++i)
    perRow = e.mul(perRow, shape[i]);
  Value base = b.create<arith::MulIOp>(loc, first, b.create<arith::IndexCastOp>(loc, b.getI64Type(), perRow));
  // As the evaluator: stream = mix64(step * 1000003 + locationId),
  // key = mix64(seed ^ mix64(stream)), element i keeps if uniform >= rate.
  Value stream = mix64(e, b.create<arith::AddIOp>(loc, b.create<arith::MulIOp>(loc, step, i64(1000003)),
                                                  i64(nnops::locationId(op->getLoc()))));
  Value key = mix64(e, b.create<arith::XOrIOp>(loc, seed, mix64(e, stream)));
  float keep = static_cast<float>(1.0 / (1.0 - rate));
  e.loops(shape, [&](ValueRange ivs) {
    // The linear index of the element is the counter.
    Value lin = e.idx(0);
    for (size_t i = 0; i < ivs.size(); ++i)
      lin = e.add(e.mul(lin, shape[i]), ivs[i]);
    Value counter = b.create<arith::AddIOp>(loc, base, b.create<arith::IndexCastOp>(loc, b.getI64Type(), lin));
    Value bits = mix64(e, b.create<arith::AddIOp>(loc, key, counter));
    Value top = b.create<arith::ShRUIOp>(loc, bits, i64(11));
    Value u = b.create<arith::MulFOp>(loc, b.create<arith::UIToFPOp>(loc, b.getF64Type(), top),
                                      b.create<arith::ConstantOp>(loc, b.getF64FloatAttr(0x1.0p-53)));
    Value drop = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT, u,
                                         b.create<arith::ConstantOp>(loc, b.getF64FloatAttr(rate)));
    Value m = select(e, drop, e.f32(0.0), e.f32(keep));
    e.store(m, e.out[1], ivs);
    e.store(b.create<arith::MulFOp>(loc, e.load(e.in[0], ivs), m), e.out[0], ivs);
  });
  return success();
}

} // namespace nnc::cpu::loops

namespace nnc::cpu::loops {

//===----------------------------------------------------------------------===//
// Communication
//===----------------------------------------------------------------------===//

namespace {

/// The address of a contiguous buffer's first element, as an i64.
Value address(Emitter &e, Value m) {
  OpBuilder &b = e.b;
  Value base = b.create<memref::ExtractAlignedPointerAsIndexOp>(e.loc, m);
  auto meta = b.create<memref::ExtractStridedMetadataOp>(e.loc, m);
  Value bytes = e.mul(meta.getOffset(), e.idx(sizeof(float)));
  return b.create<arith::IndexCastOp>(e.loc, b.getI64Type(), e.add(base, bytes));
}

} // namespace

/// nn.all_reduce: a call into the runtime (nnc_all_reduce, runtime/
/// Distributed.h), which combines the buffer over the ranks with MPI.
LogicalResult allReduce(Emitter &e) {
  auto op = self<nnops::AllReduceOp>(e);
  OpBuilder &b = e.b;
  Value out = e.out[0], in = e.in.empty() ? Value() : e.in[0];
  SmallVector<Value> shape = e.sizes(out);
  if (!in || (!e.gen.empty() && e.gen[0])) { // computed in place: into `out` first
    e.loops(shape, [&](ValueRange ivs) { e.store(e.read(0, ivs), out, ivs); });
    in = out;
  }
  Value n = e.idx(1);
  for (Value d : shape)
    n = e.mul(n, d);
  constexpr StringLiteral kName = "nnc_all_reduce";
  if (!e.module.lookupSymbol(kName)) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(e.module.getBody());
    Type i64 = b.getI64Type();
    b.create<func::FuncOp>(e.loc, kName, b.getFunctionType({i64, i64, i64, i64}, {})).setPrivate();
  }
  Value sum = b.create<arith::ConstantOp>(e.loc, b.getI64IntegerAttr(op.getSum() ? 1 : 0));
  b.create<func::CallOp>(e.loc, kName, TypeRange{},
                         ValueRange{address(e, in), address(e, out),
                                    b.create<arith::IndexCastOp>(e.loc, b.getI64Type(), n), sum});
  return success();
}

} // namespace nnc::cpu::loops
