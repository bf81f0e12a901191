//===- nnc-opt.cpp - mlir-opt with the nn dialect -------------------------===//
//
// Runs passes over textual IR for lit tests: the nn dialect and the
// dialects the CPU backend lowers to, every nnc pass (transforms,
// preparation for a backend, the CPU backend's), their pipelines, and the
// upstream canonicalizer and CSE (which exercise the folders).
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/common/Prepare.h"
#include "compiler/codegen/cpu/LowerToLoops.h"
#include "compiler/transforms/Pipeline.h"
#include "dialects/nn/NNDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/OpenMP/OpenMPDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  nnc::registerPasses();
  nnc::codegen::registerPasses();
  nnc::cpu::registerPasses();
  mlir::DialectRegistry registry;
  registry.insert<nnc::nn::NNDialect, mlir::func::FuncDialect, mlir::arith::ArithDialect,
                  mlir::math::MathDialect, mlir::memref::MemRefDialect, mlir::scf::SCFDialect,
                  mlir::vector::VectorDialect, mlir::LLVM::LLVMDialect, mlir::omp::OpenMPDialect>();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "nnc optimizer driver\n", registry));
}
