//===- Prepare.cpp - the fused function both backends lower ---------------===//

#include "compiler/codegen/common/Prepare.h"
#include "compiler/transforms/Fusion.h"
#include "compiler/transforms/Passes.h"
#include "compiler/transforms/GradBuilder.h"

#include "dialects/nn/NNOps.h"

#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

static RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

LogicalResult codegen::specializeBatch(func::FuncOp fn, int64_t batch) {
  Block &body = fn.front();
  for (BlockArgument arg : body.getArguments()) {
    RankedTensorType t = typeOf(arg);
    SmallVector<int64_t> shape;
    for (int64_t d : t.getShape())
      shape.push_back(ShapedType::isDynamic(d) ? batch : d);
    arg.setType(RankedTensorType::get(shape, t.getElementType()));
  }
  for (Operation &op : body.without_terminator()) {
    auto infer = dyn_cast<InferTypeOpInterface>(&op);
    if (!infer)
      return op.emitError("cannot specialize '") << op.getName() << "'";
    SmallVector<Type> types;
    if (failed(infer.inferReturnTypes(op.getContext(), op.getLoc(), op.getOperands(),
                                      op.getAttrDictionary(), op.getPropertiesStorage(),
                                      op.getRegions(), types)))
      return failure();
    for (auto [r, t] : llvm::zip(op.getResults(), types))
      r.setType(t);
  }
  fn.setType(FunctionType::get(fn.getContext(), body.getArgumentTypes(),
                               body.getTerminator()->getOperandTypes()));
  return success();
}

FailureOr<codegen::BatchScaling> codegen::batchScaling(func::FuncOp fn) {
  auto valuesOf = [](func::FuncOp f) {
    SmallVector<Value> vs(f.getArguments().begin(), f.getArguments().end());
    for (Operation &op : f.front().without_terminator())
      vs.append(op.getResults().begin(), op.getResults().end());
    return vs;
  };
  OwningOpRef<func::FuncOp> one(cast<func::FuncOp>(fn->clone()));
  OwningOpRef<func::FuncOp> two(cast<func::FuncOp>(fn->clone()));
  if (failed(specializeBatch(*one, 1)) || failed(specializeBatch(*two, 2)))
    return failure();
  BatchScaling out;
  for (auto [v, a, c] : llvm::zip(valuesOf(fn), valuesOf(*one), valuesOf(*two))) {
    ArrayRef<int64_t> s = typeOf(v).getShape(), s1 = typeOf(a).getShape(),
                      s2 = typeOf(c).getShape();
    SmallVector<int64_t> per(s);
    unsigned dynamic = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (!ShapedType::isDynamic(s[i]))
        continue;
      ++dynamic;
      if (s2[i] != 2 * s1[i])
        return emitError(v.getLoc(), "a size of this value does not grow in proportion to the "
                                     "batch size, which the CPU backend needs");
      per[i] = s1[i];
    }
    if (dynamic > 1)
      return emitError(v.getLoc(), "this value has ")
             << dynamic << " batch-sized axes; the CPU backend supports one";
    out[v] = std::move(per);
  }
  return out;
}

namespace {

/// Builds the core-op form of one composite op; returns its replacement
/// values, or an empty vector to keep the op.
SmallVector<Value> expand(Operation *op, GradBuilder &g) {
  OpBuilder &b = g.builder();
  auto exp = [&](Value v) { return g.make<nnops::ExpOp>({v}); };
  auto log = [&](Value v) { return g.make<nnops::LogOp>({v}); };
  auto sqrt = [&](Value v) { return g.make<nnops::SqrtOp>({v}); };
  // Losses: per-item values reduced by the op's `reduction`.
  auto reduceLoss = [&](Value perItem) -> Value {
    auto r = op->getAttrOfType<StringAttr>("reduction");
    StringRef red = r ? r.getValue() : "mean";
    if (red == "none")
      return perItem;
    Value s = g.sumAxes(perItem, {}, false);
    return red == "sum" ? s : g.div(s, g.count(perItem, {}));
  };
  auto rowSum = [&](Value v) { return g.sumAxes(v, {1}, false); };
  auto onehot = [&](Value labels, int64_t classes) {
    return g.make<nnops::OneHotOp>({labels},
                                   {b.getNamedAttr("num_classes", b.getI64IntegerAttr(classes))});
  };
  auto clampedLog = [&](Value v) {
    return g.sub(g.make<nnops::ReluOp>({g.add(log(v), 100.0)}), g.scalar(100.0));
  };

  if (auto o = dyn_cast<nnops::SoftmaxOp>(op)) {
    int64_t a = o.getAxis();
    Value e = exp(g.sub(o.getInput(), g.make<nnops::ReduceMaxOp>(
                                          {o.getInput()}, {b.getNamedAttr("axes", b.getDenseI64ArrayAttr({a})),
                                                           b.getNamedAttr("keepdims", b.getBoolAttr(true))})));
    return {g.div(e, g.sumAxes(e, {a}, true))};
  }
  if (auto o = dyn_cast<nnops::LogSoftmaxOp>(op)) {
    int64_t a = o.getAxis();
    Value z = g.sub(o.getInput(), g.make<nnops::ReduceMaxOp>(
                                      {o.getInput()}, {b.getNamedAttr("axes", b.getDenseI64ArrayAttr({a})),
                                                       b.getNamedAttr("keepdims", b.getBoolAttr(true))}));
    return {g.sub(z, log(g.sumAxes(exp(z), {a}, true)))};
  }
  if (auto o = dyn_cast<nnops::GroupNormOp>(op)) {
    Value x = o.getInput();
    RankedTensorType xt = typeOf(x);
    int64_t rank = xt.getRank(), groups = o.getGroups(), per = xt.getDimSize(1) / groups;
    for (int64_t i = 2; i < rank; ++i)
      per *= xt.getDimSize(i);
    Value xr = g.reshapeTo(x, {xt.getDimSize(0), groups, per});
    Value xc = g.sub(xr, g.meanAxes(xr, {2}, true));
    Value var = g.meanAxes(g.mul(xc, xc), {2}, true);
    Value xhat = g.reshapeTo(g.div(xc, sqrt(g.add(var, o.getEps().convertToDouble()))),
                             xt.getShape());
    return {g.add(g.mul(xhat, g.channels(o.getGamma(), rank)), g.channels(o.getBeta(), rank))};
  }
  if (auto o = dyn_cast<nnops::LocalResponseNormOp>(op)) {
    int64_t n = o.getSize();
    Value x = o.getInput();
    Value s = g.make<nnops::ChannelWindowSumOp>(
        {g.mul(x, x)}, {b.getNamedAttr("before", b.getI64IntegerAttr(n / 2)),
                        b.getNamedAttr("after", b.getI64IntegerAttr((n - 1) / 2))});
    Value d = g.add(g.mul(s, o.getAlpha().convertToDouble() / n), o.getK().convertToDouble());
    return {g.mul(x, g.make<nnops::PowOp>({d, g.scalar(-o.getBeta().convertToDouble())}))};
  }
  if (auto o = dyn_cast<nnops::ReduceMeanOp>(op))
    return {g.div(g.sumAxes(o.getInput(), o.getAxes(), o.getKeepdims()),
                  g.count(o.getInput(), o.getAxes()))};
  if (auto o = dyn_cast<nnops::MseLossOp>(op)) {
    Value d = g.sub(o.getInput(), o.getTarget());
    return {reduceLoss(g.mul(d, d))};
  }
  if (auto o = dyn_cast<nnops::L1LossOp>(op))
    return {reduceLoss(g.make<nnops::AbsOp>({g.sub(o.getInput(), o.getTarget())}))};
  if (auto o = dyn_cast<nnops::BceLossOp>(op)) {
    Value p = o.getInput(), t = o.getTarget();
    Value l = g.add(g.mul(t, clampedLog(p)), g.mul(g.rsub(1.0, t), clampedLog(g.rsub(1.0, p))));
    return {reduceLoss(g.neg(l))};
  }
  if (auto o = dyn_cast<nnops::CrossEntropyOp>(op)) {
    Value p = o.getInput(), t = o.getTarget();
    if (typeOf(t).getElementType().isInteger(32))
      return {reduceLoss(g.neg(log(rowSum(g.mul(p, onehot(t, typeOf(p).getDimSize(1)))))))};
    return {reduceLoss(g.neg(rowSum(g.mul(t, log(p)))))};
  }
  if (auto o = dyn_cast<nnops::SoftmaxCrossEntropyOp>(op)) {
    Value x = o.getInput();
    Value m = g.make<nnops::ReduceMaxOp>({x}, {b.getNamedAttr("axes", b.getDenseI64ArrayAttr({1})),
                                               b.getNamedAttr("keepdims", b.getBoolAttr(true))});
    Value lse = g.add(g.reshapeTo(m, {typeOf(x).getDimSize(0)}),
                      log(rowSum(exp(g.sub(x, m)))));
    Value picked = rowSum(g.mul(x, onehot(o.getTarget(), typeOf(x).getDimSize(1))));
    return {reduceLoss(g.sub(lse, picked))};
  }
  return {};
}

} // namespace

LogicalResult codegen::decompose(func::FuncOp fn) {
  // Expansions may create composite ops themselves (a batch norm's means):
  // repeat until nothing changes.
  for (bool changed = true; changed;) {
    changed = false;
    SmallVector<Operation *> ops;
    for (Operation &op : fn.front().without_terminator())
      ops.push_back(&op);
    for (Operation *op : ops) {
      OpBuilder b(op);
      GradBuilder g(b, op->getLoc());
      SmallVector<Value> repl = expand(op, g);
      if (repl.empty())
        continue;
      op->replaceAllUsesWith(repl);
      op->erase();
      changed = true;
    }
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Batch scaling in the IR
//===----------------------------------------------------------------------===//

/// `per` as the attribute batch scaling records (an empty array for a
/// value of static shape).
static DenseI64ArrayAttr perBatchAttr(MLIRContext *ctx, Value v, const codegen::BatchScaling &s) {
  auto it = s.find(v);
  if (it == s.end() || typeOf(v).hasStaticShape())
    return DenseI64ArrayAttr::get(ctx, {});
  return DenseI64ArrayAttr::get(ctx, it->second);
}

LogicalResult codegen::recordBatchScaling(func::FuncOp fn) {
  auto s = batchScaling(fn);
  if (failed(s))
    return failure();
  MLIRContext *ctx = fn.getContext();
  for (BlockArgument a : fn.getArguments())
    if (!typeOf(a).hasStaticShape())
      fn.setArgAttr(a.getArgNumber(), kPerBatchAttr, perBatchAttr(ctx, a, *s));
  for (Operation &op : fn.front().without_terminator()) {
    if (llvm::all_of(op.getResultTypes(), [](Type t) { return cast<RankedTensorType>(t).hasStaticShape(); }))
      continue;
    SmallVector<Attribute> per;
    for (Value r : op.getResults())
      per.push_back(perBatchAttr(ctx, r, *s));
    op.setAttr(kPerBatchAttr, ArrayAttr::get(ctx, per));
  }
  return success();
}

codegen::BatchScaling codegen::readBatchScaling(func::FuncOp fn) {
  // Every value has an entry, as batchScaling gives: a static value its
  // shape.
  BatchScaling out;
  auto note = [&](Value v, Attribute a) {
    auto type = dyn_cast<RankedTensorType>(v.getType());
    if (!type)
      return;
    auto per = dyn_cast_or_null<DenseI64ArrayAttr>(a);
    if (per && !per.empty())
      out[v] = SmallVector<int64_t>(per.asArrayRef());
    else if (type.hasStaticShape())
      out[v] = SmallVector<int64_t>(type.getShape());
  };
  for (BlockArgument a : fn.getArguments())
    note(a, fn.getArgAttr(a.getArgNumber(), kPerBatchAttr));
  fn.walk([&](Operation *op) {
    auto per = op->getAttrOfType<ArrayAttr>(kPerBatchAttr);
    for (auto [i, r] : llvm::enumerate(op->getResults()))
      note(r, per && i < per.size() ? per[i] : Attribute());
  });
  // A kernel's results scale as the values its body yields.
  fn.walk([&](nnops::KernelOp k) {
    for (auto [r, y] : llvm::zip(k.getResults(), k.getBody().front().getTerminator()->getOperands()))
      if (auto it = out.find(y); it != out.end()) {
        SmallVector<int64_t> per = it->second; // (inserting may move the map's entries)
        out[r] = std::move(per);
      }
  });
  return out;
}

//===----------------------------------------------------------------------===//
// The passes and the pipeline
//===----------------------------------------------------------------------===//

namespace nnc {
#define GEN_PASS_DEF_SELECTFUNCTIONS
#define GEN_PASS_DEF_SPECIALIZEBATCH
#define GEN_PASS_DEF_DECOMPOSE
#define GEN_PASS_DEF_BATCHSCALING
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

namespace {

struct SelectFunctionsPass : nnc::impl::SelectFunctionsBase<SelectFunctionsPass> {
  using SelectFunctionsBase::SelectFunctionsBase;
  void runOnOperation() override {
    if (functions.empty())
      return;
    for (func::FuncOp fn : llvm::make_early_inc_range(getOperation().getOps<func::FuncOp>()))
      if (!llvm::is_contained(functions, fn.getName().str()))
        fn.erase();
  }
};

struct SpecializeBatchPass : nnc::impl::SpecializeBatchBase<SpecializeBatchPass> {
  using SpecializeBatchBase::SpecializeBatchBase;
  void runOnOperation() override {
    if (batch > 0 && failed(codegen::specializeBatch(getOperation(), batch)))
      signalPassFailure();
  }
};

struct DecomposePass : nnc::impl::DecomposeBase<DecomposePass> {
  void runOnOperation() override {
    if (failed(codegen::decompose(getOperation())))
      signalPassFailure();
  }
};

struct BatchScalingPass : nnc::impl::BatchScalingBase<BatchScalingPass> {
  void runOnOperation() override {
    if (failed(codegen::recordBatchScaling(getOperation())))
      signalPassFailure();
  }
};

} // namespace

void codegen::buildPreparePipeline(OpPassManager &pm, std::optional<int64_t> batch, bool fuse) {
  OpPassManager &fn = pm.nest<func::FuncOp>();
  if (batch)
    fn.addPass(createSpecializeBatch(SpecializeBatchOptions{*batch}));
  fn.addPass(createDecompose());
  fn.addPass(createPropagateFrozen());
  fn.addPass(createFoldBatchNorm());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // Batch scaling relates the values of the flat function: the copies
  // rematerialization makes come first; fusion then moves ops into
  // kernels without changing them.
  OpPassManager &late = pm.nest<func::FuncOp>();
  if (fuse)
    late.addPass(createRematerialize());
  late.addPass(createBatchScaling());
  if (fuse)
    late.addPass(createFuse());
}

void codegen::registerPasses() {
  registerSelectFunctions();
  registerSpecializeBatch();
  registerDecompose();
  registerRematerialize();
  registerBatchScaling();
  PassPipelineRegistration<>("nnc-prepare", "What both backends lower: decomposed, batch scaling recorded, fused",
                             [](OpPassManager &pm) { buildPreparePipeline(pm, std::nullopt, /*fuse=*/true); });
}

static codegen::Instrumentation instrumentation;

void codegen::setInstrumentation(Instrumentation i) { instrumentation = i; }

void codegen::instrument(PassManager &pm) {
  if (instrumentation.printAfterAll)
    pm.enableIRPrinting([](Pass *, Operation *) { return false; }, [](Pass *, Operation *) { return true; },
                        /*printModuleScope=*/false, /*printAfterOnlyOnChange=*/false,
                        /*printAfterOnlyOnFailure=*/false, llvm::errs());
  if (instrumentation.timing)
    pm.enableTiming();
}

FailureOr<OwningOpRef<ModuleOp>> codegen::prepare(func::FuncOp fn, std::optional<int64_t> batch,
                                                  bool fuse, BatchScaling *scaling) {
  OwningOpRef<ModuleOp> scratch = ModuleOp::create(fn.getLoc());
  auto clone = cast<func::FuncOp>(fn->clone());
  scratch->push_back(clone);
  PassManager pm(fn.getContext());
  instrument(pm);
  buildPreparePipeline(pm, batch, fuse);
  if (failed(pm.run(*scratch)))
    return failure();
  if (scaling)
    *scaling = readBatchScaling(clone);
  return scratch;
}
