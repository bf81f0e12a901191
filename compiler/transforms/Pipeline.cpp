//===- Pipeline.cpp - the nnc compilation pipeline ------------------------===//
//
// The target-independent stages, in order, in one function: the model to
// its gradient and training step. A backend continues with passes of its
// own over the function it compiles, each declared in Passes.td like these:
// codegen::buildPreparePipeline (compiler/codegen/common/Prepare.cpp:
// specialize, decompose, fold, rematerialize, batch scaling, fuse), then
// for the CPU cpu::buildLoopsPipeline's nnc-choose-tiling and
// nnc-lower-to-loops, and
// cpu::buildLLVMPipeline (outline kernels, the conversions to the LLVM
// dialect, alias scopes); the CUDA emitter reads the prepared function.
// `nnc compile --mlir-print-ir-after-all` shows the IR after each of them.
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
  if (stage == Stage::Train)
    pm.addPass(createFreeze());          // `freeze`: parameters held fixed
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
  registerFreeze();
  registerFuse();
  registerFoldBatchNorm();
  registerPropagateFrozen();
  PassPipelineRegistration<>("nnc-training-pipeline",
                             "Autodiff and the training step, cleaned up",
                             [](OpPassManager &pm) { buildPipeline(pm, Stage::Train); });
}
