//===- GradientRules.cpp - the per-op gradient table ----------------------===//
//
// Conventions: `dy` is the adjoint of the op's (first) result, `x(i)` its
// operands, `y` its result. Forward results are reused where that is both
// cheaper and stable (sigmoid, tanh, exp, softmax). Losses with
// reduction="mean" divide by nn.count, so the batch size may be dynamic.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/GradientRules.h"

#include "llvm/ADT/DenseMap.h"

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace {

RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

/// Sets one adjoint per operand, summing broadcast gradients back to shape.
void set(GradContext &c, std::initializer_list<std::function<Value()>> grads) {
  unsigned i = 0;
  for (const auto &grad : grads) {
    Value g = c.needs[i] ? grad() : Value();
    c.dOperands.push_back(g ? c.g.sumTo(g, c.x(i).getType()) : Value());
    ++i;
  }
}

/// The gradient scale of a loss: dy divided by the number of items for
/// "mean", shaped to broadcast against per-item values of rank `rank`.
Value lossScale(GradContext &c, bool perSample) {
  auto r = c.op->getAttrOfType<StringAttr>("reduction");
  StringRef reduction = r ? r.getValue() : "mean";
  GradBuilder &g = c.g;
  if (reduction == "none")
    return perSample ? g.reshapeTo(c.dy(), {typeOf(c.dy()).getDimSize(0), 1}) : c.dy();
  if (reduction == "sum")
    return c.dy();
  SmallVector<int64_t> axes;
  if (perSample)
    axes.push_back(0);
  return g.div(c.dy(), g.count(c.x(0), axes));
}

/// step(x) - step(-x)
Value sign(GradBuilder &g, Value x) {
  return g.sub(g.make<nnops::StepOp>({x}), g.make<nnops::StepOp>({g.neg(x)}));
}

/// Normalization backward over `axes` of a tensor shaped like `x`:
/// rstd * (gh - mean(gh) - xhat * mean(gh * xhat)), all means over `axes`.
Value normGrad(GradBuilder &g, Value gh, Value xhat, Value rstd, ArrayRef<int64_t> axes) {
  Value a = g.meanAxes(gh, axes, true);
  Value b = g.meanAxes(g.mul(gh, xhat), axes, true);
  return g.mul(rstd, g.sub(g.sub(gh, a), g.mul(xhat, b)));
}

/// (xhat, rstd) of `x` normalized over `axes` with its own statistics.
std::pair<Value, Value> normalize(GradBuilder &g, Value x, ArrayRef<int64_t> axes, double eps) {
  Value xc = g.sub(x, g.meanAxes(x, axes, true));
  Value var = g.meanAxes(g.mul(xc, xc), axes, true);
  Value rstd = g.div(g.scalar(1.0), g.make<nnops::SqrtOp>({g.add(var, eps)}));
  return {g.mul(xc, rstd), rstd};
}

template <typename OpTy>
OpTy self(GradContext &c) {
  return cast<OpTy>(c.op);
}

void batchNorm(GradContext &c) {
  auto op = self<nnops::BatchNormOp>(c);
  GradBuilder &g = c.g;
  int64_t rank = typeOf(c.x()).getRank();
  SmallVector<int64_t> axes = allButChannels(rank);
  double eps = op.getEps().convertToDouble();
  Value dy = c.dy();
  if (op.getTraining()) {
    // One backward op for the three gradients (backends give it a kernel).
    Operation *grad = nullptr;
    auto result = [&](unsigned i) {
      if (!grad)
        grad = g.op<nnops::BatchNormGradOp>({dy, c.x(), op.getGamma()},
                                            {g.builder().getNamedAttr("eps", op.getEpsAttr())});
      return grad->getResult(i);
    };
    set(c, {[&] { return result(0); }, [&] { return result(1); }, [&] { return result(2); },
            [] { return Value(); }, [] { return Value(); }});
    return;
  }
  // Evaluation mode: an affine map of x with the running statistics.
  Value gamma = g.channels(op.getGamma(), rank);
  Value rstd = g.div(g.scalar(1.0),
                     g.make<nnops::SqrtOp>({g.add(g.channels(op.getRunningVar(), rank), eps)}));
  Value xhat = g.mul(g.sub(c.x(), g.channels(op.getRunningMean(), rank)), rstd);
  set(c, {[&] { return g.mul(g.mul(dy, gamma), rstd); },
          [&] { return g.sumAxes(g.mul(dy, xhat), axes, false); },
          [&] { return g.sumAxes(dy, axes, false); }, [] { return Value(); },
          [] { return Value(); }});
}

void groupNorm(GradContext &c) {
  auto op = self<nnops::GroupNormOp>(c);
  GradBuilder &g = c.g;
  RankedTensorType xt = typeOf(c.x());
  int64_t rank = xt.getRank(), groups = op.getGroups(), per = xt.getDimSize(1) / groups;
  for (int64_t i = 2; i < rank; ++i)
    per *= xt.getDimSize(i);
  // View x as [N, G, C/G * spatial] and normalize over the last axis.
  SmallVector<int64_t> grouped = {xt.getDimSize(0), groups, per};
  Value xr = g.reshapeTo(c.x(), grouped);
  auto [xhatR, rstd] = normalize(g, xr, {2}, op.getEps().convertToDouble());
  Value xhat = g.reshapeTo(xhatR, xt.getShape());
  Value dy = c.dy();
  SmallVector<int64_t> axes = allButChannels(rank);
  set(c, {[&] {
            Value gh = g.reshapeTo(g.mul(dy, g.channels(op.getGamma(), rank)), grouped);
            return g.reshapeTo(normGrad(g, gh, xhatR, rstd, {2}), xt.getShape());
          },
          [&] { return g.sumAxes(g.mul(dy, xhat), axes, false); },
          [&] { return g.sumAxes(dy, axes, false); }});
}

void localResponseNorm(GradContext &c) {
  // y = x * d^-beta, d = k + alpha/size * window(x^2). The transposed window
  // (before and after swapped) gathers every output a channel contributed to.
  auto op = self<nnops::LocalResponseNormOp>(c);
  GradBuilder &g = c.g;
  OpBuilder &b = g.builder();
  int64_t size = op.getSize(), before = size / 2, after = (size - 1) / 2;
  double alpha = op.getAlpha().convertToDouble(), beta = op.getBeta().convertToDouble();
  auto window = [&](Value v, int64_t lo, int64_t hi) {
    return g.make<nnops::ChannelWindowSumOp>(
        {v}, {b.getNamedAttr("before", b.getI64IntegerAttr(lo)),
              b.getNamedAttr("after", b.getI64IntegerAttr(hi))});
  };
  Value x = c.x(), dy = c.dy();
  Value d = g.add(g.mul(window(g.mul(x, x), before, after), alpha / size),
                  op.getK().convertToDouble());
  Value dPowBeta = g.make<nnops::PowOp>({d, g.scalar(-beta)});
  set(c, {[&] {
    Value inner = g.div(g.mul(g.mul(dy, x), dPowBeta), d); // dy x d^(-beta-1)
    Value back = g.mul(g.mul(x, window(inner, after, before)), 2.0 * alpha * beta / size);
    return g.sub(g.mul(dy, dPowBeta), back);
  }});
}

void conv2d(GradContext &c) {
  auto op = self<nnops::Conv2dOp>(c);
  GradBuilder &g = c.g;
  OpBuilder &b = g.builder();
  ArrayRef<int64_t> xs = typeOf(c.x(0)).getShape(), ws = typeOf(c.x(1)).getShape();
  auto common = [&](StringRef sizeName, ArrayRef<int64_t> size) {
    return SmallVector<NamedAttribute>{
        b.getNamedAttr("stride", op.getStrideAttr()), b.getNamedAttr("padding", op.getPaddingAttr()),
        b.getNamedAttr("groups", b.getI64IntegerAttr(op.getGroups())),
        b.getNamedAttr(sizeName, b.getDenseI64ArrayAttr(size))};
  };
  set(c, {[&] {
            return g.make<nnops::Conv2dGradInputOp>({c.dy(), c.x(1)},
                                                    common("input_size", xs.drop_front(2)));
          },
          [&] {
            return g.make<nnops::Conv2dGradWeightOp>({c.x(0), c.dy()},
                                                     common("kernel", ws.drop_front(2)));
          }});
}

template <typename FwdOp, typename GradOp>
void pool(GradContext &c) {
  auto op = self<FwdOp>(c);
  set(c, {[&] {
    SmallVector<NamedAttribute> attrs(op->getAttrs());
    return c.g.make<GradOp>({c.dy(), c.x()}, attrs);
  }});
}

#define RULE(OP) add(TypeID::get<nnops::OP>(), [](GradContext &c)
/// The rules of layers (convolution, pooling, normalization) and losses.
void addLayerRules(llvm::DenseMap<TypeID, GradRule> &t) {
  auto add = [&](TypeID id, GradRule r) { t[id] = std::move(r); };
  // Convolution, pooling, normalization.
  add(TypeID::get<nnops::Conv2dOp>(), conv2d);
  add(TypeID::get<nnops::MaxPool2dOp>(), pool<nnops::MaxPool2dOp, nnops::MaxPool2dGradOp>);
  add(TypeID::get<nnops::AvgPool2dOp>(), pool<nnops::AvgPool2dOp, nnops::AvgPool2dGradOp>);
  add(TypeID::get<nnops::BatchNormOp>(), batchNorm);
  add(TypeID::get<nnops::GroupNormOp>(), groupNorm);
  add(TypeID::get<nnops::LocalResponseNormOp>(), localResponseNorm);
  // Losses.
  RULE(MseLossOp) {
    GradBuilder &g = c.g;
    Value d = g.mul(g.mul(g.sub(c.x(0), c.x(1)), 2.0), lossScale(c, false));
    set(c, {[&] { return d; }, [&] { return g.neg(d); }});
  });
  RULE(L1LossOp) {
    GradBuilder &g = c.g;
    Value d = g.mul(sign(g, g.sub(c.x(0), c.x(1))), lossScale(c, false));
    set(c, {[&] { return d; }, [&] { return g.neg(d); }});
  });
  RULE(BceLossOp) {
    // PyTorch: (p - t) / max(p (1 - p), 1e-12); logs clamped at -100.
    GradBuilder &g = c.g;
    Value p = c.x(0), t = c.x(1), scale = lossScale(c, false);
    auto clampedLog = [&](Value v) {
      Value l = g.make<nnops::LogOp>({v});
      return g.sub(g.make<nnops::ReluOp>({g.add(l, 100.0)}), g.scalar(100.0));
    };
    set(c, {[&] {
              Value var = g.mul(p, g.rsub(1.0, p));
              Value denom = g.add(g.make<nnops::ReluOp>({g.add(var, -1e-12)}), 1e-12);
              return g.mul(g.div(g.sub(p, t), denom), scale);
            },
            [&] { return g.mul(g.sub(clampedLog(g.rsub(1.0, p)), clampedLog(p)), scale); }});
  });
  RULE(CrossEntropyOp) {
    GradBuilder &g = c.g;
    Value p = c.x(0), t = c.x(1), scale = lossScale(c, true);
    bool labels = typeOf(t).getElementType().isInteger(32);
    Value target = labels ? g.make<nnops::OneHotOp>(
                                {t}, {g.builder().getNamedAttr(
                                         "num_classes",
                                         g.builder().getI64IntegerAttr(typeOf(p).getDimSize(1)))})
                          : t;
    set(c, {[&] { return g.mul(g.neg(g.div(target, p)), scale); },
            [&] {
              return labels ? Value()
                            : g.mul(g.neg(g.make<nnops::LogOp>({p})), scale);
            }});
  });
  RULE(SoftmaxCrossEntropyOp) {
    // The stable form: softmax(x) - onehot(y).
    GradBuilder &g = c.g;
    OpBuilder &b = g.builder();
    Value x = c.x(0);
    set(c, {[&] {
              Value p = g.make<nnops::SoftmaxOp>({x}, {b.getNamedAttr("axis", b.getI64IntegerAttr(1))});
              Value onehot = g.make<nnops::OneHotOp>(
                  {c.x(1)},
                  {b.getNamedAttr("num_classes", b.getI64IntegerAttr(typeOf(x).getDimSize(1)))});
              return g.mul(g.sub(p, onehot), lossScale(c, true));
            },
            [] { return Value(); }});
  });
}
#undef RULE

/// The table. Rules are listed in the order of NNOps.td.
const llvm::DenseMap<TypeID, GradRule> &rules() {
  static const llvm::DenseMap<TypeID, GradRule> table = [] {
    llvm::DenseMap<TypeID, GradRule> t;
    auto add = [&](TypeID id, GradRule r) { t[id] = std::move(r); };
#define RULE(OP) add(TypeID::get<nnops::OP>(), [](GradContext &c)
    // Elementwise unary: dx = dy * f'(x).
    RULE(NegOp) { set(c, {[&] { return c.g.neg(c.dy()); }}); });
    RULE(ExpOp) { set(c, {[&] { return c.g.mul(c.dy(), c.y()); }}); });
    RULE(LogOp) { set(c, {[&] { return c.g.div(c.dy(), c.x()); }}); });
    RULE(SqrtOp) { set(c, {[&] { return c.g.div(c.g.mul(c.dy(), 0.5), c.y()); }}); });
    RULE(AbsOp) { set(c, {[&] { return c.g.mul(c.dy(), sign(c.g, c.x())); }}); });
    RULE(SigmoidOp) {
      set(c, {[&] { return c.g.mul(c.dy(), c.g.mul(c.y(), c.g.rsub(1.0, c.y()))); }});
    });
    RULE(TanhOp) {
      set(c, {[&] { return c.g.mul(c.dy(), c.g.rsub(1.0, c.g.mul(c.y(), c.y()))); }});
    });
    RULE(ReluOp) {
      // From the output, as PyTorch's threshold_backward (relu(x) > 0 exactly
      // when x > 0): the input is then needed by the forward only, so its
      // producer can fuse into the ReLU.
      set(c, {[&] { return c.g.mul(c.dy(), c.g.make<nnops::StepOp>({c.y()})); }});
    });
    RULE(SoftplusOp) {
      set(c, {[&] { return c.g.mul(c.dy(), c.g.make<nnops::SigmoidOp>({c.x()})); }});
    });
    RULE(IdentityOp) { set(c, {[&] { return c.dy(); }}); });
    RULE(LeakyReluOp) {
      double a = cast<nnops::LeakyReluOp>(c.op).getAlpha().convertToDouble();
      set(c, {[&] {
        Value slope = c.g.add(c.g.mul(c.g.make<nnops::StepOp>({c.x()}), 1.0 - a), a);
        return c.g.mul(c.dy(), slope);
      }});
    });
    RULE(DropoutOp) {
      // The same mask as the forward pass: it is the op's second result.
      set(c, {[&] { return c.g.mul(c.dy(), c.op->getResult(1)); }});
    });
    // Binary, broadcasting: set() sums each gradient back to its operand.
    RULE(AddOp) { set(c, {[&] { return c.dy(); }, [&] { return c.dy(); }}); });
    RULE(SubOp) { set(c, {[&] { return c.dy(); }, [&] { return c.g.neg(c.dy()); }}); });
    RULE(MulOp) {
      set(c, {[&] { return c.g.mul(c.dy(), c.x(1)); }, [&] { return c.g.mul(c.dy(), c.x(0)); }});
    });
    RULE(DivOp) {
      set(c, {[&] { return c.g.div(c.dy(), c.x(1)); },
              [&] { return c.g.neg(c.g.div(c.g.mul(c.dy(), c.y()), c.x(1))); }});
    });
    RULE(PowOp) {
      GradBuilder &g = c.g;
      set(c, {[&] {
                Value bm1 = g.sub(c.x(1), g.scalar(1.0));
                Value p = g.make<nnops::PowOp>({c.x(0), bm1});
                return g.mul(c.dy(), g.mul(c.x(1), p));
              },
              [&] { return g.mul(c.dy(), g.mul(c.y(), g.make<nnops::LogOp>({c.x(0)}))); }});
    });
    RULE(MatmulOp) {
      GradBuilder &g = c.g;
      auto t = [&](Value v) {
        return g.make<nnops::TransposeOp>(
            {v}, {g.builder().getNamedAttr("perm", g.builder().getDenseI64ArrayAttr({1, 0}))});
      };
      set(c, {[&] { return g.make<nnops::MatmulOp>({c.dy(), t(c.x(1))}); },
              [&] { return g.make<nnops::MatmulOp>({t(c.x(0)), c.dy()}); }});
    });
    // Shapes.
    RULE(ReshapeOp) {
      set(c, {[&] { return c.g.reshapeTo(c.dy(), typeOf(c.x()).getShape()); }});
    });
    RULE(TransposeOp) {
      ArrayRef<int64_t> perm = cast<nnops::TransposeOp>(c.op).getPerm();
      SmallVector<int64_t> inverse(perm.size());
      for (auto [i, p] : llvm::enumerate(perm))
        inverse[p] = i;
      set(c, {[&] {
        return c.g.make<nnops::TransposeOp>(
            {c.dy()},
            {c.g.builder().getNamedAttr("perm", c.g.builder().getDenseI64ArrayAttr(inverse))});
      }});
    });
    RULE(ConcatOp) {
      int64_t axis = cast<nnops::ConcatOp>(c.op).getAxis(), start = 0;
      OpBuilder &b = c.g.builder();
      for (auto [i, v] : llvm::enumerate(c.op->getOperands())) {
        int64_t size = typeOf(v).getDimSize(axis);
        c.dOperands.push_back(c.needs[i] ? c.g.make<nnops::SliceOp>(
                                               {c.dy()}, {b.getNamedAttr("axis", b.getI64IntegerAttr(axis)),
                                                          b.getNamedAttr("start", b.getI64IntegerAttr(start)),
                                                          b.getNamedAttr("size", b.getI64IntegerAttr(size))})
                                         : Value());
        start += size;
      }
    });
    // Reductions.
    RULE(ReduceSumOp) {
      auto op = cast<nnops::ReduceSumOp>(c.op);
      set(c, {[&] { return c.g.unreduce(c.dy(), c.x(), op.getAxes(), op.getKeepdims()); }});
    });
    RULE(ReduceMeanOp) {
      auto op = cast<nnops::ReduceMeanOp>(c.op);
      set(c, {[&] {
        Value d = c.g.unreduce(c.dy(), c.x(), op.getAxes(), op.getKeepdims());
        return c.g.div(d, c.g.count(c.x(), op.getAxes()));
      }});
    });
    RULE(ReduceMaxOp) {
      // Ties share the gradient evenly, as torch.amax does.
      auto op = cast<nnops::ReduceMaxOp>(c.op);
      GradBuilder &g = c.g;
      set(c, {[&] {
        Value m = g.unreduce(c.y(), c.x(), op.getAxes(), op.getKeepdims());
        Value mask = g.rsub(1.0, g.make<nnops::StepOp>({g.make<nnops::AbsOp>({g.sub(c.x(), m)})}));
        Value ties = g.broadcastLike(g.sumAxes(mask, op.getAxes(), true), c.x());
        Value d = g.unreduce(c.dy(), c.x(), op.getAxes(), op.getKeepdims());
        return g.div(g.mul(d, mask), ties);
      }});
    });
    RULE(SoftmaxOp) {
      int64_t axis = cast<nnops::SoftmaxOp>(c.op).getAxis();
      GradBuilder &g = c.g;
      set(c, {[&] {
        Value s = g.sumAxes(g.mul(c.dy(), c.y()), {axis}, true);
        return g.mul(c.y(), g.sub(c.dy(), s));
      }});
    });
    RULE(LogSoftmaxOp) {
      int64_t axis = cast<nnops::LogSoftmaxOp>(c.op).getAxis();
      GradBuilder &g = c.g;
      set(c, {[&] {
        Value s = g.sumAxes(c.dy(), {axis}, true);
        return g.sub(c.dy(), g.mul(g.make<nnops::ExpOp>({c.y()}), s));
      }});
    });
    addLayerRules(t);
#undef RULE
    return t;
  }();
  return table;
}

} // namespace

const GradRule *nnc::lookupGradRule(Operation *op) {
  auto it = rules().find(op->getName().getTypeID());
  return it == rules().end() ? nullptr : &it->second;
}
