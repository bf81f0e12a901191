//===- TrainStep.cpp - the training step as one function ------------------===//
//
// Turns `@m_grad` into `@m_train_step`: forward, backward, optional global
// gradient-norm clipping, the optimizer update of every parameter, and the
// batch-norm running-statistic updates, all as nn ops. Optimizer state is
// explicit: one tensor per parameter and slot, passed in and returned.
// Update formulas follow torch.optim (defaults included); see the table.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/GradBuilder.h"
#include "compiler/transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#define DEBUG_TYPE "nnc-build-train-step"

namespace nnc {
#define GEN_PASS_DEF_BUILDTRAINSTEP
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace {

/// One parameter's update: reads p, its gradient and slots; writes the new
/// parameter and slots.
struct Update {
  GradBuilder &g;
  DictionaryAttr hp; // hyper-parameters
  Value p, grad, t;  // t: the step number, from 1
  Value lr;          // the learning rate, an argument (schedules change it)
  SmallVector<Value> slots, newSlots;
  Value newP;

  double get(StringRef name, double dflt = 0.0) const {
    auto a = hp ? dyn_cast_or_null<FloatAttr>(hp.get(name)) : FloatAttr();
    return a ? a.getValueAsDouble() : dflt;
  }
  Value sq(Value v) { return g.mul(v, v); }
  /// decay * s + (1 - decay) * v
  Value ema(Value s, Value v, double decay) {
    return g.add(g.mul(s, decay), g.mul(v, 1.0 - decay));
  }
  Value sqrt(Value v) { return g.make<nnops::SqrtOp>({v}); }
};

struct Optimizer {
  const char *kind;
  /// Slot names; the update may use a prefix of them (see slotCount).
  std::vector<const char *> slots;
  std::function<unsigned(const Update &)> slotCount;
  std::function<void(Update &)> update;
};

unsigned all(const Update &) { return 2; }

const std::vector<Optimizer> &optimizers() {
  static const std::vector<Optimizer> table = {
      {"sgd", {"momentum_buffer"},
       [](const Update &u) -> unsigned { return u.get("momentum") != 0; },
       [](Update &u) {
         double mu = u.get("momentum");
         Value d = u.grad;
         if (mu != 0) {
           Value buf = u.g.add(u.g.mul(u.slots[0], mu), d);
           u.newSlots.push_back(buf);
           d = u.get("nesterov") != 0 ? u.g.add(d, u.g.mul(buf, mu)) : buf;
         }
         u.newP = u.g.sub(u.p, u.g.mul(d, u.lr));
       }},
      {"adagrad", {"sum"}, [](const Update &) -> unsigned { return 1; },
       [](Update &u) {
         Value sum = u.g.add(u.slots[0], u.sq(u.grad));
         u.newSlots.push_back(sum);
         Value step = u.g.div(u.grad, u.g.add(u.sqrt(sum), u.get("eps")));
         u.newP = u.g.sub(u.p, u.g.mul(step, u.lr));
       }},
      {"rmsprop", {"square_avg", "momentum_buffer"},
       [](const Update &u) -> unsigned { return u.get("momentum") != 0 ? 2 : 1; },
       [](Update &u) {
         Value v = u.ema(u.slots[0], u.sq(u.grad), u.get("alpha"));
         u.newSlots.push_back(v);
         Value step = u.g.div(u.grad, u.g.add(u.sqrt(v), u.get("eps")));
         if (double mu = u.get("momentum"); mu != 0) {
           step = u.g.add(u.g.mul(u.slots[1], mu), step);
           u.newSlots.push_back(step);
         }
         u.newP = u.g.sub(u.p, u.g.mul(step, u.lr));
       }},
      {"adadelta", {"square_avg", "acc_delta"}, all,
       [](Update &u) {
         double rho = u.get("rho"), eps = u.get("eps");
         Value v = u.ema(u.slots[0], u.sq(u.grad), rho);
         Value delta = u.g.mul(u.g.div(u.sqrt(u.g.add(u.slots[1], eps)), u.sqrt(u.g.add(v, eps))),
                               u.grad);
         Value acc = u.ema(u.slots[1], u.sq(delta), rho);
         u.newSlots = {v, acc};
         u.newP = u.g.sub(u.p, u.g.mul(delta, u.lr));
       }},
      {"adam", {"exp_avg", "exp_avg_sq"}, all,
       [](Update &u) {
         double b1 = u.get("beta1"), b2 = u.get("beta2");
         Value m = u.ema(u.slots[0], u.grad, b1);
         Value v = u.ema(u.slots[1], u.sq(u.grad), b2);
         u.newSlots = {m, v};
         // Bias correction with the step number t: 1 - beta^t.
         auto correction = [&](double beta) {
           return u.g.rsub(1.0, u.g.make<nnops::PowOp>({u.g.scalar(beta), u.t}));
         };
         Value denom = u.g.add(u.g.div(u.sqrt(v), u.sqrt(correction(b2))), u.get("eps"));
         Value step = u.g.div(u.g.div(m, correction(b1)), denom);
         u.newP = u.g.sub(u.p, u.g.mul(step, u.lr));
       }},
  };
  return table;
}

/// Sync batch norm (torch.nn.SyncBatchNorm) in a data-parallel step: a
/// training batch norm normalizes with the global batch's statistics,
/// combined from each rank's (the variance by the parallel formula
/// var = mean over ranks of (var_r + (mean_r - mean)^2)), and its gradient
/// with the global sums of dy and dy * xhat. Every sum is a rank's own and
/// nn.all_reduce weighs it by the rank's share, so that the formulas are
/// PyTorch's batch_norm_backward over the global batch, scaled as each
/// rank's gradients are before they are combined. Rewrites `bn` and its
/// gradient ops with evaluation-mode normalization over the global
/// statistics; returns them (mean, biased variance).
std::pair<Value, Value> syncBatchNorm(OpBuilder &b, nnops::BatchNormOp bn) {
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(bn);
  Location loc = bn.getLoc();
  GradBuilder g(b, loc);
  Value x = bn.getInput(), gamma = bn.getGamma();
  int64_t rank = cast<RankedTensorType>(x.getType()).getRank();
  SmallVector<int64_t> axes = allButChannels(rank);
  auto combined = [&](Value v) { return b.create<nnops::AllReduceOp>(loc, v, false).getResult(); };
  // Sums over the spatial axes first, then over the batch: partial sums
  // of similar size round less than one long running sum.
  SmallVector<int64_t> spatial;
  for (int64_t i = 2; i < rank; ++i)
    spatial.push_back(i);
  auto channelSum = [&](Value v) {
    return rank > 2 ? g.sumAxes(g.sumAxes(v, spatial, false), {0}, false) : g.sumAxes(v, {0}, false);
  };
  Value n = g.count(x, axes);
  Value localMean = g.div(channelSum(x), n);
  Value centered = g.sub(x, g.channels(localMean, rank));
  Value localVar = g.div(channelSum(g.mul(centered, centered)), n);
  Value mean = combined(localMean);
  Value apart = g.sub(localMean, mean);
  Value var = combined(g.add(localVar, g.mul(apart, apart)));
  Operation *normalized = g.op<nnops::BatchNormOp>(
      {x, gamma, bn.getBeta(), mean, var},
      {b.getNamedAttr("eps", bn.getEpsAttr()), b.getNamedAttr("momentum", bn.getMomentumAttr())});
  bn.getResult().replaceAllUsesWith(normalized->getResult(0));

  double eps = bn.getEps().convertToDouble();
  for (Operation *user : llvm::make_early_inc_range(x.getUsers())) {
    auto grad = dyn_cast<nnops::BatchNormGradOp>(user);
    if (!grad || grad.getGamma() != gamma)
      continue;
    b.setInsertionPoint(grad);
    Value dy = grad.getGrad();
    Value rstd = g.div(g.scalar(1.0), g.make<nnops::SqrtOp>({g.add(var, eps)}));
    Value xhat = g.mul(g.sub(x, g.channels(mean, rank)), g.channels(rstd, rank));
    Value dbeta = channelSum(dy);
    Value dgamma = channelSum(g.mul(dy, xhat));
    Value meanDy = g.div(combined(dbeta), n), meanDyXhat = g.div(combined(dgamma), n);
    Value inner = g.sub(g.sub(dy, g.channels(meanDy, rank)), g.mul(xhat, g.channels(meanDyXhat, rank)));
    Value dx = g.mul(g.channels(g.mul(gamma, rstd), rank), inner);
    grad.getResult(0).replaceAllUsesWith(dx);
    grad.getResult(1).replaceAllUsesWith(dgamma);
    grad.getResult(2).replaceAllUsesWith(dbeta);
    grad.erase();
  }
  return {mean, var};
}

StringRef stringAttr(func::FuncOp fn, unsigned arg, StringRef name) {
  auto a = fn.getArgAttrOfType<StringAttr>(arg, name);
  return a ? a.getValue() : "";
}

struct BuildTrainStepPass : public nnc::impl::BuildTrainStepBase<BuildTrainStepPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> grads;
    for (auto fn : module.getOps<func::FuncOp>())
      if (fn.getName().ends_with(kGradSuffix))
        grads.push_back(fn);
    for (func::FuncOp fn : grads)
      if (failed(build(module, fn)))
        return signalPassFailure();
  }

  LogicalResult build(ModuleOp module, func::FuncOp gradFn);
};

LogicalResult BuildTrainStepPass::build(ModuleOp module, func::FuncOp gradFn) {
  StringRef model = gradFn.getName().drop_back(kGradSuffix.size());
  if (module.lookupSymbol((model + kTrainStepSuffix).str()))
    return success();
  auto train = module->getAttrOfType<DictionaryAttr>(nnops::attr::kTrain);
  DictionaryAttr hp = train ? dyn_cast_or_null<DictionaryAttr>(train.get("optimizer")) : nullptr;
  // Without a train section: plain SGD with lr = 0.01.
  OpBuilder b(module.getContext());
  if (!hp)
    hp = b.getDictionaryAttr({b.getNamedAttr("kind", b.getStringAttr("sgd")),
                              b.getNamedAttr("lr", b.getF64FloatAttr(0.01))});
  StringRef kind = cast<StringAttr>(hp.get("kind")).getValue();
  bool decoupled = kind == "adamw";
  if (decoupled)
    kind = "adam";
  const Optimizer *opt = nullptr;
  for (const Optimizer &o : optimizers())
    if (kind == o.kind)
      opt = &o;
  if (!opt)
    return gradFn.emitError("no update rule for optimizer '") << kind << "'";

  b.setInsertionPointAfter(gradFn);
  auto step = cast<func::FuncOp>(b.clone(*gradFn));
  step.setName((model + kTrainStepSuffix).str());
  Block &body = step.front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  b.setInsertionPoint(ret);
  GradBuilder g(b, step.getLoc());

  // Split the old results: [loss, outputs...] then one gradient per param.
  unsigned numGrads = 0;
  for (unsigned i = 0; i < step.getNumResults(); ++i)
    if (auto r = step.getResultAttrOfType<StringAttr>(i, nnops::attr::kRole))
      numGrads += r.getValue() == "grad";
  unsigned numKept = ret.getNumOperands() - numGrads;
  SmallVector<Value> results(ret.getOperands().take_front(numKept));
  SmallVector<DictionaryAttr> resultAttrs;
  for (unsigned i = 0; i < numKept; ++i)
    resultAttrs.push_back(step.getResultAttrDict(i));
  SmallVector<Value> gradsIn(ret.getOperands().drop_front(numKept));

  SmallVector<unsigned> params;
  for (unsigned i = 0; i < step.getNumArguments(); ++i)
    if (stringAttr(step, i, nnops::attr::kRole) == "param")
      params.push_back(i);
  if (params.size() != gradsIn.size())
    return step.emitError("expected one gradient per parameter");

  auto named = [&](StringRef name, StringRef role) {
    return b.getDictionaryAttr({b.getNamedAttr(nnops::attr::kName, b.getStringAttr(name)),
                                b.getNamedAttr(nnops::attr::kRole, b.getStringAttr(role))});
  };
  SmallVector<DictionaryAttr> argAttrs;
  for (unsigned i = 0; i < step.getNumArguments(); ++i)
    argAttrs.push_back(step.getArgAttrDict(i));

  // Optimizer state arguments, then the step number.
  SmallVector<SmallVector<Value>> slots(params.size());
  SmallVector<std::pair<std::string, Value>> slotArgs;
  Update probe{g, hp, {}, {}, {}, {}, {}, {}, {}};
  unsigned numSlots = opt->slotCount(probe);
  for (auto [k, i] : llvm::enumerate(params)) {
    std::string name = stringAttr(step, i, nnops::attr::kName).str();
    for (unsigned s = 0; s < numSlots; ++s) {
      Value a = body.addArgument(step.getArgument(i).getType(), step.getLoc());
      slots[k].push_back(a);
      std::string slotName = name + "." + opt->slots[s];
      slotArgs.push_back({slotName, a});
      argAttrs.push_back(named(slotName, "opt_state"));
    }
  }
  Value t = body.addArgument(RankedTensorType::get({}, b.getF32Type()), step.getLoc());
  argAttrs.push_back(named("step", "step"));
  // The learning rate is an argument, not a constant of the code, so that
  // a schedule changes it between steps without compiling again; the
  // optimizer's `lr` is its value unless a schedule says otherwise.
  double lr = cast<FloatAttr>(hp.get("lr")).getValueAsDouble();
  Value lrArg = body.addArgument(RankedTensorType::get({}, b.getF32Type()), step.getLoc());
  argAttrs.push_back(b.getDictionaryAttr({b.getNamedAttr(nnops::attr::kName, b.getStringAttr("lr")),
                                          b.getNamedAttr(nnops::attr::kRole, b.getStringAttr("lr")),
                                          b.getNamedAttr(nnops::attr::kValue, b.getF64FloatAttr(lr))}));

  // Data parallelism: each rank's gradients, of its shard of the global
  // batch, combined into the global batch's (before clipping, as DDP).
  SmallVector<Value> grads(gradsIn);
  auto distributed = train ? dyn_cast_or_null<BoolAttr>(train.get("distributed")) : BoolAttr();
  bool isDistributed = distributed && distributed.getValue();
  if (isDistributed) {
    // Each right after its gradient, so that it travels while the backward
    // pass computes the gradients of the layers before (runtime/
    // Distributed.h); the updates that read them come after all of them.
    bool summed = lossIsSum(results.front());
    OpBuilder::InsertionGuard guard(b);
    for (Value &d : grads) {
      b.setInsertionPointAfterValue(d);
      d = b.create<nnops::AllReduceOp>(d.getLoc(), d, summed);
    }
  }

  // Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_).
  auto clip = train ? dyn_cast_or_null<FloatAttr>(train.get("clip_norm")) : FloatAttr();
  if (clip) {
    Value total;
    for (Value d : grads) {
      Value s = g.sumAxes(g.mul(d, d), {}, false);
      total = total ? g.add(total, s) : s;
    }
    Value norm = g.make<nnops::SqrtOp>({total});
    Value coef = g.div(g.scalar(clip.getValueAsDouble()), g.add(norm, 1e-6));
    Value clamped = g.rsub(1.0, g.make<nnops::ReluOp>({g.rsub(1.0, coef)})); // min(coef, 1)
    for (Value &d : grads)
      d = g.mul(d, clamped);
  }

  // Parameter updates.
  auto wdAttr = dyn_cast_or_null<FloatAttr>(hp.get("weight_decay"));
  double wd = wdAttr ? wdAttr.getValueAsDouble() : 0.0;
  SmallVector<Value> newParams;
  SmallVector<Value> newSlots;
  for (auto [k, i] : llvm::enumerate(params)) {
    Value p = step.getArgument(i), d = grads[k];
    if (wd != 0 && !decoupled)
      d = g.add(d, g.mul(p, wd)); // L2: weight decay enters the gradient
    if (wd != 0 && decoupled)
      p = g.mul(p, g.rsub(1.0, g.mul(lrArg, wd))); // AdamW decays the weight itself
    Update u{g, hp, p, d, t, lrArg, slots[k], {}, {}};
    opt->update(u);
    newParams.push_back(u.newP);
    llvm::append_range(newSlots, u.newSlots);
  }
  for (auto [k, i] : llvm::enumerate(params)) {
    results.push_back(newParams[k]);
    resultAttrs.push_back(named(stringAttr(step, i, nnops::attr::kName), "param"));
  }

  // Batch-norm running statistics from the batch statistics the op
  // normalized with, the variance made unbiased: var * n / (n - 1).
  bool sync = isDistributed && train.get("sync_batch_norm") &&
              cast<BoolAttr>(train.get("sync_batch_norm")).getValue();
  SmallVector<nnops::BatchNormOp> norms;
  for (Operation &op : body.without_terminator())
    if (auto bn = dyn_cast<nnops::BatchNormOp>(op); bn && bn.getTraining())
      norms.push_back(bn);
  for (nnops::BatchNormOp bn : norms) {
    GradBuilder s(b, NameLoc::get(b.getStringAttr("running_stats"), bn.getLoc()));
    Value x = bn.getInput(), runningMean = bn.getRunningMean(), runningVar = bn.getRunningVar();
    SmallVector<int64_t> axes = allButChannels(cast<RankedTensorType>(x.getType()).getRank());
    double m = bn.getMomentum().convertToDouble();
    Value n = s.count(x, axes), mean = bn.getMean(), var = bn.getVar();
    if (sync) {
      std::tie(mean, var) = syncBatchNorm(b, bn);
      n = b.create<nnops::AllReduceOp>(bn.getLoc(), n, true); // the global batch's count
    }
    var = s.mul(var, s.div(n, s.sub(n, s.scalar(1.0))));
    for (auto [running, stat] : {std::pair{runningMean, mean}, std::pair{runningVar, var}}) {
      auto arg = dyn_cast<BlockArgument>(running);
      if (!arg || stringAttr(step, arg.getArgNumber(), nnops::attr::kRole) != "state")
        continue;
      Value updated = s.add(s.mul(running, 1.0 - m), s.mul(stat, m));
      // Replicas keep one set of statistics: the ranks' mean (each rank
      // normalizes with its own batch's, as DDP does by default).
      if (isDistributed && !sync)
        updated = b.create<nnops::AllReduceOp>(updated.getLoc(), updated, false);
      results.push_back(updated);
      resultAttrs.push_back(named(stringAttr(step, arg.getArgNumber(), nnops::attr::kName), "state"));
    }
  }
  for (auto [k, v] : llvm::enumerate(newSlots)) {
    results.push_back(v);
    resultAttrs.push_back(named(slotArgs[k].first, "opt_state"));
  }

  b.create<func::ReturnOp>(ret.getLoc(), results);
  ret.erase();
  step.setType(b.getFunctionType(body.getArgumentTypes(), ValueRange(results).getTypes()));
  for (auto [i, a] : llvm::enumerate(argAttrs))
    step.setArgAttrs(i, a);
  for (auto [i, a] : llvm::enumerate(resultAttrs))
    step.setResultAttrs(i, a);
  return success();
}

} // namespace

bool nnc::lossIsSum(Value loss) {
  Operation *def = loss.getDefiningOp();
  if (!def)
    return false;
  if (isa<nnops::ReduceSumOp>(def))
    return true;
  auto r = def->getAttrOfType<StringAttr>("reduction");
  return r && r.getValue() == "sum";
}
