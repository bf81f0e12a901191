//===- CompileModel.cpp - a whole model compiled for the CPU --------------===//

#include "compiler/codegen/cpu/Model.h"

#include "compiler/codegen/common/ModelDescription.h"
#include "compiler/codegen/cpu/CpuExecutor.h"
#include "dialects/nn/NNOps.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

/// The tensors and slots of one function and its kernel.
static FailureOr<rt::FunctionDesc> describe(func::FuncOp fn, func::FuncOp kernel) {
  auto f = codegen::describeSignature(fn);
  if (failed(f))
    return failure();
  f->slots = kernel->getAttrOfType<DenseI64ArrayAttr>("nnc.slots").asArrayRef().vec();
  f->inPlace = kernel->getAttrOfType<DenseI64ArrayAttr>("nnc.inplace").asArrayRef().vec();
  return f;
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
  if (failed(codegen::describeModel(model, m)))
    return failure();
  return m;
}
