//===- FrozenConstants.cpp - frozen tensors with literal values ----------===//
//
// A frozen tensor is never trained; when its initializer is a literal
// (zeros, ones, constant(v), or written-out values) its value is known at
// compile time. Where it is one value read only by elementwise ops, its
// reads become a splat `nn.constant`: folding, canonicalization and the
// fusion pass's literals take it from there (no buffer, no load). Frozen
// tensors drawn at random stay arguments: their values depend on the seed.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Fusion.h"
#include "compiler/transforms/Passes.h"

#include "dialects/nn/NNOps.h"

namespace nnc {
#define GEN_PASS_DEF_PROPAGATEFROZEN
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

/// Replaces the reads of every frozen argument of `fn` whose initializer
/// is a literal by an `nn.constant`; returns how many.
static unsigned propagateFrozen(func::FuncOp fn) {
  if (fn.isExternal())
    return 0;
  OpBuilder b(fn.getContext());
  b.setInsertionPointToStart(&fn.front());
  unsigned n = 0;
  for (BlockArgument arg : fn.getArguments()) {
    auto role = fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), nnops::attr::kRole);
    auto init = fn.getArgAttrOfType<DictionaryAttr>(arg.getArgNumber(), "nn.init");
    auto type = dyn_cast<RankedTensorType>(arg.getType());
    if (!role || role.getValue() != "frozen" || !init || init.get("loaded") || arg.use_empty() || !type ||
        !type.hasStaticShape() || !type.getElementType().isF32())
      continue;
    // The kinds runtime/Init.h's writtenOut lists, so that the runtime
    // refuses checkpoints for exactly the tensors folded here (tested by
    // train/frozen-checkpoint.test).
    auto kind = init.getAs<StringAttr>("kind");
    DenseElementsAttr value;
    if (!kind) {
      continue;
    } else if (kind.getValue() == "zeros" || kind.getValue() == "ones" || kind.getValue() == "constant") {
      double v = kind.getValue() == "ones" ? 1.0 : 0.0;
      if (kind.getValue() == "constant") {
        auto given = init.getAs<FloatAttr>("value");
        if (!given)
          continue;
        v = given.getValueAsDouble();
      }
      value = DenseElementsAttr::get(type, b.getF32FloatAttr(static_cast<float>(v)));
    } else if (kind.getValue() == "literal") {
      value = init.getAs<DenseElementsAttr>("value");
      if (!value || value.getType() != type)
        continue;
    } else {
      continue;
    }
    // A splat read elementwise costs nothing as a literal; anything else
    // (a product's operand, varied values) needs a buffer, which the
    // argument already is.
    if (!value.isSplat() || llvm::any_of(arg.getUsers(), [](Operation *u) { return !nnops::isElementwise(u); }))
      continue;
    Value c = b.create<nnops::ConstantOp>(arg.getLoc(), ValueRange{},
                                          ArrayRef<NamedAttribute>{b.getNamedAttr("value", value)})
                  ->getResult(0);
    arg.replaceAllUsesWith(c);
    ++n;
  }
  return n;
}

namespace {
struct PropagateFrozenPass : nnc::impl::PropagateFrozenBase<PropagateFrozenPass> {
  void runOnOperation() override { (void)propagateFrozen(getOperation()); }
};
} // namespace
