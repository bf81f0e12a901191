//===- MLIRGen.cpp - .nn source to the nn dialect -------------------------===//
//
// Walks the AST once, resolving names, binding call arguments through one
// table of builtins (name, parameter list, generator), and creating nn ops.
// Result types come from the ops' InferTypeOpInterface rules, called before
// an op is created so that a shape error is reported at the DSL location
// instead of asserting. After an error in a statement the assigned name is
// bound to nothing, and later uses of it stay quiet, so one run reports
// independent errors without cascades.
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/MLIRGen.h"
#include "compiler/frontend/Parser.h"

#include "dialects/nn/NNOps.h"
#include "dialects/nn/ShapeRules.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/SourceMgr.h"

#include <cmath>
#include <cstdio>
#include <functional>

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

std::optional<File> nnc::parseSource(llvm::SourceMgr &sourceMgr,
                                     MLIRContext &ctx) {
  const llvm::MemoryBuffer *buf = sourceMgr.getMemoryBuffer(sourceMgr.getMainFileID());
  StringAttr filename = StringAttr::get(&ctx, buf->getBufferIdentifier());
  Parser parser(buf->getBuffer(), [&](Loc l, const std::string &msg) {
    emitError(FileLineColLoc::get(filename, l.line, l.col)) << msg;
  });
  File file = parser.parseFile();
  if (parser.errors())
    return std::nullopt;
  return file;
}

/// The closest of `candidates` to `name`, if close enough to suggest.
static std::string closest(StringRef name, ArrayRef<std::string> candidates) {
  // Allow about one edit in three, but never a complete rewrite: a one-letter
  // name gets no suggestion.
  std::string best;
  unsigned limit = std::min<unsigned>(std::max<unsigned>(2, name.size() / 3),
                                      name.empty() ? 0 : name.size() - 1);
  unsigned bestDist = limit + 1;
  for (const std::string &c : candidates) {
    unsigned d = name.edit_distance(c, true, bestDist);
    if (d < bestDist) {
      bestDist = d;
      best = c;
    }
  }
  return best;
}

static std::string didYouMean(StringRef name, ArrayRef<std::string> candidates) {
  std::string best = closest(name, candidates);
  return best.empty() ? std::string() : "; did you mean '" + best + "'?";
}

namespace {

class MLIRGen;

/// A call's arguments bound to a builtin's parameter names.
struct Call {
  const Expr &expr;
  std::vector<std::string> params; // without the '?' marker
  std::vector<const Expr *> bound; // one per parameter, null when absent

  const Expr *get(StringRef name) const {
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i] == name)
        return bound[i];
    assert(false && "builtin asks for a parameter it does not declare");
    return nullptr;
  }
  bool has(StringRef name) const { return get(name) != nullptr; }
};

using GenFn = std::function<Value(MLIRGen &, Call &)>;

/// One builtin function: its parameters in order ("x", "axis?" optional).
struct Builtin {
  std::string name;
  std::vector<std::string> params;
  GenFn gen;
};

/// An initializer: its kind in the nn.init attribute and its parameters
/// with defaults (NaN = required).
struct InitSpec {
  const char *name;
  const char *kind;
  std::vector<std::pair<const char *, double>> params;
};

const std::vector<InitSpec> &initializers() {
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
std::pair<int64_t, int64_t> fans(ArrayRef<int64_t> shape) {
  if (shape.size() < 2)
    return {0, 0};
  if (shape.size() == 2)
    return {shape[0], shape[1]};
  int64_t receptive = 1;
  for (int64_t d : shape.drop_front(2))
    receptive *= d;
  return {shape[1] * receptive, shape[0] * receptive};
}

class MLIRGen {
public:
  MLIRGen(MLIRContext &ctx, StringRef filename)
      : ctx(ctx), b(&ctx), file(StringAttr::get(&ctx, filename)) {}

  OwningOpRef<ModuleOp> gen(const File &ast);

  // The rest is used by the builtin table; the class is local to this file.
  enum class Role { Input, Param, Frozen, State, Value };

  struct Binding {
    Value value; // null after an error: uses stay quiet
    Loc loc;
    Role role;
  };
  struct Arg {
    std::string name;
    Role role;
    DictionaryAttr init;
    ArrayAttr dims;
  };

  Location loc(Loc l) { return FileLineColLoc::get(file, l.line, l.col); }
  InFlightDiagnostic error(Loc l) {
    ++errors;
    return emitError(loc(l));
  }

  // Statements.
  void genModel(const Model &m);
  void genStmt(const Stmt &s);
  void genDecl(const Stmt &s);
  Value addArg(const std::string &name, Loc l, Type type, Role role,
               DictionaryAttr init, ArrayAttr dims = {});
  bool define(const std::string &name, Loc l, Value v, Role role);
  std::optional<Type> genType(const TypeSpec &t, bool allowSymbols,
                              ArrayAttr *dims);
  DictionaryAttr genInit(const Expr &e, RankedTensorType type,
                         const std::string &name, int64_t fanIn = 0);
  DictionaryAttr genLiteralInit(const Expr &e, RankedTensorType type,
                                const std::string &name);
  DictionaryAttr genTrain(const TrainSection &t);

  // Expressions.
  Value genExpr(const Expr &e);
  Value genBinary(const Expr &e);
  Value genCall(const Expr &e);
  Value scalar(Loc l, double v, Type element);

  template <typename OpTy>
  Value make(Loc l, ValueRange operands, ArrayRef<NamedAttribute> attrs = {});

  // Call arguments.
  Value tensorArg(Call &c, StringRef name);
  std::optional<int64_t> intArg(Call &c, StringRef name, int64_t dflt);
  std::optional<double> floatArg(Call &c, StringRef name, double dflt);
  std::optional<bool> boolArg(Call &c, StringRef name, bool dflt);
  std::optional<std::string> stringArg(Call &c, StringRef name, StringRef dflt);
  std::optional<SmallVector<int64_t>> intsArg(Call &c, StringRef name,
                                              ArrayRef<int64_t> dflt,
                                              size_t pairs = 0);
  std::optional<int64_t> axisArg(Call &c, StringRef name, int64_t dflt,
                                 Value of);
  std::optional<std::string> reductionArg(Call &c);

  // Builtin families and layers.
  template <typename OpTy> Value unary(Call &c);
  template <typename OpTy> Value reduce(Call &c);
  template <typename OpTy> Value loss(Call &c);
  Value reshape(Call &c);
  Value flatten(Call &c);
  Value transpose(Call &c);
  Value concat(Call &c);
  Value conv2d(Call &c);
  Value dense(Call &c);
  template <typename OpTy> Value pool(Call &c);
  Value batchNorm(Call &c);
  Value groupNorm(Call &c);
  Value lrn(Call &c);
  Value l2(Call &c);
  Value norm(Call &c);

  /// Declares a parameter of a layer as `<prefix>.<leaf>`.
  Value layerParam(Call &c, StringRef leaf, ArrayRef<int64_t> shape, Role role,
                   DictionaryAttr init);
  std::optional<std::string> layerPrefix(Call &c, ArrayRef<StringRef> leaves);
  DictionaryAttr layerInit(Call &c, StringRef argName, StringRef dflt,
                           RankedTensorType type, const std::string &name,
                           int64_t fanIn);
  DictionaryAttr simpleInit(StringRef kind);

  MLIRContext &ctx;
  OpBuilder b;
  StringAttr file;
  unsigned errors = 0;

  func::FuncOp func;
  llvm::StringMap<Binding> scope;
  std::vector<Arg> args;
  llvm::StringSet<> dimSymbols;
  std::string target; // the name being assigned, prefix of layer parameters
  std::map<std::string, std::string> layerPrefixes; // call site -> prefix
};

//===----------------------------------------------------------------------===//
// The builtin table
//===----------------------------------------------------------------------===//

template <typename OpTy>
GenFn un() {
  return [](MLIRGen &g, Call &c) { return g.template unary<OpTy>(c); };
}

} // namespace

namespace {
const std::vector<Builtin> &builtins() {
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
} // namespace

std::vector<std::string> nnc::builtinNames() {
  std::vector<std::string> names;
  for (const Builtin &bi : builtins())
    names.push_back(bi.name);
  return names;
}

/// A tensor type as the language writes it: "i32 [?, 4]".
static std::string typeStr(Type t) {
  auto r = dyn_cast<RankedTensorType>(t);
  if (!r)
    return "a non-tensor";
  return std::string(r.getElementType().isInteger(32) ? "i32 " : "f32 ") + shape::str(r.getShape());
}

/// A number in a message as a user would write it: 0.1, 1e-05, 3.
static std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

//===----------------------------------------------------------------------===//
// Op creation and argument access
//===----------------------------------------------------------------------===//

template <typename OpTy>
Value MLIRGen::make(Loc l, ValueRange operands, ArrayRef<NamedAttribute> attrs) {
  OperationState state(loc(l), OpTy::getOperationName());
  state.addOperands(operands);
  state.addAttributes(attrs);
  state.name.populateDefaultAttrs(state.attributes);
  SmallVector<Type> types;
  // Infer first: the generated builders would abort on a shape error.
  if (failed(OpTy::inferReturnTypes(&ctx, state.location, state.operands,
                                    state.attributes.getDictionary(&ctx),
                                    state.getRawProperties(), state.regions,
                                    types))) {
    ++errors;
    return nullptr;
  }
  for (Type t : types)
    if (auto r = dyn_cast<RankedTensorType>(t); r && shape::elements(r.getShape()) < 0) {
      error(l) << "the result of '" << OpTy::getOperationName().drop_front(3) << "' would be "
               << shape::str(r.getShape()) << ", more than 2^40 elements";
      return nullptr;
    }
  state.addTypes(types);
  Operation *op = b.create(state);
  // The ODS constraints (f32 operands, mostly) checked now, so that the
  // message names the builtin and the types as the language writes them.
  std::string why;
  {
    ScopedDiagnosticHandler capture(&ctx, [&](Diagnostic &d) {
      if (why.empty())
        why = d.str();
      return success();
    });
    if (succeeded(verify(op, /*verifyRecursively=*/false)))
      return op->getResult(0);
  }
  StringRef name = op->getName().stripDialect();
  size_t at = why.find("operand #");
  if (at != std::string::npos && why.find("32-bit float") != std::string::npos) {
    unsigned k = static_cast<unsigned>(why[at + 9] - '0');
    auto t = k < operands.size() ? dyn_cast<RankedTensorType>(operands[k].getType()) : nullptr;
    InFlightDiagnostic d = error(l) << "'" << name << "' takes f32 tensors, but operand " << k + 1 << " is ";
    if (t)
      d << (t.getElementType().isInteger(32) ? "i32 " : "") << shape::str(t.getShape());
  } else {
    error(l) << "'" << name << "': " << why;
  }
  op->erase();
  return nullptr;
}

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
static std::optional<int64_t> intLiteral(const Expr &e) {
  if (e.kind == Expr::Number && e.isInteger && std::abs(e.number) < 1e15)
    return static_cast<int64_t>(e.number);
  if (e.kind == Expr::Neg && e.args[0]->kind == Expr::Number && e.args[0]->isInteger &&
      std::abs(e.args[0]->number) < 1e15)
    return -static_cast<int64_t>(e.args[0]->number);
  return std::nullopt;
}

static std::optional<double> numberLiteral(const Expr &e) {
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

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

Value MLIRGen::genExpr(const Expr &e) {
  switch (e.kind) {
  case Expr::Number:
    return scalar(e.loc, e.number, b.getF32Type());
  case Expr::Name: {
    auto it = scope.find(e.text);
    if (it != scope.end())
      return it->second.value; // null (quiet) after an earlier error
    for (const Builtin &bi : builtins())
      if (bi.name == e.text) {
        error(e.loc) << "'" << e.text << "' is a function; call it as " << e.text << "(...)";
        return nullptr;
      }
    std::vector<std::string> names;
    for (auto &entry : scope)
      if (entry.getKey().front() != '\x01')
        names.push_back(entry.getKey().str());
    error(e.loc) << "unknown name '" << e.text << "'" << didYouMean(e.text, names);
    return nullptr;
  }
  case Expr::Neg: {
    if (auto v = numberLiteral(e))
      return scalar(e.loc, *v, b.getF32Type());
    Value x = genExpr(*e.args[0]);
    return x ? make<nnops::NegOp>(e.loc, {x}) : Value();
  }
  case Expr::Binary:
    return genBinary(e);
  case Expr::Call:
    return genCall(e);
  case Expr::String:
    error(e.loc) << "expected a tensor, found the string \"" << e.text << "\"";
    return nullptr;
  case Expr::Bool:
    error(e.loc) << "expected a tensor, found " << (e.number ? "true" : "false");
    return nullptr;
  case Expr::List:
    error(e.loc) << "expected a tensor, found a list (literal tensors are written "
                    "as frozen tensors: frozen c: f32[2] = [1, 2])";
    return nullptr;
  }
  return nullptr;
}

Value MLIRGen::genBinary(const Expr &e) {
  const Expr &le = *e.args[0], &re = *e.args[1];
  // A number beside a tensor takes the tensor's element type.
  Value lhs, rhs;
  if (numberLiteral(le) && !numberLiteral(re)) {
    rhs = genExpr(re);
    if (!rhs)
      return nullptr;
    lhs = scalar(le.loc, *numberLiteral(le), getElementTypeOrSelf(rhs.getType()));
  } else {
    lhs = genExpr(le);
    if (!lhs)
      return nullptr;
    rhs = numberLiteral(re) ? scalar(re.loc, *numberLiteral(re),
                                     getElementTypeOrSelf(lhs.getType()))
                            : genExpr(re);
    if (!rhs)
      return nullptr;
  }
  StringRef op = e.text;
  if (op == "@")
    return make<nnops::MatmulOp>(e.loc, {lhs, rhs});
  if (op == "+")
    return make<nnops::AddOp>(e.loc, {lhs, rhs});
  if (op == "-")
    return make<nnops::SubOp>(e.loc, {lhs, rhs});
  if (op == "*")
    return make<nnops::MulOp>(e.loc, {lhs, rhs});
  if (op == "/")
    return make<nnops::DivOp>(e.loc, {lhs, rhs});
  return make<nnops::PowOp>(e.loc, {lhs, rhs});
}

Value MLIRGen::genCall(const Expr &e) {
  const Builtin *fn = nullptr;
  for (const Builtin &bi : builtins())
    if (bi.name == e.text)
      fn = &bi;
  if (!fn) {
    bool isInit = llvm::any_of(initializers(),
                               [&](const InitSpec &s) { return e.text == s.name; });
    if (isInit) {
      error(e.loc) << "'" << e.text << "' is an initializer; use it after '=' in a "
                      "param declaration";
      return nullptr;
    }
    error(e.loc) << "unknown function '" << e.text << "'" << didYouMean(e.text, builtinNames());
    return nullptr;
  }
  // Bind positional and keyword arguments to the builtin's parameters.
  Call call{e, {}, {}};
  for (const std::string &p : fn->params) {
    bool optional = StringRef(p).ends_with("?");
    call.params.push_back(optional ? p.substr(0, p.size() - 1) : p);
  }
  call.bound.assign(call.params.size(), nullptr);
  if (e.args.size() > call.params.size()) {
    error(e.args[call.params.size()]->loc)
        << "'" << e.text << "' takes at most " << call.params.size() << " argument"
        << (call.params.size() == 1 ? "" : "s") << ", got " << e.args.size();
    return nullptr;
  }
  for (size_t i = 0; i < e.args.size(); ++i)
    call.bound[i] = e.args[i].get();
  for (const KwArg &kw : e.kwargs) {
    auto it = llvm::find(call.params, kw.name);
    if (it == call.params.end()) {
      error(kw.loc) << "'" << e.text << "' has no argument '" << kw.name << "'"
                    << didYouMean(kw.name, call.params);
      return nullptr;
    }
    const Expr *&slot = call.bound[it - call.params.begin()];
    if (slot) {
      error(kw.loc) << "argument '" << kw.name << "' of '" << e.text << "' is given twice";
      return nullptr;
    }
    slot = kw.value.get();
  }
  for (size_t i = 0; i < call.params.size(); ++i)
    if (!call.bound[i] && !StringRef(fn->params[i]).ends_with("?")) {
      error(e.loc) << "call to '" << e.text << "' is missing argument '"
                   << call.params[i] << "'";
      return nullptr;
    }
  return fn->gen(*this, call);
}

//===----------------------------------------------------------------------===//
// Declarations and initializers
//===----------------------------------------------------------------------===//

std::optional<Type> MLIRGen::genType(const TypeSpec &t, bool allowSymbols,
                                     ArrayAttr *dims) {
  Type element;
  if (t.element == "f32")
    element = b.getF32Type();
  else if (t.element == "i32")
    element = b.getIntegerType(32);
  else {
    error(t.loc) << "unknown element type '" << t.element
                 << "'; expected f32 or i32" << didYouMean(t.element, {"f32", "i32"});
    return std::nullopt;
  }
  SmallVector<int64_t> shape;
  SmallVector<Attribute> dimAttrs;
  for (const Dim &d : t.dims) {
    if (!d.symbol.empty()) {
      if (!allowSymbols) {
        error(d.loc) << "parameter shapes must be static; '" << d.symbol
                     << "' is a symbolic dimension";
        return std::nullopt;
      }
      dimSymbols.insert(d.symbol);
      shape.push_back(ShapedType::kDynamic);
      dimAttrs.push_back(b.getStringAttr(d.symbol));
    } else {
      if (d.size < 1) {
        error(d.loc) << "dimension sizes must be positive, got " << d.size;
        return std::nullopt;
      }
      shape.push_back(d.size);
      dimAttrs.push_back(b.getI64IntegerAttr(d.size));
    }
  }
  if (shape::elements(shape) < 0) {
    error(t.loc) << "a tensor of shape " << shape::str(shape) << " has more than 2^40 elements, "
                 << "more than nnc can hold";
    return std::nullopt;
  }
  if (dims)
    *dims = b.getArrayAttr(dimAttrs);
  return RankedTensorType::get(shape, element);
}

/// Flattens a nested list literal, checking it against `shape`.
static bool flattenLiteral(const Expr &e, ArrayRef<int64_t> shape,
                           SmallVectorImpl<double> &out, const Expr *&bad,
                           std::string &why) {
  if (shape.empty()) {
    auto v = numberLiteral(e);
    if (!v) {
      bad = &e;
      why = "expected a number";
      return false;
    }
    out.push_back(*v);
    return true;
  }
  if (e.kind != Expr::List) {
    bad = &e;
    why = "expected a list of " + std::to_string(shape[0]) + " elements";
    return false;
  }
  if (static_cast<int64_t>(e.args.size()) != shape[0]) {
    bad = &e;
    why = "expected " + std::to_string(shape[0]) + " elements, found " +
          std::to_string(e.args.size());
    return false;
  }
  for (const ExprPtr &elt : e.args)
    if (!flattenLiteral(*elt, shape.drop_front(), out, bad, why))
      return false;
  return true;
}

DictionaryAttr MLIRGen::genLiteralInit(const Expr &e, RankedTensorType type,
                                       const std::string &name) {
  SmallVector<double> values;
  const Expr *bad = nullptr;
  std::string why;
  if (!flattenLiteral(e, type.getShape(), values, bad, why)) {
    error(bad->loc) << "literal for '" << name << "' does not match its type "
                    << shape::str(type.getShape()) << ": " << why;
    return nullptr;
  }
  DenseElementsAttr value;
  if (type.getElementType().isF32()) {
    SmallVector<float> fs(values.begin(), values.end());
    value = DenseElementsAttr::get(type, ArrayRef<float>(fs));
  } else {
    SmallVector<int32_t> is;
    for (double v : values)
      is.push_back(static_cast<int32_t>(v));
    value = DenseElementsAttr::get(type, ArrayRef<int32_t>(is));
  }
  return b.getDictionaryAttr({b.getNamedAttr("kind", b.getStringAttr("literal")),
                              b.getNamedAttr("value", value)});
}

DictionaryAttr MLIRGen::genInit(const Expr &e, RankedTensorType type,
                                const std::string &name, int64_t fanIn) {
  if (e.kind == Expr::List)
    return genLiteralInit(e, type, name);
  if (auto v = numberLiteral(e)) {
    return b.getDictionaryAttr({b.getNamedAttr("kind", b.getStringAttr("constant")),
                                b.getNamedAttr("value", b.getF64FloatAttr(*v))});
  }
  if (e.kind != Expr::Name && e.kind != Expr::Call) {
    error(e.loc) << "expected an initializer such as zeros, normal(std=0.01) or a "
                    "literal list";
    return nullptr;
  }
  const InitSpec *spec = nullptr;
  for (const InitSpec &s : initializers())
    if (e.text == s.name)
      spec = &s;
  if (!spec) {
    std::vector<std::string> names;
    for (const InitSpec &s : initializers())
      names.push_back(s.name);
    error(e.loc) << "unknown initializer '" << e.text << "'" << didYouMean(e.text, names);
    return nullptr;
  }
  // Bind arguments to the initializer's parameters.
  SmallVector<double> values;
  for (auto &p : spec->params)
    values.push_back(p.second);
  if (e.args.size() > values.size()) {
    error(e.loc) << "initializer '" << e.text << "' takes at most " << values.size()
                 << " arguments, got " << e.args.size();
    return nullptr;
  }
  auto setValue = [&](size_t i, const Expr &arg) {
    auto v = numberLiteral(arg);
    if (!v)
      error(arg.loc) << "initializer arguments must be numbers";
    else
      values[i] = *v;
    return v.has_value();
  };
  for (size_t i = 0; i < e.args.size(); ++i)
    if (!setValue(i, *e.args[i]))
      return nullptr;
  for (const KwArg &kw : e.kwargs) {
    auto it = llvm::find_if(spec->params, [&](auto &p) { return kw.name == p.first; });
    if (it == spec->params.end()) {
      std::vector<std::string> names;
      for (auto &p : spec->params)
        names.push_back(p.first);
      error(kw.loc) << "initializer '" << e.text << "' has no argument '" << kw.name
                    << "'" << didYouMean(kw.name, names);
      return nullptr;
    }
    if (!setValue(it - spec->params.begin(), *kw.value))
      return nullptr;
  }
  StringRef kind = spec->kind;
  auto [fin, fout] = fans(type.getShape());
  if (kind == "torch_default") {
    if (values[0] > 0)
      fin = static_cast<int64_t>(values[0]);
    else if (fanIn > 0)
      fin = fanIn;
    if (fin <= 0) {
      error(e.loc) << "torch_default for '" << name << "' (" << shape::str(type.getShape())
                   << ") needs fan_in=...: a rank-1 tensor has no fan-in of its own";
      return nullptr;
    }
  } else if (kind.starts_with("xavier") || kind.starts_with("he")) {
    if (type.getRank() < 2) {
      error(e.loc) << "initializer '" << e.text << "' needs a tensor of rank >= 2 to "
                   << "compute fan-in and fan-out; '" << name << "' is "
                   << shape::str(type.getShape());
      return nullptr;
    }
  }
  for (size_t i = 0; i < values.size(); ++i)
    if (std::isnan(values[i])) {
      error(e.loc) << "initializer '" << e.text << "' needs argument '"
                   << spec->params[i].first << "'";
      return nullptr;
    }
  if (kind == "uniform" && values[0] >= values[1]) {
    error(e.loc) << "uniform needs low < high, got " << num(values[0]) << " and " << num(values[1]);
    return nullptr;
  }
  if (kind == "normal" && values[1] < 0) {
    error(e.loc) << "normal needs std >= 0, got " << num(values[1]);
    return nullptr;
  }
  SmallVector<NamedAttribute> attrs = {b.getNamedAttr("kind", b.getStringAttr(kind))};
  for (size_t i = 0; i < values.size(); ++i)
    if (StringRef(spec->params[i].first) != "fan_in")
      attrs.push_back(b.getNamedAttr(spec->params[i].first, b.getF64FloatAttr(values[i])));
  if (fin > 0) {
    attrs.push_back(b.getNamedAttr("fan_in", b.getI64IntegerAttr(fin)));
    if (fout > 0)
      attrs.push_back(b.getNamedAttr("fan_out", b.getI64IntegerAttr(fout)));
  }
  return b.getDictionaryAttr(attrs);
}

Value MLIRGen::addArg(const std::string &name, Loc l, Type type, Role role,
                      DictionaryAttr init, ArrayAttr dims) {
  Value v = func.front().addArgument(type, loc(l));
  args.push_back({name, role, init, dims});
  define(name, l, v, role);
  return v;
}

bool MLIRGen::define(const std::string &name, Loc l, Value v, Role role) {
  auto [it, inserted] = scope.try_emplace(name, Binding{v, l, role});
  if (inserted)
    return true;
  error(l) << "'" << name << "' is already defined at line " << it->second.loc.line
           << ", column " << it->second.loc.col;
  return false;
}

void MLIRGen::genDecl(const Stmt &s) {
  bool isInput = s.kind == Stmt::Input;
  ArrayAttr dims;
  std::optional<Type> type = genType(s.type, isInput, &dims);
  if (!type) {
    scope.try_emplace(s.name, Binding{nullptr, s.nameLoc, Role::Value});
    return;
  }
  auto tensor = cast<RankedTensorType>(*type);
  if (isInput) {
    if (s.value)
      error(s.value->loc) << "input '" << s.name << "' cannot have an initializer";
    addArg(s.name, s.nameLoc, tensor, Role::Input, nullptr, dims);
    return;
  }
  Role role = s.kind == Stmt::Param ? Role::Param : Role::Frozen;
  if (role == Role::Param && !tensor.getElementType().isF32()) {
    error(s.type.loc) << "trainable parameter '" << s.name
                      << "' must be f32; declare integer tensors as frozen";
    scope.try_emplace(s.name, Binding{nullptr, s.nameLoc, Role::Value});
    return;
  }
  if (!s.value) {
    error(s.nameLoc) << (role == Role::Param ? "param" : "frozen tensor") << " '"
                     << s.name << "' needs an initializer, e.g. '= zeros'";
    scope.try_emplace(s.name, Binding{nullptr, s.nameLoc, Role::Value});
    return;
  }
  DictionaryAttr init = genInit(*s.value, tensor, s.name);
  if (!init) {
    scope.try_emplace(s.name, Binding{nullptr, s.nameLoc, Role::Value});
    return;
  }
  addArg(s.name, s.nameLoc, tensor, role, init);
}

//===----------------------------------------------------------------------===//
// The train section
//===----------------------------------------------------------------------===//

namespace {
struct OptimizerSpec {
  const char *name;
  const char *kind;
  std::vector<std::pair<const char *, double>> params; // NaN = required
};

const std::vector<OptimizerSpec> &optimizers() {
  static const double req = std::nan("");
  // Defaults are PyTorch's.
  static const std::vector<OptimizerSpec> table = {
      {"sgd", "sgd", {{"lr", req}, {"momentum", 0}, {"nesterov", 0}, {"weight_decay", 0}}},
      {"momentum", "sgd", {{"lr", req}, {"momentum", 0.9}, {"nesterov", 0}, {"weight_decay", 0}}},
      {"nesterov", "sgd", {{"lr", req}, {"momentum", 0.9}, {"nesterov", 1}, {"weight_decay", 0}}},
      {"adagrad", "adagrad", {{"lr", 0.01}, {"eps", 1e-10}, {"weight_decay", 0}}},
      {"rmsprop", "rmsprop",
       {{"lr", 0.01}, {"alpha", 0.99}, {"eps", 1e-8}, {"momentum", 0}, {"weight_decay", 0}}},
      {"adadelta", "adadelta", {{"lr", 1.0}, {"rho", 0.9}, {"eps", 1e-6}, {"weight_decay", 0}}},
      {"adam", "adam",
       {{"lr", 1e-3}, {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0}}},
      {"adamw", "adamw",
       {{"lr", 1e-3}, {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.01}}},
  };
  return table;
}
} // namespace

DictionaryAttr MLIRGen::genTrain(const TrainSection &t) {
  static const std::vector<std::string> keys = {
      "optimizer", "batch", "epochs", "seed", "data", "shuffle", "clip_norm", "validation"};
  SmallVector<NamedAttribute> out;
  llvm::StringMap<Loc> seen;
  unsigned before = errors;
  for (const KwArg &kw : t.entries) {
    if (!llvm::is_contained(keys, kw.name)) {
      error(kw.loc) << "unknown train setting '" << kw.name << "'" << didYouMean(kw.name, keys);
      continue;
    }
    if (auto [it, inserted] = seen.try_emplace(kw.name, kw.loc); !inserted) {
      error(kw.loc) << "train setting '" << kw.name << "' is already set at line "
                    << it->second.line;
      continue;
    }
    const Expr &v = *kw.value;
    StringRef key = kw.name;
    if (key == "batch" || key == "epochs" || key == "seed") {
      auto n = intLiteral(v);
      if (!n || *n < (key == "seed" ? 0 : 1)) {
        error(v.loc) << "train setting '" << key << "' must be "
                     << (key == "seed" ? "a non-negative" : "a positive") << " integer";
        continue;
      }
      out.push_back(b.getNamedAttr(key, b.getI64IntegerAttr(*n)));
    } else if (key == "shuffle") {
      if (v.kind != Expr::Bool) {
        error(v.loc) << "train setting 'shuffle' must be true or false";
        continue;
      }
      out.push_back(b.getNamedAttr(key, b.getBoolAttr(v.number != 0)));
    } else if (key == "clip_norm" || key == "validation") {
      auto x = numberLiteral(v);
      bool ok = x && (key == "clip_norm" ? *x > 0 : (*x >= 0 && *x < 1));
      if (!ok) {
        error(v.loc) << "train setting '" << key << "' must be "
                     << (key == "clip_norm" ? "a positive number" : "a fraction in [0, 1)");
        continue;
      }
      out.push_back(b.getNamedAttr(key, b.getF64FloatAttr(*x)));
    } else if (key == "data") {
      if (v.kind == Expr::String) {
        out.push_back(b.getNamedAttr(
            key, b.getDictionaryAttr({b.getNamedAttr("kind", b.getStringAttr("mnist")),
                                      b.getNamedAttr("path", b.getStringAttr(v.text))})));
        continue;
      }
      if (v.kind != Expr::Call || (v.text != "mnist" && v.text != "csv")) {
        error(v.loc) << "train setting 'data' must be mnist(\"dir\") or csv(\"file.csv\")";
        continue;
      }
      if (v.args.size() != 1 || v.args[0]->kind != Expr::String || !v.kwargs.empty()) {
        error(v.loc) << v.text << "(...) takes one string: the data path";
        continue;
      }
      out.push_back(b.getNamedAttr(
          key, b.getDictionaryAttr({b.getNamedAttr("kind", b.getStringAttr(v.text)),
                                    b.getNamedAttr("path", b.getStringAttr(v.args[0]->text))})));
    } else { // optimizer
      if (v.kind != Expr::Name && v.kind != Expr::Call) {
        error(v.loc) << "train setting 'optimizer' must name an optimizer, e.g. adam(lr=1e-3)";
        continue;
      }
      const OptimizerSpec *spec = nullptr;
      std::vector<std::string> names;
      for (const OptimizerSpec &o : optimizers()) {
        names.push_back(o.name);
        if (v.text == o.name)
          spec = &o;
      }
      if (!spec) {
        error(v.loc) << "unknown optimizer '" << v.text << "'" << didYouMean(v.text, names);
        continue;
      }
      SmallVector<double> values;
      for (auto &p : spec->params)
        values.push_back(p.second);
      bool ok = v.args.size() <= values.size();
      if (!ok)
        error(v.loc) << "optimizer '" << v.text << "' takes at most " << values.size()
                     << " arguments";
      for (size_t i = 0; ok && i < v.args.size(); ++i) {
        auto x = numberLiteral(*v.args[i]);
        if (!x && v.args[i]->kind == Expr::Bool)
          x = v.args[i]->number;
        if (!x) {
          error(v.args[i]->loc) << "optimizer arguments must be numbers";
          ok = false;
        } else {
          values[i] = *x;
        }
      }
      for (const KwArg &arg : v.kwargs) {
        if (!ok)
          break;
        auto it = llvm::find_if(spec->params, [&](auto &p) { return arg.name == p.first; });
        if (it == spec->params.end()) {
          std::vector<std::string> pnames;
          for (auto &p : spec->params)
            pnames.push_back(p.first);
          error(arg.loc) << "optimizer '" << v.text << "' has no argument '" << arg.name
                         << "'" << didYouMean(arg.name, pnames);
          ok = false;
          break;
        }
        auto x = numberLiteral(*arg.value);
        if (!x && arg.value->kind == Expr::Bool)
          x = arg.value->number;
        if (!x) {
          error(arg.value->loc) << "optimizer arguments must be numbers";
          ok = false;
          break;
        }
        values[it - spec->params.begin()] = *x;
      }
      if (!ok)
        continue;
      SmallVector<NamedAttribute> opt = {b.getNamedAttr("kind", b.getStringAttr(spec->kind))};
      for (size_t i = 0; i < values.size(); ++i) {
        if (std::isnan(values[i])) {
          error(v.loc) << "optimizer '" << v.text << "' needs argument '"
                       << spec->params[i].first << "'";
          ok = false;
          break;
        }
        if (values[i] < 0) {
          error(v.loc) << "optimizer argument '" << spec->params[i].first
                       << "' must be non-negative, got " << num(values[i]);
          ok = false;
          break;
        }
        // Decay rates of running averages, as torch.optim checks them.
        StringRef name = spec->params[i].first;
        bool rate = name == "beta1" || name == "beta2" || name == "rho";
        if (rate && values[i] >= (name == "rho" ? 1.0 + 1e-12 : 1.0)) {
          error(v.loc) << "optimizer argument '" << name << "' must be in [0, "
                       << (name == "rho" ? "1]" : "1)") << ", got " << num(values[i]);
          ok = false;
          break;
        }
        opt.push_back(b.getNamedAttr(spec->params[i].first, b.getF64FloatAttr(values[i])));
      }
      if (ok)
        out.push_back(b.getNamedAttr(key, b.getDictionaryAttr(opt)));
    }
  }
  return errors == before ? b.getDictionaryAttr(out) : nullptr;
}

//===----------------------------------------------------------------------===//
// Models
//===----------------------------------------------------------------------===//

void MLIRGen::genStmt(const Stmt &s) {
  switch (s.kind) {
  case Stmt::Input:
  case Stmt::Param:
  case Stmt::Frozen:
    genDecl(s);
    return;
  case Stmt::Assign: {
    target = s.name;
    Value v = genExpr(*s.value);
    if (scope.count(s.name)) {
      define(s.name, s.nameLoc, v, Role::Value); // reports the redefinition
      return;
    }
    scope.try_emplace(s.name, Binding{v, s.nameLoc, Role::Value});
    return;
  }
  case Stmt::Output:
  case Stmt::Minimize:
    return; // resolved once the whole body is known
  }
}

void MLIRGen::genModel(const Model &m) {
  Location fnLoc = loc(m.loc);
  func = func::FuncOp::create(fnLoc, m.name.empty() ? "model" : m.name,
                              b.getFunctionType({}, {}));
  Block *body = func.addEntryBlock();
  b.setInsertionPointToStart(body);
  for (const Stmt &s : m.stmts)
    genStmt(s);

  // Outputs, then the loss.
  SmallVector<Value> results;
  SmallVector<DictionaryAttr> resultAttrs;
  auto result = [&](const std::string &name, Loc l, StringRef role) -> Value {
    auto it = scope.find(name);
    if (it == scope.end()) {
      std::vector<std::string> names;
      for (auto &entry : scope)
        names.push_back(entry.getKey().str());
      error(l) << "unknown name '" << name << "'" << didYouMean(name, names);
      return nullptr;
    }
    Value v = it->second.value;
    if (!v)
      return nullptr;
    results.push_back(v);
    resultAttrs.push_back(
        b.getDictionaryAttr({b.getNamedAttr(nnops::attr::kName, b.getStringAttr(name)),
                             b.getNamedAttr(nnops::attr::kRole, b.getStringAttr(role))}));
    return v;
  };
  const Stmt *minimize = nullptr;
  for (const Stmt &s : m.stmts) {
    if (s.kind == Stmt::Output)
      for (auto &[name, l] : s.names)
        result(name, l, "output");
    if (s.kind == Stmt::Minimize) {
      if (minimize) {
        error(s.loc) << "a model minimizes one loss; already minimizing '" << minimize->name
                     << "' (line " << minimize->loc.line << ")";
        continue;
      }
      minimize = &s;
    }
  }
  if (minimize) {
    if (Value v = result(minimize->name, minimize->nameLoc, "loss")) {
      auto type = cast<RankedTensorType>(v.getType());
      if (type.getRank() != 0 || !type.getElementType().isF32())
        error(minimize->nameLoc) << "the minimized loss must be an f32 scalar, but '"
                                 << minimize->name << "' is " << typeStr(type);
    }
  }
  if (results.empty() && errors == 0)
    error(m.loc) << "model '" << m.name << "' has no 'output' and nothing to 'minimize'";

  b.create<func::ReturnOp>(fnLoc, results);
  SmallVector<Type> argTypes(body->getArgumentTypes());
  SmallVector<Type> resultTypes;
  for (Value v : results)
    resultTypes.push_back(v.getType());
  func.setType(b.getFunctionType(argTypes, resultTypes));
  static const char *roles[] = {"input", "param", "frozen", "state", "value"};
  for (auto [i, a] : llvm::enumerate(args)) {
    SmallVector<NamedAttribute> attrs = {
        b.getNamedAttr(nnops::attr::kName, b.getStringAttr(a.name)),
        b.getNamedAttr(nnops::attr::kRole, b.getStringAttr(roles[static_cast<int>(a.role)]))};
    if (a.init)
      attrs.push_back(b.getNamedAttr(nnops::attr::kInit, a.init));
    if (a.dims)
      attrs.push_back(b.getNamedAttr(nnops::attr::kDims, a.dims));
    func.setArgAttrs(i, b.getDictionaryAttr(attrs));
  }
  for (auto [i, attrs] : llvm::enumerate(resultAttrs))
    func.setResultAttrs(i, attrs);
}

OwningOpRef<ModuleOp> MLIRGen::gen(const File &ast) {
  OwningOpRef<ModuleOp> module = ModuleOp::create(FileLineColLoc::get(file, 1, 1));
  if (ast.models.empty()) {
    error(Loc{1, 1}) << "no model in this file; expected 'model NAME { ... }'";
    return nullptr;
  }
  for (const Model &extra : llvm::ArrayRef(ast.models).drop_front())
    error(extra.loc) << "a file holds one model; '" << extra.name
                     << "' follows '" << ast.models[0].name << "'";
  genModel(ast.models[0]);
  module->push_back(func);
  (*module)->setAttr(nnops::attr::kModel, b.getStringAttr(ast.models[0].name));
  if (ast.train)
    if (DictionaryAttr train = genTrain(*ast.train))
      (*module)->setAttr(nnops::attr::kTrain, train);
  if (errors)
    return nullptr;
  if (failed(verify(*module)))
    return nullptr;
  return module;
}

OwningOpRef<ModuleOp> nnc::mlirGen(MLIRContext &ctx, const File &file,
                                   StringRef filename) {
  return MLIRGen(ctx, filename).gen(file);
}
