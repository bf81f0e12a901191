//===- GradBuilder.cpp - building blocks of gradient rules ----------------===//

#include "compiler/transforms/GradBuilder.h"

#include "mlir/IR/BuiltinAttributes.h"

using namespace mlir;
using namespace nnc;

static RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

Value GradBuilder::scalar(double v) {
  auto type = RankedTensorType::get({}, b.getF32Type());
  return make<nn::ConstantOp>(
      {}, {b.getNamedAttr("value", DenseElementsAttr::get(type, b.getF32FloatAttr(v)))});
}

Value GradBuilder::sumAxes(Value x, ArrayRef<int64_t> axes, bool keepdims) {
  return make<nn::ReduceSumOp>({x}, {b.getNamedAttr("axes", b.getDenseI64ArrayAttr(axes)),
                                     b.getNamedAttr("keepdims", b.getBoolAttr(keepdims))});
}

Value GradBuilder::meanAxes(Value x, ArrayRef<int64_t> axes, bool keepdims) {
  return make<nn::ReduceMeanOp>({x}, {b.getNamedAttr("axes", b.getDenseI64ArrayAttr(axes)),
                                      b.getNamedAttr("keepdims", b.getBoolAttr(keepdims))});
}

Value GradBuilder::count(Value x, ArrayRef<int64_t> axes) {
  return make<nn::CountOp>({x}, {b.getNamedAttr("axes", b.getDenseI64ArrayAttr(axes))});
}

Value GradBuilder::broadcastLike(Value g, Value like) {
  if (g.getType() == like.getType())
    return g;
  return make<nn::BroadcastLikeOp>({g, like});
}

Value GradBuilder::reshapeTo(Value x, ArrayRef<int64_t> shape) {
  if (typeOf(x).getShape() == shape)
    return x;
  SmallVector<int64_t> target;
  for (int64_t d : shape)
    target.push_back(ShapedType::isDynamic(d) ? -1 : d);
  assert(llvm::count(target, -1) <= 1 && "reshape with several dynamic sizes");
  return make<nn::ReshapeOp>({x}, {b.getNamedAttr("shape", b.getDenseI64ArrayAttr(target))});
}

Value GradBuilder::sumTo(Value g, Type target) {
  ArrayRef<int64_t> gs = typeOf(g).getShape();
  ArrayRef<int64_t> ts = cast<RankedTensorType>(target).getShape();
  if (gs == ts)
    return g;
  size_t lead = gs.size() - ts.size();
  SmallVector<int64_t> axes;
  bool stretched = false; // a size-1 target axis that the gradient filled
  for (size_t i = 0; i < gs.size(); ++i) {
    if (i < lead) {
      axes.push_back(i);
    } else if (ts[i - lead] == 1 && gs[i] != 1) {
      axes.push_back(i);
      stretched = true;
    }
  }
  if (axes.empty())
    return g;
  if (!stretched)
    return sumAxes(g, axes, /*keepdims=*/false);
  return reshapeTo(sumAxes(g, axes, /*keepdims=*/true), ts);
}

Value GradBuilder::unreduce(Value dy, Value x, ArrayRef<int64_t> axes, bool keepdims) {
  if (!keepdims) {
    SmallVector<int64_t> kept(typeOf(x).getShape());
    for (size_t i = 0; i < kept.size(); ++i)
      if (axes.empty() || llvm::is_contained(axes, static_cast<int64_t>(i)))
        kept[i] = 1;
    dy = reshapeTo(dy, kept);
  }
  return make<nn::BroadcastLikeOp>({dy, x});
}

Value GradBuilder::channels(Value c, int64_t rank) {
  SmallVector<int64_t> shape(typeOf(c).getShape());
  shape.resize(rank - 1, 1);
  return reshapeTo(c, shape);
}

SmallVector<int64_t> nnc::allButChannels(int64_t rank) {
  SmallVector<int64_t> axes = {0};
  for (int64_t i = 2; i < rank; ++i)
    axes.push_back(i);
  return axes;
}
