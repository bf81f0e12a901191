//===- CudaModel.h - a model's CUDA kernels, run on a device ----*- C++ -*-===//
//
// The GPU counterpart of CompiledModel: the training step and evaluation
// function of a ModelDesc as CUDA modules (FunctionDesc::cuda), run
// through the driver API on one stream. The model state lives on the
// device for the whole run: updated tensors are swapped with the state
// they replace (no copies), only the loss comes back each step, and each
// batch goes up from pinned memory on a second stream while the previous
// step computes. Intermediates share the slots of the function's memory
// plan. `nnc train --target=cuda` and binaries built with `--target=cuda`
// train through it.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CUDAMODEL_H
#define NNC_RUNTIME_CUDAMODEL_H

#include "runtime/CompiledModel.h"
#include "runtime/CudaDriver.h"

#include <memory>

namespace nnc::rt {

class NcclComm;

class CudaModel : public Trainable {
public:
  CudaModel(const ModelDesc &m, uint64_t seed, const CudaDriver &driver);
  ~CudaModel() override;

  /// Loads the modules, allocates the state on the device and draws the
  /// initial parameters from their initializers and the seed.
  Status initialize();

  std::string modelName() const override;
  const char *backendName() const override { return "cuda"; }
  const std::vector<ModelInput> &inputs() const override;
  Status step(const std::vector<HostTensor> &batch, double &loss) override;
  Status stepAsync(const std::vector<HostTensor> &batch, double *loss) override;
  Status sync() override;
  int64_t stepsInFlight() const override;
  Status evaluate(const std::vector<HostTensor> &batch, std::vector<HostTensor> &outputs,
                  double &loss) override;
  std::vector<std::string> stateNames() const override;
  Status getState(const std::string &name, HostTensor &out) const override;
  Status setState(const std::string &name, const HostTensor &value) override;
  bool isConstant(const std::string &name) const override;
  bool isInteger(const std::string &name) const override;
  uint64_t steps() const override;
  void setSteps(uint64_t n) override;
  double learningRate() const override;
  void setLearningRate(double lr) override;

  /// Makes the training step's collectives (nn.all_reduce) combine over
  /// the ranks of `comm`, giving up on ranks that do not answer within
  /// `timeLimitSeconds`. Without it they are the identity, as in one
  /// process.
  Status attach(std::unique_ptr<NcclComm> comm, int64_t timeLimitSeconds);
  void setShare(double share) override;
  void setFirstRow(int64_t row) override;
  bool takeDeviceTraffic(double &busy, double &waited) override;

  /// One training step (as `step`), each launch of it timed on the device
  /// between events: `seconds[k]` is the time of the training step's
  /// launch k (ModelDesc::trainStep.cuda.launches[k]).
  Status profileStep(const std::vector<HostTensor> &batch, std::vector<double> &seconds);

  /// Device bytes held now (state, buffers, slots), for reports and tests.
  size_t deviceBytes() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

} // namespace nnc::rt

#endif // NNC_RUNTIME_CUDAMODEL_H
