//===- AST.h - abstract syntax tree of the .nn language ---------*- C++ -*-===//
//
// The parser's output: a file holds models and at most one `train` section.
// Expressions are one small tagged struct (numbers, strings, names, lists,
// negation, binary operators, calls with keyword arguments); meaning is given
// later by MLIRGen's builtin table, so the AST knows no op names.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_FRONTEND_AST_H
#define NNC_COMPILER_FRONTEND_AST_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nnc {

/// A 1-based source position.
struct Loc {
  unsigned line = 0, col = 0;
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct KwArg {
  std::string name;
  Loc loc;
  ExprPtr value;
};

struct Expr {
  enum Kind { Number, String, Bool, Name, List, Neg, Binary, Call };
  Kind kind;
  Loc loc;
  double number = 0;      // Number, Bool (0 or 1)
  bool isInteger = false; // Number written without '.' or exponent
  std::string text;       // Name, String, Call callee, Binary operator
  std::vector<ExprPtr> args; // Call positionals, List elements, operands
  std::vector<KwArg> kwargs; // Call keyword arguments
  /// Operator nodes from here to the deepest leaf; the parser bounds it, so
  /// every later walk (and the destructor) recurses at most that deep.
  unsigned height = 1;

  Expr(Kind kind, Loc loc) : kind(kind), loc(loc) {}
};

/// One axis of a declared type: a size, or a symbol such as `B`.
struct Dim {
  int64_t size = 0;
  std::string symbol;
  Loc loc;
};

struct TypeSpec {
  std::string element; // "f32" or "i32"
  std::vector<Dim> dims;
  Loc loc;
};

struct Stmt {
  enum Kind { Input, Param, Frozen, Assign, Output, Minimize, Return };
  Kind kind;
  Loc loc;
  std::string name;       // declared, assigned or minimized name
  Loc nameLoc;
  TypeSpec type;          // Input, Param, Frozen
  ExprPtr value;          // Param/Frozen initializer, Assign or Return value
  std::vector<std::pair<std::string, Loc>> names; // Output
};

struct Model {
  std::string name;
  Loc loc;
  std::vector<Stmt> stmts;
};

/// One parameter of a block: a tensor or a constant (a number, string,
/// boolean or list), with an optional default.
struct BlockParam {
  std::string name;
  Loc loc;
  ExprPtr dflt;
};

/// `block NAME(params) { stmts; return EXPR }`: statements declared once and
/// expanded at each call, with parameters named after the call site.
struct BlockDef {
  std::string name;
  Loc loc;
  std::vector<BlockParam> params;
  std::vector<Stmt> stmts;
};

struct TrainSection {
  Loc loc;
  std::vector<KwArg> entries;
};

struct File {
  std::vector<BlockDef> blocks;
  std::vector<Model> models;
  std::optional<TrainSection> train;
};

/// Prints the tree as indented text (`nnc compile --emit=ast`).
void dumpAST(const File &file, llvm::raw_ostream &os);

} // namespace nnc

#endif // NNC_COMPILER_FRONTEND_AST_H
