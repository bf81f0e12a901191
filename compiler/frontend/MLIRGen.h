//===- MLIRGen.h - .nn source to the nn dialect -----------------*- C++ -*-===//
//
// Entry points of the frontend: parse a .nn buffer and lower its AST into a
// builtin module holding one `func.func` per model. Diagnostics go through
// the context's diagnostic engine with FileLineColLoc locations, so a
// SourceMgrDiagnosticHandler prints them with the source line and a caret.
//
// The lowered model is a function whose arguments are, in declaration order,
// the model's inputs, parameters, frozen tensors and layer state (batch-norm
// running statistics), each tagged with `nn.name` and `nn.role`
// (input|param|frozen|state) and, for tensors that need one, `nn.init`. Its
// results are the declared outputs, then the minimized loss (`nn.role` =
// output|loss). The `train` section becomes the module attribute `nn.train`.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_FRONTEND_MLIRGEN_H
#define NNC_COMPILER_FRONTEND_MLIRGEN_H

#include "compiler/frontend/AST.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <optional>

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace nnc {

/// Parses the main buffer of `sourceMgr`. Returns nullopt after reporting
/// syntax errors to `ctx`'s diagnostic engine.
std::optional<File> parseSource(llvm::SourceMgr &sourceMgr,
                                mlir::MLIRContext &ctx);

/// Lowers a parsed file to the nn dialect and verifies the result. Returns
/// null after reporting errors. `ctx` must have the nn and func dialects
/// loaded.
mlir::OwningOpRef<mlir::ModuleOp> mlirGen(mlir::MLIRContext &ctx,
                                          const File &file,
                                          llvm::StringRef filename);

/// Names of the builtin functions, for documentation and tests.
std::vector<std::string> builtinNames();

} // namespace nnc

#endif // NNC_COMPILER_FRONTEND_MLIRGEN_H
