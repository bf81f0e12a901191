//===- nnc-opt.cpp - mlir-opt with the nn dialect -------------------------===//
//
// Runs passes over textual IR for lit tests: the nn and func dialects, nnc's
// passes, and the upstream canonicalizer and CSE (which exercise the folders).
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Pipeline.h"
#include "dialects/nn/NNDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  nnc::registerPasses();
  mlir::DialectRegistry registry;
  registry.insert<nnc::nn::NNDialect, mlir::func::FuncDialect>();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "nnc optimizer driver\n", registry));
}
