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

#include "compiler/frontend/MLIRGenImpl.h"

using namespace mlir;
using namespace nnc;
using namespace nnc::frontend;

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

std::string frontend::didYouMean(StringRef name, ArrayRef<std::string> candidates) {
  std::string best = closest(name, candidates);
  return best.empty() ? std::string() : "; did you mean '" + best + "'?";
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

Value MLIRGen::genExpr(const Expr &e) {
  switch (e.kind) {
  case Expr::Number:
    return scalar(e.loc, e.number, b.getF32Type());
  case Expr::Name: {
    if (const Expr *c = constants.lookup(e.text))
      return genExpr(*c);
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
  if (const BlockDef *blk = blockTable.lookup(e.text))
    return genBlockCall(*blk, e);
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
  for (const Expr *&arg : call.bound)
    arg = resolved(arg);
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
  // Inside a block the name is local; the model's tensor is named after
  // the calls around it.
  std::string full = namePrefix + name;
  auto [it, fresh] = argNames.try_emplace(full, l);
  if (!fresh) {
    error(l) << "the tensor name '" << full << "' is already used (line " << it->second.line << ", column "
             << it->second.col << ")";
    return nullptr;
  }
  Value v = func.front().addArgument(type, loc(l));
  args.push_back({full, role, init, dims});
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
  case Stmt::Return:
    error(s.loc) << "'return' ends a block; a model names its results with 'output'";
    return;
  }
}

//===----------------------------------------------------------------------===//
// Blocks
//===----------------------------------------------------------------------===//

/// Checks the blocks of a file and makes them callable by name.
bool MLIRGen::declareBlocks(const std::vector<BlockDef> &blocks) {
  unsigned before = errors;
  const llvm::StringMap<const Expr *> none;
  for (const BlockDef &blk : blocks) {
    if (llvm::any_of(builtins(), [&](const Builtin &bi) { return bi.name == blk.name; })) {
      error(blk.loc) << "block '" << blk.name << "' has the name of a builtin function";
      continue;
    }
    if (const BlockDef *other = blockTable.lookup(blk.name)) {
      error(blk.loc) << "block '" << blk.name << "' is already defined at line " << other->loc.line;
      continue;
    }
    llvm::StringSet<> seen;
    for (const BlockParam &p : blk.params) {
      if (p.name == "name")
        error(p.loc) << "'name' names a call's tensors (name=\"layer1.0\"); choose another argument name";
      else if (!seen.insert(p.name).second)
        error(p.loc) << "block '" << blk.name << "' has two arguments named '" << p.name << "'";
      else if (p.dflt && !fold(*p.dflt, none))
        error(p.dflt->loc) << "the default of '" << p.name << "' must be a number, string, boolean or list";
    }
    for (const Stmt &st : blk.stmts) {
      if (st.kind == Stmt::Input)
        error(st.loc) << "a block takes its tensors as arguments; 'input' belongs to the model";
      else if (st.kind == Stmt::Output || st.kind == Stmt::Minimize)
        error(st.loc) << "'" << (st.kind == Stmt::Output ? "output" : "minimize")
                      << "' belongs to the model; a block gives its result with 'return'";
      else if (st.kind == Stmt::Return && &st != &blk.stmts.back())
        error(st.loc) << "'return' must be the last statement of block '" << blk.name << "'";
    }
    if (blk.stmts.empty() || blk.stmts.back().kind != Stmt::Return)
      error(blk.loc) << "block '" << blk.name << "' must end with 'return EXPRESSION'";
    blockTable[blk.name] = &blk;
  }
  return errors == before;
}

ExprPtr MLIRGen::fold(const Expr &e, const llvm::StringMap<const Expr *> &consts) {
  switch (e.kind) {
  case Expr::Number:
  case Expr::Bool:
  case Expr::String: {
    auto c = std::make_unique<Expr>(e.kind, e.loc);
    c->number = e.number;
    c->isInteger = e.isInteger;
    c->text = e.text;
    return c;
  }
  case Expr::Name:
    if (const Expr *c = consts.lookup(e.text)) {
      ExprPtr r = fold(*c, {});
      if (r)
        r->loc = e.loc;
      return r;
    }
    return nullptr;
  case Expr::List: {
    auto list = std::make_unique<Expr>(Expr::List, e.loc);
    for (const ExprPtr &a : e.args) {
      ExprPtr x = fold(*a, consts);
      if (!x)
        return nullptr;
      list->height = std::max(list->height, x->height + 1);
      list->args.push_back(std::move(x));
    }
    return list;
  }
  case Expr::Neg: {
    ExprPtr x = fold(*e.args[0], consts);
    if (!x || x->kind != Expr::Number)
      return nullptr;
    x->number = -x->number;
    x->loc = e.loc;
    return x;
  }
  case Expr::Binary: {
    ExprPtr l = fold(*e.args[0], consts), r = l ? fold(*e.args[1], consts) : nullptr;
    if (!l || !r || l->kind != Expr::Number || r->kind != Expr::Number)
      return nullptr;
    double v;
    if (e.text == "+")
      v = l->number + r->number;
    else if (e.text == "-")
      v = l->number - r->number;
    else if (e.text == "*")
      v = l->number * r->number;
    else if (e.text == "/" && r->number != 0)
      v = l->number / r->number;
    else
      return nullptr;
    auto n = std::make_unique<Expr>(Expr::Number, e.loc);
    n->number = v;
    n->isInteger = l->isInteger && r->isInteger && e.text != "/";
    return n;
  }
  case Expr::Call:
    return nullptr;
  }
  return nullptr;
}

const Expr *MLIRGen::resolved(const Expr *e) {
  if (!e || constants.empty())
    return e;
  std::function<bool(const Expr &)> mentions = [&](const Expr &x) {
    if (x.kind == Expr::Name && constants.count(x.text))
      return true;
    return llvm::any_of(x.args, [&](const ExprPtr &a) { return mentions(*a); });
  };
  if (!mentions(*e))
    return e;
  ExprPtr f = fold(*e, constants);
  if (!f)
    return e; // mixed with tensors: genExpr resolves the names
  folded.push_back(std::move(f));
  return folded.back().get();
}

/// Expands a call of `blk`: arguments bound in the caller's scope (tensors
/// evaluated, constants folded), then the block's statements in a scope of
/// their own, declaring tensors under the call's prefix.
Value MLIRGen::genBlockCall(const BlockDef &blk, const Expr &e) {
  if (blockDepth >= kMaxBlockDepth) {
    error(e.loc) << "block calls nest more than " << kMaxBlockDepth << " deep (does '" << blk.name
                 << "' call itself?)";
    return nullptr;
  }
  std::vector<const Expr *> bound(blk.params.size(), nullptr);
  const Expr *name = nullptr;
  if (e.args.size() > blk.params.size()) {
    error(e.args[blk.params.size()]->loc) << "block '" << blk.name << "' takes at most " << blk.params.size()
                                          << " argument" << (blk.params.size() == 1 ? "" : "s") << ", got "
                                          << e.args.size();
    return nullptr;
  }
  for (size_t i = 0; i < e.args.size(); ++i)
    bound[i] = e.args[i].get();
  for (const KwArg &kw : e.kwargs) {
    if (kw.name == "name") {
      name = kw.value.get();
      continue;
    }
    auto it = llvm::find_if(blk.params, [&](const BlockParam &p) { return p.name == kw.name; });
    if (it == blk.params.end()) {
      std::vector<std::string> names;
      for (const BlockParam &p : blk.params)
        names.push_back(p.name);
      error(kw.loc) << "block '" << blk.name << "' has no argument '" << kw.name << "'" << didYouMean(kw.name, names);
      return nullptr;
    }
    const Expr *&slot = bound[it - blk.params.begin()];
    if (slot) {
      error(kw.loc) << "argument '" << kw.name << "' of '" << blk.name << "' is given twice";
      return nullptr;
    }
    slot = kw.value.get();
  }
  // The call's prefix: name="...", else the assigned name (then _1, _2, ...
  // when another call took it).
  std::string local = target;
  if (name) {
    name = resolved(name);
    if (name->kind != Expr::String || name->text.empty()) {
      error(name->loc) << "the name of a call of '" << blk.name << "' must be a non-empty string";
      return nullptr;
    }
    local = name->text;
    if (blockPrefixes.count(namePrefix + local)) {
      error(name->loc) << "the name '" << namePrefix + local << "' is already used by another call";
      return nullptr;
    }
  } else {
    for (int i = 1; blockPrefixes.count(namePrefix + local); ++i)
      local = target + "_" + std::to_string(i);
  }
  blockPrefixes.insert(namePrefix + local);

  // Arguments, in the caller's scope.
  llvm::StringMap<const Expr *> consts;
  std::vector<std::pair<const BlockParam *, Value>> tensors;
  bool ok = true;
  for (auto [i, p] : llvm::enumerate(blk.params)) {
    const Expr *a = bound[i];
    ExprPtr c = a ? fold(*a, constants) : p.dflt ? fold(*p.dflt, {}) : nullptr;
    if (!a && !c) {
      error(e.loc) << "call to block '" << blk.name << "' is missing argument '" << p.name << "'";
      ok = false;
      continue;
    }
    if (c) {
      folded.push_back(std::move(c));
      consts[p.name] = folded.back().get();
      continue;
    }
    Value v = genExpr(*a);
    ok &= v != nullptr;
    tensors.emplace_back(&p, v);
  }
  if (!ok)
    return nullptr;

  // The body, in a scope of its own.
  Location site = loc(e.loc);
  llvm::StringMap<Binding> outerScope = std::move(scope);
  llvm::StringMap<const Expr *> outerConstants = std::move(constants);
  std::string outerPrefix = namePrefix, outerTarget = target;
  LocationAttr outerCaller = caller;
  scope.clear();
  constants = std::move(consts);
  namePrefix = outerPrefix + local + ".";
  caller = site;
  ++blockDepth;
  for (auto &[p, v] : tensors)
    scope.try_emplace(p->name, Binding{v, p->loc, Role::Value});
  Value result;
  for (const Stmt &st : blk.stmts) {
    if (st.kind == Stmt::Return) {
      target = "out";
      result = genExpr(*st.value);
    } else if (st.kind != Stmt::Input && st.kind != Stmt::Output && st.kind != Stmt::Minimize) {
      genStmt(st);
    }
  }
  --blockDepth;
  scope = std::move(outerScope);
  constants = std::move(outerConstants);
  namePrefix = outerPrefix;
  target = outerTarget;
  caller = outerCaller;
  return result;
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
  declareBlocks(ast.blocks);
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
