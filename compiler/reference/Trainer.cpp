//===- Trainer.cpp - training on the reference evaluator ------------------===//

#include "compiler/reference/Trainer.h"
#include "compiler/transforms/Passes.h"

#include "dialects/nn/NNOps.h"

using namespace mlir;
using namespace nnc;
using namespace nnc::ref;
namespace nnops = nnc::nn;

static StringRef attrOf(func::FuncOp fn, unsigned i, StringRef name, bool result = false) {
  auto a = result ? fn.getResultAttrOfType<StringAttr>(i, name)
                  : fn.getArgAttrOfType<StringAttr>(i, name);
  return a ? a.getValue() : "";
}

FailureOr<Trainer> Trainer::create(ModuleOp module, uint64_t seed,
                                   std::shared_ptr<Executor> executor) {
  Trainer t;
  t.seed = seed;
  t.executor = executor ? std::move(executor) : std::shared_ptr<Executor>(createReferenceExecutor());
  for (auto fn : module.getOps<func::FuncOp>())
    if (fn.getName().ends_with(kTrainStepSuffix))
      t.trainStep = fn;
  if (!t.trainStep)
    return module.emitError("no training step in the module");
  t.model = module.lookupSymbol<func::FuncOp>(
      t.trainStep.getName().drop_back(kTrainStepSuffix.size()));
  if (!t.model)
    return module.emitError("no model function for ") << t.trainStep.getName();
  func::FuncOp fn = t.trainStep;
  for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
    StringRef role = attrOf(fn, i, nnops::attr::kRole);
    t.names.push_back(attrOf(fn, i, nnops::attr::kName).str());
    auto type = cast<RankedTensorType>(fn.getArgument(i).getType());
    if (role == "input") {
      t.inputArgs.push_back(i);
      t.args.emplace_back();
    } else if (role == "lr") {
      t.lrArg = i;
      auto v = fn.getArgAttrOfType<FloatAttr>(i, nnops::attr::kValue);
      t.lr = v ? v.getValueAsDouble() : 0.0;
      t.args.push_back(Tensor::scalar(t.lr));
    } else if (role == "opt_state" || role == "step") {
      t.args.push_back(Tensor::filled(std::vector<int64_t>(type.getShape().begin(),
                                                           type.getShape().end())));
      if (role == "step")
        t.stepArg = i;
    } else {
      // The model's own arguments come first and match the train step's.
      auto init = initialValue(t.model, i, seed);
      if (failed(init))
        return failure();
      t.args.push_back(std::move(*init));
    }
  }
  for (unsigned r = 0; r < fn.getNumResults(); ++r) {
    StringRef role = attrOf(fn, r, nnops::attr::kRole, true);
    if (role != "param" && role != "state" && role != "opt_state")
      continue;
    StringRef name = attrOf(fn, r, nnops::attr::kName, true);
    auto it = llvm::find(t.names, name);
    if (it == t.names.end())
      return fn.emitError("result '") << name << "' updates no argument";
    t.updates.push_back({r, static_cast<unsigned>(it - t.names.begin())});
  }
  return t;
}

FailureOr<double> Trainer::step(ArrayRef<Tensor> inputs) {
  if (inputs.size() != inputArgs.size())
    return trainStep.emitError("expected ") << inputArgs.size() << " inputs";
  for (auto [i, t] : llvm::zip(inputArgs, inputs))
    args[i] = t;
  ++stepCount;
  args[stepArg] = Tensor::scalar(static_cast<double>(stepCount));
  if (lrArg) // as f32, the type the compiled code holds it in
    args[*lrArg] = Tensor::scalar(static_cast<double>(static_cast<float>(lr)));
  auto results = executor->run(trainStep, args, EvalOptions{seed, stepCount, firstRow});
  if (failed(results))
    return failure();
  for (auto [r, a] : updates)
    args[a] = std::move((*results)[r]);
  return (*results)[0].data[0];
}

FailureOr<std::vector<Tensor>> Trainer::evaluate(ArrayRef<Tensor> inputs) {
  std::vector<Tensor> modelArgs(args.begin(), args.begin() + model.getNumArguments());
  for (auto [i, t] : llvm::zip(inputArgs, inputs))
    modelArgs[i] = t;
  return executor->run(model, modelArgs, EvalOptions{seed, stepCount});
}

Tensor *Trainer::tensor(StringRef name) {
  auto it = llvm::find(names, name);
  return it == names.end() ? nullptr : &args[it - names.begin()];
}

std::vector<std::string> Trainer::stateNames() const {
  std::vector<std::string> out;
  for (unsigned i = 0; i < names.size(); ++i)
    if (!llvm::is_contained(inputArgs, i) && i != stepArg && i != lrArg)
      out.push_back(names[i]);
  return out;
}
