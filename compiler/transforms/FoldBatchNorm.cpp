//===- FoldBatchNorm.cpp - evaluation batch norm into the layer before ---===//
//
// In evaluation, batch normalization is a per-channel affine map,
//   y = (v - mean) * s + beta,   s = gamma / sqrt(var + eps),
// and when v is a convolution or a product (with or without a bias), the
// map moves into that layer's epilogue:
//   conv2d(x, w) [+ b]  ->  conv2d(x, w) * s + (beta + ([b] - mean) * s)
//   x @ w [+ b]         ->  (x @ w) * s + (beta + ([b] - mean) * s)
// per output channel. Fusion makes the multiply-add part of the layer's
// kernel, applied as its results are stored: O(channels) work per call
// besides, where scaling the weights instead (w * s) would touch every
// weight on every call (11.7 million for ResNet-18, more than its
// activations at small batches). The rewrite is exact up to rounding (one
// product rounded differently).
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Fusion.h"
#include "compiler/transforms/GradBuilder.h"
#include "compiler/transforms/Passes.h"

#include "dialects/nn/NNOps.h"

namespace nnc {
#define GEN_PASS_DEF_FOLDBATCHNORM
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace {

RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

/// The single-use op defining `v`, if it is an `OpTy`.
template <typename OpTy> OpTy soleDef(Value v) {
  return v.hasOneUse() ? v.getDefiningOp<OpTy>() : OpTy();
}

/// Folds one evaluation batch norm; false when its input is no layer.
bool fold(nnops::BatchNormOp bn) {
  Value v = bn.getInput();
  int64_t rank = typeOf(v).getRank();
  // An optional bias: add(layer, b) with b [C] (a product) or a [C, 1, 1]
  // view of b [C] (a convolution).
  Value bias, layer = v;
  if (auto add = soleDef<nnops::AddOp>(v)) {
    for (int i = 0; i < 2 && !bias; ++i) {
      Value l = add->getOperand(i), b = add->getOperand(1 - i);
      if (!soleDef<nnops::Conv2dOp>(l) && !soleDef<nnops::MatmulOp>(l))
        continue;
      if (typeOf(l) != typeOf(v))
        continue;
      if (auto view = b.getDefiningOp<nnops::ReshapeOp>())
        b = view->getOperand(0);
      auto bt = typeOf(b);
      if (bt.getRank() == 1 && bt.getDimSize(0) == typeOf(v).getDimSize(1)) {
        bias = b;
        layer = l;
      }
    }
    if (!bias)
      return false;
  }
  auto conv = soleDef<nnops::Conv2dOp>(layer);
  auto matmul = soleDef<nnops::MatmulOp>(layer);
  if (!(conv && rank == 4) && !(matmul && rank == 2))
    return false;
  Value w = layer.getDefiningOp()->getOperand(1);
  if (matmul && typeOf(w).getRank() != 2)
    return false;

  OpBuilder b(bn);
  GradBuilder g(b, bn.getLoc());
  Value s = g.div(bn.getGamma(),
                  g.make<nnops::SqrtOp>({g.add(bn.getRunningVar(), bn.getEps().convertToDouble())}));
  Value shift = bias ? g.add(bn.getBeta(), g.mul(g.sub(bias, bn.getRunningMean()), s))
                     : g.sub(bn.getBeta(), g.mul(bn.getRunningMean(), s));
  // The layer's result scaled per output channel (axis 1 of NCHW, the
  // columns of a product), then shifted; the channel views come before
  // the layer, so that they dominate the kernel fusion makes of the three.
  Value scale = conv ? g.channels(s, rank) : s, offset = conv ? g.channels(shift, rank) : shift;
  Operation *newLayer = b.clone(*layer.getDefiningOp());
  Value y = g.add(g.mul(newLayer->getResult(0), scale), offset);
  bn.getResult().replaceAllUsesWith(y);
  bn.getMean().replaceAllUsesWith(bn.getRunningMean()); // the statistics it used
  bn.getVar().replaceAllUsesWith(bn.getRunningVar());
  Operation *oldAdd = v.getDefiningOp() != layer.getDefiningOp() ? v.getDefiningOp() : nullptr;
  bn->erase();
  Operation *view = nullptr;
  if (oldAdd) {
    for (Value o : oldAdd->getOperands())
      if (auto r = o.getDefiningOp<nnops::ReshapeOp>(); r && o.hasOneUse())
        view = r;
    oldAdd->erase();
  }
  layer.getDefiningOp()->erase();
  if (view)
    view->erase(); // the bias's old view
  return true;
}

/// Folds every evaluation-mode batch norm of `fn` that follows a
/// convolution or a matrix product; returns how many.
unsigned foldBatchNorm(func::FuncOp fn) {
  SmallVector<nnops::BatchNormOp> norms;
  fn.walk([&](nnops::BatchNormOp bn) {
    if (!bn.getTraining())
      norms.push_back(bn);
  });
  unsigned n = 0;
  for (nnops::BatchNormOp bn : norms)
    n += fold(bn);
  return n;
}

struct FoldBatchNormPass : nnc::impl::FoldBatchNormBase<FoldBatchNormPass> {
  void runOnOperation() override { (void)foldBatchNorm(getOperation()); }
};

} // namespace
