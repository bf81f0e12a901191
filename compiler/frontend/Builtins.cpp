//===- Builtins.cpp - the builtin functions of the language ---------------===//
//
// The table of builtins (name, parameters, how each makes its ops), the
// checked access to call arguments, the op families (elementwise,
// reductions, losses, shapes, pooling) and the layers, whose parameters
// become arguments of the model function.
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/MLIRGenImpl.h"

using namespace mlir;
using namespace nnc;
using namespace nnc::frontend;

const std::vector<InitSpec> &frontend::initializers() {
  static const double req = std::nan("");
  static const std::vector<InitSpec> table = {
      {"zeros", "zeros", {}},
      {"ones", "ones", {}},
      {"constant", "constant", {{"value", req}}},
      {"normal", "normal", {{"mean", 0.0}, {"std", 1.0}}},
      {"uniform", "uniform", {{"low", 0.0}, {"high", 1.0}}},
      {"xavier_normal", "xavier_normal", {{"gain", 1.0}}},
      {"glorot_normal", "xavier_normal", {{"gain", 1.0}}},
      {"xavier_uniform", "xavier_uniform", {{"gain", 1.0}}},
      {"glorot_uniform", "xavier_uniform", {{"gain", 1.0}}},
      {"he_normal", "he_normal", {{"a", 0.0}}},
      {"kaiming_normal", "he_normal", {{"a", 0.0}}},
      {"he_uniform", "he_uniform", {{"a", 0.0}}},
      {"kaiming_uniform", "he_uniform", {{"a", 0.0}}},
      {"torch_default", "torch_default", {{"fan_in", 0.0}}},
  };
  return table;
}

/// Fan-in and fan-out of a parameter. Rank 2 weights are [in, out] (they
/// multiply as `x @ w`); rank >= 3 weights are OIHW.
std::pair<int64_t, int64_t> frontend::fans(ArrayRef<int64_t> shape) {
  if (shape.size() < 2)
    return {0, 0};
  if (shape.size() == 2)
    return {shape[0], shape[1]};
  int64_t receptive = 1;
  for (int64_t d : shape.drop_front(2))
    receptive *= d;
  return {shape[1] * receptive, shape[0] * receptive};
}

//===----------------------------------------------------------------------===//
// The builtin table
//===----------------------------------------------------------------------===//

namespace {
template <typename OpTy>
GenFn un() {
  return [](MLIRGen &g, Call &c) { return g.template unary<OpTy>(c); };
}

} // namespace

const std::vector<Builtin> &frontend::builtins() {
  using G = MLIRGen;
  auto m = [](Value (G::*fn)(Call &)) -> GenFn {
    return [fn](G &g, Call &c) { return (g.*fn)(c); };
  };
  static const std::vector<Builtin> table = {
      // Elementwise math and activations.
      {"neg", {"x"}, un<nnops::NegOp>()},
      {"exp", {"x"}, un<nnops::ExpOp>()},
      {"log", {"x"}, un<nnops::LogOp>()},
      {"sqrt", {"x"}, un<nnops::SqrtOp>()},
      {"abs", {"x"}, un<nnops::AbsOp>()},
      {"sigmoid", {"x"}, un<nnops::SigmoidOp>()},
      {"tanh", {"x"}, un<nnops::TanhOp>()},
      {"relu", {"x"}, un<nnops::ReluOp>()},
      {"softplus", {"x"}, un<nnops::SoftplusOp>()},
      {"step", {"x"}, un<nnops::StepOp>()},
      {"identity", {"x"}, un<nnops::IdentityOp>()},
      {"leaky_relu", {"x", "alpha?"}, un<nnops::LeakyReluOp>()},
      {"dropout", {"x", "rate?"}, un<nnops::DropoutOp>()},
      {"softmax", {"x", "axis?"}, un<nnops::SoftmaxOp>()},
      {"log_softmax", {"x", "axis?"}, un<nnops::LogSoftmaxOp>()},
      {"argmax", {"x", "axis?"}, un<nnops::ArgmaxOp>()},
      {"one_hot", {"labels", "classes"}, un<nnops::OneHotOp>()},
      {"pow", {"x", "y"},
       [](G &g, Call &c) -> Value {
         Value x = g.tensorArg(c, "x"), y = g.tensorArg(c, "y");
         return x && y ? g.make<nnops::PowOp>(c.expr.loc, {x, y}) : Value();
       }},
      {"matmul", {"a", "b"},
       [](G &g, Call &c) -> Value {
         Value x = g.tensorArg(c, "a"), y = g.tensorArg(c, "b");
         return x && y ? g.make<nnops::MatmulOp>(c.expr.loc, {x, y}) : Value();
       }},
      // Reductions and shapes.
      {"sum", {"x", "axis?", "keepdims?"},
       [](G &g, Call &c) { return g.reduce<nnops::ReduceSumOp>(c); }},
      {"mean", {"x", "axis?", "keepdims?"},
       [](G &g, Call &c) { return g.reduce<nnops::ReduceMeanOp>(c); }},
      {"max", {"x", "axis?", "keepdims?"},
       [](G &g, Call &c) { return g.reduce<nnops::ReduceMaxOp>(c); }},
      {"adaptive_avg_pool2d", {"x", "output_size"}, m(&G::adaptiveAvgPool)},
      {"norm", {"x", "axis?", "keepdims?"}, m(&G::norm)},
      {"l2", {"x"}, m(&G::l2)},
      {"reshape", {"x", "shape"}, m(&G::reshape)},
      {"flatten", {"x"}, m(&G::flatten)},
      {"transpose", {"x", "perm?"}, m(&G::transpose)},
      {"concat", {"inputs", "axis?"}, m(&G::concat)},
      // Layers (they declare their own parameters) and NN ops.
      {"dense", {"x", "units", "bias?", "init?", "bias_init?", "name?"}, m(&G::dense)},
      {"conv2d",
       {"x", "weight", "kernel?", "stride?", "padding?", "groups?", "bias?",
        "init?", "bias_init?", "name?"},
       m(&G::conv2d)},
      {"max_pool2d", {"x", "kernel", "stride?", "padding?"},
       [](G &g, Call &c) { return g.pool<nnops::MaxPool2dOp>(c); }},
      {"avg_pool2d", {"x", "kernel", "stride?", "padding?", "count_include_pad?"},
       [](G &g, Call &c) { return g.pool<nnops::AvgPool2dOp>(c); }},
      {"batch_norm", {"x", "eps?", "momentum?", "name?"}, m(&G::batchNorm)},
      {"group_norm", {"x", "groups", "eps?", "name?"}, m(&G::groupNorm)},
      {"local_response_norm", {"x", "size", "alpha?", "beta?", "k?"}, m(&G::lrn)},
      // Losses.
      {"mse", {"input", "target", "reduction?"},
       [](G &g, Call &c) { return g.loss<nnops::MseLossOp>(c); }},
      {"mae", {"input", "target", "reduction?"},
       [](G &g, Call &c) { return g.loss<nnops::L1LossOp>(c); }},
      {"l1_loss", {"input", "target", "reduction?"},
       [](G &g, Call &c) { return g.loss<nnops::L1LossOp>(c); }},
      {"binary_cross_entropy", {"input", "target", "reduction?"},
       [](G &g, Call &c) { return g.loss<nnops::BceLossOp>(c); }},
      {"cross_entropy", {"input", "target", "reduction?"},
       [](G &g, Call &c) { return g.loss<nnops::CrossEntropyOp>(c); }},
      {"softmax_cross_entropy", {"logits", "labels", "reduction?"},
       [](G &g, Call &c) { return g.loss<nnops::SoftmaxCrossEntropyOp>(c); }},
  };
  return table;
}

std::vector<std::string> nnc::builtinNames() {
  std::vector<std::string> names;
  for (const Builtin &bi : builtins())
    names.push_back(bi.name);
  return names;
}

/// A tensor type as the language writes it: "i32 [?, 4]".
std::string frontend::typeStr(Type t) {
  auto r = dyn_cast<RankedTensorType>(t);
  if (!r)
    return "a non-tensor";
  return std::string(r.getElementType().isInteger(32) ? "i32 " : "f32 ") + shape::str(r.getShape());
}

/// A number in a message as a user would write it: 0.1, 1e-05, 3.
std::string frontend::num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

//===----------------------------------------------------------------------===//
// Op creation and argument access
//===----------------------------------------------------------------------===//


Value MLIRGen::scalar(Loc l, double v, Type element) {
  auto type = RankedTensorType::get({}, element);
  Attribute value = isa<FloatType>(element)
                        ? Attribute(b.getFloatAttr(element, v))
                        : Attribute(b.getIntegerAttr(element, static_cast<int64_t>(v)));
  return make<nnops::ConstantOp>(
      l, {}, {b.getNamedAttr("value", DenseElementsAttr::get(type, value))});
}

Value MLIRGen::tensorArg(Call &c, StringRef name) {
  const Expr *e = c.get(name);
  return e ? genExpr(*e) : Value();
}

/// Reads an integer literal, allowing a leading minus.
std::optional<int64_t> frontend::intLiteral(const Expr &e) {
  if (e.kind == Expr::Number && e.isInteger && std::abs(e.number) < 1e15)
    return static_cast<int64_t>(e.number);
  if (e.kind == Expr::Neg && e.args[0]->kind == Expr::Number && e.args[0]->isInteger &&
      std::abs(e.args[0]->number) < 1e15)
    return -static_cast<int64_t>(e.args[0]->number);
  return std::nullopt;
}

std::optional<double> frontend::numberLiteral(const Expr &e) {
  if (e.kind == Expr::Number)
    return e.number;
  if (e.kind == Expr::Neg && e.args[0]->kind == Expr::Number)
    return -e.args[0]->number;
  return std::nullopt;
}

std::optional<int64_t> MLIRGen::intArg(Call &c, StringRef name, int64_t dflt) {
  const Expr *e = c.get(name);
  if (!e)
    return dflt;
  if (auto v = intLiteral(*e))
    return v;
  error(e->loc) << "argument '" << name << "' of '" << c.expr.text
                << "' must be an integer";
  return std::nullopt;
}

std::optional<double> MLIRGen::floatArg(Call &c, StringRef name, double dflt) {
  const Expr *e = c.get(name);
  if (!e)
    return dflt;
  if (auto v = numberLiteral(*e))
    return v;
  error(e->loc) << "argument '" << name << "' of '" << c.expr.text
                << "' must be a number";
  return std::nullopt;
}

std::optional<bool> MLIRGen::boolArg(Call &c, StringRef name, bool dflt) {
  const Expr *e = c.get(name);
  if (!e)
    return dflt;
  if (e->kind == Expr::Bool)
    return e->number != 0;
  error(e->loc) << "argument '" << name << "' of '" << c.expr.text
                << "' must be true or false";
  return std::nullopt;
}

std::optional<std::string> MLIRGen::stringArg(Call &c, StringRef name,
                                              StringRef dflt) {
  const Expr *e = c.get(name);
  if (!e)
    return dflt.str();
  if (e->kind == Expr::String)
    return e->text;
  error(e->loc) << "argument '" << name << "' of '" << c.expr.text
                << "' must be a string";
  return std::nullopt;
}

std::optional<SmallVector<int64_t>>
MLIRGen::intsArg(Call &c, StringRef name, ArrayRef<int64_t> dflt, size_t pairs) {
  const Expr *e = c.get(name);
  if (!e)
    return SmallVector<int64_t>(dflt);
  SmallVector<int64_t> out;
  if (auto v = intLiteral(*e)) {
    out.assign(pairs ? pairs : 1, *v);
    return out;
  }
  if (e->kind == Expr::List) {
    for (const ExprPtr &elt : e->args) {
      auto v = intLiteral(*elt);
      if (!v) {
        error(elt->loc) << "argument '" << name << "' of '" << c.expr.text
                        << "' must list integers";
        return std::nullopt;
      }
      out.push_back(*v);
    }
    if (pairs && out.size() != pairs) {
      error(e->loc) << "argument '" << name << "' of '" << c.expr.text
                    << "' needs " << pairs << " values, got " << out.size();
      return std::nullopt;
    }
    return out;
  }
  error(e->loc) << "argument '" << name << "' of '" << c.expr.text
                << "' must be an integer or a list of integers";
  return std::nullopt;
}

static int64_t rankOf(Value v) { return cast<RankedTensorType>(v.getType()).getRank(); }
static ArrayRef<int64_t> shapeOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getShape();
}

std::optional<int64_t> MLIRGen::axisArg(Call &c, StringRef name, int64_t dflt,
                                        Value of) {
  auto axis = intArg(c, name, dflt);
  if (!axis)
    return std::nullopt;
  int64_t rank = rankOf(of);
  if (*axis < -rank || *axis >= rank) {
    const Expr *e = c.get(name);
    error(e ? e->loc : c.expr.loc)
        << "axis " << *axis << " is out of range for a tensor of rank " << rank
        << " " << shape::str(shapeOf(of));
    return std::nullopt;
  }
  return *axis < 0 ? *axis + rank : *axis;
}

std::optional<std::string> MLIRGen::reductionArg(Call &c) {
  auto r = stringArg(c, "reduction", "mean");
  if (r && *r != "mean" && *r != "sum" && *r != "none") {
    error(c.get("reduction")->loc)
        << "reduction must be \"mean\", \"sum\" or \"none\", got \"" << *r << "\"";
    return std::nullopt;
  }
  return r;
}

//===----------------------------------------------------------------------===//
// Builtin families
//===----------------------------------------------------------------------===//

template <typename OpTy>
Value MLIRGen::unary(Call &c) {
  Value x = tensorArg(c, c.params[0]);
  if (!x)
    return nullptr;
  Loc l = c.expr.loc;
  SmallVector<NamedAttribute> attrs;
  if constexpr (std::is_same_v<OpTy, nnops::LeakyReluOp>) {
    auto alpha = floatArg(c, "alpha", 0.01);
    if (!alpha)
      return nullptr;
    attrs.push_back(b.getNamedAttr("alpha", b.getF32FloatAttr(*alpha)));
  } else if constexpr (std::is_same_v<OpTy, nnops::DropoutOp>) {
    auto rate = floatArg(c, "rate", 0.5);
    if (!rate)
      return nullptr;
    if (*rate < 0 || *rate >= 1) {
      error(c.get("rate")->loc) << "dropout rate must be in [0, 1), got " << num(*rate);
      return nullptr;
    }
    attrs.push_back(b.getNamedAttr("rate", b.getF32FloatAttr(*rate)));
  } else if constexpr (std::is_same_v<OpTy, nnops::SoftmaxOp> ||
                       std::is_same_v<OpTy, nnops::LogSoftmaxOp> ||
                       std::is_same_v<OpTy, nnops::ArgmaxOp>) {
    auto axis = axisArg(c, "axis", -1, x);
    if (!axis)
      return nullptr;
    attrs.push_back(b.getNamedAttr("axis", b.getI64IntegerAttr(*axis)));
  } else if constexpr (std::is_same_v<OpTy, nnops::OneHotOp>) {
    auto classes = intArg(c, "classes", 0);
    if (!classes)
      return nullptr;
    attrs.push_back(b.getNamedAttr("num_classes", b.getI64IntegerAttr(*classes)));
  }
  Type element = cast<RankedTensorType>(x.getType()).getElementType();
  bool wantsInt = std::is_same_v<OpTy, nnops::OneHotOp>;
  if (element.isInteger(32) != wantsInt) {
    error(c.get(c.params[0])->loc)
        << "'" << c.expr.text << "' expects " << (wantsInt ? "an i32" : "an f32")
        << " tensor, got " << typeStr(x.getType());
    return nullptr;
  }
  return make<OpTy>(l, {x}, attrs);
}

template <typename OpTy>
Value MLIRGen::reduce(Call &c) {
  Value x = tensorArg(c, "x");
  if (!x)
    return nullptr;
  SmallVector<int64_t> axes;
  if (c.has("axis")) {
    auto list = intsArg(c, "axis", {});
    if (!list)
      return nullptr;
    for (int64_t a : *list) {
      int64_t rank = rankOf(x);
      if (a < -rank || a >= rank) {
        error(c.get("axis")->loc) << "axis " << a << " is out of range for a tensor of rank "
                                  << rank << " " << shape::str(shapeOf(x));
        return nullptr;
      }
      axes.push_back(a < 0 ? a + rank : a);
    }
  } else {
    for (int64_t i = 0; i < rankOf(x); ++i)
      axes.push_back(i);
  }
  auto keep = boolArg(c, "keepdims", false);
  if (!keep)
    return nullptr;
  if (!cast<RankedTensorType>(x.getType()).getElementType().isF32()) {
    error(c.get("x")->loc) << "'" << c.expr.text << "' expects an f32 tensor, got "
                           << typeStr(x.getType());
    return nullptr;
  }
  return make<OpTy>(c.expr.loc, {x},
                    {b.getNamedAttr("axes", b.getDenseI64ArrayAttr(axes)),
                     b.getNamedAttr("keepdims", b.getBoolAttr(*keep))});
}

template <typename OpTy>
Value MLIRGen::loss(Call &c) {
  Value x = tensorArg(c, c.params[0]), t = tensorArg(c, c.params[1]);
  auto reduction = reductionArg(c);
  if (!x || !t || !reduction)
    return nullptr;
  if (std::is_same_v<OpTy, nnops::SoftmaxCrossEntropyOp> &&
      !cast<RankedTensorType>(t.getType()).getElementType().isInteger(32)) {
    error(c.get("labels")->loc)
        << "softmax_cross_entropy labels must be i32 class indices, got "
        << typeStr(t.getType());
    return nullptr;
  }
  if (!cast<RankedTensorType>(x.getType()).getElementType().isF32()) {
    error(c.get(c.params[0])->loc) << "'" << c.expr.text << "' expects an f32 input, got "
                                   << typeStr(x.getType());
    return nullptr;
  }
  return make<OpTy>(c.expr.loc, {x, t},
                    {b.getNamedAttr("reduction", b.getStringAttr(*reduction))});
}

Value MLIRGen::norm(Call &c) {
  // sqrt(sum(x * x)) keeps weight normalization expressible from primitives.
  Value x = tensorArg(c, "x");
  if (!x)
    return nullptr;
  Value sq = make<nnops::MulOp>(c.expr.loc, {x, x});
  if (!sq)
    return nullptr;
  scope["\x01norm"] = {sq, c.expr.loc, Role::Value};
  Expr tmp(Expr::Name, c.get("x")->loc);
  tmp.text = "\x01norm";
  Call inner{c.expr, c.params, c.bound};
  inner.bound[0] = &tmp;
  Value s = reduce<nnops::ReduceSumOp>(inner);
  scope.erase("\x01norm");
  return s ? make<nnops::SqrtOp>(c.expr.loc, {s}) : Value();
}

Value MLIRGen::l2(Call &c) {
  // 0.5 * sum(x^2): its gradient is x, so `wd * l2(w)` matches an
  // optimizer's weight decay `wd`.
  Value x = tensorArg(c, "x");
  if (!x)
    return nullptr;
  if (!cast<RankedTensorType>(x.getType()).getElementType().isF32()) {
    error(c.get("x")->loc) << "'l2' expects an f32 tensor, got " << typeStr(x.getType());
    return nullptr;
  }
  Loc l = c.expr.loc;
  Value sq = make<nnops::MulOp>(l, {x, x});
  if (!sq)
    return nullptr;
  SmallVector<int64_t> all;
  for (int64_t i = 0; i < rankOf(x); ++i)
    all.push_back(i);
  Value s = make<nnops::ReduceSumOp>(l, {sq}, {b.getNamedAttr("axes", b.getDenseI64ArrayAttr(all))});
  Value half = scalar(l, 0.5, b.getF32Type());
  return s ? make<nnops::MulOp>(l, {half, s}) : Value();
}

Value MLIRGen::reshape(Call &c) {
  Value x = tensorArg(c, "x");
  if (!x)
    return nullptr;
  const Expr *e = c.get("shape");
  if (e->kind != Expr::List) {
    error(e->loc) << "reshape needs a list of sizes such as [B, 1, 28, 28]";
    return nullptr;
  }
  SmallVector<int64_t> target;
  std::string symbol; // a dimension name used in the target, e.g. B
  std::string spelled;
  for (const ExprPtr &d : e->args) {
    spelled += spelled.empty() ? "[" : ", ";
    if (auto v = intLiteral(*d)) {
      target.push_back(*v);
      spelled += std::to_string(*v);
    } else if (d->kind == Expr::Name && dimSymbols.contains(d->text)) {
      target.push_back(-1); // a symbolic size is inferred
      symbol = d->text;
      spelled += d->text;
    } else {
      std::vector<std::string> syms;
      for (auto &s : dimSymbols)
        syms.push_back(s.getKey().str());
      error(d->loc) << "reshape sizes must be integers or dimension names"
                    << (d->kind == Expr::Name ? didYouMean(d->text, syms) : "");
      return nullptr;
    }
  }
  // A dimension name keeps that dimension: with one dynamic input size and
  // one name in the target, the other sizes must hold the same elements.
  ArrayRef<int64_t> in = shapeOf(x);
  if (!symbol.empty() && llvm::count(in, ShapedType::kDynamic) == 1 &&
      llvm::count(target, -1) == 1) {
    int64_t inRest = 1, outRest = 1;
    for (int64_t d : in)
      inRest *= d == ShapedType::kDynamic ? 1 : d;
    for (int64_t d : target)
      outRest *= d == -1 ? 1 : d;
    if (inRest != outRest) {
      error(c.expr.loc) << "cannot reshape " << shape::str(in) << " to " << spelled
                        << "]: the sizes besides " << symbol << " hold " << inRest
                        << " elements, not " << outRest;
      return nullptr;
    }
  }
  return make<nnops::ReshapeOp>(c.expr.loc, {x},
                                {b.getNamedAttr("shape", b.getDenseI64ArrayAttr(target))});
}

Value MLIRGen::flatten(Call &c) {
  Value x = tensorArg(c, "x");
  if (!x)
    return nullptr;
  ArrayRef<int64_t> s = shapeOf(x);
  if (s.size() < 2) {
    error(c.expr.loc) << "flatten needs a tensor of rank >= 2, got " << shape::str(s);
    return nullptr;
  }
  int64_t rest = 1;
  for (int64_t d : s.drop_front()) {
    if (d == ShapedType::kDynamic) {
      error(c.expr.loc) << "flatten needs static sizes after axis 0, got " << shape::str(s);
      return nullptr;
    }
    rest *= d;
  }
  int64_t lead = s[0] == ShapedType::kDynamic ? -1 : s[0];
  return make<nnops::ReshapeOp>(c.expr.loc, {x},
                                {b.getNamedAttr("shape", b.getDenseI64ArrayAttr({lead, rest}))});
}

Value MLIRGen::transpose(Call &c) {
  Value x = tensorArg(c, "x");
  if (!x)
    return nullptr;
  SmallVector<int64_t> reversed;
  for (int64_t i = rankOf(x) - 1; i >= 0; --i)
    reversed.push_back(i);
  auto perm = intsArg(c, "perm", reversed);
  if (!perm)
    return nullptr;
  return make<nnops::TransposeOp>(c.expr.loc, {x},
                                  {b.getNamedAttr("perm", b.getDenseI64ArrayAttr(*perm))});
}

Value MLIRGen::concat(Call &c) {
  const Expr *list = c.get("inputs");
  if (list->kind != Expr::List || list->args.empty()) {
    error(list->loc) << "concat needs a non-empty list of tensors such as [a, b]";
    return nullptr;
  }
  SmallVector<Value> inputs;
  for (const ExprPtr &e : list->args) {
    Value v = genExpr(*e);
    if (!v)
      return nullptr;
    inputs.push_back(v);
  }
  auto axis = axisArg(c, "axis", 0, inputs[0]);
  if (!axis)
    return nullptr;
  return make<nnops::ConcatOp>(c.expr.loc, inputs,
                               {b.getNamedAttr("axis", b.getI64IntegerAttr(*axis))});
}

template <typename OpTy>
Value MLIRGen::pool(Call &c) {
  Value x = tensorArg(c, "x");
  auto kernel = intsArg(c, "kernel", {}, 2);
  if (!x || !kernel)
    return nullptr;
  auto stride = intsArg(c, "stride", *kernel, 2);
  auto padding = intsArg(c, "padding", {0, 0}, 2);
  if (!stride || !padding)
    return nullptr;
  SmallVector<NamedAttribute> attrs = {
      b.getNamedAttr("kernel", b.getDenseI64ArrayAttr(*kernel)),
      b.getNamedAttr("stride", b.getDenseI64ArrayAttr(*stride)),
      b.getNamedAttr("padding", b.getDenseI64ArrayAttr(*padding))};
  if constexpr (std::is_same_v<OpTy, nnops::AvgPool2dOp>) {
    auto include = boolArg(c, "count_include_pad", true);
    if (!include)
      return nullptr;
    attrs.push_back(b.getNamedAttr("count_include_pad", b.getBoolAttr(*include)));
  }
  return make<OpTy>(c.expr.loc, {x}, attrs);
}

//===----------------------------------------------------------------------===//
// Layers
//===----------------------------------------------------------------------===//

DictionaryAttr MLIRGen::simpleInit(StringRef kind) {
  return b.getDictionaryAttr({b.getNamedAttr("kind", b.getStringAttr(kind))});
}

std::optional<std::string> MLIRGen::layerPrefix(Call &c, ArrayRef<StringRef> leaves) {
  auto named = stringArg(c, "name", "");
  if (!named)
    return std::nullopt;
  auto taken = [&](const std::string &prefix) {
    return llvm::any_of(leaves, [&](StringRef leaf) {
      return scope.count(prefix + "." + leaf.str()) != 0;
    });
  };
  if (!named->empty()) {
    if (taken(*named)) {
      error(c.get("name")->loc) << "layer name '" << *named << "' is already used";
      return std::nullopt;
    }
    return named;
  }
  std::string prefix = target;
  for (int i = 1; taken(prefix); ++i)
    prefix = target + "_" + std::to_string(i);
  return prefix;
}

Value MLIRGen::layerParam(Call &c, StringRef leaf, ArrayRef<int64_t> shape,
                          Role role, DictionaryAttr init) {
  std::string prefix = layerPrefixes[std::to_string(c.expr.loc.line) + ":" +
                                     std::to_string(c.expr.loc.col)];
  return addArg(prefix + "." + leaf.str(), c.expr.loc,
                RankedTensorType::get(shape, b.getF32Type()), role, init);
}

DictionaryAttr MLIRGen::layerInit(Call &c, StringRef argName, StringRef dflt,
                                  RankedTensorType type, const std::string &name,
                                  int64_t fanIn) {
  if (const Expr *e = c.get(argName))
    return genInit(*e, type, name, fanIn);
  Expr tmp(Expr::Name, c.expr.loc);
  tmp.text = dflt.str();
  return genInit(tmp, type, name, fanIn);
}

Value MLIRGen::dense(Call &c) {
  Value x = tensorArg(c, "x");
  auto units = intArg(c, "units", 0);
  auto bias = boolArg(c, "bias", true);
  if (!x || !units || !bias)
    return nullptr;
  ArrayRef<int64_t> in = shapeOf(x);
  if (in.size() != 2 || in[1] == ShapedType::kDynamic) {
    error(c.get("x")->loc) << "dense expects a [batch, features] input with static "
                              "features, got " << shape::str(in);
    return nullptr;
  }
  if (*units < 1) {
    error(c.get("units")->loc) << "dense needs at least one unit, got " << *units;
    return nullptr;
  }
  auto prefix = layerPrefix(c, {"w", "b"});
  if (!prefix)
    return nullptr;
  layerPrefixes[std::to_string(c.expr.loc.line) + ":" + std::to_string(c.expr.loc.col)] = *prefix;
  auto wType = RankedTensorType::get({in[1], *units}, b.getF32Type());
  DictionaryAttr wInit = layerInit(c, "init", "torch_default", wType, *prefix + ".w", 0);
  if (!wInit)
    return nullptr;
  Value w = layerParam(c, "w", wType.getShape(), Role::Param, wInit);
  Value y = make<nnops::MatmulOp>(c.expr.loc, {x, w});
  if (!y || !*bias)
    return y;
  auto bType = RankedTensorType::get({*units}, b.getF32Type());
  DictionaryAttr bInit = layerInit(c, "bias_init", "torch_default", bType, *prefix + ".b", in[1]);
  if (!bInit)
    return nullptr;
  Value bv = layerParam(c, "b", bType.getShape(), Role::Param, bInit);
  return make<nnops::AddOp>(c.expr.loc, {y, bv});
}

Value MLIRGen::conv2d(Call &c) {
  Value x = tensorArg(c, "x");
  auto stride = intsArg(c, "stride", {1, 1}, 2);
  auto padding = intsArg(c, "padding", {0, 0}, 2);
  auto groups = intArg(c, "groups", 1);
  if (!x || !stride || !padding || !groups)
    return nullptr;
  SmallVector<NamedAttribute> attrs = {
      b.getNamedAttr("stride", b.getDenseI64ArrayAttr(*stride)),
      b.getNamedAttr("padding", b.getDenseI64ArrayAttr(*padding)),
      b.getNamedAttr("groups", b.getI64IntegerAttr(*groups))};
  const Expr *weightExpr = c.get("weight");
  std::optional<int64_t> outChannels = intLiteral(*weightExpr);
  if (!outChannels) {
    // Op form: conv2d(x, w, ...) with an explicit OIHW weight tensor.
    for (StringRef layerOnly : {"kernel", "bias", "init", "bias_init", "name"})
      if (c.has(layerOnly)) {
        error(c.get(layerOnly)->loc)
            << "'" << layerOnly << "' applies only to the layer form conv2d(x, "
               "out_channels, kernel=...)";
        return nullptr;
      }
    Value w = genExpr(*weightExpr);
    return w ? make<nnops::Conv2dOp>(c.expr.loc, {x, w}, attrs) : Value();
  }
  // Layer form: conv2d(x, out_channels, kernel=k) declares weight and bias.
  auto kernel = intsArg(c, "kernel", {}, 2);
  auto bias = boolArg(c, "bias", true);
  if (!kernel || !bias)
    return nullptr;
  if (kernel->empty()) {
    error(c.expr.loc) << "the layer form of conv2d needs 'kernel' (e.g. kernel=5)";
    return nullptr;
  }
  if (llvm::any_of(*kernel, [](int64_t k) { return k < 1; })) {
    error(c.get("kernel")->loc) << "conv2d kernel sizes must be at least 1, got "
                                << shape::str(*kernel);
    return nullptr;
  }
  ArrayRef<int64_t> in = shapeOf(x);
  if (in.size() != 4 || in[1] == ShapedType::kDynamic) {
    error(c.get("x")->loc) << "conv2d expects an [N, C, H, W] input with static "
                              "channels, got " << shape::str(in);
    return nullptr;
  }
  if (*outChannels < 1 || *groups < 1 || in[1] % *groups || *outChannels % *groups) {
    error(weightExpr->loc) << "conv2d channels (in " << in[1] << ", out "
                           << *outChannels << ") must be positive multiples of groups ("
                           << *groups << ")";
    return nullptr;
  }
  auto prefix = layerPrefix(c, {"w", "b"});
  if (!prefix)
    return nullptr;
  layerPrefixes[std::to_string(c.expr.loc.line) + ":" + std::to_string(c.expr.loc.col)] = *prefix;
  auto wType = RankedTensorType::get(
      {*outChannels, in[1] / *groups, (*kernel)[0], (*kernel)[1]}, b.getF32Type());
  DictionaryAttr wInit = layerInit(c, "init", "torch_default", wType, *prefix + ".w", 0);
  if (!wInit)
    return nullptr;
  Value w = layerParam(c, "w", wType.getShape(), Role::Param, wInit);
  Value y = make<nnops::Conv2dOp>(c.expr.loc, {x, w}, attrs);
  if (!y || !*bias)
    return y;
  auto bType = RankedTensorType::get({*outChannels}, b.getF32Type());
  DictionaryAttr bInit = layerInit(c, "bias_init", "torch_default", bType,
                                   *prefix + ".b", fans(wType.getShape()).first);
  if (!bInit)
    return nullptr;
  Value bv = layerParam(c, "b", bType.getShape(), Role::Param, bInit);
  // The bias broadcasts over [C, 1, 1].
  Value b3 = make<nnops::ReshapeOp>(
      c.expr.loc, {bv},
      {b.getNamedAttr("shape", b.getDenseI64ArrayAttr({*outChannels, 1, 1}))});
  return b3 ? make<nnops::AddOp>(c.expr.loc, {y, b3}) : Value();
}

Value MLIRGen::batchNorm(Call &c) {
  Value x = tensorArg(c, "x");
  auto eps = floatArg(c, "eps", 1e-5);
  auto momentum = floatArg(c, "momentum", 0.1);
  if (!x || !eps || !momentum)
    return nullptr;
  if (*eps < 0) {
    error(c.get("eps")->loc) << "batch_norm eps must be >= 0, got " << num(*eps);
    return nullptr;
  }
  if (*momentum < 0 || *momentum > 1) {
    error(c.get("momentum")->loc) << "batch_norm momentum must be in [0, 1], got " << num(*momentum);
    return nullptr;
  }
  ArrayRef<int64_t> in = shapeOf(x);
  if (in.size() < 2 || in[1] == ShapedType::kDynamic) {
    error(c.get("x")->loc) << "batch_norm expects an [N, C, ...] input with static "
                              "channels, got " << shape::str(in);
    return nullptr;
  }
  auto prefix = layerPrefix(c, {"gamma", "beta", "running_mean", "running_var"});
  if (!prefix)
    return nullptr;
  layerPrefixes[std::to_string(c.expr.loc.line) + ":" + std::to_string(c.expr.loc.col)] = *prefix;
  int64_t ch = in[1];
  Value gamma = layerParam(c, "gamma", {ch}, Role::Param, simpleInit("ones"));
  Value beta = layerParam(c, "beta", {ch}, Role::Param, simpleInit("zeros"));
  Value mean = layerParam(c, "running_mean", {ch}, Role::State, simpleInit("zeros"));
  Value var = layerParam(c, "running_var", {ch}, Role::State, simpleInit("ones"));
  return make<nnops::BatchNormOp>(
      c.expr.loc, {x, gamma, beta, mean, var},
      {b.getNamedAttr("eps", b.getF32FloatAttr(*eps)),
       b.getNamedAttr("momentum", b.getF32FloatAttr(*momentum))});
}

Value MLIRGen::groupNorm(Call &c) {
  Value x = tensorArg(c, "x");
  auto groups = intArg(c, "groups", 1);
  auto eps = floatArg(c, "eps", 1e-5);
  if (!x || !groups || !eps)
    return nullptr;
  if (*eps < 0) {
    error(c.get("eps")->loc) << "group_norm eps must be >= 0, got " << num(*eps);
    return nullptr;
  }
  ArrayRef<int64_t> in = shapeOf(x);
  if (in.size() < 2 || in[1] == ShapedType::kDynamic) {
    error(c.get("x")->loc) << "group_norm expects an [N, C, ...] input with static "
                              "channels, got " << shape::str(in);
    return nullptr;
  }
  auto prefix = layerPrefix(c, {"gamma", "beta"});
  if (!prefix)
    return nullptr;
  layerPrefixes[std::to_string(c.expr.loc.line) + ":" + std::to_string(c.expr.loc.col)] = *prefix;
  Value gamma = layerParam(c, "gamma", {in[1]}, Role::Param, simpleInit("ones"));
  Value beta = layerParam(c, "beta", {in[1]}, Role::Param, simpleInit("zeros"));
  return make<nnops::GroupNormOp>(
      c.expr.loc, {x, gamma, beta},
      {b.getNamedAttr("groups", b.getI64IntegerAttr(*groups)),
       b.getNamedAttr("eps", b.getF32FloatAttr(*eps))});
}

Value MLIRGen::lrn(Call &c) {
  Value x = tensorArg(c, "x");
  auto size = intArg(c, "size", 0);
  auto alpha = floatArg(c, "alpha", 1e-4);
  auto beta = floatArg(c, "beta", 0.75);
  auto k = floatArg(c, "k", 1.0);
  if (!x || !size || !alpha || !beta || !k)
    return nullptr;
  return make<nnops::LocalResponseNormOp>(
      c.expr.loc, {x},
      {b.getNamedAttr("size", b.getI64IntegerAttr(*size)),
       b.getNamedAttr("alpha", b.getF32FloatAttr(*alpha)),
       b.getNamedAttr("beta", b.getF32FloatAttr(*beta)),
       b.getNamedAttr("k", b.getF32FloatAttr(*k))});
}


/// Global average pooling, as torchvision's ResNets end: the mean over the
/// spatial axes, kept as 1x1. (Other output sizes are not supported.)
Value MLIRGen::adaptiveAvgPool(Call &c) {
  Value x = tensorArg(c, "x");
  auto size = intsArg(c, "output_size", {}, 2);
  if (!x || !size)
    return nullptr;
  if (llvm::any_of(*size, [](int64_t s) { return s != 1; })) {
    error(c.get("output_size")->loc) << "adaptive_avg_pool2d supports output size 1 (global average pooling)";
    return nullptr;
  }
  if (rankOf(x) != 4 || !cast<RankedTensorType>(x.getType()).getElementType().isF32()) {
    error(c.get("x")->loc) << "adaptive_avg_pool2d expects an f32 [N, C, H, W] tensor, got " << typeStr(x.getType());
    return nullptr;
  }
  return make<nnops::ReduceMeanOp>(c.expr.loc, {x},
                                   {b.getNamedAttr("axes", b.getDenseI64ArrayAttr({2, 3})),
                                    b.getNamedAttr("keepdims", b.getBoolAttr(true))});
}
