//===- Model.cpp - a whole model compiled for the CPU ---------------------===//

#include "compiler/codegen/cpu/Model.h"

#include "compiler/codegen/cpu/CpuExecutor.h"
#include "compiler/codegen/cpu/Specialize.h"
#include "compiler/reference/Evaluator.h"
#include "dialects/nn/NNOps.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

FailureOr<rt::FunctionDesc> cpu::describeSignature(func::FuncOp fn) {
  OwningOpRef<func::FuncOp> unit(cast<func::FuncOp>(fn->clone()));
  if (failed(cpu::specializeBatch(*unit, 1)))
    return failure();
  auto tensor = [](Type generic, Type atOne, StringAttr name, StringAttr role) {
    auto g = cast<RankedTensorType>(generic), one = cast<RankedTensorType>(atOne);
    rt::TensorDesc t{name ? name.str() : "", role ? role.str() : "",
                     g.getElementType().isInteger(32), {}};
    for (int64_t i = 0; i < g.getRank(); ++i)
      t.shape.push_back(g.isDynamicDim(i) ? -one.getDimSize(i) : g.getDimSize(i));
    return t;
  };
  rt::FunctionDesc f;
  for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
    f.args.push_back(tensor(fn.getArgumentTypes()[i], unit->getArgumentTypes()[i],
                            fn.getArgAttrOfType<StringAttr>(i, nnops::attr::kName),
                            fn.getArgAttrOfType<StringAttr>(i, nnops::attr::kRole)));
    if (f.args.back().integer)
      f.args.back().classes = nnops::classCount(fn.getArgument(i));
  }
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    f.results.push_back(tensor(fn.getResultTypes()[i], unit->getResultTypes()[i],
                               fn.getResultAttrOfType<StringAttr>(i, nnops::attr::kName),
                               fn.getResultAttrOfType<StringAttr>(i, nnops::attr::kRole)));
  return f;
}

/// The tensors and slots of one function and its kernel.
static FailureOr<rt::FunctionDesc> describe(func::FuncOp fn, func::FuncOp kernel) {
  auto f = cpu::describeSignature(fn);
  if (failed(f))
    return failure();
  f->slots = kernel->getAttrOfType<DenseI64ArrayAttr>("nnc.slots").asArrayRef().vec();
  f->inPlace = kernel->getAttrOfType<DenseI64ArrayAttr>("nnc.inplace").asArrayRef().vec();
  return f;
}

LogicalResult cpu::describeModel(func::FuncOp model, rt::ModelDesc &m) {
  m.name = model.getName().str();
  for (unsigned i = 0; i < model.getNumResults(); ++i)
    if (m.model.results[i].role == "loss")
      m.lossResult = i;
  m.inits.resize(model.getNumArguments());
  for (unsigned i = 0; i < model.getNumArguments(); ++i) {
    if (m.model.args[i].role == "input")
      continue;
    auto spec = ref::initSpec(model, i);
    if (failed(spec))
      return failure();
    m.inits[i] = std::move(*spec);
  }
  return success();
}

FailureOr<rt::ModelDesc> cpu::compileModel(ModuleOp module, StringRef name, ModuleOp code,
                                           bool profile, bool fuse) {
  auto model = module.lookupSymbol<func::FuncOp>(name);
  auto step = module.lookupSymbol<func::FuncOp>((name + "_train_step").str());
  if (!model || !step)
    return module.emitError("no model '") << name << "' with a training step";
  if (failed(addLoops(step, std::nullopt, code, kTrainStepKernel, profile, fuse)) ||
      failed(addLoops(model, std::nullopt, code, kModelKernel, profile, fuse)))
    return failure();
  rt::ModelDesc m;
  auto stepDesc = describe(step, code.lookupSymbol<func::FuncOp>(kTrainStepKernel));
  auto modelDesc = describe(model, code.lookupSymbol<func::FuncOp>(kModelKernel));
  if (failed(stepDesc) || failed(modelDesc))
    return failure();
  m.trainStep = std::move(*stepDesc);
  m.model = std::move(*modelDesc);
  if (failed(describeModel(model, m)))
    return failure();
  return m;
}
