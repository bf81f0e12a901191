//===- Parser.h - recursive-descent parser for .nn files --------*- C++ -*-===//
//
// Grammar (newlines or ';' end statements; see docs/language.md):
//
//   file    := (block | model | train)*
//   block   := 'block' NAME '(' (arg (',' arg)*)? ')' '{' stmt* '}'
//   arg     := NAME ('=' expr)?
//   model   := 'model' NAME '{' stmt* '}'
//   stmt    := ('input' | 'param' | 'frozen') NAME ':' type ('=' expr)?
//            | NAME '=' expr | 'output' NAME (',' NAME)* | 'minimize' NAME
//            | 'return' expr
//   type    := ('f32' | 'i32') ('[' dim (',' dim)* ']')?
//   train   := 'train' '{' (NAME '=' expr)* '}'
//   expr    := sum;  sum := prod (('+'|'-') prod)*
//   prod    := unary (('*'|'/'|'@') unary)*;  unary := '-' unary | power
//   power   := atom ('**' unary)?
//   atom    := NUMBER | STRING | NAME | NAME '(' args ')' | '(' expr ')'
//            | '[' (expr (',' expr)*)? ']'
//
// Errors go to a callback with their position; after an error the parser
// skips to the next statement, so one run reports several errors. It stops
// after kMaxErrors. It never recurses deeper than kMaxDepth.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_FRONTEND_PARSER_H
#define NNC_COMPILER_FRONTEND_PARSER_H

#include "compiler/frontend/AST.h"
#include "compiler/frontend/Lexer.h"

#include <functional>

namespace nnc {

using DiagFn = std::function<void(Loc, const std::string &)>;

class Parser {
public:
  static constexpr unsigned kMaxErrors = 20;
  static constexpr unsigned kMaxDepth = 200;
  /// The most operators on one path of an expression tree (`a + b + ...`
  /// builds a left-deep chain without nesting).
  static constexpr unsigned kMaxHeight = 1000;

  Parser(llvm::StringRef buffer, DiagFn diag) : lexer(buffer), diag(std::move(diag)) {
    tok = lexer.next();
  }

  /// Parses the whole buffer. The result is complete only when errors() == 0.
  File parseFile();
  unsigned errors() const { return numErrors; }

private:
  /// Moves to the next token; inside ( ) and [ ] newlines are whitespace.
  void consume() {
    if (tok.kind == Tok::LParen || tok.kind == Tok::LBracket)
      ++nesting;
    else if ((tok.kind == Tok::RParen || tok.kind == Tok::RBracket) && nesting > 0)
      --nesting;
    tok = lexer.next();
    while (nesting > 0 && tok.kind == Tok::Newline)
      tok = lexer.next();
  }
  bool at(Tok kind) const { return tok.kind == kind; }
  bool atKeyword(llvm::StringRef kw) const {
    return tok.kind == Tok::Ident && tok.text == kw;
  }
  /// Consumes a `kind` token or reports "expected <what>".
  bool expect(Tok kind, llvm::StringRef what);
  void error(Loc loc, const std::string &msg);
  void errorHere(const std::string &expected);
  void skipNewlines();
  /// Skips to the end of the current statement (not past a '}').
  void recover();
  bool endOfStatement();

  void parseModel(File &file);
  void parseBlock(File &file);
  /// The statements of a model's or block's body, up to its '}'.
  void parseBody(std::vector<Stmt> &stmts, const std::string &what, Loc opened);
  void parseTrain(File &file);
  bool parseStmt(std::vector<Stmt> &stmts);
  bool parseDecl(Stmt &stmt);
  bool parseType(TypeSpec &type);

  ExprPtr parseExpr();
  ExprPtr parseSum();
  /// Reports an expression taller than kMaxHeight; false then.
  bool checkHeight(const Expr &e);
  ExprPtr parseProduct();
  ExprPtr parseUnary();
  ExprPtr parsePower();
  ExprPtr parseAtom();
  bool parseArgs(Expr &call);

  Lexer lexer;
  DiagFn diag;
  Token tok;
  unsigned numErrors = 0;
  unsigned depth = 0;
  unsigned nesting = 0; // open ( and [ around the current token
  bool stopped = false;
};

} // namespace nnc

#endif // NNC_COMPILER_FRONTEND_PARSER_H
