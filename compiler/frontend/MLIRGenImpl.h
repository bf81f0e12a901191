//===- MLIRGenImpl.h - the walk from AST to the nn dialect ------*- C++ -*-===//
//
// Internal to the frontend: the MLIRGen class, whose walk over the AST and
// model and train sections live in MLIRGen.cpp, and whose builtins (the
// table, argument access, op families and layers) live in Builtins.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_FRONTEND_MLIRGENIMPL_H
#define NNC_COMPILER_FRONTEND_MLIRGENIMPL_H

#include "compiler/frontend/MLIRGen.h"
#include "compiler/frontend/Parser.h"
#include "runtime/Call.h"

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
#include <map>
#include <set>

namespace nnc::frontend {

using namespace mlir;
namespace nnops = nnc::nn;

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

/// The initializers a parameter may name (`init=...`).
const std::vector<InitSpec> &initializers();

/// Fan-in and fan-out of a parameter. Rank 2 weights are [in, out] (they
/// multiply as `x @ w`); rank >= 3 weights are OIHW.
std::pair<int64_t, int64_t> fans(ArrayRef<int64_t> shape);

class MLIRGen {
public:
  MLIRGen(MLIRContext &ctx, StringRef filename)
      : ctx(ctx), b(&ctx), file(StringAttr::get(&ctx, filename)) {}

  OwningOpRef<ModuleOp> gen(const File &ast);

  // The rest is used by the builtins (Builtins.cpp).
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

  /// A source position; inside a block, with the call sites that expanded
  /// it (so a diagnostic names the line in the block and the call).
  Location loc(Loc l) {
    Location at = FileLineColLoc::get(file, l.line, l.col);
    return caller ? CallSiteLoc::get(at, caller) : at;
  }
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
  DictionaryAttr genDataSource(const Expr &v);
  bool callOf(const Expr &e, rt::Call &out);
  std::vector<int64_t> imageDims();

  // Expressions.
  Value genExpr(const Expr &e);
  Value genBinary(const Expr &e);
  Value genCall(const Expr &e);

  // Blocks (MLIRGen.cpp).
  bool declareBlocks(const std::vector<BlockDef> &blocks);
  Value genBlockCall(const BlockDef &blk, const Expr &e);
  /// `e` as a literal (number, bool, string or list of them) when it is
  /// one, or arithmetic on them and on the constant arguments in
  /// `consts`; null otherwise.
  ExprPtr fold(const Expr &e, const llvm::StringMap<const Expr *> &consts);
  /// `e`, or its folded literal when it mentions a constant argument of the
  /// block being expanded (`stride=stride`, `planes * 4`).
  const Expr *resolved(const Expr *e);
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
  Value adaptiveAvgPool(Call &c);

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

  // The block expansion in progress: the prefix of the names it declares
  // (`layer1.0.`), its constant arguments, the call sites around it.
  llvm::StringMap<const BlockDef *> blockTable;
  std::string namePrefix;
  llvm::StringMap<const Expr *> constants;
  LocationAttr caller;
  unsigned blockDepth = 0;
  static constexpr unsigned kMaxBlockDepth = 64;
  std::vector<ExprPtr> folded;          // literals made by `resolved`, kept alive
  llvm::StringMap<Loc> argNames;        // every declared tensor's full name
  std::set<std::string> blockPrefixes;  // full prefixes of the calls made
};


/// The builtin functions, by name.
const std::vector<Builtin> &builtins();

/// "; did you mean 'NAME'?" for the closest candidate, or nothing.
std::string didYouMean(StringRef name, ArrayRef<std::string> candidates);
/// A tensor type as the language writes it: "i32 [?, 4]".
std::string typeStr(Type t);
/// A number in a message as a user would write it: 0.1, 1e-05, 3.
std::string num(double v);
/// The value of an integer or number literal (with its sign), if `e` is one.
std::optional<int64_t> intLiteral(const Expr &e);
std::optional<double> numberLiteral(const Expr &e);

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

} // namespace nnc::frontend

#endif // NNC_COMPILER_FRONTEND_MLIRGENIMPL_H
