//===- LowerToLoops.cpp - nn functions to loops over buffers --------------===//
//
// One lowering per core op, in one table keyed by TypeID, each building the
// op's loop nest with the helpers of `Emitter`. Semantics are those of the
// reference evaluator's kernels (compiler/reference/Evaluator.cpp), which
// the CPU tests compare against.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LowerToLoops.h"

#include "compiler/reference/Evaluator.h"
#include "compiler/transforms/Fusion.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/IR/Builders.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/Support/Path.h"
#include "llvm/TargetParser/Host.h"

#include <deque>
#include <functional>

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace {

MemRefType memrefOf(Type t) {
  auto rt = cast<RankedTensorType>(t);
  return MemRefType::get(rt.getShape(), rt.getElementType());
}

ArrayRef<int64_t> shapeOf(Value v) { return cast<ShapedType>(v.getType()).getShape(); }

bool worthThreads(Value v);

struct Emitter {
  OpBuilder &b;
  Location loc;
  Operation *op;
  SmallVector<Value> in, out; // operand and result buffers (no buffer: fused)
  /// Per operand, when its producer is fused into this op: computes the
  /// operand's value at an index, in place of a load.
  SmallVector<std::function<Value(ValueRange)>> gen;
  Value rng;                  // memref<2xi64>: seed, step
  Value batch;                // index: the batch size of this call
  unsigned &globals;          // counter for unique global names
  ModuleOp module;
  StringRef kernel;           // the function's name, prefix of its globals' names
  const cpu::BatchScaling *scaling;

  /// Vector mode (an epilogue of a vectorized kernel): with `lanes` > 0,
  /// element values are vectors of `lanes` consecutive elements along the
  /// last axis, from the index given; literals are splats, and reads of
  /// operands constant along that axis are broadcasts.
  int64_t lanes = 0;
  /// Flat mode (an elementwise kernel whose buffers all have the result's
  /// shape, or one element; or a reduction's producers): buffers of that
  /// shape are views with trailing axes collapsed (1-D for the elementwise
  /// kernel) and element indices are into them.
  bool flat = false;
  /// For a reduction whose trailing axes from `flatTail` on are reduced and
  /// whose operand is computed by fused producers: those axes are one axis
  /// of the producers' buffers (collapsed views) and of their indices.
  int64_t flatTail = 0;

  Value idx(int64_t v) { return b.create<arith::ConstantIndexOp>(loc, v); }
  Value f32(double v) { return splat(b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(v))); }
  /// A scalar as an element value: itself, or its splat in vector mode.
  Value splat(Value s) {
    return lanes ? b.create<vector::BroadcastOp>(loc, VectorType::get({lanes}, s.getType()), s).getResult() : s;
  }
  Value load(Value m, ValueRange ivs) { return b.create<memref::LoadOp>(loc, m, ivs); }
  /// Operand `k` at index `ivs` (in its own shape): loaded, or computed by
  /// its fused producer.
  Value read(unsigned k, ValueRange ivs) {
    if (k < gen.size() && gen[k])
      return gen[k](ivs);
    if (!lanes)
      return load(in[k], ivs);
    ArrayRef<int64_t> s = cast<ShapedType>(op->getOperand(k).getType()).getShape();
    if (s.empty() || s.back() == 1)
      return splat(load(in[k], ivs));
    Type t = cast<MemRefType>(in[k].getType()).getElementType();
    Value pad = b.create<arith::ConstantOp>(loc, b.getZeroAttr(t));
    return b.create<vector::TransferReadOp>(loc, VectorType::get({lanes}, t), in[k], ivs, pad,
                                            ArrayRef<bool>{false});
  }
  /// An elementwise op's value at output index `ivs`.
  Value at(ValueRange ivs);
  /// With an epilogue (the op's elementwise consumer, fused into it),
  /// stores the consumer's value for the op's value `v` at `ivs` instead.
  std::function<void(Value v, ValueRange ivs)> epilogue;
  /// Stores the op's (first) result `v` at `ivs`, through the epilogue.
  void emit(Value v, ValueRange ivs) {
    if (epilogue)
      epilogue(v, ivs);
    else
      store(v, out[0], ivs);
  }
  void store(Value v, Value m, ValueRange ivs) {
    if (isa<VectorType>(v.getType()))
      b.create<vector::TransferWriteOp>(loc, v, m, ivs, ArrayRef<bool>{false});
    else
      b.create<memref::StoreOp>(loc, v, m, ivs);
  }

  /// Size `i` of buffer `m`: a constant, or read from its descriptor when
  /// it depends on the batch size.
  Value dim(Value m, int64_t i) {
    auto t = cast<MemRefType>(m.getType());
    if (!t.isDynamicDim(i))
      return idx(t.getDimSize(i));
    return b.create<memref::DimOp>(loc, m, i);
  }
  /// Size `i` of the nn value `v` (buffer or not).
  Value valueDim(Value v, int64_t i) {
    auto t = cast<RankedTensorType>(v.getType());
    if (!t.isDynamicDim(i))
      return idx(t.getDimSize(i));
    return mul(batch, idx(scaling->lookup(v)[i]));
  }
  SmallVector<Value> sizes(Value m) {
    SmallVector<Value> r;
    for (int64_t i = 0; i < cast<MemRefType>(m.getType()).getRank(); ++i)
      r.push_back(dim(m, i));
    return r;
  }
  Value mul(Value x, Value y) { return b.create<arith::MulIOp>(loc, x, y); }
  Value add(Value x, Value y) { return b.create<arith::AddIOp>(loc, x, y); }
  Value sub(Value x, Value y) { return b.create<arith::SubIOp>(loc, x, y); }
  /// The number of threads a parallel loop runs on (OpenMP's, set by
  /// `--threads` through OMP_NUM_THREADS), as an index of at least 1.
  Value threads() {
    constexpr StringLiteral kName = "omp_get_max_threads";
    if (!module.lookupSymbol(kName)) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(module.getBody());
      b.create<func::FuncOp>(loc, kName, b.getFunctionType({}, {b.getI32Type()})).setPrivate();
    }
    Value n = b.create<func::CallOp>(loc, kName, TypeRange{b.getI32Type()}, ValueRange{}).getResult(0);
    return b.create<arith::MaxSIOp>(loc, idx(1), b.create<arith::IndexCastOp>(loc, b.getIndexType(), n));
  }
  /// An index value as f32.
  Value toF32(Value i) {
    return b.create<arith::SIToFPOp>(loc, b.getF32Type(),
                                     b.create<arith::IndexCastOp>(loc, b.getI64Type(), i));
  }

  void loops(ArrayRef<int64_t> bounds, function_ref<void(ValueRange)> body,
             bool parallel = false) {
    SmallVector<Value> v;
    for (int64_t n : bounds)
      v.push_back(idx(n));
    loops(ArrayRef<Value>(v), body, parallel);
  }
  /// Nested loops over `bounds`; `body` gets the induction variables. With
  /// `parallel`, the outermost loop is an scf.parallel, which runs across
  /// threads: its iterations must write disjoint elements.
  void loops(ArrayRef<Value> bounds, function_ref<void(ValueRange)> body,
             bool parallel = false) {
    SmallVector<Value> ivs;
    std::function<void(size_t)> rec = [&](size_t d) {
      if (d == bounds.size()) {
        body(ivs);
        return;
      }
      OpBuilder::InsertionGuard guard(b);
      std::optional<int64_t> trips = getConstantIntValue(bounds[0]);
      if (d == 0 && parallel && (!trips || *trips > 1)) {
        auto f = b.create<scf::ParallelOp>(loc, ValueRange{idx(0)}, ValueRange{bounds[0]},
                                           ValueRange{idx(1)});
        b.setInsertionPointToStart(f.getBody());
        ivs.push_back(f.getInductionVars()[0]);
      } else {
        auto f = b.create<scf::ForOp>(loc, idx(0), bounds[d], idx(1));
        b.setInsertionPointToStart(f.getBody());
        ivs.push_back(f.getInductionVar());
      }
      rec(d + 1);
      ivs.pop_back();
    };
    rec(0);
  }
  void fill(Value m, Value v) {
    loops(sizes(m), [&](ValueRange ivs) { store(v, m, ivs); }, worthThreads(m));
  }
  /// Indices into `operand` for output indices `ivs`, numpy-broadcast.
  SmallVector<Value> broadcastIdx(Value operand, ValueRange ivs) {
    ArrayRef<int64_t> s = shapeOf(operand);
    size_t lead = ivs.size() - s.size();
    SmallVector<Value> r;
    for (size_t i = 0; i < s.size(); ++i)
      r.push_back(s[i] == 1 ? idx(0) : ivs[lead + i]);
    return r;
  }
  /// `iv * stride - pad + k`, and whether it lies in [0, size).
  /// The input position of output position `iv` at kernel tap `k`.
  Value tap(Value iv, int64_t stride, int64_t pad, Value k) {
    return b.create<arith::AddIOp>(
        loc, b.create<arith::SubIOp>(loc, b.create<arith::MulIOp>(loc, iv, idx(stride)), idx(pad)),
        k);
  }
  std::pair<Value, Value> window(Value iv, int64_t stride, int64_t pad, Value k, int64_t size) {
    Value p = tap(iv, stride, pad, k);
    Value ok = b.create<arith::AndIOp>(
        loc, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sge, p, idx(0)),
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, p, idx(size)));
    return {p, ok};
  }
  /// Runs `then` under an scf.if.
  void when(Value cond, function_ref<void()> then) {
    auto i = b.create<scf::IfOp>(loc, cond, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&i.getThenRegion().front());
    then();
  }
  /// The sums of `count` terms over the loop nest `bounds`, kept in
  /// registers (one pass over the data for several sums).
  SmallVector<Value> sumsOver(ArrayRef<Value> bounds, unsigned count,
                              function_ref<SmallVector<Value>(ValueRange)> terms,
                              function_ref<void(Value)> atOuter = nullptr) {
    auto flags = arith::FastMathFlags::reassoc | arith::FastMathFlags::contract;
    SmallVector<Value> ivs;
    std::function<SmallVector<Value>(size_t, ValueRange)> rec = [&](size_t d, ValueRange acc) {
      SmallVector<Value> out;
      if (d == bounds.size()) {
        SmallVector<Value> t = terms(ivs);
        for (unsigned k = 0; k < count; ++k)
          out.push_back(b.create<arith::AddFOp>(loc, acc[k], t[k], flags));
        return out;
      }
      auto f = b.create<scf::ForOp>(loc, idx(0), bounds[d], idx(1), acc);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(f.getBody());
      ivs.push_back(f.getInductionVar());
      if (d == 0 && atOuter)
        atOuter(f.getInductionVar());
      b.create<scf::YieldOp>(loc, rec(d + 1, f.getRegionIterArgs()));
      ivs.pop_back();
      return SmallVector<Value>(f.getResults());
    };
    SmallVector<Value> init(count, f32(0.0));
    return rec(0, init);
  }
  /// The sum of `term` over the loop nest `bounds`, kept in a register.
  Value sumOver(ArrayRef<Value> bounds, function_ref<Value(ValueRange)> term) {
    return sumsOver(bounds, 1, [&](ValueRange ivs) { return SmallVector<Value>{term(ivs)}; })[0];
  }
  void accumulate(Value v, Value m, ValueRange ivs) {
    store(b.create<arith::AddFOp>(loc, load(m, ivs), v), m, ivs);
  }
  /// m[ivs] += x * y, allowed to contract into one fused multiply-add.
  void multiplyAdd(Value x, Value y, Value m, ValueRange ivs) {
    auto contract = arith::FastMathFlags::contract;
    Value p = b.create<arith::MulFOp>(loc, x, y, contract);
    store(b.create<arith::AddFOp>(loc, load(m, ivs), p, contract), m, ivs);
  }
};

using Lowering = std::function<LogicalResult(Emitter &)>;

template <typename OpTy>
OpTy self(Emitter &e) {
  return cast<OpTy>(e.op);
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

/// The value of an elementwise op at one output index, its operands read
/// through `operand(k)` (broadcast to that index).
using Scalar = std::function<Value(Emitter &, function_ref<Value(unsigned)> operand)>;

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

/// Lanes of f32 in the host's widest vector register: 16 with AVX-512, else
/// 8 (AVX2). Kernels are written in vectors of this many lanes; wider ones
/// would be split by LLVM, and on AVX2 its split of 16-lane masked loads
/// read the masked-off half (tests/unit CpuConvBlocking caught NaNs from
/// past a buffer's end).
static const int64_t kLanes = [] {
  llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
  return features.lookup("avx512f") ? int64_t(16) : int64_t(8);
}();

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
  // Reduced leading axes, kept trailing axes (column sums, bias gradients
  // over the batch): up to 4 vectors of 16 outputs accumulate down the
  // reduced axes, each step contiguous loads (or vectors of the fused
  // producers), instead of one output at a time walking the input a row
  // apart per element. The outputs go out as vectors.
  int64_t lastKept = kept.empty() ? -1 : kept.back();
  bool leading = e.lanes == kLanes;
  assert((!e.lanes || (leading && columnSums(e.op))) && "a reduction in vector mode sums columns");
  if (leading) {
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
    // instead touches a new page every load: 4096x4096 column sums 6.3 ->
    // 2.9-3.2 ms). Every output still sums its rows in order, as in
    // registers.
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
    SmallVector<Value> chunks(outer);
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

/// A register- and cache-blocked matrix product C = A B (row-major, f32).
/// The register block: kRows (4, 6, or 12 one vector wide) rows of C times kVectors vectors of kLanes
/// columns, accumulated in vector registers over a block of kDepth steps
/// of the reduction (an outer product per k: kVectors loads of a row of B,
/// kRows broadcasts from A), then carried to the next depth block. The
/// cache block: a group of up to kGroupMax row blocks runs each (column
/// block, depth block) in turn; the kDepth x kVectors*kLanes panel of B
/// (32 KiB) is first copied to a contiguous buffer on the thread's stack
/// (B's rows are a power of two apart in large products, and read in place
/// the panel evicts itself from L1), then served from L1 to every row
/// block of the group. Groups
/// are as few as the thread count allows (a multiple of it, decided at run
/// time) and run in parallel when the product is large enough. Leftover
/// rows take one-row blocks; the last column block of a ragged width uses
/// masked loads and stores, unpacked. Every element of C sums its products
/// in k order (between depth blocks through a contiguous buffer of the
/// group's partial sums, exact in f32), so the result does not depend on
/// the blocking or the thread count.
/// Measured on 1024^3 and 2048^3 (AVX-512, 1 thread): 64-deep blocks of 4
/// row blocks of 4 rows unpacked gave 103 and 71 GFLOP/s; packed, 128-deep
/// blocks of up to 64 row blocks 187 and 175 (4 rows), 178 and 187 (6).
constexpr int64_t kVectors = 4, kDepth = 128, kGroupMax = 64;

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

  // One register block: `rows` rows from i0, `vectors` vectors from column
  // j0, reduction steps [k0, k1).
  // `local`, when given, holds the partial sums between depth blocks
  // (row i0 at its row i0 - localBase): only the last depth block stores
  // to C.
  auto block = [&](Value i0, int64_t rows, Value j0, int64_t vectors, bool inBounds, Value k0,
                   Value k1, Value packed, Value local, Value localBase) {
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
  };
  // Every column block, in depth blocks, for row blocks [rb0, rb1) of
  // `rows` rows each, from row `base`.
  auto columns = [&](Value rb0, Value rb1, int64_t rows, Value pack, Value base, Value local = Value()) {
    auto depthBlocks = [&](Value j0, int64_t vectors, bool inBounds) {
      // A full-width panel of B is first copied to `pack` (contiguous rows
      // of 64 floats): B's rows are a large power of two apart in the big
      // products, and a panel read in place evicts itself from L1.
      Value packed = inBounds ? pack : Value();
      Value sums = packed ? local : Value(), sumsBase = e.add(base, e.mul(rb0, e.idx(rows)));
      b.create<scf::ForOp>(loc, e.idx(0), K, e.idx(kDepth), std::nullopt,
                           [&](OpBuilder &, Location, Value k0, ValueRange) {
                             Value k1 = b.create<arith::MinSIOp>(loc, K, e.add(k0, e.idx(kDepth)));
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
                                                      loc, e.idx(kDepth),
                                                      b.create<arith::MaxUIOp>(loc, e.idx(1), e.sub(rb1, rb0)))
                                                : Value();
                             b.create<scf::ForOp>(loc, rb0, rb1, e.idx(1), std::nullopt,
                                                  [&](OpBuilder &, Location, Value rb, ValueRange) {
                                                    if (packed) {
                                                      Value r0 = e.add(k1, e.mul(e.sub(rb, rb0), per));
                                                      Value r1 = b.create<arith::MinSIOp>(
                                                          loc, K, b.create<arith::MinSIOp>(
                                                                      loc, e.add(k1, e.idx(kDepth)), e.add(r0, per)));
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
    const int64_t width = kLanes * kVectors;
    std::optional<int64_t> n = getConstantIntValue(N);
    if (!n) {
      b.create<scf::ForOp>(loc, e.idx(0), N, e.idx(width), std::nullopt,
                           [&](OpBuilder &, Location, Value j0, ValueRange) {
                             depthBlocks(j0, kVectors, false);
                             b.create<scf::YieldOp>(loc);
                           });
      return;
    }
    int64_t full = *n / width, rest = *n % width;
    if (full > 0)
      b.create<scf::ForOp>(loc, e.idx(0), e.idx(full * width), e.idx(width), std::nullopt,
                           [&](OpBuilder &, Location, Value j0, ValueRange) {
                             depthBlocks(j0, kVectors, true);
                             b.create<scf::YieldOp>(loc);
                           });
    if (rest > 0)
      depthBlocks(e.idx(full * width), (rest + kLanes - 1) / kLanes, false);
  };
  // Register blocks of 6 rows (24 accumulators: 24 FMAs per 4 loads of B
  // and 6 broadcasts), the rows left over in a block of 4 (16
  // accumulators) and then one at a time; blocks of 4 throughout where
  // that leaves fewer single rows (32 rows: 8 x 4, not 5 x 6 + 2 x 1).
  // A product one vector wide (a classifier's 10 outputs) takes blocks of
  // 12 rows: 6 accumulators would leave the multiply-add units waiting on
  // their latency (and only 10 of 16 lanes count).
  int64_t typicalRows = typicalDim(e.op->getOperand(0), 0);
  std::optional<int64_t> width = getConstantIntValue(N);
  const int64_t kRows = width && *width <= kLanes                                       ? 12
                        : typicalRows >= 192 || (typicalRows % 6) % 4 <= typicalRows % 4 ? 6
                                                                                         : 4;
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
  // (one thread runs the MNIST MLP's first product, 10 blocks, as one group
  // at 178 GFLOP/s; as the four groups two threads want, at 147).
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
    columns(rb0, rb1, kRows, pack && parallel ? newPack() : shared, e.idx(0),
            pack && parallel ? newSums() : sharedSums);
  }, parallel);
  Value done = e.mul(blocks, e.idx(kRows));
  if (kRows > 4) {
    Value quads = b.create<arith::DivUIOp>(loc, e.sub(M, done), e.idx(4));
    columns(e.idx(0), quads, 4, Value(), done);
    done = e.add(done, e.mul(quads, e.idx(4)));
  }
  columns(done, M, 1, Value(), e.idx(0));
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

/// The output channels a convolution kernel keeps in registers at once:
/// the largest divisor of `channels` up to `most` that keeps `perChannel`
/// accumulators each within `accumulators`. (Powers of two only left 6
/// channels, LeNet's C3 input gradient, with blocks of 2: two FMA chains,
/// 36 GFLOP/s.)
int64_t channelBlock(int64_t channels, int64_t perChannel, int64_t accumulators, int64_t most) {
  for (int64_t c = most; c > 1; --c)
    if (channels % c == 0 && c * perChannel <= accumulators)
      return c;
  return 1;
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
  int64_t block = channelBlock(og, vectors, 16, 16);
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
  // taps are 576 KiB: on the scalar loop below they ran at 14 GFLOP/s).
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
  // the output gradient from L2 per multiply-add (64 channels of 3x3
  // kernels: 112 GFLOP/s with blocks of 4 channels by one kernel row, 134
  // with 8, both reading the output gradient from L2 at its limit; 151-158
  // with 2 channels by all 9 taps). An output row then meets input rows
  // past the edge for some kernel rows: their loads are masked to zero.
  // With one or two taps, a block of input channels as well: each
  // output-gradient vector then serves every channel of it (1x1 kernels,
  // 8 output channels by one: 36 GFLOP/s, loads outnumbering the
  // multiply-adds).
  bool allRows = kh * kw <= 12;
  int64_t taps = allRows ? kh * kw : kw;
  int64_t block = channelBlock(og, taps <= 2 ? 4 * taps : taps, 24, 8);
  int64_t inBlock = taps <= 2 ? channelBlock(cg, block * taps, 24, 8) : 1;
  int64_t perIn = block * taps; // accumulators per input channel of the block
  auto vt = VectorType::get({kLanes}, b.getF32Type());
  Value zero = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(vt, 0.0f));
  Value none = b.create<arith::ConstantOp>(
      loc, DenseElementsAttr::get(VectorType::get({kLanes}, b.getI1Type()), false));
  // The batch in chunks whose output gradient for one channel block fits
  // in half of L2, each chunk's sums added to the previous ones': every
  // (input channel, kernel row) pass re-reads that block, from L2 instead
  // of L3 (VGG-small's 32 x 32 x 32 x 32 gradient: a 1 MiB block).
  int64_t chunk = std::max<int64_t>(1, (512 << 10) / (block * y[2] * y[3] * 4));
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

LogicalResult maxPool(Emitter &e) {
  auto op = self<nnops::MaxPool2dOp>(e);
  ArrayRef<int64_t> k = op.getKernel(), st = op.getStride(), pd = op.getPadding();
  ArrayRef<int64_t> in = shapeOf(e.in[0]), out = shapeOf(e.out[0]);
  if (k[0] == 2 && k[1] == 2 && st[0] == 2 && st[1] == 2 && pd[0] == 0 && pd[1] == 0 && !e.epilogue &&
      in[2] >= 2 * out[2] && in[3] >= 2 * out[3]) {
    maxPool2x2(e);
    return success();
  }
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

LogicalResult batchNorm(Emitter &e) {
  auto op = self<nnops::BatchNormOp>(e);
  SmallVector<Value> x = e.sizes(e.in[0]);
  SmallVector<Value> rest = {x[0]}; // the axes reduced for one channel
  rest.append(x.begin() + 2, x.end());
  Value count = e.idx(1);
  for (Value d : rest)
    count = e.mul(count, d);
  OpBuilder &b = e.b;
  Location loc = e.loc;
  e.loops(ArrayRef<Value>{x[1]}, [&](ValueRange cv) {
    Value c = cv[0];
    auto at = [&](ValueRange r) {
      SmallVector<Value> i = {r[0], c};
      i.append(r.begin() + 1, r.end());
      return i;
    };
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
  SmallVector<Value> rest = {sizes[0]};
  rest.append(sizes.begin() + 2, sizes.end());
  Value count = e.idx(1);
  for (Value d : rest)
    count = e.mul(count, d);
  OpBuilder &b = e.b;
  Location loc = e.loc;
  e.loops(ArrayRef<Value>{sizes[1]}, [&](ValueRange cv) {
    Value c = cv[0];
    auto at = [&](ValueRange r) {
      SmallVector<Value> i = {r[0], c};
      i.append(r.begin() + 1, r.end());
      return i;
    };
    Value n = e.toF32(count);
    // The channel's run in sample i + 1 of each buffer, asked for (a
    // prefetch per 64-byte line) while sample i is read: runs of a channel
    // lie a sample apart, too far for the hardware prefetcher to follow
    // (MNIST CNN: 0.67 -> 0.64 ms in the fast phases of this machine,
    // 0.82 -> 0.75 in the slow ones). Batch norm's forward pass gained
    // nothing from it.
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

//===----------------------------------------------------------------------===//
// The table
//===----------------------------------------------------------------------===//

template <typename OpTy>
std::pair<TypeID, Lowering> entry(Lowering l) {
  return {TypeID::get<OpTy>(), std::move(l)};
}

const llvm::DenseMap<TypeID, Lowering> &lowerings() {
  static const llvm::DenseMap<TypeID, Lowering> table = [] {
    llvm::DenseMap<TypeID, Lowering> t;
    auto add = [&](std::pair<TypeID, Lowering> e) { t.insert(std::move(e)); };
    using E = Emitter;
    add(entry<nnops::ConstantOp>(constant));
    for (auto &[id, f] : scalars())
      t.insert({id, elementwise});
    add(entry<nnops::DropoutOp>(dropout));
    add(entry<nnops::TransposeOp>(transpose));
    add(entry<nnops::SliceOp>(slice));
    add(entry<nnops::ConcatOp>(concat));
    add(entry<nnops::ReduceSumOp>([](E &e) { return reduce(e, false); }));
    add(entry<nnops::ReduceMaxOp>([](E &e) { return reduce(e, true); }));
    add(entry<nnops::CountOp>(count));
    add(entry<nnops::MatmulOp>(matmul));
    add(entry<nnops::OneHotOp>(oneHot));
    add(entry<nnops::ArgmaxOp>(argmax));
    add(entry<nnops::Conv2dOp>(conv2d));
    add(entry<nnops::Conv2dGradInputOp>(conv2dGradInput));
    add(entry<nnops::Conv2dGradWeightOp>(conv2dGradWeight));
    add(entry<nnops::MaxPool2dOp>(maxPool));
    add(entry<nnops::MaxPool2dGradOp>(maxPoolGrad));
    add(entry<nnops::AvgPool2dOp>([](E &e) { return avgPool(e, false); }));
    add(entry<nnops::AvgPool2dGradOp>([](E &e) { return avgPool(e, true); }));
    add(entry<nnops::ChannelWindowSumOp>(channelWindowSum));
    add(entry<nnops::BatchNormOp>(batchNorm));
    add(entry<nnops::BatchNormGradOp>(batchNormGrad));
    return t;
  }();
  return table;
}

} // namespace

/// A location as the profile shows it: `file:line:col`, or `grad of ...`.
static std::string where(Location loc) {
  if (auto n = dyn_cast<NameLoc>(loc))
    return n.getName().str() + " of " + where(n.getChildLoc());
  if (auto f = dyn_cast<FileLineColLoc>(loc))
    return (llvm::sys::path::filename(f.getFilename().getValue()) + ":" + Twine(f.getLine()) + ":" +
            Twine(f.getColumn()))
        .str();
  if (auto f = dyn_cast<FusedLoc>(loc))
    return f.getLocations().empty() ? "?" : where(f.getLocations().front());
  return "?";
}

LogicalResult cpu::lowerToLoops(func::FuncOp fn, const BatchScaling &scaling,
                                ModuleOp target, StringRef name, bool profile) {
  MLIRContext *ctx = fn.getContext();
  // Kernels formed by the fusion pass, flattened (see below).
  std::vector<SmallVector<Operation *>> groups = inlineKernels(fn);
  ctx->loadDialect<arith::ArithDialect, math::MathDialect, memref::MemRefDialect, scf::SCFDialect,
                   vector::VectorDialect>();
  OpBuilder b(ctx);
  Location loc = fn.getLoc();
  Type i8 = b.getI8Type();
  auto rawType = MemRefType::get({ShapedType::kDynamic}, i8);
  auto argType = [&](Type t) -> Type {
    auto m = memrefOf(t);
    return m.hasStaticShape() ? Type(m) : Type(MemRefType::get({1}, i8));
  };
  SmallVector<Type> argTypes;
  for (Type t : fn.getArgumentTypes())
    argTypes.push_back(argType(t));
  for (Type t : fn.getResultTypes())
    argTypes.push_back(argType(t));
  argTypes.push_back(MemRefType::get({2}, b.getI64Type()));
  argTypes.push_back(b.getIndexType());
  b.setInsertionPointToEnd(target.getBody());
  auto lowered = b.create<func::FuncOp>(loc, name, b.getFunctionType(argTypes, {}));
  Block *body = lowered.addEntryBlock();
  b.setInsertionPointToStart(body);
  unsigned numBuffers = fn.getNumArguments() + fn.getNumResults();
  Value rng = body->getArgument(numBuffers);
  Value batch = body->getArgument(numBuffers + 1);

  // Sizes at run time: a batch-dependent size is its multiplier times the
  // batch size.
  auto scaled = [&](Value v, SmallVector<Value> &dyn) -> LogicalResult {
    auto type = cast<RankedTensorType>(v.getType());
    auto it = scaling.find(v);
    for (int64_t i = 0; i < type.getRank(); ++i) {
      if (!type.isDynamicDim(i))
        continue;
      if (it == scaling.end())
        return emitError(v.getLoc(), "the CPU backend has no batch scaling for this value");
      dyn.push_back(b.create<arith::MulIOp>(loc, batch,
                                            b.create<arith::ConstantIndexOp>(loc, it->second[i])));
    }
    return success();
  };
  // Bytes of a value as `perBatch * batch + fixed`, rounded to 64.
  auto bytesOf = [&](Value v) -> std::pair<int64_t, int64_t> {
    auto type = cast<RankedTensorType>(v.getType());
    int64_t n = 4;
    bool dynamic = false;
    auto it = scaling.find(v);
    for (int64_t i = 0; i < type.getRank(); ++i) {
      if (type.isDynamicDim(i)) {
        dynamic = true;
        n *= it->second[i];
      } else {
        n *= type.getDimSize(i);
      }
    }
    n = std::max<int64_t>(n, 1);
    n = (n + 63) / 64 * 64;
    return dynamic ? std::make_pair(n, int64_t(0)) : std::make_pair(int64_t(0), n);
  };
  auto affine = [&](int64_t perBatch, int64_t fixed) -> Value {
    Value f = b.create<arith::ConstantIndexOp>(loc, fixed);
    if (!perBatch)
      return f;
    return b.create<arith::AddIOp>(
        loc, b.create<arith::MulIOp>(loc, batch, b.create<arith::ConstantIndexOp>(loc, perBatch)), f);
  };
  // A typed view of `raw` (memref<1xi8>) or a byte offset in it.
  auto viewOf = [&](Value v, Value raw, Value offset, Value extent) -> FailureOr<Value> {
    SmallVector<Value> dyn;
    if (failed(scaled(v, dyn)))
      return failure();
    Value flat = b.create<memref::ReinterpretCastOp>(
        loc, rawType, raw, OpFoldResult(b.getIndexAttr(0)), ArrayRef<OpFoldResult>{extent},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
    return b.create<memref::ViewOp>(loc, memrefOf(v.getType()), flat, offset, dyn).getResult();
  };

  llvm::DenseMap<Value, Value> buffers;
  SmallVector<Value> resultBuffers;
  for (unsigned i = 0; i < numBuffers; ++i) {
    Value arg = body->getArgument(i);
    Value v = i < fn.getNumArguments() ? Value(fn.getArgument(i))
                                       : fn.front().getTerminator()->getOperand(i - fn.getNumArguments());
    Type t = i < fn.getNumArguments() ? fn.getArgumentTypes()[i]
                                      : fn.getResultTypes()[i - fn.getNumArguments()];
    Value buf = arg;
    if (!memrefOf(t).hasStaticShape()) {
      // Results are identified by their type only: view them through the
      // returned value's scaling.
      auto [perBatch, fixed] = bytesOf(v);
      auto view = viewOf(v, arg, b.create<arith::ConstantIndexOp>(loc, 0), affine(perBatch, fixed));
      if (failed(view))
        return failure();
      buf = *view;
    }
    if (i < fn.getNumArguments())
      buffers[fn.getArgument(i)] = buf;
    else
      resultBuffers.push_back(buf);
  }

  // The kernels: the nn.kernel groups of the fusion pass (compiler/
  // transforms/Fusion.cpp decides; this lowering only follows), flattened
  // here so that values keep their identity; any other op is a kernel of
  // its own. Within a group, an op reads another member's value
  //  - computed in place (`fused`, through Emitter::gen) when that member
  //    is elementwise (or a transpose feeding a product's left operand)
  //    and read by this op alone in the group: one element per element of
  //    an elementwise op of the same shape, or each element once by a
  //    reduction. A fused value also read outside the group is stored as
  //    it is computed (`stored`: an optimizer's new moments);
  //  - as it is stored (`epilogueOf`): the elementwise ops reading a
  //    product's, convolution's, batch norm's or reduction's result run in
  //    its store loop (after a convolution with a column stride, whose taps
  //    accumulate in memory, as a loop of their own);
  //  - from memory otherwise (members run one after another).
  Operation *ret = fn.front().getTerminator();
  llvm::DenseMap<Operation *, unsigned> groupOf;
  for (auto [i, g] : llvm::enumerate(groups))
    for (Operation *m : g)
      groupOf[m] = i;
  auto sameGroup = [&](Operation *a, Operation *b) {
    auto ia = groupOf.find(a), ib = groupOf.find(b);
    return ia != groupOf.end() && ib != groupOf.end() && ia->second == ib->second;
  };
  using nnops::isReduction;
  llvm::DenseSet<Operation *> fused, stored, absorbed;
  llvm::DenseMap<Operation *, Operation *> consumerOf, epilogueOf;
  for (SmallVector<Operation *> &g : groups) {
    for (Operation *m : g) {
      if (m->getNumResults() != 1)
        continue;
      Value r = m->getResult(0);
      llvm::SmallPtrSet<Operation *, 2> inside;
      bool outside = false;
      for (Operation *u : r.getUsers())
        sameGroup(m, u) ? (void)inside.insert(u) : (void)(outside = true);
      if (inside.size() != 1)
        continue;
      Operation *u = *inside.begin();
      bool producer = false;
      if (isa<nnops::TransposeOp>(m))
        producer = isa<nnops::MatmulOp>(u) && u->getOperand(0) == r && u->getOperand(1) != r;
      else if (scalars().count(m->getName().getTypeID()) || (isa<nnops::OneHotOp>(m) && !outside))
        producer = isReduction(u) ? u->getOperand(0) == r
                                  : scalars().count(u->getName().getTypeID()) &&
                                        u->getResult(0).getType() == r.getType();
      if (!producer)
        continue;
      fused.insert(m);
      consumerOf[m] = u;
      if (outside)
        stored.insert(m);
    }
    for (Operation *m : g) {
      if (fused.contains(m) || !nnops::hostsEpilogue(m))
        continue;
      Value r = m->getResult(0);
      if (r.use_empty() || llvm::any_of(r.getUsers(), [&](Operation *u) { return !sameGroup(m, u); }))
        continue;
      // These lowerings store each element once through Emitter::emit and
      // take the epilogue there; a convolution with a column stride
      // accumulates its taps in memory, so its epilogue is a loop of its
      // own in the kernel.
      if (auto conv = dyn_cast<nnops::Conv2dOp>(m); conv && conv.getStride()[1] != 1)
        continue;
      Operation *c = *r.getUsers().begin();
      while (fused.contains(c))
        c = consumerOf[c];
      epilogueOf[m] = c;
      absorbed.insert(c);
    }
  }
  // Literals: what the fusion pass left outside every kernel, besides
  // views (splat constants, element counts, math on them), is produced in
  // place at each read.
  llvm::DenseSet<Operation *> immediate;
  for (Operation &op : fn.front().without_terminator())
    if (!groups.empty() && !groupOf.count(&op) && !isa<nnops::ReshapeOp>(op))
      immediate.insert(&op);
  // The kernels in order (members of a group are contiguous after
  // flattening); `kernelOf` gives each op's kernel.
  std::vector<SmallVector<Operation *>> kernelList;
  llvm::DenseMap<Operation *, unsigned> kernelOf;
  for (Operation &op : fn.front().without_terminator()) {
    if (isa<nnops::ReshapeOp>(op) || immediate.contains(&op))
      continue;
    auto it = groupOf.find(&op);
    if (it == groupOf.end())
      kernelList.push_back({&op});
    else if (groups[it->second].front() == &op)
      kernelList.push_back(groups[it->second]);
    else
      continue;
    for (Operation *m : kernelList.back())
      kernelOf[m] = kernelList.size() - 1;
  }

  // A reshape is a view of its input's buffer: values share the buffer of
  // their root.
  llvm::DenseMap<Value, Value> rootOf;
  auto root = [&](Value v) {
    auto it = rootOf.find(v);
    return it == rootOf.end() ? v : it->second;
  };
  for (Operation &op : fn.front())
    if (isa<nnops::ReshapeOp>(op))
      rootOf[op.getResult(0)] = root(op.getOperand(0));

  // The static memory plan: every intermediate lives in a slot, a buffer
  // the caller provides (an argument after the batch size) of
  // `perBatch * batch + fixed` bytes. A slot is free again after the
  // kernel that reads its value (or a view of it) last, and serves the next
  // value that fits, so memory follows liveness and no call allocates.
  // Slots are separate arguments, not offsets in one block, so that LLVM
  // knows they do not alias. A value the function returns is computed into
  // its result buffer directly.
  llvm::DenseMap<Value, unsigned> lastUse;
  for (Operation &op : fn.front()) {
    auto k = kernelOf.find(&op);
    if (&op != ret && k == kernelOf.end())
      continue; // views and literals hold nothing
    unsigned at = &op == ret ? kernelList.size() : k->second;
    for (Value v : op.getOperands())
      lastUse[root(v)] = std::max(lastUse.lookup(root(v)), at);
  }
  llvm::DenseMap<Value, unsigned> returnedAt; // values returned once
  for (auto [i, v] : llvm::enumerate(ret->getOperands()))
    if (llvm::count(ret->getOperands(), v) == 1 && v.getDefiningOp() && !rootOf.count(v))
      returnedAt[v] = i;
  llvm::DenseMap<Operation *, Operation *> epilogueSrc;
  for (auto [src, c] : epilogueOf)
    epilogueSrc[c] = src;
  // The op whose loop nest computes `op` (itself, its fused consumer, or
  // the product or reduction whose epilogue it is), and whether the way
  // there keeps one element per element (no reduction in between).
  auto nestOf = [&](Operation *op) -> std::pair<Operation *, bool> {
    bool pointwise = true;
    while (fused.contains(op)) {
      op = consumerOf.lookup(op);
      pointwise &= !isReduction(op);
    }
    if (Operation *src = epilogueSrc.lookup(op))
      return {src, pointwise};
    return {op, pointwise && scalars().count(op->getName().getTypeID())};
  };
  // Whether `d`'s result may be stored over `a` (same type): every read
  // of `a` (or a view of it) comes from an earlier kernel, an earlier loop
  // nest of `d`'s kernel, or `d`'s own nest as an elementwise op of `a`'s
  // shape computing `d` (the element is overwritten as soon as `d` is
  // computed, so nothing else in the nest may read the old one).
  auto overwritable = [&](Value a, Operation *d) {
    auto kd = kernelOf.find(d);
    if (kd == kernelOf.end() || a.getType() != d->getResult(0).getType())
      return false;
    unsigned k = kd->second;
    ArrayRef<Operation *> members = kernelList[k];
    auto [nest, pointwise] = nestOf(d);
    auto position = [&](Operation *op) { return llvm::find(members, op) - members.begin(); };
    auto feeds = [&](Operation *op) {
      while (op != d && fused.contains(op))
        op = consumerOf.lookup(op);
      return op == d;
    };
    if (!pointwise)
      return false;
    for (Operation &op : fn.front())
      for (Value o : op.getOperands()) {
        if (root(o) != a || isa<nnops::ReshapeOp>(op))
          continue; // a view reads nothing; its readers are seen
        auto ku = kernelOf.find(&op);
        if (&op == ret || ku == kernelOf.end() || ku->second > k)
          return false;
        if (ku->second < k)
          continue;
        Operation *at = nestOf(&op).first;
        if (at != nest ? position(at) > position(nest)
                       : o != a || !feeds(&op) || !scalars().count(op.getName().getTypeID()) ||
                             op.getResult(0).getType() != a.getType())
          return false;
      }
    return true;
  };
  // Updates in place: a returned value that replaces an argument (same
  // name, as an optimizer's new weights and moments or a layer's running
  // statistics) is stored into that argument's buffer when legal. The
  // runtime then neither allocates the result nor copies it back
  // (`nnc.inplace`).
  llvm::DenseMap<Value, Value> inPlaceOf; // returned value -> argument
  SmallVector<int64_t> inPlace(fn.getNumResults(), -1);
  for (auto [v, i] : returnedAt) {
    auto name = fn.getResultAttrOfType<StringAttr>(i, nnops::attr::kName);
    if (!name || !cast<RankedTensorType>(v.getType()).getElementType().isF32())
      continue;
    for (BlockArgument a : fn.getArguments())
      if (fn.getArgAttrOfType<StringAttr>(a.getArgNumber(), nnops::attr::kName) == name &&
          cast<RankedTensorType>(a.getType()).hasStaticShape() &&
          !llvm::is_contained(inPlace, int64_t(a.getArgNumber())) && overwritable(a, v.getDefiningOp())) {
        inPlaceOf[v] = a;
        inPlace[i] = a.getArgNumber();
        break;
      }
  }

  struct Slot {
    int64_t perBatch, fixed;
    bool free;
    Value arg;
  };
  std::vector<Slot> slots;
  llvm::DenseMap<Value, unsigned> slotOf;
  auto bufferFor = [&](Value r) -> FailureOr<Value> {
    auto [perBatch, fixed] = bytesOf(r);
    int best = -1;
    auto cost = [&](const Slot &s) { return std::make_pair(s.perBatch, s.fixed); };
    for (auto [i, slot] : llvm::enumerate(slots))
      if (slot.free && slot.perBatch >= perBatch && slot.fixed >= fixed &&
          (best < 0 || cost(slot) < cost(slots[best])))
        best = static_cast<int>(i);
    if (best < 0) {
      slots.push_back({perBatch, fixed, true, body->addArgument(MemRefType::get({1}, i8), loc)});
      best = static_cast<int>(slots.size() - 1);
    }
    slots[best].free = false;
    slotOf[r] = best;
    return viewOf(r, slots[best].arg, b.create<arith::ConstantIndexOp>(loc, 0),
                  affine(slots[best].perBatch, slots[best].fixed));
  };
  // The buffer a computed value is stored into. An elementwise result
  // (an activation's gradient, most often) takes over the slot of a value
  // of its type that its kernel reads for the last time, where legal.
  auto outputFor = [&](Value r) -> FailureOr<Value> {
    if (Value a = inPlaceOf.lookup(r))
      return buffers.lookup(a);
    auto direct = returnedAt.find(r);
    if (direct != returnedAt.end())
      return resultBuffers[direct->second];
    Operation *d = r.getDefiningOp();
    if (auto k = kernelOf.find(d); k != kernelOf.end() && d->getNumResults() == 1)
      for (Operation *m : kernelList[k->second])
        for (Value o : m->getOperands()) {
          auto held = slotOf.find(o);
          if (held == slotOf.end() || !overwritable(o, d))
            continue;
          unsigned slot = held->second;
          slotOf.erase(held);
          slotOf[r] = slot;
          return viewOf(r, slots[slot].arg, b.create<arith::ConstantIndexOp>(loc, 0),
                        affine(slots[slot].perBatch, slots[slot].fixed));
        }
    return bufferFor(r);
  };
  // `src` seen with the shape of `v` (same elements, row-major).
  auto reshaped = [&](Value src, Value v) -> FailureOr<Value> {
    auto type = cast<RankedTensorType>(v.getType());
    SmallVector<Value> dyn;
    if (failed(scaled(v, dyn)))
      return failure();
    SmallVector<OpFoldResult> sizes(type.getRank()), strides(type.getRank());
    unsigned next = 0;
    for (int64_t i = 0; i < type.getRank(); ++i)
      sizes[i] = type.isDynamicDim(i) ? OpFoldResult(dyn[next++]) : b.getIndexAttr(type.getDimSize(i));
    OpFoldResult stride = b.getIndexAttr(1);
    for (int64_t i = type.getRank() - 1; i >= 0; --i) {
      strides[i] = stride;
      auto st = getConstantIntValue(stride), sz = getConstantIntValue(sizes[i]);
      if (st && sz)
        stride = b.getIndexAttr(*st * *sz);
      else
        stride = b.create<arith::MulIOp>(loc, getValueOrCreateConstantIndexOp(b, loc, stride),
                                         getValueOrCreateConstantIndexOp(b, loc, sizes[i]))
                     .getResult();
    }
    return b.create<memref::ReinterpretCastOp>(loc, memrefOf(type), src, OpFoldResult(b.getIndexAttr(0)),
                                               sizes, strides)
        .getResult();
  };

  // Whether the fused producers of `op` can be emitted as vectors along
  // the last axis: elementwise ops only (a one-hot or a transpose indexes
  // across that axis).
  std::function<bool(Operation *)> vectorizable = [&](Operation *op) {
    for (Value v : op->getOperands()) {
      Operation *def = v.getDefiningOp();
      if (!def || !fused.contains(def) || consumerOf.lookup(def) != op)
        continue;
      if (!scalars().count(def->getName().getTypeID()) || !vectorizable(def))
        return false;
    }
    return true;
  };
  // Emitters of fused ops, kept alive while their consumers are emitted.
  std::deque<Emitter> producers;
  unsigned globals = 0;
  // While an epilogue is emitted: the op whose value it receives, and that
  // value at the current element.
  Operation *epilogueSource = nullptr;
  Value epilogueValue;
  std::function<LogicalResult(Emitter &, Operation *)> bind = [&](Emitter &e, Operation *op) -> LogicalResult {
    for (Value v : op->getOperands()) {
      e.in.push_back(buffers.lookup(v));
      Operation *def = v.getDefiningOp();
      if (def && def == epilogueSource) {
        e.gen.emplace_back([&epilogueValue](ValueRange) { return epilogueValue; });
        continue;
      }
      if (def && immediate.contains(def)) {
        Emitter *at = &e;
        if (auto c = dyn_cast<nnops::ConstantOp>(def)) {
          auto value = cast<TypedAttr>(cast<DenseElementsAttr>(c.getValue()).getSplatValue<Attribute>());
          e.gen.emplace_back([at, value](ValueRange) -> Value {
            return at->splat(at->b.create<arith::ConstantOp>(at->loc, value));
          });
        } else if (!isa<nnops::CountOp>(def)) {
          // Math on literals, at every read.
          producers.push_back(Emitter{b, def->getLoc(), def, {}, {}, {}, rng, batch, globals, target, name, &scaling});
          Emitter &p = producers.back();
          p.lanes = e.lanes;
          if (failed(bind(p, def)))
            return failure();
          e.gen.emplace_back([&p](ValueRange ivs) { return p.at(ivs); });
        } else {
          ArrayRef<int64_t> axes = cast<nnops::CountOp>(def).getAxes();
          Value counted = def->getOperand(0);
          e.gen.emplace_back([at, axes, counted](ValueRange) {
            Value n = at->idx(1);
            for (int64_t i = 0; i < cast<ShapedType>(counted.getType()).getRank(); ++i)
              if (axes.empty() || llvm::is_contained(axes, i))
                n = at->mul(n, at->valueDim(counted, i));
            return at->splat(at->toF32(n));
          });
        }
        continue;
      }
      if (!def || !fused.contains(def) || consumerOf.lookup(def) != op) {
        e.gen.emplace_back();
        continue;
      }
      producers.push_back(Emitter{b, def->getLoc(), def, {}, {}, {}, rng, batch, globals, target, name, &scaling});
      Emitter &p = producers.back();
      p.lanes = e.lanes;
      if (failed(bind(p, def)))
        return failure();
      if (auto t = dyn_cast<nnops::TransposeOp>(def)) {
        ArrayRef<int64_t> perm = t.getPerm();
        e.gen.emplace_back([&p, perm](ValueRange ivs) {
          SmallVector<Value> src(perm.size());
          for (size_t i = 0; i < perm.size(); ++i)
            src[perm[i]] = ivs[i];
          return p.read(0, src);
        });
      } else if (isa<nnops::OneHotOp>(def)) {
        // 1 where the index along the last axis is the label.
        e.gen.emplace_back([&p](ValueRange ivs) {
          Value label = p.read(0, ivs.drop_back());
          Value j = p.b.create<arith::IndexCastOp>(p.loc, label.getType(), ivs.back());
          Value hit = p.b.create<arith::CmpIOp>(p.loc, arith::CmpIPredicate::eq, label, j);
          return select(p, hit, p.f32(1), p.f32(0));
        });
      } else if (stored.contains(def)) {
        auto out = outputFor(def->getResult(0));
        if (failed(out))
          return failure();
        buffers[def->getResult(0)] = *out;
        p.out.push_back(*out);
        e.gen.emplace_back([&p](ValueRange ivs) {
          Value v = p.at(ivs);
          p.store(v, p.out[0], ivs);
          return v;
        });
      } else {
        e.gen.emplace_back([&p](ValueRange ivs) { return p.at(ivs); });
      }
    }
    return success();
  };
  llvm::DenseMap<unsigned, SmallVector<Value>> releaseAt;
  for (auto &[v, at] : lastUse)
    releaseAt[at].push_back(v);

  // Profiling: calls around each kernel, and what each kernel is.
  SmallVector<Attribute> kernels;
  auto elements = [&](Value v) -> std::pair<int64_t, int64_t> {
    auto t = cast<RankedTensorType>(v.getType());
    int64_t n = 1;
    bool dynamic = false;
    for (int64_t i = 0; i < t.getRank(); ++i) {
      dynamic |= t.isDynamicDim(i);
      n *= t.isDynamicDim(i) ? scaling.lookup(v)[i] : t.getDimSize(i);
    }
    return dynamic ? std::make_pair(n, int64_t(0)) : std::make_pair(int64_t(0), n);
  };
  auto hook = [&](StringRef fnName, int64_t id) {
    if (!target.lookupSymbol(fnName)) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(target.getBody());
      b.create<func::FuncOp>(loc, fnName, b.getFunctionType({b.getI64Type()}, {})).setPrivate();
    }
    Value idv = b.create<arith::ConstantOp>(loc, b.getI64IntegerAttr(id));
    b.create<func::CallOp>(loc, fnName, TypeRange{}, ValueRange{idv});
  };
  // A kernel's members, where it comes from, its floating-point operations
  // and the bytes it reads and writes (values from and to other kernels).
  auto describe = [&](ArrayRef<Operation *> members, Operation *main) {
    llvm::DenseSet<Operation *> in(members.begin(), members.end());
    std::string names;
    SmallVector<Attribute> locs;
    for (Operation *m : members) {
      names += (names.empty() ? "" : "+") + m->getName().stripDialect().str();
      locs.push_back(b.getStringAttr(m->getName().stripDialect() + " " + where(m->getLoc())));
    }
    std::pair<int64_t, int64_t> flops{0, 0}, bytes{0, 0};
    auto add = [](std::pair<int64_t, int64_t> &acc, std::pair<int64_t, int64_t> x, int64_t k) {
      acc.first += x.first * k;
      acc.second += x.second * k;
    };
    llvm::DenseSet<Value> counted;
    for (Operation *m : members) {
      for (Value v : m->getOperands()) {
        Operation *d = v.getDefiningOp();
        if ((!d || (!in.contains(d) && !immediate.contains(d))) && counted.insert(v).second)
          add(bytes, elements(v), 4);
      }
      for (Value r : m->getResults())
        if (llvm::any_of(r.getUsers(), [&](Operation *u) { return !in.contains(u); }))
          add(bytes, elements(r), 4);
      auto taps = [&](Value w) {
        ArrayRef<int64_t> s = cast<RankedTensorType>(w.getType()).getShape();
        return 2 * s[1] * s[2] * s[3];
      };
      if (auto mm = dyn_cast<nnops::MatmulOp>(m)) {
        Value a = mm->getOperand(0), c = mm->getResult(0);
        auto at = cast<RankedTensorType>(a.getType());
        if (at.isDynamicDim(1))
          add(flops, {elements(c).second * scaling.lookup(a)[1], 0}, 2);
        else
          add(flops, elements(c), 2 * at.getDimSize(1));
      } else if (isa<nnops::Conv2dOp>(m)) {
        add(flops, elements(m->getResult(0)), taps(m->getOperand(1)));
      } else if (isa<nnops::Conv2dGradInputOp>(m)) {
        add(flops, elements(m->getOperand(0)), taps(m->getOperand(1)));
      } else if (isa<nnops::Conv2dGradWeightOp>(m)) {
        add(flops, elements(m->getOperand(1)), taps(m->getResult(0)));
      } else if (!isa<nnops::TransposeOp, nnops::ReshapeOp, nnops::BroadcastLikeOp>(m)) {
        add(flops, elements(m->getResult(0)), 1); // one per element; data movement none
      }
    }
    kernels.push_back(b.getDictionaryAttr(
        {b.getNamedAttr("ops", b.getStringAttr(names)),
         b.getNamedAttr("loc", b.getStringAttr(where(main->getLoc()))),
         b.getNamedAttr("members", b.getArrayAttr(locs)),
         b.getNamedAttr("flops", b.getDenseI64ArrayAttr({flops.first, flops.second})),
         b.getNamedAttr("bytes", b.getDenseI64ArrayAttr({bytes.first, bytes.second}))}));
  };
  // Collapses axes [from, rank) of every buffer of shape `full` that the
  // elementwise `emitters` read or write into one axis (from 0: 1-D views)
  // and puts them in flat mode, if each reads only such buffers, one-element
  // ones, literals and values of that shape from fused producers, and
  // writes only such buffers; returns whether it did.
  auto collapseAll = [&](ArrayRef<Emitter *> emitters, Type full, int64_t from) {
    auto oneElement = [](Value v) { return llvm::all_of(shapeOf(v), [](int64_t d) { return d == 1; }); };
    auto identity = [](Value m) { return m && cast<MemRefType>(m.getType()).getLayout().isIdentity(); };
    for (Emitter *p : emitters) {
      if (immediate.contains(p->op))
        continue; // math on literals: reads no buffer
      if (!scalars().count(p->op->getName().getTypeID()) || p->op->getResult(0).getType() != full ||
          llvm::any_of(p->out, [&](Value m) { return !identity(m); }))
        return false;
      for (auto [k, v] : llvm::enumerate(p->op->getOperands())) {
        bool generated = k < p->gen.size() && p->gen[k];
        if (generated ? v.getType() != full && !immediate.contains(v.getDefiningOp())
                      : !oneElement(v) && (v.getType() != full || !identity(p->in[k])))
          return false;
      }
    }
    // One view per buffer: an element updated in place is then read and
    // written through the same pointer, which LLVM vectorizes without
    // run-time overlap checks (which two views of it fail).
    SmallVector<ReassociationIndices> groups = collapsedFrom(from, cast<ShapedType>(full).getRank());
    llvm::DenseMap<Value, Value> views;
    auto view = [&](Value m) -> Value {
      Value &v = views[m];
      if (!v)
        v = b.create<memref::CollapseShapeOp>(loc, m, groups);
      return v;
    };
    for (Emitter *p : emitters) {
      if (immediate.contains(p->op))
        continue;
      p->flat = true;
      for (auto [k, v] : llvm::enumerate(p->op->getOperands()))
        if (!(k < p->gen.size() && p->gen[k]) && v.getType() == full)
          p->in[k] = view(p->in[k]);
      for (Value &m : p->out) // a producer also stored (its own out[0])
        m = view(m);
    }
    return true;
  };
  // An elementwise kernel whose buffers (its own and its fused producers')
  // all have the result's shape or hold one element, in identity layout,
  // runs in flat mode: over 1-D views of them, one linear index.
  auto flatten = [&](Emitter &e) {
    Type full = e.op->getResult(0).getType();
    if (cast<ShapedType>(full).getRank() < 2)
      return;
    SmallVector<Emitter *> all{&e};
    for (Emitter &p : producers)
      all.push_back(&p);
    (void)collapseAll(all, full, 0);
  };
  // A sum or maximum over trailing axes (a per-channel bias gradient: the
  // batch, rows and columns of N x C x H x W) of values its fused
  // producers compute: when every buffer they read or write has the summed
  // operand's shape (or one element), those axes are collapsed into one in
  // all of them, so the innermost loop runs over H * W elements (28-wide
  // rows are too short for LLVM to vectorize; LeNet-5's C1 bias gradient
  // took 0.18 ms).
  auto flattenReduction = [&](Emitter &e, size_t own) {
    // The first `own` emitters in `producers` compute the operand (the
    // epilogue's come after).
    SmallVector<Emitter *> operandProducers;
    for (size_t i = 0; i < own && i < producers.size(); ++i)
      operandProducers.push_back(&producers[i]);
    if (!(e.gen.size() > 0 && e.gen[0]) || operandProducers.empty())
      return;
    ArrayRef<int64_t> in = shapeOf(e.op->getOperand(0));
    ArrayRef<int64_t> axes = nnops::reductionAxes(e.op);
    int64_t rank = static_cast<int64_t>(in.size()), tail = rank;
    while (tail > 0 && (axes.empty() || llvm::is_contained(axes, tail - 1)))
      --tail;
    if (axes.empty() || tail < 1 || rank - tail < 2 ||
        llvm::any_of(in.drop_front(tail), [](int64_t d) { return ShapedType::isDynamic(d); }))
      return;
    if (collapseAll(operandProducers, e.op->getOperand(0).getType(), tail))
      e.flatTail = tail;
  };
  // One op of a kernel, with its fused producers and its epilogue.
  auto lowerOne = [&](Operation *op) -> LogicalResult {
    auto it = lowerings().find(op->getName().getTypeID());
    if (it == lowerings().end())
      return op->emitError("the CPU backend cannot lower '") << op->getName() << "'";
    Emitter e{b, op->getLoc(), op, {}, {}, {}, rng, batch, globals, target, name, &scaling};
    // Column sums work on vectors of outputs, so their fused producers
    // (elementwise ops of the summed operand's shape) and their epilogue are
    // emitted as vectors along the last axis.
    if (columnSums(op) && vectorizable(op))
      e.lanes = kLanes;
    if (failed(bind(e, op)))
      return failure();
    size_t own = producers.size();
    if (Operation *c = epilogueOf.lookup(op)) {
      // The consumer's buffer takes the stores; the op's own result gets none.
      Value r = c->getResult(0);
      auto buf = outputFor(r);
      if (failed(buf))
        return failure();
      buffers[r] = *buf;
      producers.push_back(Emitter{b, c->getLoc(), c, {}, {}, {}, rng, batch, globals, target, name, &scaling});
      Emitter &ce = producers.back();
      if (isa<nnops::Conv2dOp>(op))
        ce.lanes = kLanes; // applied to the row vectors of the output
      if (auto pool = dyn_cast<nnops::MaxPool2dGradOp>(op); pool && poolGradRows2x2(pool))
        ce.lanes = 2 * kLanes; // to each pair of interleaved gradient rows
      if (e.lanes)
        ce.lanes = e.lanes;
      if (isa<nnops::MatmulOp>(op)) {
        // The product accumulates in its own buffer; the epilogue, applied
        // to whole vectors of a row, stores the last depth block.
        ce.lanes = kLanes;
        auto acc = outputFor(op->getResult(0));
        if (failed(acc))
          return failure();
        buffers[op->getResult(0)] = *acc;
      }
      epilogueSource = op;
      if (failed(bind(ce, c)))
        return failure();
      epilogueSource = nullptr;
      Value out = *buf;
      e.out.push_back(buffers.lookup(op->getResult(0)));
      for (Value r : op->getResults().drop_front()) { // stored as they are
        auto other = outputFor(r);
        if (failed(other))
          return failure();
        e.out.push_back(*other);
        buffers[r] = *other;
      }
      e.epilogue = [&ce, &epilogueValue, out](Value v, ValueRange ivs) {
        epilogueValue = v;
        ce.store(ce.at(ivs), out, ivs);
      };
    } else {
      for (Value r : op->getResults()) {
        auto buf = outputFor(r);
        if (failed(buf))
          return failure();
        e.out.push_back(*buf);
        buffers[r] = e.out.back();
      }
    }
    if (!epilogueOf.lookup(op) && !e.lanes && scalars().count(op->getName().getTypeID()))
      flatten(e);
    else if (!e.lanes && nnops::isReduction(op))
      flattenReduction(e, own);
    LogicalResult done = it->second(e);
    producers.clear();
    return done;
  };
  for (Operation &op : fn.front().without_terminator()) {
    if (isa<nnops::ReshapeOp>(op)) {
      auto view = reshaped(buffers.lookup(op.getOperand(0)), op.getResult(0));
      if (failed(view))
        return failure();
      buffers[op.getResult(0)] = *view;
      continue;
    }
    auto k = kernelOf.find(&op);
    if (k == kernelOf.end() || kernelList[k->second].front() != &op)
      continue; // a literal, or a member of a kernel already emitted
    ArrayRef<Operation *> members = kernelList[k->second];
    auto isRoot = [&](Operation *m) { return !fused.contains(m) && !absorbed.contains(m); };
    int64_t id = static_cast<int64_t>(kernels.size());
    describe(members, *llvm::find_if(members, isRoot));
    if (profile)
      hook("nnc_profile_begin", id);
    for (Operation *m : members)
      if (isRoot(m) && failed(lowerOne(m)))
        return failure();
    if (profile)
      hook("nnc_profile_end", id);
    // Values read for the last time free their slots; so do results that
    // are never read (a dropout mask in evaluation).
    for (Value v : releaseAt.lookup(k->second))
      if (slotOf.count(v))
        slots[slotOf[v]].free = true;
    for (Operation *m : members)
      for (Value r : m->getResults())
        if (r.use_empty() && slotOf.count(r))
          slots[slotOf[r]].free = true;
  }
  for (auto [i, v] : llvm::enumerate(ret->getOperands()))
    if (!returnedAt.count(v))
      b.create<memref::CopyOp>(loc, buffers.lookup(v), resultBuffers[i]);
  b.create<func::ReturnOp>(loc);

  lowered.setType(b.getFunctionType(body->getArgumentTypes(), {}));
  SmallVector<int64_t> plan;
  for (Slot &s : slots)
    plan.append({s.perBatch, s.fixed});
  lowered->setAttr("nnc.slots", b.getDenseI64ArrayAttr(plan));
  lowered->setAttr("nnc.kernels", b.getArrayAttr(kernels));
  lowered->setAttr("nnc.inplace", b.getDenseI64ArrayAttr(inPlace));
  // No two buffers overlap.
  for (unsigned i = 0; i < lowered.getNumArguments(); ++i)
    if (isa<MemRefType>(lowered.getArgument(i).getType()))
      lowered.setArgAttr(i, "llvm.noalias", b.getUnitAttr());
  return success();
}
