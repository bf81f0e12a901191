//===- Trainer.h - training on the reference evaluator ----------*- C++ -*-===//
//
// Holds a model's state (parameters, frozen tensors, batch-norm statistics,
// optimizer state, step number) and runs `@m_train_step` on the reference
// evaluator, feeding each step's new values back in. It lets training be
// tested end to end before code generation exists, and is the oracle the
// compiled training step is compared with.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_REFERENCE_TRAINER_H
#define NNC_COMPILER_REFERENCE_TRAINER_H

#include "compiler/reference/Evaluator.h"

#include "mlir/IR/BuiltinOps.h"

#include <optional>
#include <string>

namespace nnc::ref {

class Trainer {
public:
  /// `module` must hold `@m`, `@m_train_step` (the training pipeline's
  /// output). Parameters are initialized from their initializers with `seed`.
  /// Steps run on `executor` (the reference evaluator by default).
  static mlir::FailureOr<Trainer> create(mlir::ModuleOp module, uint64_t seed,
                                         std::shared_ptr<Executor> executor = nullptr);

  /// One step on a mini-batch (one tensor per model input, in order).
  /// Returns the loss before the update.
  mlir::FailureOr<double> step(llvm::ArrayRef<Tensor> inputs);

  /// Runs the model in evaluation mode with the current state; returns its
  /// outputs (and loss, if it has one) in result order.
  mlir::FailureOr<std::vector<Tensor>> evaluate(llvm::ArrayRef<Tensor> inputs);

  /// A state tensor by name (`w1`, `c.running_mean`, `w1.exp_avg`).
  Tensor *tensor(llvm::StringRef name);
  /// Names of everything a checkpoint holds: parameters, frozen tensors,
  /// batch-norm statistics and optimizer state, in argument order.
  std::vector<std::string> stateNames() const;
  uint64_t steps() const { return stepCount; }
  void setSteps(uint64_t n) { stepCount = n; }
  /// The batch's first row in a data-parallel run's global batch (dropout).
  void setFirstRow(int64_t row) { firstRow = row; }
  /// The learning rate of the next steps (the optimizer's `lr` at first).
  double learningRate() const { return lr; }
  void setLearningRate(double v) { lr = v; }
  mlir::func::FuncOp modelFunction() const { return model; }
  const char *backendName() const { return executor->name(); }

private:
  Trainer() = default;

  mlir::func::FuncOp model, trainStep;
  std::shared_ptr<Executor> executor;
  std::vector<Tensor> args;          // one per train-step argument
  std::vector<unsigned> inputArgs;   // indices of the model inputs
  std::vector<std::pair<unsigned, unsigned>> updates; // result -> argument
  std::vector<std::string> names;    // per argument
  unsigned stepArg = 0;
  std::optional<unsigned> lrArg;
  double lr = 0;
  uint64_t seed = 0, stepCount = 0;
  int64_t firstRow = 0;
};

} // namespace nnc::ref

#endif // NNC_COMPILER_REFERENCE_TRAINER_H
