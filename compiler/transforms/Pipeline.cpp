//===- Pipeline.cpp - the nnc compilation pipeline ------------------------===//
//
// The whole pipeline, in order, in one function. Later stages (fusion,
// lowering to loops, LLVM, CUDA) are appended here.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Pipeline.h"
#include "compiler/transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void nnc::buildPipeline(OpPassManager &pm, Stage stage) {
  if (stage == Stage::Nn)
    return;
  pm.addPass(createCanonicalizerPass()); // stable forms (softmax + CE) first
  pm.addPass(createAutodiff());          // @m -> @m_grad (forward + backward)
  if (stage == Stage::Train)
    pm.addPass(createBuildTrainStep());  // @m_grad -> @m_train_step
  pm.addPass(createCanonicalizerPass()); // fold identities, drop dead adjoints
  pm.addPass(createCSEPass());           // share recomputed statistics
}

void nnc::registerPasses() {
  registerAutodiff();
  registerBuildTrainStep();
  registerFuse();
  registerFoldBatchNorm();
  registerPropagateFrozen();
  PassPipelineRegistration<>("nnc-training-pipeline",
                             "Autodiff and the training step, cleaned up",
                             [](OpPassManager &pm) { buildPipeline(pm, Stage::Train); });
}
