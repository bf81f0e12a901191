//===- Autodiff.cpp - reverse-mode differentiation of nn models -----------===//
//
// For a model `@m` that minimizes a loss, builds `@m_grad`: a copy of the
// forward computation in training mode followed by the reverse sweep. The
// sweep visits ops from last to first, asks each op's rule for the adjoints
// of its operands given those of its results, and accumulates adjoints of
// values with several uses. Only values that depend on a parameter (or, with
// wrt-inputs, an f32 input) are differentiated; an op without a rule whose
// result carries a gradient is an error at the op's DSL location.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/GradientRules.h"
#include "compiler/transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "nnc-autodiff"

namespace nnc {
#define GEN_PASS_DEF_AUTODIFF
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace {

StringRef roleOf(func::FuncOp fn, unsigned arg) {
  auto role = fn.getArgAttrOfType<StringAttr>(arg, nnops::attr::kRole);
  return role ? role.getValue() : "";
}

/// Index of the result with role `loss`, if any.
std::optional<unsigned> lossIndex(func::FuncOp fn) {
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    if (auto role = fn.getResultAttrOfType<StringAttr>(i, nnops::attr::kRole))
      if (role.getValue() == "loss")
        return i;
  return std::nullopt;
}

/// Location of a backward op: the forward op's location, tagged "grad".
Location gradLoc(Operation *fwd) {
  return NameLoc::get(StringAttr::get(fwd->getContext(), "grad"), fwd->getLoc());
}

class Differentiator {
public:
  Differentiator(func::FuncOp fn, llvm::SmallPtrSetImpl<Value> &wrt) : fn(fn), wrt(wrt) {}

  /// Appends the backward sweep of `loss`; returns failure after reporting.
  LogicalResult run(Value loss, Operation *terminator) {
    markActive();
    OpBuilder b(terminator);
    {
      GradBuilder g(b, gradLoc(loss.getDefiningOp() ? loss.getDefiningOp() : fn));
      adjoint[loss] = g.scalar(1.0);
    }
    SmallVector<Operation *> ops;
    for (Operation &op : fn.front().without_terminator())
      ops.push_back(&op);
    for (Operation *op : llvm::reverse(ops))
      if (failed(visit(op, b)))
        return failure();
    return success();
  }

  Value gradientOf(Value v) const { return adjoint.lookup(v); }

  /// An op that the loss depends on through a result that carries no
  /// gradient although an operand does (argmax, a comparison): where the
  /// path from the parameters to the loss stops being differentiable.
  Operation *gradientStop(Value loss) {
    llvm::SmallPtrSet<Value, 32> needed{loss};
    SmallVector<Operation *> ops;
    for (Operation &op : fn.front().without_terminator())
      ops.push_back(&op);
    for (Operation *op : llvm::reverse(ops)) {
      if (llvm::none_of(op->getResults(), [&](Value r) { return needed.contains(r); }))
        continue;
      bool inActive = llvm::any_of(op->getOperands(), [&](Value v) { return active.contains(v); });
      bool outActive = llvm::any_of(op->getResults(), [&](Value r) { return active.contains(r); });
      if (inActive && !outActive)
        return op;
      for (Value v : op->getOperands())
        needed.insert(v);
    }
    return nullptr;
  }

private:
  /// Forward propagation of "depends on a differentiated value".
  void markActive() {
    for (Value v : wrt)
      active.insert(v);
    for (Operation &op : fn.front().without_terminator())
      if (llvm::any_of(op.getOperands(), [&](Value v) { return active.contains(v); }))
        for (Value r : op.getResults())
          if (getElementTypeOrSelf(r.getType()).isF32())
            active.insert(r);
  }

  LogicalResult visit(Operation *op, OpBuilder &b) {
    SmallVector<Value> dResults;
    bool any = false;
    for (Value r : op->getResults()) {
      dResults.push_back(adjoint.lookup(r));
      any |= dResults.back() != nullptr;
    }
    SmallVector<bool> needs;
    for (Value v : op->getOperands())
      needs.push_back(active.contains(v));
    if (!any || llvm::none_of(needs, [](bool n) { return n; }))
      return success();
    const GradRule *rule = lookupGradRule(op);
    if (!rule)
      return op->emitError("cannot differentiate through '")
             << op->getName() << "': it has no gradient, but the loss depends on a "
             << "trained parameter through it";
    if (!dResults[0]) // a rule reads dy: give unused first results a zero
      return success();
    GradBuilder g(b, gradLoc(op));
    GradContext ctx{g, op, dResults, needs, {}};
    (*rule)(ctx);
    assert(ctx.dOperands.size() == op->getNumOperands() && "rule missed an operand");
    for (auto [v, d] : llvm::zip(op->getOperands(), ctx.dOperands)) {
      if (!d || !active.contains(v))
        continue;
      Value &acc = adjoint[v];
      acc = acc ? g.add(acc, d) : d; // fan-out accumulates
    }
    return success();
  }

  func::FuncOp fn;
  llvm::SmallPtrSetImpl<Value> &wrt;
  llvm::SmallPtrSet<Value, 32> active;
  llvm::DenseMap<Value, Value> adjoint;
};

struct AutodiffPass : public nnc::impl::AutodiffBase<AutodiffPass> {
  using AutodiffBase::AutodiffBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> models;
    for (auto fn : module.getOps<func::FuncOp>())
      if (lossIndex(fn) && !fn.getName().ends_with(kGradSuffix) &&
          !fn.getName().ends_with(kTrainStepSuffix) &&
          !module.lookupSymbol((fn.getName() + kGradSuffix).str()))
        models.push_back(fn);
    for (func::FuncOp fn : models)
      if (failed(differentiate(fn)))
        return signalPassFailure();
  }

  LogicalResult differentiate(func::FuncOp model) {
    OpBuilder b(model->getContext());
    b.setInsertionPointAfter(model);
    func::FuncOp grad = cast<func::FuncOp>(b.clone(*model));
    grad.setName((model.getName() + kGradSuffix).str());
    // Training mode: batch statistics and fresh dropout masks; a batch norm
    // whose scale and shift are held fixed (`freeze`) keeps its running
    // statistics, as a PyTorch module in eval() mode.
    auto held = [&](Value v) {
      auto arg = dyn_cast<BlockArgument>(v);
      auto init = arg ? grad.getArgAttrOfType<DictionaryAttr>(arg.getArgNumber(), nnops::attr::kInit) : nullptr;
      return init && init.get("loaded") && roleOf(grad, arg.getArgNumber()) == "frozen";
    };
    grad.walk([&](Operation *op) {
      if (auto bn = dyn_cast<nnops::BatchNormOp>(op); bn && held(bn.getGamma()) && held(bn.getBeta()))
        return;
      if (isa<nnops::BatchNormOp, nnops::DropoutOp>(op))
        op->setAttr("training", b.getUnitAttr());
    });

    llvm::SmallPtrSet<Value, 16> wrt;
    SmallVector<unsigned> wrtArgs;
    for (unsigned i = 0; i < grad.getNumArguments(); ++i) {
      StringRef role = roleOf(grad, i);
      bool f32 = getElementTypeOrSelf(grad.getArgument(i).getType()).isF32();
      if (role == "param" || (wrtInputs && role == "input" && f32)) {
        wrt.insert(grad.getArgument(i));
        wrtArgs.push_back(i);
      }
    }
    auto ret = cast<func::ReturnOp>(grad.front().getTerminator());
    unsigned li = *lossIndex(grad);
    Differentiator diff(grad, wrt);
    if (failed(diff.run(ret.getOperand(li), ret)))
      return failure();
    // Training a loss that no gradient reaches would only report a constant.
    if (!wrtArgs.empty() && llvm::none_of(wrtArgs, [&](unsigned i) { return diff.gradientOf(grad.getArgument(i)); })) {
      Value loss = ret.getOperand(li);
      Location at = loss.getDefiningOp() ? loss.getDefiningOp()->getLoc() : model.getLoc();
      InFlightDiagnostic d = emitError(at) << "the loss does not depend on any trained parameter through "
                                              "a differentiable path, so training cannot change it";
      if (Operation *stop = diff.gradientStop(loss))
        d.attachNote(stop->getLoc()) << "the gradient stops at '" << stop->getName()
                                     << "': its result is not differentiable";
      return failure();
    }

    // New results: the loss, the outputs, then one gradient per argument.
    OpBuilder rb(ret);
    SmallVector<Value> results;
    SmallVector<DictionaryAttr> attrs;
    auto named = [&](StringRef name, StringRef role) {
      return rb.getDictionaryAttr({rb.getNamedAttr(nnops::attr::kName, rb.getStringAttr(name)),
                                   rb.getNamedAttr(nnops::attr::kRole, rb.getStringAttr(role))});
    };
    results.push_back(ret.getOperand(li));
    attrs.push_back(grad.getResultAttrDict(li));
    for (unsigned i = 0; i < ret.getNumOperands(); ++i)
      if (i != li) {
        results.push_back(ret.getOperand(i));
        attrs.push_back(grad.getResultAttrDict(i));
      }
    for (unsigned i : wrtArgs) {
      Value arg = grad.getArgument(i);
      Value d = diff.gradientOf(arg);
      if (!d) { // the loss does not depend on it
        auto type = cast<RankedTensorType>(arg.getType());
        GradBuilder g(rb, grad.getLoc());
        d = type.hasStaticShape()
                ? g.make<nnops::ConstantOp>(
                      {}, {rb.getNamedAttr("value", DenseElementsAttr::get(
                                                        type, rb.getF32FloatAttr(0.0f)))})
                : g.mul(arg, 0.0);
      }
      results.push_back(d);
      attrs.push_back(named(grad.getArgAttrOfType<StringAttr>(i, nnops::attr::kName), "grad"));
    }
    rb.create<func::ReturnOp>(ret.getLoc(), results);
    ret.erase();
    grad.setType(rb.getFunctionType(grad.getArgumentTypes(), ValueRange(results).getTypes()));
    for (auto [i, a] : llvm::enumerate(attrs))
      grad.setResultAttrs(i, a);
    LLVM_DEBUG(llvm::dbgs() << "differentiated @" << model.getName() << " w.r.t. "
                            << wrtArgs.size() << " arguments\n");
    return success();
  }
};

} // namespace
