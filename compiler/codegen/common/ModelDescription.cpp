//===- ModelDescription.cpp - a model's tensors for the runtime -----------===//

#include "compiler/codegen/common/ModelDescription.h"

#include "compiler/codegen/common/Prepare.h"
#include "dialects/nn/NNOps.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

FailureOr<rt::FunctionDesc> codegen::describeSignature(func::FuncOp fn) {
  OwningOpRef<func::FuncOp> unit(cast<func::FuncOp>(fn->clone()));
  if (failed(specializeBatch(*unit, 1)))
    return failure();
  auto tensor = [](Type generic, Type atOne, StringAttr name, StringAttr role) {
    auto g = cast<RankedTensorType>(generic), one = cast<RankedTensorType>(atOne);
    rt::TensorDesc t{name ? name.str() : "", role ? role.str() : "",
                     g.getElementType().isInteger(32), {}};
    for (int64_t i = 0; i < g.getRank(); ++i)
      t.shape.push_back(g.isDynamicDim(i) ? -one.getDimSize(i) : g.getDimSize(i));
    return t;
  };
  rt::FunctionDesc f;
  for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
    f.args.push_back(tensor(fn.getArgumentTypes()[i], unit->getArgumentTypes()[i],
                            fn.getArgAttrOfType<StringAttr>(i, nnops::attr::kName),
                            fn.getArgAttrOfType<StringAttr>(i, nnops::attr::kRole)));
    if (f.args.back().integer)
      f.args.back().classes = nnops::classCount(fn.getArgument(i));
    if (auto v = fn.getArgAttrOfType<FloatAttr>(i, nnops::attr::kValue))
      f.args.back().value = v.getValueAsDouble();
  }
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    f.results.push_back(tensor(fn.getResultTypes()[i], unit->getResultTypes()[i],
                               fn.getResultAttrOfType<StringAttr>(i, nnops::attr::kName),
                               fn.getResultAttrOfType<StringAttr>(i, nnops::attr::kRole)));
  return f;
}

LogicalResult codegen::describeModel(func::FuncOp model, rt::ModelDesc &m) {
  m.name = model.getName().str();
  for (unsigned i = 0; i < model.getNumResults(); ++i)
    if (m.model.results[i].role == "loss")
      m.lossResult = i;
  m.inits.resize(model.getNumArguments());
  for (unsigned i = 0; i < model.getNumArguments(); ++i) {
    if (m.model.args[i].role == "input")
      continue;
    auto spec = nnops::initSpec(model, i);
    if (failed(spec))
      return failure();
    m.inits[i] = std::move(*spec);
  }
  return success();
}

