//===- LowerToLoops.cpp - nn functions to loops over buffers --------------===//
//
// The driver: one lowering per core op, in one table keyed by TypeID (the
// lowerings live by op family in Elementwise, Reductions, Convolutions,
// Pooling and Normalizations.cpp, over the Emitter of LoopEmitter.h), and
// lowerToLoops, which walks a fused function's kernels, plans their
// buffers and binds each op to its lowering. Semantics are those of the
// reference evaluator's kernels (compiler/reference/Evaluator.cpp), which
// the CPU tests compare against.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LowerToLoops.h"
#include "compiler/codegen/cpu/LoopEmitter.h"
#include "compiler/codegen/common/MemoryPlan.h"
#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/cpu/Tiling.h"
#include "compiler/transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"

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


/// The bytes of a buffer of static type `t`.
static int64_t staticBytes(MemRefType t) {
  return t.getNumElements() * static_cast<int64_t>(t.getElementTypeBitWidth() / 8);
}

namespace nnc::cpu::loops {

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
    add(entry<nnops::AllReduceOp>(allReduce));
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

} // namespace nnc::cpu::loops

using namespace nnc::cpu::loops;


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
  if (auto c = dyn_cast<CallSiteLoc>(loc)) // a block's line, at its call
    return where(c.getCallee()) + " in " + where(c.getCaller());
  return "?";
}

namespace {

using nnops::isReduction;
using codegen::BatchScaling;
using cpu::kKernelAttr;
using nnc::kFusedAttr;
using nnc::kStoredAttr;

/// The lowering of one fused function: plans first (fusion roles, kernel
/// order, lifetimes, in-place updates), then each kernel's ops bound to
/// their lowerings, with memory slots assigned as values are stored. The
/// state lives here so that each step is a method of its own.
class StepLowering {
public:
  StepLowering(func::FuncOp fn, const BatchScaling &scaling, ModuleOp target, StringRef name,
               bool profile)
      : fn(fn), scaling(scaling), target(target), name(name), profile(profile), b(fn.getContext()),
        loc(fn.getLoc()) {}

  LogicalResult run() {
    if (failed(begin()))
      return failure();
    planFusion();
    listKernels();
    planLifetimes();
    planInPlace();
    for (Operation &op : fn.front().without_terminator())
      if (failed(lowerAt(op)))
        return failure();
    finish();
    return success();
  }

private:
  /// Creates the lowered function: its signature and the views of its
  /// batch-dependent buffer arguments.
  LogicalResult begin() {
    MLIRContext *ctx = fn.getContext();
    // Kernels formed by the fusion pass, flattened (see planFusion).
    groups = inlineKernels(fn);
    ctx->loadDialect<arith::ArithDialect, math::MathDialect, memref::MemRefDialect, scf::SCFDialect,
                     vector::VectorDialect>();
    i8 = b.getI8Type();
    rawType = MemRefType::get({ShapedType::kDynamic}, i8);
    auto argType = [&](Type t) -> Type {
      auto m = memrefOf(t);
      return m.hasStaticShape() ? Type(m) : Type(MemRefType::get({1}, i8));
    };
    SmallVector<Type> argTypes;
    for (Type t : fn.getArgumentTypes())
      argTypes.push_back(argType(t));
    for (Type t : fn.getResultTypes())
      argTypes.push_back(argType(t));
    argTypes.push_back(MemRefType::get({1}, i8)); // the cache
    argTypes.push_back(MemRefType::get({3}, b.getI64Type()));
    argTypes.push_back(b.getIndexType());
    b.setInsertionPointToEnd(target.getBody());
    lowered = b.create<func::FuncOp>(loc, name, b.getFunctionType(argTypes, {}));
    body = lowered.addEntryBlock();
    b.setInsertionPointToStart(body);
    numBuffers = fn.getNumArguments() + fn.getNumResults();
    cacheArg = body->getArgument(numBuffers);
    rng = body->getArgument(numBuffers + 1);
    batch = body->getArgument(numBuffers + 2);

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
        auto view = viewOf(v, arg, perBatch, fixed);
        if (failed(view))
          return failure();
        buf = *view;
      }
      if (i < fn.getNumArguments())
        buffers[fn.getArgument(i)] = buf;
      else
        resultBuffers.push_back(buf);
    }
    return success();
  }

  // Sizes at run time: a batch-dependent size is its multiplier times the
  // batch size.
  LogicalResult scaled(Value v, SmallVector<Value> &dyn) {
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
  }
  // Bytes of a value as `perBatch * batch + fixed`, rounded to 64.
  std::pair<int64_t, int64_t> bytesOf(Value v) {
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
  }
  Value affine(int64_t perBatch, int64_t fixed) {
    Value f = b.create<arith::ConstantIndexOp>(loc, fixed);
    if (!perBatch)
      return f;
    return b.create<arith::AddIOp>(
        loc, b.create<arith::MulIOp>(loc, batch, b.create<arith::ConstantIndexOp>(loc, perBatch)), f);
  }
  // The kernel being emitted (an scf.execute_region that OutlineKernels
  // makes a function of), if any. Buffer views are built before it, in the
  // function's body, as later kernels read them too.
  // A typed view of `raw` (memref<1xi8>) of `perBatch * batch + fixed`
  // bytes.
  FailureOr<Value> viewOf(Value v, Value raw, int64_t perBatch, int64_t fixed) {
    OpBuilder::InsertionGuard guard(b);
    if (kernelRegion)
      b.setInsertionPoint(kernelRegion);
    Value offset = b.create<arith::ConstantIndexOp>(loc, 0), extent = affine(perBatch, fixed);
    SmallVector<Value> dyn;
    if (failed(scaled(v, dyn)))
      return failure();
    Value flat = b.create<memref::ReinterpretCastOp>(
        loc, rawType, raw, OpFoldResult(b.getIndexAttr(0)), ArrayRef<OpFoldResult>{extent},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
    return b.create<memref::ViewOp>(loc, memrefOf(v.getType()), flat, offset, dyn).getResult();
  }

  /// Scratch memory of static type `t` for the kernel being emitted: a
  /// slot of the plan, free again after the kernel (a Winograd
  /// convolution's transformed weights).
  Value scratch(MemRefType t) {
    int64_t bytes = staticBytes(t);
    unsigned slot = planner.acquire({0, bytes});
    while (slotArgs.size() < planner.sizes().size())
      slotArgs.push_back(body->addArgument(MemRefType::get({1}, i8), loc));
    kernelScratch.push_back(slot);
    return byteView(slotArgs[slot], t, 0);
  }

  /// A view of static type `t` at byte `at` of the raw buffer `raw`
  /// (memref<1xi8>), built in the function's body (before the kernel
  /// being emitted, whose outlining rebuilds it inside).
  Value byteView(Value raw, MemRefType t, int64_t at) {
    OpBuilder::InsertionGuard guard(b);
    if (kernelRegion)
      b.setInsertionPoint(kernelRegion);
    int64_t bytes = staticBytes(t);
    Value flat = b.create<memref::ReinterpretCastOp>(
        loc, rawType, raw, OpFoldResult(b.getIndexAttr(0)), ArrayRef<OpFoldResult>{b.getIndexAttr(at + bytes)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
    return b.create<memref::ViewOp>(loc, t, flat, b.create<arith::ConstantIndexOp>(loc, at), ValueRange{});
  }

  /// Memory of static type `t` kept across calls for weight-only work of
  /// the kernel being emitted (Winograd's transformed weights), filled by
  /// `compute` when stale: when the weights' version, which the caller
  /// writes in the cache's first word, is 0 (unknown) or differs from the
  /// one it was last computed at (its tag, the line before it).
  Value cached(MemRefType t, function_ref<void(Value)> compute) {
    auto word = MemRefType::get({1}, b.getI64Type());
    int64_t bytes = staticBytes(t);
    int64_t tagAt = cacheBytes, at = tagAt + 64;
    cacheBytes = at + (bytes + 63) / 64 * 64;
    Value version = b.create<memref::LoadOp>(loc, byteView(cacheArg, word, 0), ValueRange{b.create<arith::ConstantIndexOp>(loc, 0)});
    Value tag = byteView(cacheArg, word, tagAt), buffer = byteView(cacheArg, t, at);
    Value zero = b.create<arith::ConstantIndexOp>(loc, 0);
    Value stale = b.create<arith::OrIOp>(
        loc,
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, version,
                                b.create<arith::ConstantIntOp>(loc, 0, 64)),
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ne, b.create<memref::LoadOp>(loc, tag, ValueRange{zero}),
                                version));
    auto refresh = b.create<scf::IfOp>(loc, stale, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&refresh.getThenRegion().front());
    compute(buffer);
    b.create<memref::StoreOp>(loc, version, tag, ValueRange{zero});
    return buffer;
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
  void planFusion() {
    ret = fn.front().getTerminator();
    for (auto [i, g] : llvm::enumerate(groups))
      for (Operation *m : g)
        groupOf[m] = i;
    for (SmallVector<Operation *> &g : groups) {
      // Members computed where they are read, as the fusion pass marked
      // them (compiler/transforms/Fusion.cpp, markFusedProducers).
      for (Operation *m : g) {
        if (!m->hasAttr(kFusedAttr))
          continue;
        fused.insert(m);
        for (Operation *u : m->getResult(0).getUsers())
          if (sameGroup(m, u))
            consumerOf[m] = u;
        if (m->hasAttr(kStoredAttr))
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
  }

  bool sameGroup(Operation *a, Operation *b) {
    auto ia = groupOf.find(a), ib = groupOf.find(b);
    return ia != groupOf.end() && ib != groupOf.end() && ia->second == ib->second;
  }

  /// Literals, the kernels in order, and the views reshapes make.
  void listKernels() {
    // Literals: what the fusion pass left outside every kernel, besides
    // views (splat constants, element counts, math on them), is produced in
    // place at each read.
    for (Operation &op : fn.front().without_terminator())
      if (!groups.empty() && !groupOf.count(&op) && !isa<nnops::ReshapeOp>(op))
        immediate.insert(&op);
    // The kernels in order (members of a group are contiguous after
    // flattening); `kernelOf` gives each op's kernel.
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
    for (Operation &op : fn.front())
      if (isa<nnops::ReshapeOp>(op))
        rootOf[op.getResult(0)] = root(op.getOperand(0));
  }

  Value root(Value v) {
    auto it = rootOf.find(v);
    return it == rootOf.end() ? v : it->second;
  }

  // The static memory plan: every intermediate lives in a slot, a buffer
  // the caller provides (an argument after the batch size) of
  // `perBatch * batch + fixed` bytes. A slot is free again after the
  // kernel that reads its value (or a view of it) last, and serves the next
  // value that fits, so memory follows liveness and no call allocates.
  // Slots are separate arguments, not offsets in one block, so that LLVM
  // knows they do not alias. A value the function returns is computed into
  // its result buffer directly.
  void planLifetimes() {
    for (Operation &op : fn.front()) {
      auto k = kernelOf.find(&op);
      if (&op != ret && k == kernelOf.end())
        continue; // views and literals hold nothing
      unsigned at = &op == ret ? kernelList.size() : k->second;
      for (Value v : op.getOperands())
        lastUse[root(v)] = std::max(lastUse.lookup(root(v)), at);
    }
    for (auto [i, v] : llvm::enumerate(ret->getOperands()))
      if (llvm::count(ret->getOperands(), v) == 1 && v.getDefiningOp() && !rootOf.count(v))
        returnedAt[v] = i;
    for (auto [src, c] : epilogueOf)
      epilogueSrc[c] = src;
    for (auto &[v, at] : lastUse)
      releaseAt[at].push_back(v);

  }

  // The op whose loop nest computes `op` (itself, its fused consumer, or
  // the product or reduction whose epilogue it is), and whether the way
  // there keeps one element per element (no reduction in between).
  std::pair<Operation *, bool> nestOf(Operation *op) {
    bool pointwise = true;
    while (fused.contains(op)) {
      op = consumerOf.lookup(op);
      pointwise &= !isReduction(op);
    }
    if (Operation *src = epilogueSrc.lookup(op))
      return {src, pointwise};
    return {op, pointwise && scalars().count(op->getName().getTypeID())};
  }
  // Whether `d`'s result may be stored over `a` (same type): every read
  // of `a` (or a view of it) comes from an earlier kernel, an earlier loop
  // nest of `d`'s kernel, or `d`'s own nest as an elementwise op of `a`'s
  // shape computing `d` (the element is overwritten as soon as `d` is
  // computed, so nothing else in the nest may read the old one).
  bool overwritable(Value a, Operation *d) {
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
  }

  // Updates in place: a returned value that replaces an argument (same
  // name, as an optimizer's new weights and moments or a layer's running
  // statistics) is stored into that argument's buffer when legal. The
  // runtime then neither allocates the result nor copies it back
  // (`nnc.inplace`).
  void planInPlace() {
    inPlace.assign(fn.getNumResults(), -1);
    for (auto [v, i] : returnedAt) {
      auto resultName = fn.getResultAttrOfType<StringAttr>(i, nnops::attr::kName);
      if (!resultName || !cast<RankedTensorType>(v.getType()).getElementType().isF32())
        continue;
      for (BlockArgument a : fn.getArguments())
        if (fn.getArgAttrOfType<StringAttr>(a.getArgNumber(), nnops::attr::kName) == resultName &&
            cast<RankedTensorType>(a.getType()).hasStaticShape() &&
            !llvm::is_contained(inPlace, int64_t(a.getArgNumber())) && overwritable(a, v.getDefiningOp())) {
          inPlaceOf[v] = a;
          inPlace[i] = a.getArgNumber();
          break;
        }
    }
  }

  /// A slot of the memory plan (codegen::SlotPlanner) for `r`: a buffer
  /// argument of the lowered function.
  FailureOr<Value> bufferFor(Value r) {
    auto [perBatch, fixed] = bytesOf(r);
    unsigned slot = planner.acquire({perBatch, fixed});
    while (slotArgs.size() < planner.sizes().size())
      slotArgs.push_back(body->addArgument(MemRefType::get({1}, i8), loc));
    slotOf[r] = slot;
    return slotView(r, slot);
  }
  /// `r` viewed in `slot`.
  FailureOr<Value> slotView(Value r, unsigned slot) {
    codegen::SlotSize size = planner.sizes()[slot];
    return viewOf(r, slotArgs[slot], size.perBatch, size.fixed);
  }
  // The buffer a computed value is stored into. An elementwise result
  // (an activation's gradient, most often) takes over the slot of a value
  // of its type that its kernel reads for the last time, where legal.
  FailureOr<Value> outputFor(Value r) {
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
          return slotView(r, slot);
        }
    return bufferFor(r);
  }
  // `src` seen with the shape of `v` (same elements, row-major).
  FailureOr<Value> reshaped(Value src, Value v) {
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
  }

  // Whether the fused producers of `op` can be emitted as vectors along
  // the last axis: elementwise ops only (a one-hot or a transpose indexes
  // across that axis).
  bool vectorizable(Operation *op) {
    for (Value v : op->getOperands()) {
      Operation *def = v.getDefiningOp();
      if (!def || !fused.contains(def) || consumerOf.lookup(def) != op)
        continue;
      if (!scalars().count(def->getName().getTypeID()) || !vectorizable(def))
        return false;
    }
    return true;
  }

  LogicalResult bind(Emitter &e, Operation *op) {
    for (Value v : op->getOperands()) {
      e.in.push_back(buffers.lookup(v));
      Operation *def = v.getDefiningOp();
      if (def && def == epilogueSource) {
        e.gen.emplace_back([this](ValueRange) { return epilogueValue; });
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
  }

  std::pair<int64_t, int64_t> elements(Value v) {
    auto t = cast<RankedTensorType>(v.getType());
    int64_t n = 1;
    bool dynamic = false;
    for (int64_t i = 0; i < t.getRank(); ++i) {
      dynamic |= t.isDynamicDim(i);
      n *= t.isDynamicDim(i) ? scaling.lookup(v)[i] : t.getDimSize(i);
    }
    return dynamic ? std::make_pair(n, int64_t(0)) : std::make_pair(int64_t(0), n);
  }
  void hook(StringRef fnName, int64_t id) {
    if (!target.lookupSymbol(fnName)) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(target.getBody());
      b.create<func::FuncOp>(loc, fnName, b.getFunctionType({b.getI64Type()}, {})).setPrivate();
    }
    Value idv = b.create<arith::ConstantOp>(loc, b.getI64IntegerAttr(id));
    b.create<func::CallOp>(loc, fnName, TypeRange{}, ValueRange{idv});
  }
  // A kernel's members, where it comes from, its floating-point operations
  // and the bytes it reads and writes (values from and to other kernels).
  void describe(ArrayRef<Operation *> members, Operation *main) {
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
    SmallVector<NamedAttribute> entry{b.getNamedAttr("ops", b.getStringAttr(names)),
                                      b.getNamedAttr("loc", b.getStringAttr(where(main->getLoc()))),
                                      b.getNamedAttr("members", b.getArrayAttr(locs)),
                                      b.getNamedAttr("flops", b.getDenseI64ArrayAttr({flops.first, flops.second})),
                                      b.getNamedAttr("bytes", b.getDenseI64ArrayAttr({bytes.first, bytes.second}))};
    // A tiled kernel: its choices, their key and the alternatives `nnc tune`
    // times.
    if (auto tiling = main->getAttrOfType<DictionaryAttr>(cpu::kTilingAttr)) {
      SmallVector<DictionaryAttr> candidates = cpu::tilingCandidates(main);
      entry.push_back(b.getNamedAttr("tiling", tiling));
      entry.push_back(b.getNamedAttr("tiling_key", b.getStringAttr(cpu::tilingSignature(main))));
      entry.push_back(b.getNamedAttr("tiling_candidates",
                                     b.getArrayAttr(SmallVector<Attribute>(candidates.begin(), candidates.end()))));
    }
    kernels.push_back(b.getDictionaryAttr(entry));
  }
  // Collapses axes [from, rank) of every buffer of shape `full` that the
  // elementwise `emitters` read or write into one axis (from 0: 1-D views)
  // and puts them in flat mode, if each reads only such buffers, one-element
  // ones, literals and values of that shape from fused producers, and
  // writes only such buffers; returns whether it did.
  bool collapseAll(ArrayRef<Emitter *> emitters, Type full, int64_t from) {
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
  }
  // An elementwise kernel whose buffers (its own and its fused producers')
  // all have the result's shape or hold one element, in identity layout,
  // runs in flat mode: over 1-D views of them, one linear index.
  void flatten(Emitter &e) {
    Type full = e.op->getResult(0).getType();
    if (cast<ShapedType>(full).getRank() < 2)
      return;
    SmallVector<Emitter *> all{&e};
    for (Emitter &p : producers)
      all.push_back(&p);
    (void)collapseAll(all, full, 0);
  }
  // A sum or maximum over trailing axes (a per-channel bias gradient: the
  // batch, rows and columns of N x C x H x W) of values its fused
  // producers compute: when every buffer they read or write has the summed
  // operand's shape (or one element), those axes are collapsed into one in
  // all of them, so the innermost loop runs over H * W elements (28-wide
  // rows, LeNet-5's, are too short for LLVM to vectorize well).
  void flattenReduction(Emitter &e, size_t own) {
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
  }

  // One op of a kernel, with its fused producers and its epilogue.
  LogicalResult lowerOne(Operation *op) {
    auto it = lowerings().find(op->getName().getTypeID());
    if (it == lowerings().end())
      return op->emitError("the CPU backend cannot lower '") << op->getName() << "'";
    Emitter e{b, op->getLoc(), op, {}, {}, {}, rng, batch, globals, target, name, &scaling};
    e.scratch = [this](MemRefType t) { return scratch(t); };
    if (fn->hasAttr(cpu::kCacheWeightsAttr))
      e.cached = [this](MemRefType t, function_ref<void(Value)> compute) { return cached(t, compute); };
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
      // Batch norm normalizes whole rows as vectors where its consumer's
      // math is elementwise.
      if (isa<nnops::BatchNormOp>(op) && cast<ShapedType>(op->getResult(0).getType()).getRank() >= 3 &&
          scalars().count(c->getName().getTypeID()) && vectorizable(c))
        ce.lanes = e.epilogueLanes = kLanes;
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
      e.epilogue = [this, &ce, out](Value v, ValueRange ivs) {
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
    if (!epilogueOf.lookup(op) && !e.lanes && scalars().count(op->getName().getTypeID())) {
      flatten(e);
      // With broadcast operands (a per-channel bias) the kernel cannot run
      // flat; it runs on vectors along the last axis instead. As scalar
      // loops, a short last axis (a 4x4 map) is unrolled by LLVM and the
      // loop around it vectorized with a gather per element.
      ArrayRef<int64_t> shape = shapeOf(op->getResult(0));
      if (!e.flat && shape.size() >= 2 && !ShapedType::isDynamic(shape.back()) && shape.back() > 1 &&
          vectorizable(op)) {
        e.lanes = kLanes;
        for (size_t i = 0; i < own; ++i)
          producers[i].lanes = kLanes;
      }
    }
    else if (!e.lanes && nnops::isReduction(op))
      flattenReduction(e, own);
    LogicalResult done = it->second(e);
    producers.clear();
    return done;
  }

  /// Lowers `op`: a reshape as a view, the first member of a kernel as
  /// the whole kernel (in an execute_region, OutlineKernels' unit).
  LogicalResult lowerAt(Operation &op) {
    if (isa<nnops::ReshapeOp>(op)) {
      auto view = reshaped(buffers.lookup(op.getOperand(0)), op.getResult(0));
      if (failed(view))
        return failure();
      buffers[op.getResult(0)] = *view;
      if (inFlight.contains(op.getOperand(0)))
        inFlight.insert(op.getResult(0));
      return success();
    }
    auto k = kernelOf.find(&op);
    if (k == kernelOf.end() || kernelList[k->second].front() != &op)
      return success(); // a literal, or a member of a kernel already emitted
    ArrayRef<Operation *> members = kernelList[k->second];
    for (Operation *m : members)
      if (llvm::any_of(m->getOperands(), [&](Value v) { return inFlight.contains(v); }))
        waitForCollectives();
    auto isRoot = [&](Operation *m) { return !fused.contains(m) && !absorbed.contains(m); };
    int64_t id = static_cast<int64_t>(kernels.size());
    describe(members, *llvm::find_if(members, isRoot));
    if (profile)
      hook("nnc_profile_begin", id);
    auto region = b.create<scf::ExecuteRegionOp>(loc, TypeRange{});
    region->setAttr(kKernelAttr, b.getI64IntegerAttr(id));
    kernelRegion = region;
    b.setInsertionPointToStart(b.createBlock(&region.getRegion()));
    for (Operation *m : members)
      if (isRoot(m) && failed(lowerOne(m)))
        return failure();
    b.create<scf::YieldOp>(loc);
    b.setInsertionPointAfter(region);
    kernelRegion = nullptr;
    for (Operation *m : members)
      if (isa<nnops::AllReduceOp>(m))
        inFlight.insert(m->getResult(0));
    if (profile)
      hook("nnc_profile_end", id);
    // Values read for the last time free their slots; so do results that
    // are never read (a dropout mask in evaluation).
    for (Value v : releaseAt.lookup(k->second))
      if (slotOf.count(v))
        planner.release(slotOf[v]);
    for (Operation *m : members)
      for (Value r : m->getResults())
        if (r.use_empty() && slotOf.count(r))
          planner.release(slotOf[r]);
    for (unsigned slot : kernelScratch)
      planner.release(slot);
    kernelScratch.clear();
    return success();
  }

  /// nn.all_reduce only starts its combination (runtime/Distributed.h), so
  /// that the step computes on while gradients travel; the first kernel
  /// that reads a combined value (an optimizer update, after the whole
  /// backward pass) waits for all of them.
  void waitForCollectives() {
    if (inFlight.empty())
      return;
    constexpr StringLiteral kWait = "nnc_all_reduce_wait";
    if (!target.lookupSymbol(kWait)) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(target.getBody());
      b.create<func::FuncOp>(loc, kWait, b.getFunctionType({}, {})).setPrivate();
    }
    b.create<func::CallOp>(loc, kWait, TypeRange{}, ValueRange{});
    inFlight.clear();
  }

  /// Copies of results computed elsewhere; the plan and kernel table as
  /// attributes.
  void finish() {
    waitForCollectives();
    for (auto [i, v] : llvm::enumerate(ret->getOperands()))
      if (!returnedAt.count(v))
        b.create<memref::CopyOp>(loc, buffers.lookup(v), resultBuffers[i]);
    b.create<func::ReturnOp>(loc);

    lowered.setType(b.getFunctionType(body->getArgumentTypes(), {}));
    lowered->setAttr("nnc.slots", b.getDenseI64ArrayAttr(planner.flattened()));
    lowered->setAttr("nnc.cache", b.getI64IntegerAttr(cacheBytes > 64 ? cacheBytes : 0));
    lowered->setAttr("nnc.kernels", b.getArrayAttr(kernels));
    lowered->setAttr("nnc.inplace", b.getDenseI64ArrayAttr(inPlace));
    // No two buffers overlap.
    for (unsigned i = 0; i < lowered.getNumArguments(); ++i)
      if (isa<MemRefType>(lowered.getArgument(i).getType()))
        lowered.setArgAttr(i, "llvm.noalias", b.getUnitAttr());
  }

  func::FuncOp fn;
  const BatchScaling &scaling;
  ModuleOp target;
  StringRef name;
  bool profile;
  OpBuilder b;
  Location loc;
  Type i8;
  MemRefType rawType;
  func::FuncOp lowered;
  Block *body = nullptr;
  unsigned numBuffers = 0;
  Value cacheArg, rng, batch;
  int64_t cacheBytes = 64; // the first line holds the weights' version
  /// The kernel being emitted (an scf.execute_region that OutlineKernels
  /// makes a function of), if any. Buffer views are built before it, in
  /// the function's body, as later kernels read them too.
  Operation *kernelRegion = nullptr;
  Operation *ret = nullptr; // the nn function's return
  llvm::DenseMap<Value, Value> buffers;
  SmallVector<Value> resultBuffers;
  llvm::DenseSet<Value> inFlight; // nn.all_reduce results not yet waited for
  // Fusion roles (planFusion).
  std::vector<SmallVector<Operation *>> groups;
  llvm::DenseMap<Operation *, unsigned> groupOf;
  llvm::DenseSet<Operation *> fused, stored, absorbed;
  llvm::DenseMap<Operation *, Operation *> consumerOf, epilogueOf, epilogueSrc;
  // Kernels (listKernels).
  llvm::DenseSet<Operation *> immediate;
  std::vector<SmallVector<Operation *>> kernelList;
  llvm::DenseMap<Operation *, unsigned> kernelOf;
  llvm::DenseMap<Value, Value> rootOf;
  // Lifetimes and memory (planLifetimes, planInPlace, bufferFor).
  llvm::DenseMap<Value, unsigned> lastUse;
  llvm::DenseMap<Value, unsigned> returnedAt; // values returned once
  llvm::DenseMap<unsigned, SmallVector<Value>> releaseAt;
  llvm::DenseMap<Value, Value> inPlaceOf;     // returned value -> argument
  SmallVector<int64_t> inPlace;
  codegen::SlotPlanner planner;
  SmallVector<Value> slotArgs; // per slot, its argument
  SmallVector<unsigned> kernelScratch; // the slots of the kernel being emitted's scratch
  llvm::DenseMap<Value, unsigned> slotOf;
  // Emission (bind, lowerOne).
  /// Emitters of fused ops, kept alive while their consumers are emitted.
  std::deque<Emitter> producers;
  unsigned globals = 0;
  /// While an epilogue is emitted: the op whose value it receives, and that
  /// value at the current element.
  Operation *epilogueSource = nullptr;
  Value epilogueValue;
  /// Per kernel: its ops, where it comes from, its FLOPs and bytes.
  SmallVector<Attribute> kernels;
};

} // namespace

LogicalResult cpu::lowerToLoops(func::FuncOp fn, const BatchScaling &scaling, ModuleOp target,
                                StringRef name, bool profile) {
  return StepLowering(fn, scaling, target, name, profile).run();
}

namespace nnc {
#define GEN_PASS_DEF_LOWERTOLOOPS
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

namespace {
struct LowerToLoopsPass : nnc::impl::LowerToLoopsBase<LowerToLoopsPass> {
  using LowerToLoopsBase::LowerToLoopsBase;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> nnFunctions;
    for (func::FuncOp fn : module.getOps<func::FuncOp>())
      if (!fn.isExternal() && llvm::any_of(fn.getFunctionType().getInputs(),
                                           [](Type t) { return isa<RankedTensorType>(t); }))
        nnFunctions.push_back(fn);
    for (func::FuncOp fn : nnFunctions) {
      std::string name = fn.getName().str();
      fn.setName(name + ".nn"); // the lowered function takes the name
      if (failed(cpu::lowerToLoops(fn, codegen::readBatchScaling(fn), module, name, profile)))
        return signalPassFailure();
      fn.erase();
    }
  }
};
} // namespace

void cpu::buildLoopsPipeline(OpPassManager &pm, std::optional<int64_t> batch, bool fuse, bool profile) {
  codegen::buildPreparePipeline(pm, batch, fuse);
  pm.nest<func::FuncOp>().addPass(createChooseTiling());
  pm.addPass(createLowerToLoops(LowerToLoopsOptions{profile}));
}

void cpu::registerPasses() {
  registerChooseTiling();
  registerLowerToLoops();
  registerOutlineKernels();
  registerPartitionCode();
  registerAliasScopes();
  PassPipelineRegistration<>("nnc-cpu-loops", "Prepare and lower to loops for the CPU",
                             [](OpPassManager &pm) { buildLoopsPipeline(pm, std::nullopt, true, false); });
  PassPipelineRegistration<>("nnc-cpu-llvm", "Loops to the LLVM dialect",
                             [](OpPassManager &pm) { buildLLVMPipeline(pm); });
}
