//===- Evaluator.h - reference interpreter for the nn dialect ---*- C++ -*-===//
//
// Executes nn-dialect functions directly with plain loops in double
// precision. It is the oracle every backend is tested against and lets
// training be tested before code generation exists: small and obviously
// correct, not fast. Shapes are taken from the actual tensors (dynamic batch
// sizes included) through the same ShapeRules the verifier uses.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_REFERENCE_EVALUATOR_H
#define NNC_COMPILER_REFERENCE_EVALUATOR_H

#include "runtime/Init.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Support/LogicalResult.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace nnc::ref {

/// A dense row-major tensor. i32 tensors hold integral doubles.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<double> data;

  int64_t numel() const;
  static Tensor filled(std::vector<int64_t> shape, double value = 0.0);
  static Tensor scalar(double value) { return Tensor{{}, {value}}; }
};

struct EvalOptions {
  uint64_t seed = 0; // dropout masks draw from (seed, step, op)
  uint64_t step = 0;
  /// The batch's first row in a data-parallel run's global batch: dropout
  /// counts elements from there, as one process would.
  int64_t firstRow = 0;
};

/// Something that runs nn functions: the reference evaluator below, or a
/// compiled backend (cpu::createExecutor).
class Executor {
public:
  virtual ~Executor() = default;
  virtual mlir::FailureOr<std::vector<Tensor>> run(mlir::func::FuncOp fn,
                                                   llvm::ArrayRef<Tensor> args,
                                                   const EvalOptions &options) = 0;
  /// A short name for messages ("reference", "cpu").
  virtual const char *name() const = 0;
};

/// The reference evaluator as an Executor.
std::unique_ptr<Executor> createReferenceExecutor();

class Evaluator {
public:
  explicit Evaluator(EvalOptions options = {}) : options(options) {}

  /// Runs `fn` on `args` (one tensor per argument) and returns its results.
  /// Unsupported ops and run-time shape errors are reported at the op.
  mlir::FailureOr<std::vector<Tensor>> run(mlir::func::FuncOp fn,
                                           llvm::ArrayRef<Tensor> args) const;

  EvalOptions options;
};

/// The initial value of argument `index` of `fn` from its `nn.init`
/// attribute; argument `index` seeds its own random stream.
mlir::FailureOr<Tensor> initialValue(mlir::func::FuncOp fn, unsigned index,
                                     uint64_t seed);

} // namespace nnc::ref

#endif // NNC_COMPILER_REFERENCE_EVALUATOR_H
