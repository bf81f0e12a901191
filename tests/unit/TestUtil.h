//===- TestUtil.h - compiling .nn sources in tests --------------*- C++ -*-===//

#ifndef NNC_TESTS_UNIT_TESTUTIL_H
#define NNC_TESTS_UNIT_TESTUTIL_H

#include "compiler/frontend/MLIRGen.h"
#include "compiler/transforms/Pipeline.h"
#include "compiler/reference/Evaluator.h"
#include "dialects/nn/NNDialect.h"
#include "dialects/nn/NNOps.h"
#include "runtime/Random.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <string>
#include <vector>

namespace nnc::test {

/// A model compiled from source (or a file) up to a pipeline stage, with
/// every diagnostic collected as text.
struct Compiled {
  mlir::MLIRContext ctx;
  llvm::SourceMgr sm;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::vector<std::string> errors;

  /// `distributed`: the training step of a data-parallel run (its
  /// gradients combined by nn.all_reduce), as `nnc train` builds it under
  /// a launcher.
  Compiled(llvm::StringRef text, Stage stage, llvm::StringRef name = "test.nn", bool distributed = false) {
    ctx.loadDialect<nnc::nn::NNDialect, mlir::func::FuncDialect>();
    mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &d) {
      errors.push_back(d.str());
      return mlir::success();
    });
    sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(text, name), llvm::SMLoc());
    auto file = parseSource(sm, ctx);
    if (!file)
      return;
    module = mlirGen(ctx, *file, name);
    if (!module)
      return;
    if (distributed) {
      mlir::NamedAttrList train;
      if (auto t = (*module)->getAttrOfType<mlir::DictionaryAttr>(nnc::nn::attr::kTrain))
        train.append(t.getValue());
      train.set("distributed", mlir::BoolAttr::get(&ctx, true));
      (*module)->setAttr(nnc::nn::attr::kTrain, train.getDictionary(&ctx));
    }
    mlir::PassManager pm(&ctx);
    buildPipeline(pm, stage);
    if (mlir::failed(pm.run(*module)))
      module = nullptr;
  }

  std::string firstError() const { return errors.empty() ? "" : errors.front(); }
};

/// Reads a file of the source tree (NNC_SOURCE_DIR is set by CMake).
/// Deterministic inputs for `fn`'s inputs: uniform(0.05, 0.95), labels 0/1.
inline std::vector<ref::Tensor> inputsFor(mlir::func::FuncOp fn, int64_t batch, uint64_t salt) {
  std::vector<ref::Tensor> out;
  for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
    auto role = fn.getArgAttrOfType<mlir::StringAttr>(i, nnc::nn::attr::kRole);
    if (!role || role.getValue() != "input")
      continue;
    auto type = mlir::cast<mlir::RankedTensorType>(fn.getArgument(i).getType());
    std::vector<int64_t> shape;
    for (int64_t d : type.getShape())
      shape.push_back(mlir::ShapedType::isDynamic(d) ? batch : d);
    ref::Tensor t = ref::Tensor::filled(shape);
    for (size_t k = 0; k < t.data.size(); ++k)
      t.data[k] = type.getElementType().isInteger(32)
                      ? static_cast<double>(k % 2)
                      : 0.05 + 0.9 * rt::uniform01(salt, i, k);
    out.push_back(std::move(t));
  }
  return out;
}

inline std::string readSource(const std::string &relative) {
  auto buf = llvm::MemoryBuffer::getFile(std::string(NNC_SOURCE_DIR) + "/" + relative);
  return buf ? (*buf)->getBuffer().str() : std::string();
}

} // namespace nnc::test

#endif // NNC_TESTS_UNIT_TESTUTIL_H
