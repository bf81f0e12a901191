//===- Freeze.cpp - parameters held fixed for fine-tuning -----------------===//
//
// `freeze = ["conv1", "layer1"]` in the train section (or `--freeze`): the
// matching parameters become frozen tensors with loaded values, before
// autodiff, so their backward ops are never built and they get no
// optimizer state. See Passes.td (Freeze) for the rules.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"

#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

namespace nnc {
#define GEN_PASS_DEF_FREEZE
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

/// Whether `pattern` names `name`: the name itself, or a prefix of it
/// ending at a dot.
static bool names(StringRef pattern, StringRef name) {
  return name == pattern || (name.starts_with(pattern) && name[pattern.size()] == '.');
}

static LogicalResult freeze(ModuleOp module, func::FuncOp model, ArrayAttr patterns) {
  Builder b(module.getContext());
  SmallVector<bool> used(patterns.size(), false);
  for (unsigned i = 0; i < model.getNumArguments(); ++i) {
    auto name = model.getArgAttrOfType<StringAttr>(i, nnops::attr::kName);
    auto role = model.getArgAttrOfType<StringAttr>(i, nnops::attr::kRole);
    if (!name || !role || role.getValue() == "input")
      continue;
    bool held = false;
    for (auto [k, p] : llvm::enumerate(patterns))
      if (names(cast<StringAttr>(p).getValue(), name.getValue()))
        used[k] = held = true;
    if (!held || role.getValue() != "param")
      continue;
    model.setArgAttr(i, nnops::attr::kRole, b.getStringAttr("frozen"));
    NamedAttrList init;
    if (auto old = model.getArgAttrOfType<DictionaryAttr>(i, nnops::attr::kInit))
      init.append(old.getValue());
    init.set("loaded", b.getUnitAttr());
    model.setArgAttr(i, nnops::attr::kInit, init.getDictionary(module.getContext()));
  }
  for (auto [k, p] : llvm::enumerate(patterns))
    if (!used[k])
      return module.emitError("freeze: '") << cast<StringAttr>(p).getValue() << "' names no tensor of model '"
                                          << model.getName() << "'";
  return success();
}

namespace {
struct FreezePass : nnc::impl::FreezeBase<FreezePass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto train = module->getAttrOfType<DictionaryAttr>(nnops::attr::kTrain);
    auto patterns = train ? dyn_cast_or_null<ArrayAttr>(train.get("freeze")) : ArrayAttr();
    if (!patterns || patterns.empty())
      return;
    for (func::FuncOp fn : module.getOps<func::FuncOp>())
      if (!fn.isExternal() && !fn.getName().ends_with(kGradSuffix) && !fn.getName().ends_with(kTrainStepSuffix))
        if (failed(freeze(module, fn, patterns)))
          return signalPassFailure();
  }
};
} // namespace
