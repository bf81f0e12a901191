//===- CompileModel.cpp - a whole model compiled for the CPU --------------===//

#include "compiler/codegen/cpu/CompileModel.h"

#include "compiler/codegen/common/ModelDescription.h"
#include "compiler/codegen/cpu/LowerToLoops.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Pass/PassManager.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

/// The tensors and slots of one function and its kernel.
static FailureOr<rt::FunctionDesc> describe(func::FuncOp fn, func::FuncOp kernel) {
  auto f = codegen::describeSignature(fn);
  if (failed(f))
    return failure();
  f->slots = kernel->getAttrOfType<DenseI64ArrayAttr>("nnc.slots").asArrayRef().vec();
  f->cache = kernel->getAttrOfType<IntegerAttr>("nnc.cache").getInt();
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
      failed(addLoops(model, std::nullopt, code, kModelKernel, profile, fuse, /*cacheWeights=*/true)))
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

LogicalResult cpu::addLoops(func::FuncOp fn, std::optional<int64_t> batch, ModuleOp target,
                            StringRef name, bool profile, bool fuse, bool cacheWeights) {
  OwningOpRef<ModuleOp> scratch = ModuleOp::create(fn.getLoc());
  auto clone = cast<func::FuncOp>(fn->clone());
  clone.setName(name);
  if (cacheWeights)
    clone->setAttr(kCacheWeightsAttr, UnitAttr::get(fn.getContext()));
  scratch->push_back(clone);
  PassManager pm(fn.getContext());
  codegen::instrument(pm);
  buildLoopsPipeline(pm, batch, fuse, profile);
  if (failed(pm.run(*scratch)))
    return failure();
  // Into `target`, declarations it has already kept once.
  for (Operation &op : llvm::make_early_inc_range(scratch->getBody()->getOperations())) {
    auto sym = dyn_cast<SymbolOpInterface>(op);
    if (sym && target.lookupSymbol(sym.getNameAttr()))
      continue;
    op.moveBefore(target.getBody(), target.getBody()->end());
  }
  return success();
}

FailureOr<OwningOpRef<ModuleOp>> cpu::buildLoops(func::FuncOp fn, std::optional<int64_t> batch,
                                                 bool fuse) {
  OwningOpRef<ModuleOp> loops = ModuleOp::create(fn.getLoc());
  if (failed(addLoops(fn, batch, *loops, "kernel", false, fuse)))
    return failure();
  return loops;
}
