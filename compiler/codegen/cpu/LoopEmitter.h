//===- LoopEmitter.h - the CPU lowering's shared emitter --------------*- C++ -*-===//
//
// What every op family's lowering to loops shares (compiler/codegen/cpu/
// Elementwise, Reductions, Convolutions, Pooling, Normalizations.cpp):
// the Emitter, which builds loop nests over an op's buffers, reads fused
// producers in place and stores through epilogues, and small helpers.
// Internal to the CPU backend.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_LOOPEMITTER_H
#define NNC_COMPILER_CODEGEN_CPU_LOOPEMITTER_H

#include "compiler/codegen/cpu/LowerToLoops.h"

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

namespace nnc::cpu::loops {

using namespace mlir;
namespace nnops = nnc::nn;


inline MemRefType memrefOf(Type t) {
  auto rt = cast<RankedTensorType>(t);
  return MemRefType::get(rt.getShape(), rt.getElementType());
}

inline ArrayRef<int64_t> shapeOf(Value v) { return cast<ShapedType>(v.getType()).getShape(); }

bool worthThreads(Value v);

struct Emitter {
  OpBuilder &b;
  Location loc;
  Operation *op;
  SmallVector<Value> in, out; // operand and result buffers (no buffer: fused)
  /// Per operand, when its producer is fused into this op: computes the
  /// operand's value at an index, in place of a load.
  SmallVector<std::function<Value(ValueRange)>> gen;
  Value rng;                  // memref<3xi64>: seed, step, first row
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
  /// Scratch memory of a static type for this kernel, from the memory
  /// plan (no call allocates).
  std::function<Value(MemRefType)> scratch;
  /// Memory of a static type kept across calls for weight-only work,
  /// filled by the callback only when the weights changed since (or null:
  /// the function caches nothing; see lowerToLoops).
  std::function<Value(MemRefType, function_ref<void(Value)>)> cached;
  /// The lanes the epilogue takes its values in (0: scalars).
  int64_t epilogueLanes = 0;
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
  /// threads: its iterations must write disjoint elements. With
  /// `collapse` 2, the two outermost loops run as one parallel loop (so a
  /// batch of one still spreads over the threads), each iteration writing
  /// apart from the others.
  void loops(ArrayRef<Value> bounds, function_ref<void(ValueRange)> body,
             bool parallel = false, int collapse = 1) {
    SmallVector<Value> ivs;
    std::function<void(size_t)> rec = [&](size_t d) {
      if (d == bounds.size()) {
        body(ivs);
        return;
      }
      OpBuilder::InsertionGuard guard(b);
      if (d == 0 && parallel && collapse == 2 && bounds.size() >= 2) {
        Value total = mul(bounds[0], bounds[1]);
        std::optional<int64_t> trips = getConstantIntValue(total);
        if (!trips || *trips > 1) {
          auto f = b.create<scf::ParallelOp>(loc, ValueRange{idx(0)}, ValueRange{total}, ValueRange{idx(1)});
          b.setInsertionPointToStart(f.getBody());
          Value k = f.getInductionVars()[0];
          ivs.push_back(b.create<arith::DivUIOp>(loc, k, bounds[1]));
          ivs.push_back(b.create<arith::RemUIOp>(loc, k, bounds[1]));
          rec(2);
          ivs.pop_back();
          ivs.pop_back();
          return;
        }
      }
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

/// The value of an elementwise op at one output index, its operands read
/// through `operand(k)` (broadcast to that index).
using Scalar = std::function<Value(Emitter &, function_ref<Value(unsigned)> operand)>;

/// Lanes of f32 in the host's widest vector register (Reductions.cpp).
extern const int64_t kLanes;

/// The elementwise ops' scalar rules, by op (Elementwise.cpp).
const llvm::DenseMap<TypeID, Scalar> &scalars();

// The lowerings and helpers of each op family, defined in its file.
Value select(Emitter &e, Value cond, Value a, Value b);
Value positive(Emitter &e, Value x);
int64_t typicalDim(Value v, int64_t i);
bool worthThreads(Value v);
LogicalResult elementwise(Emitter &e);
Value mix64(Emitter &e, Value z);
LogicalResult dropout(Emitter &e);
LogicalResult allReduce(Emitter &e);
LogicalResult constant(Emitter &e);
LogicalResult transpose(Emitter &e);
LogicalResult slice(Emitter &e);
LogicalResult concat(Emitter &e);
bool columnSums(Operation *op);
SmallVector<ReassociationIndices> collapsedFrom(int64_t tail, int64_t rank);
LogicalResult reduce(Emitter &e, bool max);
/// The lane sums of each of the vectors `vs`, kLanes vectors at a time as
/// one tree of shuffles and adds (Reductions.cpp).
SmallVector<Value> laneSums(Emitter &e, ArrayRef<Value> vs);
LogicalResult count(Emitter &e);
LogicalResult matmul(Emitter &e);
LogicalResult oneHot(Emitter &e);
LogicalResult argmax(Emitter &e);
std::pair<Value, Value> tapRange(Emitter &e, Value k, int64_t stride, int64_t pad, int64_t size, int64_t out);
Value columnMask(Emitter &e, Value start, int64_t width);
std::pair<Value, Value> kernelRows(Emitter &e, Value i, int64_t stride, int64_t pad, int64_t size, int64_t k);
/// Lanes l of a row at columns start + l * stride, none outside [0, width)
/// or (`valid` false) in a row outside the input. Unit stride loads
/// contiguously (masked); stride 2 loads two vectors and keeps their even
/// lanes (a shuffle costs less than a gather); larger strides gather.
struct RowLanes {
  Value start;   // the first lane's column (contiguous lanes)
  Value columns; // the lanes' columns (gathered lanes), i32
  Value mask, next; // next: the second vector's mask, for stride 2 (null: no mask needed)
  int64_t stride = 1;


  /// With `inside`, the caller knows that every element the loads touch
  /// lies in the row: they need no mask (nor the work of making one).
  RowLanes(Emitter &e, Value start, int64_t stride, int64_t width, Value valid = Value(), bool inside = false);
  /// The lanes of `mem`'s row at `row` (every index but the last), zero
  /// where masked off.
  Value load(Emitter &e, Value mem, ValueRange row) const;
};
/// The multiply-adds of a register block, acc[k * n + v] += weight(k) *
/// input(v) for k < block, v < n (`weight` broadcasts). Emitted so that the
/// smaller side is live beside the accumulators: every input and then one
/// weight at a time, or every weight and then one input at a time (LLVM's
/// scheduler keeps the order it is given; a 4 x 3 block on AVX2's 16
/// registers fits only inputs first) (PhaseRows.cpp).
void blockFMAs(Emitter &e, MutableArrayRef<Value> acc, int64_t block, int64_t n, function_ref<Value(int64_t k)> weight,
               function_ref<Value(int64_t v)> input);
LogicalResult conv2d(Emitter &e);
/// Runs `run(first, count, known, from)` over a row of `width` columns in
/// chunks of `chunk` vectors: whole chunks in loops (those whose every tap
/// reads inside the row, `inside(from, to)` of vector indices, `known`,
/// between those that do not), then the rest, with `from` its first vector
/// (whose vectors past the row's end are masked) (PhaseRows.cpp).
void rowChunks(Emitter &e, int64_t width, int64_t chunk, function_ref<bool(int64_t from, int64_t to)> inside,
               function_ref<void(Value first, int64_t count, bool known, std::optional<int64_t> from)> run);
/// Runs `body(n0, count)` over the samples of `batch`, `chunk` at a time,
/// in order, each chunk's s x s phase planes split into `phases` first:
/// samples [n0, n0 + count) of X (PhaseRows.cpp).
void inPhaseChunks(Emitter &e, Value X, Value batch, Value phases, int64_t chunk, int64_t s, int64_t ow,
                   function_ref<void(Value n0, Value count)> body);
/// Whether a forward convolution reads X per phase plane (PhaseRows.cpp):
/// cpu::phasePlanesApply, X a contiguous buffer.
bool forwardPhasePlanes(nnops::Conv2dOp op, Value X);
/// A strided forward convolution of output rows wider than half a vector,
/// per phase plane of its input (PhaseRows.cpp).
void conv2dForwardPhaseRows(Emitter &e, ArrayRef<int64_t> stride, ArrayRef<int64_t> pad);
LogicalResult conv2dGradInput(Emitter &e);
void conv2dGradWeightRows(Emitter &e, ArrayRef<int64_t> stride, ArrayRef<int64_t> pad, int64_t groups);
LogicalResult conv2dGradWeight(Emitter &e);
/// A unit-stride 3x3 convolution (forward, input or weight gradient; for
/// the weight gradient W is the result and Y the output gradient) by
/// Winograd's F(2x2, 3x3), where the op's `winograd` tiling choice asks for
/// it (Winograd.cpp) and enough tiles make it pay, `direct` where they do
/// not (a branch at run time on the batch); false, emitting nothing, where
/// the choice is absent.
bool conv2dWinograd(Emitter &e, Value X, Value W, Value Y, ArrayRef<int64_t> pad, bool transposed,
                    function_ref<void()> direct);
void windowRows2x2(Emitter &e, Value X, Value batch, ArrayRef<int64_t> out, function_ref<void(Value n, Value c, Value i, int64_t j0, bool full, Value h0, Value h1, ArrayRef<Value> taps)> body);
void maxPool2x2(Emitter &e);
LogicalResult maxPool(Emitter &e);
bool poolGradRows2x2(nnops::MaxPool2dGradOp op);
void maxPoolGrad2x2(Emitter &e);
LogicalResult maxPoolGrad(Emitter &e);
void avgPool2x2(Emitter &e, bool grad);
LogicalResult avgPool(Emitter &e, bool grad);
Value flattenSpatial(Emitter &e, Value m);
LogicalResult batchNorm(Emitter &e);
LogicalResult batchNormGrad(Emitter &e);
LogicalResult channelWindowSum(Emitter &e);

} // namespace nnc::cpu::loops

#endif // NNC_COMPILER_CODEGEN_CPU_LOOPEMITTER_H
