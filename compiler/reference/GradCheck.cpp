//===- GradCheck.cpp - symbolic gradients vs finite differences -----------===//
//
// Finite differences run on a loss-only copy of the gradient function (the
// training-mode forward pass, dead backward ops removed), so each probe costs
// one forward evaluation. An element passes when its relative error
// |a - n| / max(|a|, |n|, 1e-6) is within tolerance, or when |a - n| is
// within the rounding noise of the differences, 1e-8 * (1 + |loss|).
//
//===----------------------------------------------------------------------===//

#include "compiler/reference/GradCheck.h"
#include "compiler/reference/Evaluator.h"
#include "compiler/transforms/Passes.h"

#include "dialects/nn/NNOps.h"
#include "runtime/Random.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/Support/Format.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

using namespace mlir;
using namespace nnc;
using namespace nnc::ref;
namespace nnops = nnc::nn;

namespace {

StringRef argString(func::FuncOp fn, unsigned i, StringRef attr) {
  auto a = fn.getArgAttrOfType<StringAttr>(i, attr);
  return a ? a.getValue() : "";
}

/// The label range of an i32 input: the class count of the loss or one_hot
/// that reads it, else 2.
int64_t labelRange(Value arg) {
  for (Operation *user : arg.getUsers()) {
    if (auto oh = dyn_cast<nnops::OneHotOp>(user))
      return oh.getNumClasses();
    if (isa<nnops::SoftmaxCrossEntropyOp, nnops::CrossEntropyOp>(user))
      return cast<RankedTensorType>(user->getOperand(0).getType()).getDimSize(1);
  }
  return 2;
}

/// Deterministic arguments for `fn`: initializers for parameters and frozen
/// tensors, uniform(0.05, 0.95) for f32 inputs, valid labels for i32 inputs.
FailureOr<std::vector<Tensor>> makeArgs(func::FuncOp fn, const GradCheckOptions &o) {
  std::vector<Tensor> args;
  for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
    auto type = cast<RankedTensorType>(fn.getArgument(i).getType());
    if (argString(fn, i, nnops::attr::kRole) != "input") {
      auto t = initialValue(fn, i, o.seed);
      if (failed(t))
        return failure();
      args.push_back(std::move(*t));
      continue;
    }
    std::vector<int64_t> shape;
    for (int64_t d : type.getShape())
      shape.push_back(ShapedType::isDynamic(d) ? o.batch : d);
    Tensor t = Tensor::filled(shape);
    bool labels = type.getElementType().isInteger(32);
    int64_t range = labels ? labelRange(fn.getArgument(i)) : 0;
    for (size_t k = 0; k < t.data.size(); ++k) {
      double u = rt::uniform01(o.seed, 1000 + i, k);
      t.data[k] = labels ? std::floor(u * static_cast<double>(range)) : 0.05 + 0.9 * u;
    }
    args.push_back(std::move(t));
  }
  return args;
}

} // namespace

/// Whether a failed comparison is a kink between theta - eps and theta + eps
/// (losses `down`, `at`, `up`): the one-sided slopes differ by more than
/// the smooth curvature and rounding allow, and the symbolic gradient `g`
/// is one of them or between them. (PyTorch's gradcheck has no such rule;
/// its users avoid kinks by input choice. Here inputs are drawn, so ReLU
/// zeros and pooling ties are found rather than avoided.)
static bool atKink(double down, double at, double up, double g, const GradCheckOptions &o,
                   double noise) {
  double right = (up - at) / o.eps, left = (at - down) / o.eps;
  double lo = std::min(left, right), hi = std::max(left, right);
  double slack = o.tolerance * std::max({std::abs(left), std::abs(right), 1e-6}) + noise;
  return hi - lo > 2 * slack && g >= lo - slack && g <= hi + slack;
}

FailureOr<GradCheckReport> nnc::ref::gradcheck(ModuleOp original, const GradCheckOptions &o,
                                               llvm::raw_ostream &os) {
  OwningOpRef<ModuleOp> module = original.clone();
  PassManager pm(module->getContext());
  pm.addPass(createAutodiff(AutodiffOptions{o.wrtInputs}));
  if (failed(pm.run(*module)))
    return failure();
  func::FuncOp grad;
  for (auto fn : module->getOps<func::FuncOp>())
    if (fn.getName().ends_with(kGradSuffix))
      grad = fn;
  if (!grad)
    return original.emitError("gradcheck needs a model that minimizes a loss");

  // A loss-only copy for the finite differences.
  OpBuilder b(grad);
  b.setInsertionPointAfter(grad);
  auto lossFn = cast<func::FuncOp>(b.clone(*grad));
  lossFn.setName("gradcheck_loss");
  auto ret = cast<func::ReturnOp>(lossFn.front().getTerminator());
  b.setInsertionPoint(ret);
  b.create<func::ReturnOp>(ret.getLoc(), ret.getOperand(0));
  ret.erase();
  lossFn.setType(b.getFunctionType(lossFn.getArgumentTypes(), lossFn.getResultTypes().take_front()));
  lossFn.setResultAttrs(0, DictionaryAttr::get(lossFn.getContext()));
  PassManager cleanup(module->getContext());
  cleanup.addPass(createCanonicalizerPass());
  if (failed(cleanup.run(*module)))
    return failure();

  auto args = makeArgs(grad, o);
  if (failed(args))
    return failure();
  Evaluator eval(EvalOptions{o.seed, 0});
  auto analytic = o.executor ? o.executor->run(grad, *args, EvalOptions{o.seed, 0}) : eval.run(grad, *args);
  if (failed(analytic))
    return failure();

  double base = (*analytic)[0].data[0];
  unsigned firstGrad = 0;
  while (firstGrad < grad.getNumResults() &&
         grad.getResultAttrOfType<StringAttr>(firstGrad, nnops::attr::kRole).getValue() != "grad")
    ++firstGrad;

  // f32 gradients carry rounding relative to the model's largest gradient
  // (sums over the batch and the product's depth): where a gradient
  // cancels to about zero (a bias before a batch norm), that is all it is.
  double f32Noise = 0;
  if (o.executor)
    for (unsigned r = firstGrad; r < analytic->size(); ++r)
      for (double v : (*analytic)[r].data)
        f32Noise = std::max(f32Noise, 1e-4 * std::abs(v));

  // Elements per tensor: the default is lowered for models whose loss takes
  // long to evaluate, so that the check stays within its time budget.
  int64_t samples = o.samples;
  unsigned checkedTensors = 0;
  for (unsigned i = 0; i < grad.getNumArguments(); ++i) {
    StringRef role = argString(grad, i, nnops::attr::kRole);
    bool f32 = getElementTypeOrSelf(grad.getArgument(i).getType()).isF32();
    checkedTensors += role == "param" || (o.wrtInputs && role == "input" && f32);
  }
  std::string capped;
  if (!o.samplesGiven && samples > 0 && checkedTensors > 0) {
    auto start = std::chrono::steady_clock::now();
    if (failed(eval.run(lossFn, *args)))
      return failure();
    double once = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    int64_t affordable = static_cast<int64_t>(o.budgetSeconds / std::max(once, 1e-9) / (2.0 * checkedTensors));
    if (affordable < samples) {
      samples = std::max<int64_t>(kMinSamples, affordable);
      capped = " (fewer for this model's cost; --samples N checks more)";
    }
  }

  GradCheckReport report;
  os << "gradcheck: " << (o.executor ? o.executor->name() : "reference") << " gradients, batch " << o.batch << ", seed " << o.seed << ", "
     << (samples ? std::to_string(samples) : std::string("all")) << " elements per tensor" << capped << ", "
     << "tolerance " << llvm::format("%g", o.tolerance) << "\n";
  os << llvm::format("  %-28s %10s %8s %12s %12s\n", static_cast<const char *>("tensor"),
                     static_cast<const char *>("elements"), static_cast<const char *>("checked"),
                     static_cast<const char *>("max abs err"),
                     static_cast<const char *>("max rel err"));
  unsigned g = firstGrad;
  for (unsigned i = 0; i < grad.getNumArguments(); ++i) {
    StringRef role = argString(grad, i, nnops::attr::kRole);
    bool f32 = getElementTypeOrSelf(grad.getArgument(i).getType()).isF32();
    if (!(role == "param" || (o.wrtInputs && role == "input" && f32)))
      continue;
    GradCheckRow row;
    row.name = argString(grad, i, nnops::attr::kName).str();
    const Tensor &a = (*analytic)[g++];
    Tensor &p = (*args)[i];
    row.elements = p.numel();
    std::vector<int64_t> picks;
    if (samples == 0 || row.elements <= samples) {
      for (int64_t k = 0; k < row.elements; ++k)
        picks.push_back(k);
    } else {
      for (int64_t k = 0; k < samples; ++k)
        picks.push_back(static_cast<int64_t>(rt::randomBits(o.seed, 7000 + i, k) %
                                             static_cast<uint64_t>(row.elements)));
    }
    for (int64_t k : picks) {
      double saved = p.data[k];
      p.data[k] = saved + o.eps;
      auto up = eval.run(lossFn, *args);
      p.data[k] = saved - o.eps;
      auto down = eval.run(lossFn, *args);
      p.data[k] = saved;
      if (failed(up) || failed(down))
        return failure();
      double lossUp = (*up)[0].data[0], lossDown = (*down)[0].data[0];
      double numeric = (lossUp - lossDown) / (2 * o.eps);
      double abs = std::abs(a.data[k] - numeric);
      double scale = std::max(std::abs(a.data[k]), std::abs(numeric));
      double rel = abs / std::max(scale, 1e-6);
      // Rounding in the loss limits what differences can resolve: about
      // |L| * 2^-52 / eps. Below 50 times that, an error is noise.
      double noise = 1e-8 * (1.0 + std::abs(base));
      bool good = abs <= std::max(noise, f32Noise) || rel <= o.tolerance;
      ++row.checked;
      if (std::isnan(a.data[k]) || std::isnan(numeric)) {
        row.ok = false;
        row.maxAbs = row.maxRel = std::numeric_limits<double>::quiet_NaN();
        continue;
      }
      if (!good && atKink(lossDown, base, lossUp, a.data[k], o, std::max(noise, f32Noise))) {
        ++row.kinks;
        continue;
      }
      row.maxAbs = std::max(row.maxAbs, abs);
      row.maxRel = std::max(row.maxRel, rel);
      row.ok &= good;
    }
    os << llvm::format("  %-28s %10lld %8lld %12.3e %12.3e  %s", row.name.c_str(),
                       static_cast<long long>(row.elements), static_cast<long long>(row.checked),
                       row.maxAbs, row.maxRel, row.ok ? "ok" : "FAILED");
    if (row.kinks)
      os << " (" << row.kinks << " at kinks)";
    os << "\n";
    report.passed &= row.ok;
    report.rows.push_back(std::move(row));
  }
  unsigned good = llvm::count_if(report.rows, [](const GradCheckRow &r) { return r.ok; });
  os << (report.passed ? "passed" : "FAILED") << ": " << good << " of " << report.rows.size()
     << " tensors within tolerance\n";
  return report;
}
