//===- Parser.cpp - recursive-descent parser for .nn files ----------------===//

#include "compiler/frontend/Parser.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

using namespace nnc;

void Parser::error(Loc loc, const std::string &msg) {
  if (stopped)
    return;
  if (++numErrors > kMaxErrors) {
    diag(loc, "too many errors, stopping");
    stopped = true;
    return;
  }
  diag(loc, msg);
}

void Parser::errorHere(const std::string &expected) {
  if (at(Tok::Error)) {
    error(tok.loc, tok.text);
    return;
  }
  std::string found = spell(tok.kind).str();
  if (at(Tok::Ident))
    found = "'" + tok.text + "'";
  else if (at(Tok::Number))
    found = "number " + tok.text;
  error(tok.loc, "expected " + expected + ", found " + found);
}

bool Parser::expect(Tok kind, llvm::StringRef what) {
  if (at(kind)) {
    consume();
    return true;
  }
  errorHere(what.str());
  return false;
}

void Parser::skipNewlines() {
  while (at(Tok::Newline) || at(Tok::Semicolon))
    consume();
}

void Parser::recover() {
  // Skip the rest of the statement, ending at a newline even inside an
  // unclosed parenthesis; braces opened on the way are balanced.
  nesting = 0;
  int braces = 0;
  while (!at(Tok::Eof)) {
    if (braces == 0 && (at(Tok::Newline) || at(Tok::Semicolon) || at(Tok::RBrace)))
      return;
    if (at(Tok::LBrace))
      ++braces;
    else if (at(Tok::RBrace))
      --braces;
    tok = lexer.next();
  }
}

bool Parser::endOfStatement() {
  if (at(Tok::Newline) || at(Tok::Semicolon) || at(Tok::RBrace) || at(Tok::Eof))
    return true;
  errorHere("end of statement");
  return false;
}

File Parser::parseFile() {
  File file;
  for (;;) {
    skipNewlines();
    if (at(Tok::Eof) || stopped)
      break;
    if (atKeyword("model")) {
      parseModel(file);
    } else if (atKeyword("block")) {
      parseBlock(file);
    } else if (atKeyword("train")) {
      parseTrain(file);
    } else {
      errorHere("'model', 'block' or 'train'");
      // Resynchronize at the next top-level keyword.
      do
        consume();
      while (!at(Tok::Eof) && !atKeyword("model") && !atKeyword("block") && !atKeyword("train"));
      nesting = 0;
    }
  }
  return file;
}

void Parser::parseModel(File &file) {
  Model model;
  model.loc = tok.loc;
  consume(); // 'model'
  if (at(Tok::Ident)) {
    model.name = tok.text;
    consume();
  } else {
    errorHere("a model name");
  }
  if (!expect(Tok::LBrace, "'{' to open the model body")) {
    recover();
    file.models.push_back(std::move(model));
    return;
  }
  parseBody(model.stmts, "model '" + model.name + "'", model.loc);
  file.models.push_back(std::move(model));
}

void Parser::parseBody(std::vector<Stmt> &stmts, const std::string &what, Loc opened) {
  for (;;) {
    skipNewlines();
    if (at(Tok::RBrace)) {
      consume();
      break;
    }
    if (at(Tok::Eof)) {
      error(tok.loc, "expected '}' to close " + what + " opened at line " + std::to_string(opened.line));
      break;
    }
    if (stopped)
      break;
    if (!parseStmt(stmts))
      recover();
  }
}

void Parser::parseBlock(File &file) {
  BlockDef blk;
  blk.loc = tok.loc;
  consume(); // 'block'
  if (at(Tok::Ident)) {
    blk.name = tok.text;
    consume();
  } else {
    errorHere("a block name");
  }
  auto give_up = [&] {
    recover();
    file.blocks.push_back(std::move(blk));
  };
  if (!expect(Tok::LParen, "'(' to open the arguments of block '" + blk.name + "'"))
    return give_up();
  while (!at(Tok::RParen)) {
    if (!blk.params.empty() && !expect(Tok::Comma, "',' or ')' in the arguments of block '" + blk.name + "'"))
      return give_up();
    if (!at(Tok::Ident)) {
      errorHere("an argument name");
      return give_up();
    }
    BlockParam p;
    p.name = tok.text;
    p.loc = tok.loc;
    consume();
    if (at(Tok::Equal)) {
      consume();
      if (!(p.dflt = parseExpr()))
        return give_up();
    }
    blk.params.push_back(std::move(p));
  }
  consume(); // ')'
  if (!expect(Tok::LBrace, "'{' to open the body of block '" + blk.name + "'"))
    return give_up();
  parseBody(blk.stmts, "block '" + blk.name + "'", blk.loc);
  file.blocks.push_back(std::move(blk));
}

void Parser::parseTrain(File &file) {
  if (file.train)
    error(tok.loc, "a file has at most one 'train' section; the first is at line " +
                       std::to_string(file.train->loc.line));
  TrainSection train;
  train.loc = tok.loc;
  consume(); // 'train'
  if (!expect(Tok::LBrace, "'{' to open the train section")) {
    recover();
    return;
  }
  for (;;) {
    skipNewlines();
    if (at(Tok::RBrace)) {
      consume();
      break;
    }
    if (at(Tok::Eof)) {
      error(tok.loc, "expected '}' to close the train section opened at line " +
                         std::to_string(train.loc.line));
      break;
    }
    if (stopped)
      break;
    KwArg entry;
    entry.loc = tok.loc;
    if (!at(Tok::Ident)) {
      errorHere("a setting name");
      recover();
      continue;
    }
    entry.name = tok.text;
    consume();
    if (!expect(Tok::Equal, "'=' after the setting name")) {
      recover();
      continue;
    }
    entry.value = parseExpr();
    if (!entry.value || !endOfStatement()) {
      recover();
      continue;
    }
    train.entries.push_back(std::move(entry));
  }
  if (!file.train)
    file.train = std::move(train);
}

bool Parser::parseStmt(std::vector<Stmt> &stmts) {
  Stmt stmt;
  stmt.loc = tok.loc;
  if (!at(Tok::Ident)) {
    errorHere("a statement");
    return false;
  }
  if (atKeyword("input") || atKeyword("param") || atKeyword("frozen")) {
    stmt.kind = atKeyword("input")   ? Stmt::Input
                : atKeyword("param") ? Stmt::Param
                                     : Stmt::Frozen;
    consume();
    if (!parseDecl(stmt))
      return false;
  } else if (atKeyword("output")) {
    stmt.kind = Stmt::Output;
    consume();
    do {
      if (!stmt.names.empty())
        consume(); // ','
      if (!at(Tok::Ident)) {
        errorHere("the name of an output");
        return false;
      }
      stmt.names.emplace_back(tok.text, tok.loc);
      consume();
    } while (at(Tok::Comma));
  } else if (atKeyword("return")) {
    stmt.kind = Stmt::Return;
    consume();
    if (!(stmt.value = parseExpr()))
      return false;
  } else if (atKeyword("minimize")) {
    stmt.kind = Stmt::Minimize;
    consume();
    if (!at(Tok::Ident)) {
      errorHere("the name of the value to minimize");
      return false;
    }
    stmt.name = tok.text;
    stmt.nameLoc = tok.loc;
    consume();
  } else {
    stmt.kind = Stmt::Assign;
    stmt.name = tok.text;
    stmt.nameLoc = tok.loc;
    consume();
    if (!expect(Tok::Equal, "'=' after '" + stmt.name + "'"))
      return false;
    stmt.value = parseExpr();
    if (!stmt.value)
      return false;
  }
  if (!endOfStatement())
    return false;
  stmts.push_back(std::move(stmt));
  return true;
}

bool Parser::parseDecl(Stmt &stmt) {
  if (!at(Tok::Ident)) {
    errorHere("a name to declare");
    return false;
  }
  stmt.name = tok.text;
  stmt.nameLoc = tok.loc;
  consume();
  if (!expect(Tok::Colon, "':' and a type after '" + stmt.name + "'"))
    return false;
  if (!parseType(stmt.type))
    return false;
  if (at(Tok::Equal)) {
    consume();
    stmt.value = parseExpr();
    if (!stmt.value)
      return false;
  }
  return true;
}

bool Parser::parseType(TypeSpec &type) {
  type.loc = tok.loc;
  if (!at(Tok::Ident)) {
    errorHere("a type such as f32[B, 784]");
    return false;
  }
  type.element = tok.text;
  consume();
  if (!at(Tok::LBracket))
    return true; // a scalar
  consume();
  for (;;) {
    Dim dim;
    dim.loc = tok.loc;
    if (at(Tok::Number)) {
      char *end = nullptr;
      errno = 0;
      long long v = std::strtoll(tok.text.c_str(), &end, 10);
      if (*end != '\0' || errno == ERANGE || v > (1LL << 40)) {
        error(tok.loc, "dimension '" + tok.text + "' must be a whole number below 2^40");
        return false;
      }
      dim.size = v;
    } else if (at(Tok::Ident)) {
      dim.symbol = tok.text;
    } else {
      errorHere("a dimension (a size or a name such as B)");
      return false;
    }
    consume();
    type.dims.push_back(dim);
    if (at(Tok::Comma)) {
      consume();
      continue;
    }
    return expect(Tok::RBracket, "',' or ']' in the type");
  }
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

namespace {
/// Bounds recursion so that deeply nested input cannot overflow the stack.
struct DepthGuard {
  unsigned &depth;
  explicit DepthGuard(unsigned &d) : depth(d) { ++depth; }
  ~DepthGuard() { --depth; }
};
} // namespace

ExprPtr Parser::parseExpr() {
  DepthGuard guard(depth);
  if (depth > kMaxDepth) {
    error(tok.loc, "expression nested too deeply");
    return nullptr;
  }
  return parseSum();
}

static ExprPtr binary(const char *op, Loc loc, ExprPtr lhs, ExprPtr rhs) {
  auto e = std::make_unique<Expr>(Expr::Binary, loc);
  e->text = op;
  e->height = std::max(lhs->height, rhs->height) + 1;
  e->args.push_back(std::move(lhs));
  e->args.push_back(std::move(rhs));
  return e;
}

bool Parser::checkHeight(const Expr &e) {
  if (e.height <= kMaxHeight)
    return true;
  error(e.loc, "expression too long: more than " + std::to_string(kMaxHeight) +
                   " operators in a chain; split it into several statements");
  return false;
}

ExprPtr Parser::parseSum() {
  ExprPtr lhs = parseProduct();
  while (lhs && (at(Tok::Plus) || at(Tok::Minus))) {
    const char *op = at(Tok::Plus) ? "+" : "-";
    Loc loc = tok.loc;
    consume();
    ExprPtr rhs = parseProduct();
    if (!rhs)
      return nullptr;
    lhs = binary(op, loc, std::move(lhs), std::move(rhs));
    if (!checkHeight(*lhs))
      return nullptr;
  }
  return lhs;
}

ExprPtr Parser::parseProduct() {
  ExprPtr lhs = parseUnary();
  while (lhs && (at(Tok::Star) || at(Tok::Slash) || at(Tok::At))) {
    const char *op = at(Tok::Star) ? "*" : at(Tok::Slash) ? "/" : "@";
    Loc loc = tok.loc;
    consume();
    ExprPtr rhs = parseUnary();
    if (!rhs)
      return nullptr;
    lhs = binary(op, loc, std::move(lhs), std::move(rhs));
    if (!checkHeight(*lhs))
      return nullptr;
  }
  return lhs;
}

ExprPtr Parser::parseUnary() {
  DepthGuard guard(depth);
  if (depth > kMaxDepth) {
    error(tok.loc, "expression nested too deeply");
    return nullptr;
  }
  if (at(Tok::Minus)) {
    auto e = std::make_unique<Expr>(Expr::Neg, tok.loc);
    consume();
    ExprPtr operand = parseUnary();
    if (!operand)
      return nullptr;
    e->height = operand->height + 1;
    e->args.push_back(std::move(operand));
    if (!checkHeight(*e))
      return nullptr;
    return e;
  }
  return parsePower();
}

ExprPtr Parser::parsePower() {
  ExprPtr base = parseAtom();
  if (base && at(Tok::StarStar)) {
    Loc loc = tok.loc;
    consume();
    ExprPtr exponent = parseUnary(); // right-associative
    if (!exponent)
      return nullptr;
    ExprPtr e = binary("**", loc, std::move(base), std::move(exponent));
    return checkHeight(*e) ? std::move(e) : nullptr;
  }
  return base;
}

ExprPtr Parser::parseAtom() {
  Loc loc = tok.loc;
  switch (tok.kind) {
  case Tok::Number: {
    auto e = std::make_unique<Expr>(Expr::Number, loc);
    char *end = nullptr;
    e->number = std::strtod(tok.text.c_str(), &end);
    e->isInteger = tok.text.find_first_of(".eE") == std::string::npos;
    // Every number ends up as f32 (tensors) or feeds f32 math (settings,
    // initializers): one beyond f32's range would surface as inf much later.
    if (!(std::fabs(e->number) <= 3.4028234663852886e38)) {
      error(loc, "number '" + tok.text + "' is beyond f32's range (about 3.4e38)");
      consume();
      return nullptr;
    }
    consume();
    return e;
  }
  case Tok::String: {
    auto e = std::make_unique<Expr>(Expr::String, loc);
    e->text = tok.text;
    consume();
    return e;
  }
  case Tok::Ident: {
    if (tok.text == "true" || tok.text == "false") {
      auto e = std::make_unique<Expr>(Expr::Bool, loc);
      e->number = tok.text == "true";
      consume();
      return e;
    }
    auto e = std::make_unique<Expr>(Expr::Name, loc);
    e->text = tok.text;
    consume();
    if (at(Tok::LParen)) {
      e->kind = Expr::Call;
      if (!parseArgs(*e))
        return nullptr;
      for (const ExprPtr &a : e->args)
        e->height = std::max(e->height, a->height + 1);
      for (const KwArg &k : e->kwargs)
        e->height = std::max(e->height, k.value->height + 1);
      if (!checkHeight(*e))
        return nullptr;
    }
    return e;
  }
  case Tok::LParen: {
    consume();
    ExprPtr inner = parseExpr();
    if (!inner || !expect(Tok::RParen, "')'"))
      return nullptr;
    return inner;
  }
  case Tok::LBracket: {
    auto e = std::make_unique<Expr>(Expr::List, loc);
    consume();
    while (!at(Tok::RBracket)) {
      ExprPtr elt = parseExpr();
      if (!elt)
        return nullptr;
      e->height = std::max(e->height, elt->height + 1);
      if (!checkHeight(*e))
        return nullptr;
      e->args.push_back(std::move(elt));
      if (at(Tok::Comma))
        consume();
      else if (!at(Tok::RBracket)) {
        errorHere("',' or ']' in the list");
        return nullptr;
      }
    }
    consume();
    return e;
  }
  default:
    errorHere("an expression");
    return nullptr;
  }
}

bool Parser::parseArgs(Expr &call) {
  consume(); // '('
  while (!at(Tok::RParen)) {
    // `name = value` is a keyword argument; a bare expression a positional one.
    bool keyword = false;
    if (at(Tok::Ident)) {
      Token name = tok;
      Lexer saved = lexer;
      consume();
      if (at(Tok::Equal)) {
        consume();
        keyword = true;
        KwArg kw{name.text, name.loc, parseExpr()};
        if (!kw.value)
          return false;
        call.kwargs.push_back(std::move(kw));
      } else {
        lexer = saved;
        tok = name;
      }
    }
    if (!keyword) {
      Loc argLoc = tok.loc;
      ExprPtr arg = parseExpr();
      if (!arg)
        return false;
      if (!call.kwargs.empty()) {
        error(argLoc, "positional argument follows keyword argument in call to '" +
                          call.text + "'");
        return false;
      }
      call.args.push_back(std::move(arg));
    }
    if (at(Tok::Comma)) {
      consume();
      continue; // a trailing comma is allowed
    }
    if (!at(Tok::RParen)) {
      errorHere("',' or ')' in the call to '" + call.text + "'");
      return false;
    }
  }
  consume(); // ')'
  return true;
}
