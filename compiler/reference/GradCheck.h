//===- GradCheck.h - symbolic gradients vs finite differences ---*- C++ -*-===//
//
// Differentiates a model with the autodiff pass, evaluates the gradient
// function on the reference evaluator with random inputs, and compares each
// parameter's gradient with central finite differences of the loss (in
// double precision). The gradient function may instead run on a compiled
// backend (its fused f32 code). Used by `nnc gradcheck` and by the tests.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_REFERENCE_GRADCHECK_H
#define NNC_COMPILER_REFERENCE_GRADCHECK_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LogicalResult.h"

#include "llvm/Support/raw_ostream.h"

#include <string>
#include <vector>

namespace nnc::ref {

class Executor;

/// The fewest elements per tensor a time budget may leave.
constexpr int64_t kMinSamples = 4;

struct GradCheckOptions {
  uint64_t seed = 1;
  int64_t batch = 3;       // the size given to symbolic dimensions
  int64_t samples = 32;    // elements checked per tensor; 0 checks all
  /// With `samples` left at its default: the seconds the finite differences
  /// may take. Large models then check fewer elements per tensor (at least
  /// kMinSamples), sized from the time one evaluation of the loss takes.
  double budgetSeconds = 6;
  bool samplesGiven = false;
  double tolerance = 1e-4; // largest relative error accepted
  double eps = 1e-6;       // finite-difference step
  bool wrtInputs = false;
  /// Where the gradient function runs (the reference evaluator when null;
  /// a compiled backend to check its generated, fused code). The finite
  /// differences always come from the evaluator in double precision; a
  /// backend computing in f32 is held to f32 accuracy: an error also
  /// passes when below 1e-4 times the model's largest gradient element.
  Executor *executor = nullptr;
};

struct GradCheckRow {
  std::string name;
  int64_t elements = 0, checked = 0;
  /// Elements whose finite difference straddles a point where the loss is
  /// not differentiable (a ReLU's zero, a max-pool tie): the one-sided
  /// slopes differ there, and the symbolic gradient is one of them.
  int64_t kinks = 0;
  double maxAbs = 0, maxRel = 0; // over the elements not at kinks
  bool ok = true;
};

struct GradCheckReport {
  std::vector<GradCheckRow> rows;
  bool passed = true;
};

/// Checks the model in `module` (which is left unchanged). Prints a table to
/// `os`. Fails (after a diagnostic) when the model cannot be differentiated
/// or evaluated.
mlir::FailureOr<GradCheckReport> gradcheck(mlir::ModuleOp module,
                                           const GradCheckOptions &options,
                                           llvm::raw_ostream &os);

} // namespace nnc::ref

#endif // NNC_COMPILER_REFERENCE_GRADCHECK_H
