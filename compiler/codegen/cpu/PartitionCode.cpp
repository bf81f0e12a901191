//===- PartitionCode.cpp - functions dealt into nested modules ------------===//
//
// After OutlineKernels a module is a handful of entry functions and one
// function per distinct kernel. The conversions to the LLVM dialect are
// module passes, and translation and LLVM's passes work on whole modules:
// run on the one module they were serial. Dealt into nested modules, the
// conversions run on them in parallel (MLIR's pass manager takes nested
// ops in parallel) and each translates to an LLVM module of its own, which
// JitModule::compile optimizes and compiles on a thread of its own.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/LowerToLoops.h"
#include "compiler/transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"

#include <algorithm>
#include <string>
#include <vector>

using namespace mlir;
using namespace nnc;

LogicalResult cpu::partitionCode(ModuleOp module, unsigned parts) {
  if (parts == 0)
    return module.emitError("partitionCode: no partitions");
  SmallVector<func::FuncOp> defined, declared;
  SmallVector<memref::GlobalOp> constants;
  for (Operation &op : module.getBody()->getOperations()) {
    if (auto fn = dyn_cast<func::FuncOp>(op)) {
      (fn.isExternal() ? declared : defined).push_back(fn);
      continue;
    }
    // A constant (a literal tensor's values) is copied into each partition
    // that reads it; anything written could not be.
    auto global = dyn_cast<memref::GlobalOp>(op);
    if (!global || !global.getConstant() || !global.isPrivate())
      return op.emitError("partitionCode: only functions and private constants can be dealt into partitions, not ")
             << op.getName();
    constants.push_back(global);
  }
  // Largest first into the lightest partition; ties in the module's order,
  // so the assignment follows from the IR alone.
  struct Sized {
    int64_t ops;
    size_t position;
    func::FuncOp fn;
  };
  std::vector<Sized> bySize;
  for (func::FuncOp fn : defined) {
    int64_t ops = 0;
    fn.walk([&](Operation *) { ++ops; });
    bySize.push_back({ops, bySize.size(), fn});
  }
  llvm::sort(bySize, [](const Sized &a, const Sized &b) {
    return a.ops != b.ops ? a.ops > b.ops : a.position < b.position;
  });
  SmallVector<int64_t> load(parts, 0);
  SmallVector<SmallVector<func::FuncOp>> members(parts);
  for (auto &[ops, position, fn] : bySize) {
    unsigned least = std::min_element(load.begin(), load.end()) - load.begin();
    load[least] += ops;
    members[least].push_back(fn);
  }

  SymbolTable symbols(module); // (before the partitions' names join it)
  OpBuilder b(module.getContext());
  b.setInsertionPointToEnd(module.getBody());
  SmallVector<ModuleOp> nested;
  for (unsigned i = 0; i < parts; ++i) {
    std::string name = "part" + std::to_string(i);
    nested.push_back(b.create<ModuleOp>(module.getLoc(), StringRef(name)));
  }
  for (unsigned i = 0; i < parts; ++i) {
    // What the members refer to outside the partition becomes a private
    // declaration in it (a definition elsewhere keeps external linkage in
    // the LLVM dialect, so the objects link).
    llvm::DenseSet<StringAttr> own;
    llvm::SetVector<StringAttr> wanted;
    for (func::FuncOp fn : members[i])
      own.insert(fn.getSymNameAttr());
    for (func::FuncOp fn : members[i])
      if (auto uses = SymbolTable::getSymbolUses(fn))
        for (const SymbolTable::SymbolUse &use : *uses)
          if (StringAttr name = use.getSymbolRef().getRootReference(); !own.contains(name))
            wanted.insert(name);
    OpBuilder in = OpBuilder::atBlockEnd(nested[i].getBody());
    for (StringAttr name : wanted) {
      Operation *symbol = symbols.lookup(name);
      if (auto global = dyn_cast_or_null<memref::GlobalOp>(symbol)) {
        in.clone(*global);
        continue;
      }
      auto callee = dyn_cast_or_null<func::FuncOp>(symbol);
      if (!callee)
        return module.emitError("partitionCode: a function refers to '") << name.getValue()
                                                                           << "', which is not a function or constant";
      auto decl = in.create<func::FuncOp>(callee.getLoc(), name, callee.getFunctionType());
      decl.setPrivate();
    }
    for (func::FuncOp fn : members[i])
      fn->moveBefore(nested[i].getBody(), nested[i].getBody()->end());
  }
  for (func::FuncOp fn : declared)
    fn.erase();
  for (memref::GlobalOp global : constants)
    global.erase();
  return success();
}

namespace nnc {
#define GEN_PASS_DEF_PARTITIONCODE
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

namespace {
struct PartitionCodePass : nnc::impl::PartitionCodeBase<PartitionCodePass> {
  using PartitionCodeBase::PartitionCodeBase;
  void runOnOperation() override {
    if (failed(cpu::partitionCode(getOperation(), parts)))
      signalPassFailure();
  }
};
} // namespace
