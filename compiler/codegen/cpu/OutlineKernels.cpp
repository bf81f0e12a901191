//===- OutlineKernels.cpp - one function per kernel -----------------------===//
//
// lowerToLoops leaves each kernel in an scf.execute_region of the step
// function; this moves it into a function of its own. The arguments of a
// kernel function are the step function's arguments it uses (buffers as
// static memrefs or byte buffers, rng, batch): all of them pass as bare
// pointers or integers. The views and sizes it reads (memref.view,
// reinterpret casts, index arithmetic) are free of side effects and are
// cloned into it.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LowerToLoops.h"
#include "compiler/transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/ViewLikeInterface.h"
#include "mlir/Transforms/RegionUtils.h"

#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringMap.h"

using namespace mlir;
using namespace nnc;

/// Whether `v` can be a kernel's argument as a bare pointer: a view of a
/// workspace slot with a static shape and the identity layout. Passed
/// rather than rebuilt inside, so that two kernels that differ only in
/// where their buffers lie are the same code (shareKernels).
static bool isPassedView(Value v) {
  auto view = v.getDefiningOp<memref::ViewOp>();
  if (!view)
    return false;
  auto type = view.getType();
  return type.hasStaticShape() && type.getLayout().isIdentity();
}

/// The argument of `fn` that `v` derives from through views, subviews,
/// reshapes and casts (null if none).
static BlockArgument rootArgument(Value v) {
  while (Operation *d = v.getDefiningOp()) {
    auto view = dyn_cast<ViewLikeOpInterface>(d);
    if (!view)
      return {};
    v = view.getViewSource();
  }
  return dyn_cast<BlockArgument>(v);
}

/// Outlines `region` (a kernel of `fn`) as `name`.
static FailureOr<func::FuncOp> outline(func::FuncOp fn, scf::ExecuteRegionOp region, StringRef name) {
  // The values it reads from above, in the order of first use (so that
  // kernels that are the same code take their arguments in the same order).
  llvm::SetVector<Value> above;
  getUsedValuesDefinedAbove(region.getRegion(), above);
  // A view is passed when it is the kernel's only way to its buffer: views
  // of one buffer (an operand updated in place) are rebuilt from the
  // buffer, whose alias scope they then share (AliasScopes).
  llvm::DenseMap<BlockArgument, unsigned> waysTo;
  for (Value v : above)
    if (BlockArgument root = rootArgument(v))
      ++waysTo[root];
  auto passed = [&](Value v) { return isPassedView(v) && waysTo.lookup(rootArgument(v)) == 1; };
  // The arguments it takes and the side-effect-free ops it rebuilds.
  llvm::SetVector<Value> args;
  llvm::SetVector<Operation *> rebuilt;
  SmallVector<Value> work(llvm::reverse(above));
  while (!work.empty()) {
    Value v = work.pop_back_val();
    if (auto a = dyn_cast<BlockArgument>(v)) {
      if (a.getOwner()->getParentOp() != fn)
        return region.emitError("a kernel reads a value of an enclosing region");
      args.insert(a);
      continue;
    }
    if (passed(v)) {
      args.insert(v);
      continue;
    }
    Operation *d = v.getDefiningOp();
    if (d->getNumRegions() || !isMemoryEffectFree(d))
      return d->emitError("a kernel reads a value computed outside it with side effects");
    if (rebuilt.insert(d))
      for (Value operand : llvm::reverse(d->getOperands()))
        work.push_back(operand);
  }
  SmallVector<Operation *> order(rebuilt.begin(), rebuilt.end());
  llvm::sort(order, [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });

  OpBuilder b(fn);
  SmallVector<Type> types;
  for (Value a : args)
    types.push_back(a.getType());
  auto kernel = b.create<func::FuncOp>(region.getLoc(), name, b.getFunctionType(types, {}));
  kernel.setPrivate();
  // Never inlined back into the step: see outlineKernels.
  kernel->setAttr("passthrough", b.getArrayAttr({b.getStringAttr("noinline")}));
  Block *body = kernel.addEntryBlock();
  IRMapping map;
  for (auto [i, a] : llvm::enumerate(args)) {
    map.map(a, body->getArgument(i));
    // noalias holds here too: distinct buffers (a passed view is its
    // buffer's only way in).
    if (BlockArgument root = rootArgument(a))
      if (DictionaryAttr attrs = fn.getArgAttrDict(root.getArgNumber()))
        kernel.setArgAttrs(i, attrs);
  }
  b.setInsertionPointToStart(body);
  for (Operation *op : order)
    b.clone(*op, map);
  Block &from = region.getRegion().front();
  body->getOperations().splice(body->end(), from.getOperations());
  Operation *yield = body->getTerminator();
  b.setInsertionPoint(yield);
  b.create<func::ReturnOp>(yield->getLoc());
  yield->erase();
  for (Value v : above)
    replaceAllUsesInRegionWith(v, map.lookup(v), kernel.getBody());

  b.setInsertionPoint(region);
  SmallVector<Value> operands(args.begin(), args.end());
  b.create<func::CallOp>(region.getLoc(), kernel, operands);
  region.erase();
  return kernel;
}

/// Calls to kernels that are the same code but for their names (a layer
/// repeated: same shapes, same fused ops) go to the first of them; the
/// others are erased, so the code of a repeated layer is generated once.
static void shareKernels(ModuleOp module, ArrayRef<func::FuncOp> kernels) {
  llvm::StringMap<func::FuncOp> byCode;
  llvm::DenseMap<StringAttr, func::FuncOp> replacement;
  OpPrintingFlags flags;
  flags.useLocalScope();
  for (func::FuncOp k : kernels) {
    StringAttr name = k.getSymNameAttr();
    k.setSymName("kernel"); // the text without the name
    std::string code;
    llvm::raw_string_ostream os(code);
    k->print(os, flags);
    k.setSymNameAttr(name);
    auto [it, fresh] = byCode.try_emplace(code, k);
    if (!fresh)
      replacement[name] = it->second;
  }
  if (replacement.empty())
    return;
  module.walk([&](func::CallOp call) {
    if (func::FuncOp to = replacement.lookup(call.getCalleeAttr().getAttr()))
      call.setCallee(to.getSymName());
  });
  for (func::FuncOp k : kernels)
    if (replacement.count(k.getSymNameAttr()))
      k.erase();
}

LogicalResult cpu::outlineKernels(ModuleOp module) {
  SmallVector<func::FuncOp> fns(module.getOps<func::FuncOp>());
  SmallVector<func::FuncOp> outlined;
  for (func::FuncOp fn : fns) {
    if (fn.isExternal())
      continue;
    SmallVector<scf::ExecuteRegionOp> kernels;
    for (auto region : fn.front().getOps<scf::ExecuteRegionOp>())
      if (auto id = region->getAttrOfType<IntegerAttr>(kKernelAttr))
        kernels.push_back(region);
    for (scf::ExecuteRegionOp region : kernels) {
      int64_t id = region->getAttrOfType<IntegerAttr>(kKernelAttr).getInt();
      auto kernel = outline(fn, region, (fn.getName() + "_k" + Twine(id)).str());
      if (failed(kernel))
        return failure();
      outlined.push_back(*kernel);
    }
    // Views only the kernels read are dead in the step now.
    for (Operation &op : llvm::make_early_inc_range(llvm::reverse(fn.front())))
      if (op.use_empty() && isMemoryEffectFree(&op) && !op.hasTrait<OpTrait::IsTerminator>())
        op.erase();
  }
  shareKernels(module, outlined);
  return success();
}

namespace nnc {
#define GEN_PASS_DEF_OUTLINEKERNELS
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

namespace {
struct OutlineKernelsPass : nnc::impl::OutlineKernelsBase<OutlineKernelsPass> {
  void runOnOperation() override {
    if (failed(cpu::outlineKernels(getOperation())))
      signalPassFailure();
  }
};
} // namespace
