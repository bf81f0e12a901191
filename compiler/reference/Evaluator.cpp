//===- Evaluator.cpp - reference interpreter for the nn dialect -----------===//
//
// One kernel per op, registered in one table keyed by the op's TypeID. Every
// kernel computes its output shape from the actual input shapes through
// ShapeRules, then fills it with straightforward loops in double precision.
//
//===----------------------------------------------------------------------===//

#include "compiler/reference/Evaluator.h"

#include "dialects/nn/NNOps.h"
#include "dialects/nn/ShapeRules.h"
#include "runtime/Distributed.h"
#include "runtime/Init.h"
#include "runtime/Random.h"

#include "mlir/IR/BuiltinAttributes.h"

#include "llvm/ADT/DenseMap.h"

#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

using namespace mlir;
using namespace nnc;
using namespace nnc::ref;
namespace nnops = nnc::nn;

int64_t Tensor::numel() const {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

Tensor Tensor::filled(std::vector<int64_t> shape, double value) {
  Tensor t{std::move(shape), {}};
  t.data.assign(t.numel(), value);
  return t;
}

namespace {

/// What a kernel sees.
struct Ctx {
  Operation *op;
  ArrayRef<const Tensor *> in;
  SmallVectorImpl<Tensor> &out;
  const EvalOptions &options;
  unsigned opIndex;

  const Tensor &arg(unsigned i) const { return *in[i]; }
  LogicalResult fail(const Twine &msg) const { return op->emitError(msg); }
  /// Allocates the output for a shape rule's answer, or reports its error.
  LogicalResult result(const shape::Inferred &r, Tensor *&t) const {
    if (!r.ok())
      return fail(r.error);
    out.push_back(Tensor::filled(std::vector<int64_t>(r.shape.begin(), r.shape.end())));
    t = &out.back();
    return success();
  }
};

using Kernel = std::function<LogicalResult(Ctx &)>;

std::vector<int64_t> stridesOf(ArrayRef<int64_t> shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i)
    s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/// Calls fn(multiIndex, linear) for every element of `shape`.
void forEachIndex(ArrayRef<int64_t> shape,
                  const std::function<void(ArrayRef<int64_t>, int64_t)> &fn) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t lin = 0; lin < n; ++lin) {
    fn(idx, lin);
    for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
      if (++idx[i] < shape[i])
        break;
      idx[i] = 0;
    }
  }
}

/// Linear index into `shape` (aligned to the right of `idx`), broadcasting
/// size-1 axes.
int64_t broadcastIndex(ArrayRef<int64_t> idx, ArrayRef<int64_t> shape,
                       ArrayRef<int64_t> strides) {
  int64_t off = 0;
  size_t lead = idx.size() - shape.size();
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] != 1)
      off += idx[lead + i] * strides[i];
  return off;
}

/// outer x n x inner decomposition of a shape around `axis`.
struct AxisView {
  int64_t outer = 1, n = 1, inner = 1;
  AxisView(ArrayRef<int64_t> shape, int64_t axis) {
    for (int64_t i = 0; i < axis; ++i)
      outer *= shape[i];
    n = shape[axis];
    for (size_t i = axis + 1; i < shape.size(); ++i)
      inner *= shape[i];
  }
  int64_t at(int64_t o, int64_t k, int64_t i) const { return (o * n + k) * inner + i; }
};

template <typename OpTy>
OpTy self(Ctx &c) {
  return cast<OpTy>(c.op);
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

Kernel unary(std::function<double(double)> f) {
  return [f](Ctx &c) {
    c.out.push_back(c.arg(0));
    for (double &v : c.out.back().data)
      v = f(v);
    return success();
  };
}

Kernel binary(std::function<double(double, double)> f) {
  return [f](Ctx &c) -> LogicalResult {
    const Tensor &a = c.arg(0), &b = c.arg(1);
    Tensor *t;
    if (failed(c.result(shape::broadcast(a.shape, b.shape), t)))
      return failure();
    auto sa = stridesOf(a.shape), sb = stridesOf(b.shape);
    forEachIndex(t->shape, [&](ArrayRef<int64_t> idx, int64_t lin) {
      t->data[lin] = f(a.data[broadcastIndex(idx, a.shape, sa)],
                       b.data[broadcastIndex(idx, b.shape, sb)]);
    });
    return success();
  };
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

/// nn.all_reduce over the run's ranks (runtime/Distributed.h), in double.
LogicalResult allReduce(Ctx &c) {
  auto op = self<nnops::AllReduceOp>(c);
  c.out.push_back(c.arg(0));
  Tensor &t = c.out.back();
  rt::Group *g = rt::Group::current();
  if (!g)
    return success();
  double share = op.getSum() ? (g->share() > 0 ? 1.0 : 0.0) : g->share();
  for (double &v : t.data)
    v *= share;
  if (rt::Status s = g->sum(t.data.data(), static_cast<int64_t>(t.data.size())); !s)
    return c.fail(s.message());
  return success();
}

LogicalResult dropout(Ctx &c) {
  auto op = self<nnops::DropoutOp>(c);
  const Tensor &x = c.arg(0);
  double rate = op.getRate().convertToDouble();
  Tensor y = x, mask = Tensor::filled(x.shape, 1.0);
  if (op.getTraining()) {
    uint64_t stream = rt::mix64(c.options.step * 1000003ULL + nnops::locationId(c.op->getLoc()));
    // Elements count from the batch's first row in a global batch.
    uint64_t perRow = x.shape.empty() || x.shape[0] == 0 ? 0 : mask.data.size() / static_cast<size_t>(x.shape[0]);
    uint64_t base = static_cast<uint64_t>(c.options.firstRow) * perRow;
    for (size_t i = 0; i < mask.data.size(); ++i)
      mask.data[i] = rt::uniform01(c.options.seed, stream, base + i) < rate ? 0.0 : 1.0 / (1.0 - rate);
  }
  for (size_t i = 0; i < y.data.size(); ++i)
    y.data[i] *= mask.data[i];
  c.out.push_back(std::move(y));
  c.out.push_back(std::move(mask));
  return success();
}

LogicalResult broadcastLike(Ctx &c) {
  const Tensor &a = c.arg(0), &like = c.arg(1);
  Tensor *t;
  shape::Inferred r = shape::broadcast(a.shape, like.shape);
  if (r.ok() && r.shape != shape::Shape(like.shape.begin(), like.shape.end()))
    r = shape::Inferred::fail("broadcast_like cannot broadcast " + shape::str(a.shape) +
                              " to " + shape::str(like.shape));
  if (failed(c.result(r, t)))
    return failure();
  auto sa = stridesOf(a.shape);
  forEachIndex(t->shape, [&](ArrayRef<int64_t> idx, int64_t lin) {
    t->data[lin] = a.data[broadcastIndex(idx, a.shape, sa)];
  });
  return success();
}

//===----------------------------------------------------------------------===//
// Linear algebra, shapes, reductions
//===----------------------------------------------------------------------===//

LogicalResult matmul(Ctx &c) {
  const Tensor &a = c.arg(0), &b = c.arg(1);
  Tensor *t;
  if (failed(c.result(shape::matmul(a.shape, b.shape), t)))
    return failure();
  int64_t m = a.shape[0], k = a.shape[1], n = b.shape[1];
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < k; ++p)
        acc += a.data[i * k + p] * b.data[p * n + j];
      t->data[i * n + j] = acc;
    }
  return success();
}

LogicalResult reshape(Ctx &c) {
  const Tensor &x = c.arg(0);
  std::vector<int64_t> target(self<nnops::ReshapeOp>(c).getShape().begin(),
                              self<nnops::ReshapeOp>(c).getShape().end());
  Tensor *t;
  if (failed(c.result(shape::reshape(x.shape, target), t)))
    return failure();
  t->data = x.data;
  return success();
}

LogicalResult transpose(Ctx &c) {
  const Tensor &x = c.arg(0);
  ArrayRef<int64_t> perm = self<nnops::TransposeOp>(c).getPerm();
  Tensor *t;
  if (failed(c.result(shape::transpose(x.shape, perm), t)))
    return failure();
  auto sx = stridesOf(x.shape);
  forEachIndex(t->shape, [&](ArrayRef<int64_t> idx, int64_t lin) {
    int64_t off = 0;
    for (size_t i = 0; i < perm.size(); ++i)
      off += idx[i] * sx[perm[i]];
    t->data[lin] = x.data[off];
  });
  return success();
}

LogicalResult concat(Ctx &c) {
  int64_t axis = self<nnops::ConcatOp>(c).getAxis();
  SmallVector<shape::Shape> shapes;
  for (const Tensor *x : c.in)
    shapes.emplace_back(x->shape.begin(), x->shape.end());
  Tensor *t;
  if (failed(c.result(shape::concat(shapes, axis), t)))
    return failure();
  AxisView out(t->shape, axis);
  int64_t offset = 0;
  for (const Tensor *x : c.in) {
    AxisView v(x->shape, axis);
    for (int64_t o = 0; o < v.outer; ++o)
      for (int64_t k = 0; k < v.n; ++k)
        for (int64_t i = 0; i < v.inner; ++i)
          t->data[out.at(o, offset + k, i)] = x->data[v.at(o, k, i)];
    offset += v.n;
  }
  return success();
}

LogicalResult slice(Ctx &c) {
  auto op = self<nnops::SliceOp>(c);
  const Tensor &x = c.arg(0);
  Tensor *t;
  if (failed(c.result(shape::slice(x.shape, op.getAxis(), op.getStart(), op.getSize()), t)))
    return failure();
  AxisView v(x.shape, op.getAxis()), out(t->shape, op.getAxis());
  for (int64_t o = 0; o < v.outer; ++o)
    for (int64_t k = 0; k < out.n; ++k)
      for (int64_t i = 0; i < v.inner; ++i)
        t->data[out.at(o, k, i)] = x.data[v.at(o, op.getStart() + k, i)];
  return success();
}

enum class Reduce { Sum, Mean, Max };

Kernel reduction(Reduce kind) {
  return [kind](Ctx &c) -> LogicalResult {
    const Tensor &x = c.arg(0);
    ArrayRef<int64_t> axes = cast<DenseI64ArrayAttr>(c.op->getAttr("axes")).asArrayRef();
    auto keepAttr = c.op->getAttrOfType<BoolAttr>("keepdims");
    Tensor *t;
    if (failed(c.result(shape::reduce(x.shape, axes, keepAttr && keepAttr.getValue()), t)))
      return failure();
    // Map every input element to its output slot through a keepdims shape.
    std::vector<int64_t> kept = x.shape;
    for (size_t i = 0; i < kept.size(); ++i)
      if (axes.empty() || llvm::is_contained(axes, static_cast<int64_t>(i)))
        kept[i] = 1;
    auto sk = stridesOf(kept);
    if (kind == Reduce::Max)
      std::fill(t->data.begin(), t->data.end(), -std::numeric_limits<double>::infinity());
    forEachIndex(x.shape, [&](ArrayRef<int64_t> idx, int64_t lin) {
      int64_t o = broadcastIndex(idx, kept, sk);
      if (kind == Reduce::Max) { // a NaN is the maximum, as in torch.amax
        double &m = t->data[o], v = x.data[lin];
        if (!std::isnan(m) && (std::isnan(v) || v > m))
          m = v;
      }
      else
        t->data[o] += x.data[lin];
    });
    if (kind == Reduce::Mean && !t->data.empty()) {
      double n = static_cast<double>(x.numel()) / static_cast<double>(t->numel());
      for (double &v : t->data)
        v /= n;
    }
    return success();
  };
}

LogicalResult count(Ctx &c) {
  const Tensor &x = c.arg(0);
  ArrayRef<int64_t> axes = self<nnops::CountOp>(c).getAxes();
  double n = 1;
  for (size_t i = 0; i < x.shape.size(); ++i)
    if (axes.empty() || llvm::is_contained(axes, static_cast<int64_t>(i)))
      n *= static_cast<double>(x.shape[i]);
  c.out.push_back(Tensor::scalar(n));
  return success();
}

LogicalResult argmax(Ctx &c) {
  const Tensor &x = c.arg(0);
  int64_t axis = self<nnops::ArgmaxOp>(c).getAxis();
  Tensor *t;
  if (failed(c.result(shape::removeAxis("argmax", x.shape, axis), t)))
    return failure();
  AxisView v(x.shape, axis);
  for (int64_t o = 0; o < v.outer; ++o)
    for (int64_t i = 0; i < v.inner; ++i) {
      int64_t best = 0;
      for (int64_t k = 1; k < v.n; ++k)
        if (x.data[v.at(o, k, i)] > x.data[v.at(o, best, i)])
          best = k;
      t->data[o * v.inner + i] = static_cast<double>(best);
    }
  return success();
}

LogicalResult oneHot(Ctx &c) {
  const Tensor &y = c.arg(0);
  int64_t classes = self<nnops::OneHotOp>(c).getNumClasses();
  std::vector<int64_t> s = y.shape;
  s.push_back(classes);
  c.out.push_back(Tensor::filled(s));
  for (int64_t i = 0; i < y.numel(); ++i) {
    int64_t label = static_cast<int64_t>(y.data[i]);
    if (label < 0 || label >= classes)
      return c.fail("one_hot label " + Twine(label) + " is out of range for " +
                    Twine(classes) + " classes");
    c.out.back().data[i * classes + label] = 1.0;
  }
  return success();
}

/// softmax (log = false) or log_softmax along `axis`, max-shifted.
Kernel softmaxKernel(bool log) {
  return [log](Ctx &c) -> LogicalResult {
    const Tensor &x = c.arg(0);
    int64_t axis = cast<IntegerAttr>(c.op->getAttr("axis")).getInt();
    c.out.push_back(x);
    Tensor &t = c.out.back();
    AxisView v(x.shape, axis);
    for (int64_t o = 0; o < v.outer; ++o)
      for (int64_t i = 0; i < v.inner; ++i) {
        double m = -std::numeric_limits<double>::infinity(), s = 0;
        for (int64_t k = 0; k < v.n; ++k)
          m = std::max(m, x.data[v.at(o, k, i)]);
        for (int64_t k = 0; k < v.n; ++k)
          s += std::exp(x.data[v.at(o, k, i)] - m);
        for (int64_t k = 0; k < v.n; ++k) {
          double z = x.data[v.at(o, k, i)] - m;
          t.data[v.at(o, k, i)] = log ? z - std::log(s) : std::exp(z) / s;
        }
      }
    return success();
  };
}

//===----------------------------------------------------------------------===//
// Convolution and pooling
//===----------------------------------------------------------------------===//

/// The geometry shared by conv2d and its gradients.
struct ConvGeom {
  int64_t n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw, groups;
  int64_t cg() const { return c / groups; }
  int64_t og() const { return o / groups; }
  int64_t x(int64_t b, int64_t ch, int64_t i, int64_t j) const {
    return ((b * c + ch) * h + i) * w + j;
  }
  int64_t wt(int64_t oc, int64_t ci, int64_t i, int64_t j) const {
    return ((oc * cg() + ci) * kh + i) * kw + j;
  }
  int64_t y(int64_t b, int64_t oc, int64_t i, int64_t j) const {
    return ((b * o + oc) * oh + i) * ow + j;
  }
  /// Calls fn(xIndex, wIndex, yIndex) for every multiply of the convolution.
  template <typename Fn> void forEachTap(Fn fn) const {
    for (int64_t b = 0; b < n; ++b)
      for (int64_t oc = 0; oc < o; ++oc) {
        int64_t g = oc / og();
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j)
            for (int64_t ci = 0; ci < cg(); ++ci)
              for (int64_t p = 0; p < kh; ++p) {
                int64_t ih = i * sh - ph + p;
                if (ih < 0 || ih >= h)
                  continue;
                for (int64_t q = 0; q < kw; ++q) {
                  int64_t iw = j * sw - pw + q;
                  if (iw >= 0 && iw < w)
                    fn(x(b, g * cg() + ci, ih, iw), wt(oc, ci, p, q), y(b, oc, i, j));
                }
              }
      }
  }
};

ConvGeom geom(ArrayRef<int64_t> x, ArrayRef<int64_t> wt, ArrayRef<int64_t> y,
              ArrayRef<int64_t> stride, ArrayRef<int64_t> padding, int64_t groups) {
  return {x[0],  x[1],  x[2],      x[3],      wt[0],     wt[2],     wt[3], y[2],
          y[3], stride[0], stride[1], padding[0], padding[1], groups};
}

LogicalResult conv2d(Ctx &c) {
  auto op = self<nnops::Conv2dOp>(c);
  const Tensor &x = c.arg(0), &w = c.arg(1);
  Tensor *t;
  if (failed(c.result(shape::conv2d(x.shape, w.shape, op.getStride(), op.getPadding(),
                                    op.getGroups()),
                      t)))
    return failure();
  ConvGeom g = geom(x.shape, w.shape, t->shape, op.getStride(), op.getPadding(), op.getGroups());
  // forEachTap's sums in the same order (input channel, kernel row, kernel
  // column) for every output, with the output row innermost: finite
  // differences (gradcheck) evaluate this over and over.
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t oc = 0; oc < g.o; ++oc) {
      int64_t grp = oc / g.og();
      for (int64_t ci = 0; ci < g.cg(); ++ci)
        for (int64_t p = 0; p < g.kh; ++p)
          for (int64_t q = 0; q < g.kw; ++q) {
            double wv = w.data[g.wt(oc, ci, p, q)];
            // Output columns whose tap lands inside the input row.
            int64_t jLo = 0, jHi = g.ow;
            while (jLo < jHi && jLo * g.sw - g.pw + q < 0)
              ++jLo;
            while (jHi > jLo && (jHi - 1) * g.sw - g.pw + q >= g.w)
              --jHi;
            for (int64_t i = 0; i < g.oh; ++i) {
              int64_t ih = i * g.sh - g.ph + p;
              if (ih < 0 || ih >= g.h)
                continue;
              const double *xr = x.data.data() + g.x(b, grp * g.cg() + ci, ih, 0);
              double *yr = t->data.data() + g.y(b, oc, i, 0);
              for (int64_t j = jLo; j < jHi; ++j)
                yr[j] += xr[j * g.sw - g.pw + q] * wv;
            }
          }
    }
  return success();
}

LogicalResult conv2dGradInput(Ctx &c) {
  auto op = self<nnops::Conv2dGradInputOp>(c);
  const Tensor &dy = c.arg(0), &w = c.arg(1);
  Tensor *t;
  if (failed(c.result(shape::conv2dGradInput(dy.shape, w.shape, op.getStride(), op.getPadding(),
                                             op.getGroups(), op.getInputSize()),
                      t)))
    return failure();
  ConvGeom g = geom(t->shape, w.shape, dy.shape, op.getStride(), op.getPadding(), op.getGroups());
  g.forEachTap([&](int64_t xi, int64_t wi, int64_t yi) { t->data[xi] += w.data[wi] * dy.data[yi]; });
  return success();
}

LogicalResult conv2dGradWeight(Ctx &c) {
  auto op = self<nnops::Conv2dGradWeightOp>(c);
  const Tensor &x = c.arg(0), &dy = c.arg(1);
  Tensor *t;
  if (failed(c.result(shape::conv2dGradWeight(x.shape, dy.shape, op.getStride(), op.getPadding(),
                                              op.getGroups(), op.getKernel()),
                      t)))
    return failure();
  ConvGeom g = geom(x.shape, t->shape, dy.shape, op.getStride(), op.getPadding(), op.getGroups());
  g.forEachTap([&](int64_t xi, int64_t wi, int64_t yi) { t->data[wi] += x.data[xi] * dy.data[yi]; });
  return success();
}

/// Calls fn(outIndex, window) where window lists the in-bounds input indices
/// of each pooling window, and padded = the window's size with padding.
template <typename Fn>
void forEachWindow(ArrayRef<int64_t> in, ArrayRef<int64_t> out, ArrayRef<int64_t> k,
                   ArrayRef<int64_t> s, ArrayRef<int64_t> p, Fn fn) {
  std::vector<int64_t> window;
  for (int64_t b = 0; b < in[0] * in[1]; ++b)
    for (int64_t i = 0; i < out[2]; ++i)
      for (int64_t j = 0; j < out[3]; ++j) {
        window.clear();
        for (int64_t a = 0; a < k[0]; ++a)
          for (int64_t e = 0; e < k[1]; ++e) {
            int64_t ih = i * s[0] - p[0] + a, iw = j * s[1] - p[1] + e;
            if (ih >= 0 && ih < in[2] && iw >= 0 && iw < in[3])
              window.push_back((b * in[2] + ih) * in[3] + iw);
          }
        fn((b * out[2] + i) * out[3] + j, window);
      }
}

template <typename OpTy>
shape::Inferred poolShape(OpTy op, ArrayRef<int64_t> x) {
  return shape::pool2d(op.getOperationName().drop_front(3), x, op.getKernel(), op.getStride(),
                       op.getPadding());
}

/// Index of the first maximum in a window.
int64_t argmaxOf(const Tensor &x, ArrayRef<int64_t> window) {
  int64_t best = window.front();
  for (int64_t i : window)
    if (x.data[i] > x.data[best])
      best = i;
  return best;
}

LogicalResult maxPool(Ctx &c) {
  auto op = self<nnops::MaxPool2dOp>(c);
  const Tensor &x = c.arg(0);
  Tensor *t;
  if (failed(c.result(poolShape(op, x.shape), t)))
    return failure();
  forEachWindow(x.shape, t->shape, op.getKernel(), op.getStride(), op.getPadding(),
                [&](int64_t o, ArrayRef<int64_t> win) {
                  t->data[o] = win.empty() ? -std::numeric_limits<double>::infinity()
                                           : x.data[argmaxOf(x, win)];
                });
  return success();
}

LogicalResult maxPoolGrad(Ctx &c) {
  auto op = self<nnops::MaxPool2dGradOp>(c);
  const Tensor &dy = c.arg(0), &x = c.arg(1);
  c.out.push_back(Tensor::filled(x.shape));
  Tensor &t = c.out.back();
  forEachWindow(x.shape, dy.shape, op.getKernel(), op.getStride(), op.getPadding(),
                [&](int64_t o, ArrayRef<int64_t> win) {
                  if (!win.empty())
                    t.data[argmaxOf(x, win)] += dy.data[o];
                });
  return success();
}

double avgDivisor(size_t valid, ArrayRef<int64_t> k, bool includePad) {
  return includePad ? static_cast<double>(k[0] * k[1]) : static_cast<double>(valid);
}

LogicalResult avgPool(Ctx &c) {
  auto op = self<nnops::AvgPool2dOp>(c);
  const Tensor &x = c.arg(0);
  Tensor *t;
  if (failed(c.result(poolShape(op, x.shape), t)))
    return failure();
  forEachWindow(x.shape, t->shape, op.getKernel(), op.getStride(), op.getPadding(),
                [&](int64_t o, ArrayRef<int64_t> win) {
                  double s = 0;
                  for (int64_t i : win)
                    s += x.data[i];
                  t->data[o] = s / avgDivisor(win.size(), op.getKernel(), op.getCountIncludePad());
                });
  return success();
}

LogicalResult avgPoolGrad(Ctx &c) {
  auto op = self<nnops::AvgPool2dGradOp>(c);
  const Tensor &dy = c.arg(0), &x = c.arg(1);
  c.out.push_back(Tensor::filled(x.shape));
  Tensor &t = c.out.back();
  forEachWindow(x.shape, dy.shape, op.getKernel(), op.getStride(), op.getPadding(),
                [&](int64_t o, ArrayRef<int64_t> win) {
                  double d = avgDivisor(win.size(), op.getKernel(), op.getCountIncludePad());
                  for (int64_t i : win)
                    t.data[i] += dy.data[o] / d;
                });
  return success();
}

//===----------------------------------------------------------------------===//
// Normalization
//===----------------------------------------------------------------------===//

/// x viewed as [N, C, S] (S = product of the spatial sizes).
struct NCS {
  int64_t n, c, s;
  explicit NCS(ArrayRef<int64_t> shape) : n(shape[0]), c(shape[1]), s(1) {
    for (size_t i = 2; i < shape.size(); ++i)
      s *= shape[i];
  }
  int64_t at(int64_t b, int64_t ch, int64_t i) const { return (b * c + ch) * s + i; }
};

LogicalResult batchNorm(Ctx &c) {
  auto op = self<nnops::BatchNormOp>(c);
  const Tensor &x = c.arg(0), &gamma = c.arg(1), &beta = c.arg(2), &rm = c.arg(3),
               &rv = c.arg(4);
  for (unsigned i = 1; i < 5; ++i)
    if (c.arg(i).numel() != x.shape[1])
      return c.fail("batch_norm parameter " + Twine(i) + " does not match the channels");
  c.out.push_back(x);
  c.out.push_back(rm); // the statistics normalized with
  c.out.push_back(rv);
  Tensor &y = c.out[0], &usedMean = c.out[1], &usedVar = c.out[2];
  NCS v(x.shape);
  double eps = op.getEps().convertToDouble();
  for (int64_t ch = 0; ch < v.c; ++ch) {
    double mean = rm.data[ch], var = rv.data[ch];
    if (op.getTraining()) {
      double s = 0, ss = 0, n = static_cast<double>(v.n * v.s);
      for (int64_t b = 0; b < v.n; ++b)
        for (int64_t i = 0; i < v.s; ++i)
          s += x.data[v.at(b, ch, i)];
      mean = s / n;
      for (int64_t b = 0; b < v.n; ++b)
        for (int64_t i = 0; i < v.s; ++i)
          ss += (x.data[v.at(b, ch, i)] - mean) * (x.data[v.at(b, ch, i)] - mean);
      var = ss / n;
    }
    usedMean.data[ch] = mean;
    usedVar.data[ch] = var;
    double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t b = 0; b < v.n; ++b)
      for (int64_t i = 0; i < v.s; ++i) {
        int64_t k = v.at(b, ch, i);
        y.data[k] = (x.data[k] - mean) * rstd * gamma.data[ch] + beta.data[ch];
      }
  }
  return success();
}

LogicalResult batchNormGrad(Ctx &c) {
  auto op = self<nnops::BatchNormGradOp>(c);
  const Tensor &dy = c.arg(0), &x = c.arg(1), &gamma = c.arg(2);
  if (dy.shape != x.shape || gamma.numel() != x.shape[1])
    return c.fail("batch_norm_grad operands do not match");
  NCS v(x.shape);
  double eps = op.getEps().convertToDouble(), n = static_cast<double>(v.n * v.s);
  c.out.push_back(x);
  c.out.push_back(gamma);
  c.out.push_back(gamma);
  Tensor &dx = c.out[0], &dgamma = c.out[1], &dbeta = c.out[2];
  for (int64_t ch = 0; ch < v.c; ++ch) {
    double s = 0, ss = 0;
    for (int64_t b = 0; b < v.n; ++b)
      for (int64_t i = 0; i < v.s; ++i)
        s += x.data[v.at(b, ch, i)];
    double mean = s / n;
    for (int64_t b = 0; b < v.n; ++b)
      for (int64_t i = 0; i < v.s; ++i)
        ss += (x.data[v.at(b, ch, i)] - mean) * (x.data[v.at(b, ch, i)] - mean);
    double rstd = 1.0 / std::sqrt(ss / n + eps), sdy = 0, sdyx = 0;
    for (int64_t b = 0; b < v.n; ++b)
      for (int64_t i = 0; i < v.s; ++i) {
        int64_t k = v.at(b, ch, i);
        sdy += dy.data[k];
        sdyx += dy.data[k] * (x.data[k] - mean) * rstd;
      }
    dbeta.data[ch] = sdy;
    dgamma.data[ch] = sdyx;
    for (int64_t b = 0; b < v.n; ++b)
      for (int64_t i = 0; i < v.s; ++i) {
        int64_t k = v.at(b, ch, i);
        double xhat = (x.data[k] - mean) * rstd;
        dx.data[k] = gamma.data[ch] * rstd * (dy.data[k] - sdy / n - xhat * sdyx / n);
      }
  }
  return success();
}

LogicalResult groupNorm(Ctx &c) {
  auto op = self<nnops::GroupNormOp>(c);
  const Tensor &x = c.arg(0), &gamma = c.arg(1), &beta = c.arg(2);
  c.out.push_back(x);
  Tensor &y = c.out.back();
  NCS v(x.shape);
  int64_t groups = op.getGroups(), cpg = v.c / groups;
  double eps = op.getEps().convertToDouble();
  for (int64_t b = 0; b < v.n; ++b)
    for (int64_t g = 0; g < groups; ++g) {
      double s = 0, ss = 0, n = static_cast<double>(cpg * v.s);
      for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch)
        for (int64_t i = 0; i < v.s; ++i)
          s += x.data[v.at(b, ch, i)];
      double mean = s / n;
      for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch)
        for (int64_t i = 0; i < v.s; ++i)
          ss += (x.data[v.at(b, ch, i)] - mean) * (x.data[v.at(b, ch, i)] - mean);
      double rstd = 1.0 / std::sqrt(ss / n + eps);
      for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch)
        for (int64_t i = 0; i < v.s; ++i) {
          int64_t k = v.at(b, ch, i);
          y.data[k] = (x.data[k] - mean) * rstd * gamma.data[ch] + beta.data[ch];
        }
    }
  return success();
}

Tensor windowSum(const Tensor &x, int64_t before, int64_t after) {
  Tensor t = Tensor::filled(x.shape);
  NCS v(x.shape);
  for (int64_t b = 0; b < v.n; ++b)
    for (int64_t ch = 0; ch < v.c; ++ch)
      for (int64_t j = std::max<int64_t>(0, ch - before); j <= std::min(v.c - 1, ch + after); ++j)
        for (int64_t i = 0; i < v.s; ++i)
          t.data[v.at(b, ch, i)] += x.data[v.at(b, j, i)];
  return t;
}

LogicalResult channelWindowSum(Ctx &c) {
  auto op = self<nnops::ChannelWindowSumOp>(c);
  c.out.push_back(windowSum(c.arg(0), op.getBefore(), op.getAfter()));
  return success();
}

LogicalResult lrn(Ctx &c) {
  auto op = self<nnops::LocalResponseNormOp>(c);
  const Tensor &x = c.arg(0);
  int64_t size = op.getSize();
  Tensor sq = x;
  for (double &v : sq.data)
    v *= v;
  Tensor s = windowSum(sq, size / 2, (size - 1) / 2);
  double k = op.getK().convertToDouble(), alpha = op.getAlpha().convertToDouble(),
         beta = op.getBeta().convertToDouble();
  c.out.push_back(x);
  for (size_t i = 0; i < x.data.size(); ++i)
    c.out.back().data[i] = x.data[i] / std::pow(k + alpha / size * s.data[i], beta);
  return success();
}

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

/// Reduces per-element (or per-sample) losses by the op's `reduction`;
/// `mean` divides by `count`.
LogicalResult reduceLoss(Ctx &c, Tensor perItem, double count) {
  auto reduction = c.op->getAttrOfType<StringAttr>("reduction");
  StringRef r = reduction ? reduction.getValue() : "mean";
  if (r == "none") {
    c.out.push_back(std::move(perItem));
    return success();
  }
  double s = std::accumulate(perItem.data.begin(), perItem.data.end(), 0.0);
  c.out.push_back(Tensor::scalar(r == "mean" ? s / count : s));
  return success();
}

Kernel pointwiseLoss(std::function<double(double, double)> f) {
  return [f](Ctx &c) -> LogicalResult {
    const Tensor &x = c.arg(0), &t = c.arg(1);
    shape::Inferred r = shape::pointwiseLoss(c.op->getName().stripDialect(), x.shape, t.shape,
                                             false);
    if (!r.ok() || x.shape != t.shape)
      return c.fail(r.ok() ? "loss input and target sizes differ at run time" : r.error);
    Tensor e = x;
    for (size_t i = 0; i < e.data.size(); ++i)
      e.data[i] = f(x.data[i], t.data[i]);
    return reduceLoss(c, std::move(e), static_cast<double>(x.numel()));
  };
}

/// Checks labels against [0, classes).
LogicalResult checkLabels(Ctx &c, const Tensor &y, int64_t classes) {
  for (double v : y.data)
    if (v < 0 || v >= static_cast<double>(classes))
      return c.fail("label " + Twine(static_cast<int64_t>(v)) + " is out of range for " +
                    Twine(classes) + " classes");
  return success();
}

LogicalResult crossEntropy(Ctx &c) {
  const Tensor &p = c.arg(0), &t = c.arg(1);
  bool labels = getElementTypeOrSelf(c.op->getOperand(1).getType()).isInteger(32);
  shape::Inferred r = shape::classLoss("cross_entropy", p.shape, t.shape, labels, false);
  if (!r.ok())
    return c.fail(r.error);
  int64_t n = p.shape[0], k = p.shape[1];
  if (labels && failed(checkLabels(c, t, k)))
    return failure();
  Tensor e = Tensor::filled({n});
  for (int64_t i = 0; i < n; ++i) {
    if (labels) {
      e.data[i] = -std::log(p.data[i * k + static_cast<int64_t>(t.data[i])]);
    } else {
      for (int64_t j = 0; j < k; ++j)
        if (t.data[i * k + j] != 0)
          e.data[i] -= t.data[i * k + j] * std::log(p.data[i * k + j]);
    }
  }
  return reduceLoss(c, std::move(e), static_cast<double>(n));
}

LogicalResult softmaxCrossEntropy(Ctx &c) {
  const Tensor &x = c.arg(0), &y = c.arg(1);
  shape::Inferred r = shape::classLoss("softmax_cross_entropy", x.shape, y.shape, true, false);
  if (!r.ok())
    return c.fail(r.error);
  int64_t n = x.shape[0], k = x.shape[1];
  if (failed(checkLabels(c, y, k)))
    return failure();
  Tensor e = Tensor::filled({n});
  for (int64_t i = 0; i < n; ++i) {
    double m = -std::numeric_limits<double>::infinity(), s = 0;
    for (int64_t j = 0; j < k; ++j)
      m = std::max(m, x.data[i * k + j]);
    for (int64_t j = 0; j < k; ++j)
      s += std::exp(x.data[i * k + j] - m);
    e.data[i] = m + std::log(s) - x.data[i * k + static_cast<int64_t>(y.data[i])];
  }
  return reduceLoss(c, std::move(e), static_cast<double>(n));
}

double clampedLog(double v) { return std::max(std::log(v), -100.0); }

//===----------------------------------------------------------------------===//
// The table
//===----------------------------------------------------------------------===//

LogicalResult constant(Ctx &c) {
  auto value = cast<DenseElementsAttr>(self<nnops::ConstantOp>(c).getValue());
  auto type = cast<RankedTensorType>(value.getType());
  Tensor t = Tensor::filled(std::vector<int64_t>(type.getShape().begin(), type.getShape().end()));
  if (isa<FloatType>(type.getElementType())) {
    size_t i = 0;
    for (const APFloat &v : value.getValues<APFloat>())
      t.data[i++] = v.convertToDouble();
  } else {
    size_t i = 0;
    for (const APInt &v : value.getValues<APInt>())
      t.data[i++] = static_cast<double>(v.getSExtValue());
  }
  c.out.push_back(std::move(t));
  return success();
}

template <typename OpTy>
std::pair<TypeID, Kernel> entry(Kernel k) {
  return {TypeID::get<OpTy>(), std::move(k)};
}

const llvm::DenseMap<TypeID, Kernel> &kernels() {
  static const llvm::DenseMap<TypeID, Kernel> table = [] {
    llvm::DenseMap<TypeID, Kernel> t;
    auto add = [&](std::pair<TypeID, Kernel> e) { t.insert(std::move(e)); };
    add(entry<nnops::ConstantOp>(constant));
    add(entry<nnops::NegOp>(unary([](double x) { return -x; })));
    add(entry<nnops::ExpOp>(unary([](double x) { return std::exp(x); })));
    add(entry<nnops::LogOp>(unary([](double x) { return std::log(x); })));
    add(entry<nnops::SqrtOp>(unary([](double x) { return std::sqrt(x); })));
    add(entry<nnops::AbsOp>(unary([](double x) { return std::abs(x); })));
    add(entry<nnops::SigmoidOp>(unary(sigmoid)));
    add(entry<nnops::TanhOp>(unary([](double x) { return std::tanh(x); })));
    add(entry<nnops::ReluOp>(unary([](double x) { return x > 0 ? x : 0.0; })));
    add(entry<nnops::SoftplusOp>(unary(softplus)));
    add(entry<nnops::StepOp>(unary([](double x) { return x > 0 ? 1.0 : 0.0; })));
    add(entry<nnops::IdentityOp>(unary([](double x) { return x; })));
    add(entry<nnops::LeakyReluOp>([](Ctx &c) {
      double a = self<nnops::LeakyReluOp>(c).getAlpha().convertToDouble();
      return unary([a](double x) { return x > 0 ? x : a * x; })(c);
    }));
    add(entry<nnops::DropoutOp>(dropout));
    add(entry<nnops::AllReduceOp>(allReduce));
    add(entry<nnops::AddOp>(binary([](double a, double b) { return a + b; })));
    add(entry<nnops::SubOp>(binary([](double a, double b) { return a - b; })));
    add(entry<nnops::MulOp>(binary([](double a, double b) { return a * b; })));
    add(entry<nnops::DivOp>(binary([](double a, double b) { return a / b; })));
    add(entry<nnops::PowOp>(binary([](double a, double b) { return std::pow(a, b); })));
    add(entry<nnops::MatmulOp>(matmul));
    add(entry<nnops::ReshapeOp>(reshape));
    add(entry<nnops::TransposeOp>(transpose));
    add(entry<nnops::ConcatOp>(concat));
    add(entry<nnops::SliceOp>(slice));
    add(entry<nnops::ReduceSumOp>(reduction(Reduce::Sum)));
    add(entry<nnops::ReduceMeanOp>(reduction(Reduce::Mean)));
    add(entry<nnops::ReduceMaxOp>(reduction(Reduce::Max)));
    add(entry<nnops::CountOp>(count));
    add(entry<nnops::ArgmaxOp>(argmax));
    add(entry<nnops::OneHotOp>(oneHot));
    add(entry<nnops::SoftmaxOp>(softmaxKernel(false)));
    add(entry<nnops::LogSoftmaxOp>(softmaxKernel(true)));
    add(entry<nnops::BroadcastLikeOp>(broadcastLike));
    add(entry<nnops::Conv2dOp>(conv2d));
    add(entry<nnops::Conv2dGradInputOp>(conv2dGradInput));
    add(entry<nnops::Conv2dGradWeightOp>(conv2dGradWeight));
    add(entry<nnops::MaxPool2dOp>(maxPool));
    add(entry<nnops::MaxPool2dGradOp>(maxPoolGrad));
    add(entry<nnops::AvgPool2dOp>(avgPool));
    add(entry<nnops::AvgPool2dGradOp>(avgPoolGrad));
    add(entry<nnops::BatchNormOp>(batchNorm));
    add(entry<nnops::BatchNormGradOp>(batchNormGrad));
    add(entry<nnops::GroupNormOp>(groupNorm));
    add(entry<nnops::LocalResponseNormOp>(lrn));
    add(entry<nnops::ChannelWindowSumOp>(channelWindowSum));
    add(entry<nnops::MseLossOp>(pointwiseLoss([](double x, double t) { return (x - t) * (x - t); })));
    add(entry<nnops::L1LossOp>(pointwiseLoss([](double x, double t) { return std::abs(x - t); })));
    add(entry<nnops::BceLossOp>(pointwiseLoss([](double p, double t) {
      return -(t * clampedLog(p) + (1 - t) * clampedLog(1 - p));
    })));
    add(entry<nnops::CrossEntropyOp>(crossEntropy));
    add(entry<nnops::SoftmaxCrossEntropyOp>(softmaxCrossEntropy));
    return t;
  }();
  return table;
}

} // namespace

FailureOr<std::vector<Tensor>> Evaluator::run(func::FuncOp fn, ArrayRef<Tensor> args) const {
  if (args.size() != fn.getNumArguments())
    return fn.emitError("expected ") << fn.getNumArguments() << " arguments, got "
                                     << args.size();
  llvm::DenseMap<Value, Tensor> values;
  for (auto [arg, t] : llvm::zip(fn.getArguments(), args)) {
    auto type = cast<RankedTensorType>(arg.getType());
    bool ok = type.getRank() == static_cast<int64_t>(t.shape.size()) &&
              static_cast<int64_t>(t.data.size()) == t.numel();
    for (int64_t i = 0; ok && i < type.getRank(); ++i)
      ok = type.isDynamicDim(i) || type.getDimSize(i) == t.shape[i];
    if (!ok)
      return fn.emitError("argument ") << arg.getArgNumber() << " has shape "
                                       << shape::str(t.shape) << ", expected " << type;
    values[arg] = t;
  }
  unsigned opIndex = 0;
  for (Operation &op : fn.front()) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      std::vector<Tensor> results;
      for (Value v : ret.getOperands())
        results.push_back(values.lookup(v));
      return results;
    }
    auto it = kernels().find(op.getName().getTypeID());
    if (it == kernels().end())
      return op.emitError("the reference evaluator has no kernel for '")
             << op.getName() << "'";
    SmallVector<const Tensor *> in;
    for (Value v : op.getOperands())
      in.push_back(&values[v]);
    SmallVector<Tensor> out;
    Ctx ctx{&op, in, out, options, opIndex++};
    if (failed(it->second(ctx)))
      return failure();
    assert(out.size() == op.getNumResults() && "kernel produced the wrong number of results");
    for (auto [v, t] : llvm::zip(op.getResults(), out))
      values[v] = std::move(t);
  }
  return fn.emitError("function has no return");
}

FailureOr<Tensor> nnc::ref::initialValue(func::FuncOp fn, unsigned index, uint64_t seed) {
  auto type = cast<RankedTensorType>(fn.getArgument(index).getType());
  auto found = nnops::initSpec(fn, index);
  if (failed(found))
    return failure();
  const rt::InitSpec &spec = *found;
  rt::Floats values;
  if (rt::Status s = rt::initialize(spec, seed, index, values, type.getNumElements()); !s)
    return fn.emitError(s.message());
  Tensor t = Tensor::filled(std::vector<int64_t>(type.getShape().begin(), type.getShape().end()));
  for (size_t i = 0; i < values.size(); ++i)
    t.data[i] = type.getElementType().isF32() ? static_cast<double>(values[i])
                                              : std::round(values[i]);
  return t;
}

namespace {
class ReferenceExecutor : public Executor {
public:
  FailureOr<std::vector<Tensor>> run(func::FuncOp fn, ArrayRef<Tensor> args,
                                     const EvalOptions &options) override {
    return Evaluator(options).run(fn, args);
  }
  const char *name() const override { return "reference"; }
};
} // namespace

std::unique_ptr<Executor> nnc::ref::createReferenceExecutor() {
  return std::make_unique<ReferenceExecutor>();
}
