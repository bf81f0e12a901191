//===- FrontendFuzzer.cpp - libFuzzer target for the .nn frontend ---------===//
//
// Feeds arbitrary bytes through the lexer, parser, AST printer and MLIRGen
// (with verification). Any crash, sanitizer report, leak or time-out is a
// bug: the frontend must answer every input with a result or diagnostics.
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/AST.h"
#include "compiler/frontend/MLIRGen.h"
#include "dialects/nn/NNDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  // A fresh context per input keeps memory flat across millions of runs.
  mlir::MLIRContext ctx(mlir::MLIRContext::Threading::DISABLED);
  ctx.loadDialect<nnc::nn::NNDialect, mlir::func::FuncDialect>();
  mlir::ScopedDiagnosticHandler quiet(&ctx, [](mlir::Diagnostic &) {
    return mlir::success();
  });
  llvm::SourceMgr sm;
  sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(text, "fuzz.nn"),
                        llvm::SMLoc());
  auto file = nnc::parseSource(sm, ctx);
  if (!file)
    return 0;
  std::string dump;
  llvm::raw_string_ostream os(dump);
  nnc::dumpAST(*file, os);
  (void)nnc::mlirGen(ctx, *file, "fuzz.nn");
  return 0;
}
