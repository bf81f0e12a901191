//===- Lexer.h - tokens of the .nn language ---------------------*- C++ -*-===//
//
// Splits a .nn buffer into tokens. Newlines are tokens (they end statements);
// the parser skips them inside parentheses and brackets, so a long call may
// span lines.
// `#` starts a comment that runs to the end of the line. The lexer never
// fails: bad characters become Error tokens that the parser reports.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_FRONTEND_LEXER_H
#define NNC_COMPILER_FRONTEND_LEXER_H

#include "compiler/frontend/AST.h"

#include "llvm/ADT/StringRef.h"

#include <string>

namespace nnc {

enum class Tok {
  Eof,
  Newline,
  Ident,
  Number,
  String,
  LParen,
  RParen,
  LBracket,
  RBracket,
  LBrace,
  RBrace,
  Comma,
  Colon,
  Semicolon,
  Equal,
  Plus,
  Minus,
  Star,
  StarStar,
  Slash,
  At,
  Error, // text holds the message
};

/// Spelling of a token kind for messages ("')'", "a name", ...).
llvm::StringRef spell(Tok kind);

/// Source text as the lexer and diagnostics expect it: a leading UTF-8
/// byte-order mark dropped, and old Mac line ends (a CR alone) turned into
/// LF, so that lines are numbered as an editor shows them. CRLF stays: the
/// lexer treats CR as blank.
std::string normalizeSource(llvm::StringRef text);

struct Token {
  Tok kind = Tok::Eof;
  Loc loc;
  std::string text; // identifier, number or string contents; error message
};

class Lexer {
public:
  explicit Lexer(llvm::StringRef buffer) : buf(buffer) {}

  /// Returns the next token; Eof forever at the end.
  Token next();

private:
  char peek(size_t ahead = 0) const {
    return pos + ahead < buf.size() ? buf[pos + ahead] : '\0';
  }
  char advance();
  Token make(Tok kind, Loc loc, std::string text = {}) {
    return Token{kind, loc, std::move(text)};
  }
  Token lexNumber(Loc start);
  Token lexString(Loc start);

  llvm::StringRef buf;
  size_t pos = 0;
  unsigned line = 1, col = 1;
};

} // namespace nnc

#endif // NNC_COMPILER_FRONTEND_LEXER_H
