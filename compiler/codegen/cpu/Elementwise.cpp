//===- Elementwise.cpp - elementwise ops as loops ---------------------------===//
//
// The elementwise ops (one value per element from the operands' elements at
// the same broadcast index) and dropout, as one loop nest or computed in
// place inside their consumer's loops.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LoopEmitter.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace nnc::cpu::loops {

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//


Scalar unary(std::function<Value(Emitter &, Value)> f) {
  return [f](Emitter &e, function_ref<Value(unsigned)> operand) { return f(e, operand(0)); };
}

Value select(Emitter &e, Value cond, Value a, Value b) {
  return e.b.create<arith::SelectOp>(e.loc, cond, a, b);
}
Value positive(Emitter &e, Value x) {
  return e.b.create<arith::CmpFOp>(e.loc, arith::CmpFPredicate::OGT, x, e.f32(0));
}

Scalar binary(std::function<Value(Emitter &, Value, Value)> ff,
              std::function<Value(Emitter &, Value, Value)> fi) {
  return [ff, fi](Emitter &e, function_ref<Value(unsigned)> operand) {
    Value a = operand(0), c = operand(1);
    return isa<FloatType>(getElementTypeOrSelf(a.getType())) ? ff(e, a, c) : fi(e, a, c);
  };
}

template <typename F, typename I>
Scalar arithmetic() {
  return binary([](Emitter &e, Value a, Value c) -> Value { return e.b.create<F>(e.loc, a, c); },
                [](Emitter &e, Value a, Value c) -> Value { return e.b.create<I>(e.loc, a, c); });
}

template <typename OpTy>
std::pair<TypeID, Scalar> scalar(Scalar f) {
  return {TypeID::get<OpTy>(), std::move(f)};
}

/// The elementwise ops: one value per output element from the operands'
/// elements at the same (broadcast) index. They lower to one loop nest, or
/// fuse into the loops of their consumer.
const llvm::DenseMap<TypeID, Scalar> &scalars() {
  static const llvm::DenseMap<TypeID, Scalar> table = [] {
    llvm::DenseMap<TypeID, Scalar> t;
    auto add = [&](std::pair<TypeID, Scalar> e) { t.insert(std::move(e)); };
    using E = Emitter;
    add(scalar<nnops::NegOp>(unary([](E &e, Value x) -> Value { return e.b.create<arith::NegFOp>(e.loc, x); })));
    add(scalar<nnops::ExpOp>(unary([](E &e, Value x) -> Value { return e.b.create<math::ExpOp>(e.loc, x); })));
    add(scalar<nnops::LogOp>(unary([](E &e, Value x) -> Value { return e.b.create<math::LogOp>(e.loc, x); })));
    add(scalar<nnops::SqrtOp>(unary([](E &e, Value x) -> Value { return e.b.create<math::SqrtOp>(e.loc, x); })));
    add(scalar<nnops::AbsOp>(unary([](E &e, Value x) -> Value { return e.b.create<math::AbsFOp>(e.loc, x); })));
    add(scalar<nnops::TanhOp>(unary([](E &e, Value x) -> Value {
      // Below |x| = 0.625 an odd polynomial, x + x^3 P(x^2) (Cephes'
      // tanhf coefficients); above, 1 - 2 / (e^(2|x|) + 1), which rounds
      // to 1 from |x| = 9 on (clamped there, so e^(2|x|) stays finite).
      // Within 1-2 ULPs (CompiledMath), vectorizable, one exp and one
      // division (the form expm1(2x) / (expm1(2x) + 2) cost an exp, a log
      // and two divisions: 52 cycles a vector). The sign is x's, -0
      // included.
      OpBuilder &b = e.b;
      Location loc = e.loc;
      Value a = b.create<arith::MinimumFOp>(loc, b.create<math::AbsFOp>(loc, x), e.f32(9.0));
      Value z = b.create<arith::MulFOp>(loc, x, x);
      Value p = e.f32(-5.70498872745e-3);
      for (double c : {2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1})
        p = b.create<math::FmaOp>(loc, p, z, e.f32(c));
      Value small = b.create<math::FmaOp>(loc, b.create<arith::MulFOp>(loc, x, z), p, x);
      Value ex = b.create<math::ExpOp>(loc, b.create<arith::AddFOp>(loc, a, a));
      Value large = b.create<arith::SubFOp>(
          loc, e.f32(1.0), b.create<arith::DivFOp>(loc, e.f32(2.0), b.create<arith::AddFOp>(loc, ex, e.f32(1.0))));
      Value near = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT, a, e.f32(0.625));
      return b.create<math::CopySignOp>(loc, select(e, near, small, large), x);
    })));
    add(scalar<nnops::SigmoidOp>(unary([](E &e, Value x) -> Value {
      Value ex = e.b.create<math::ExpOp>(e.loc, e.b.create<arith::NegFOp>(e.loc, x));
      return e.b.create<arith::DivFOp>(e.loc, e.f32(1.0), e.b.create<arith::AddFOp>(e.loc, e.f32(1.0), ex));
    })));
    add(scalar<nnops::ReluOp>(unary([](E &e, Value x) { return select(e, positive(e, x), x, e.f32(0)); })));
    add(scalar<nnops::StepOp>(unary([](E &e, Value x) { return select(e, positive(e, x), e.f32(1), e.f32(0)); })));
    add(scalar<nnops::IdentityOp>(unary([](E &, Value x) { return x; })));
    add(scalar<nnops::SoftplusOp>(unary([](E &e, Value x) -> Value {
      // max(x, 0) + log1p(exp(-|x|)): no overflow for large |x|.
      Value m = select(e, positive(e, x), x, e.f32(0));
      Value t = e.b.create<math::ExpOp>(e.loc, e.b.create<arith::NegFOp>(e.loc, e.b.create<math::AbsFOp>(e.loc, x)));
      return e.b.create<arith::AddFOp>(e.loc, m, e.b.create<math::Log1pOp>(e.loc, t));
    })));
    add(scalar<nnops::LeakyReluOp>([](E &e, function_ref<Value(unsigned)> operand) {
      double a = self<nnops::LeakyReluOp>(e).getAlpha().convertToDouble();
      Value x = operand(0);
      return select(e, positive(e, x), x, e.b.create<arith::MulFOp>(e.loc, x, e.f32(a)));
    }));
    add(scalar<nnops::AddOp>(arithmetic<arith::AddFOp, arith::AddIOp>()));
    add(scalar<nnops::SubOp>(arithmetic<arith::SubFOp, arith::SubIOp>()));
    add(scalar<nnops::MulOp>(arithmetic<arith::MulFOp, arith::MulIOp>()));
    add(scalar<nnops::DivOp>(arithmetic<arith::DivFOp, arith::DivSIOp>()));
    add(scalar<nnops::PowOp>(binary(
        [](E &e, Value a, Value c) -> Value { return e.b.create<math::PowFOp>(e.loc, a, c); },
        [](E &e, Value a, Value c) -> Value {
          // Integer powers go through f32 (exact for the small values labels take).
          Type f = e.b.getF32Type(), i = a.getType();
          Value p = e.b.create<math::PowFOp>(e.loc, e.b.create<arith::SIToFPOp>(e.loc, f, a),
                                             e.b.create<arith::SIToFPOp>(e.loc, f, c));
          return e.b.create<arith::FPToSIOp>(e.loc, i, p);
        })));
    // The second operand gives only the shape.
    add(scalar<nnops::BroadcastLikeOp>([](E &, function_ref<Value(unsigned)> operand) { return operand(0); }));
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
  e.loops(e.sizes(e.out[0]), [&](ValueRange ivs) { e.store(e.at(ivs), e.out[0], ivs); },
          worthThreads(e.op->getResult(0)));
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
    Value counter = b.create<arith::IndexCastOp>(loc, b.getI64Type(), lin);
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
