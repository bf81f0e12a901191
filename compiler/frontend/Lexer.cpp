//===- Lexer.cpp - tokens of the .nn language -----------------------------===//

#include "compiler/frontend/Lexer.h"

#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cctype>

using namespace nnc;

llvm::StringRef nnc::spell(Tok kind) {
  switch (kind) {
  case Tok::Eof: return "end of file";
  case Tok::Newline: return "end of line";
  case Tok::Ident: return "a name";
  case Tok::Number: return "a number";
  case Tok::String: return "a string";
  case Tok::LParen: return "'('";
  case Tok::RParen: return "')'";
  case Tok::LBracket: return "'['";
  case Tok::RBracket: return "']'";
  case Tok::LBrace: return "'{'";
  case Tok::RBrace: return "'}'";
  case Tok::Comma: return "','";
  case Tok::Colon: return "':'";
  case Tok::Semicolon: return "';'";
  case Tok::Equal: return "'='";
  case Tok::Plus: return "'+'";
  case Tok::Minus: return "'-'";
  case Tok::Star: return "'*'";
  case Tok::StarStar: return "'**'";
  case Tok::Slash: return "'/'";
  case Tok::At: return "'@'";
  case Tok::Error: return "an invalid token";
  }
  return "a token";
}

char Lexer::advance() {
  char c = buf[pos++];
  if (c == '\n') {
    ++line;
    col = 1;
  } else {
    ++col;
  }
  return c;
}

static bool isIdentStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}
static bool isIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}
static bool isDigit(char c) { return std::isdigit(static_cast<unsigned char>(c)); }

Token Lexer::next() {
  for (;;) {
    char c = peek();
    if (c == '#') {
      while (pos < buf.size() && peek() != '\n')
        advance();
      continue;
    }
    if (c == '\n')
      break;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      advance();
      continue;
    }
    break;
  }
  Loc start{line, col};
  if (pos >= buf.size())
    return make(Tok::Eof, start);
  char c = advance();
  if (isIdentStart(c)) {
    size_t begin = pos - 1;
    // Dotted names (`fc1.w`) name the parameters a layer declares.
    while (isIdentChar(peek()) || (peek() == '.' && isIdentStart(peek(1))))
      advance();
    return make(Tok::Ident, start, buf.slice(begin, pos).str());
  }
  if (isDigit(c) || (c == '.' && isDigit(peek())))
    return lexNumber(start);
  switch (c) {
  case '\n': return make(Tok::Newline, start);
  case '(': return make(Tok::LParen, start);
  case '[': return make(Tok::LBracket, start);
  case ')': return make(Tok::RParen, start);
  case ']': return make(Tok::RBracket, start);
  case '{': return make(Tok::LBrace, start);
  case '}': return make(Tok::RBrace, start);
  case ',': return make(Tok::Comma, start);
  case ':': return make(Tok::Colon, start);
  case ';': return make(Tok::Semicolon, start);
  case '=': return make(Tok::Equal, start);
  case '+': return make(Tok::Plus, start);
  case '-': return make(Tok::Minus, start);
  case '/': return make(Tok::Slash, start);
  case '@': return make(Tok::At, start);
  case '"': return lexString(start);
  case '*':
    if (peek() == '*') {
      advance();
      return make(Tok::StarStar, start);
    }
    return make(Tok::Star, start);
  default: break;
  }
  std::string shown = std::isprint(static_cast<unsigned char>(c))
                          ? std::string("'") + c + "'"
                          : llvm::formatv("byte {0:x2}", static_cast<unsigned char>(c)).str();
  return make(Tok::Error, start, "unexpected character " + shown);
}

Token Lexer::lexNumber(Loc start) {
  size_t begin = pos - 1;
  while (isDigit(peek()) || peek() == '.')
    advance();
  if (peek() == 'e' || peek() == 'E') {
    size_t save = pos;
    unsigned saveCol = col;
    advance();
    if (peek() == '+' || peek() == '-')
      advance();
    if (!isDigit(peek())) {
      pos = save;
      col = saveCol;
    }
    while (isDigit(peek()))
      advance();
  }
  std::string text = buf.slice(begin, pos).str();
  if (std::count(text.begin(), text.end(), '.') > 1 || isIdentChar(peek())) {
    while (isIdentChar(peek()) || peek() == '.')
      advance();
    return make(Tok::Error, start,
                "malformed number '" + buf.slice(begin, pos).str() + "'");
  }
  return make(Tok::Number, start, text);
}

Token Lexer::lexString(Loc start) {
  std::string text;
  while (pos < buf.size() && peek() != '"' && peek() != '\n')
    text += advance();
  if (peek() != '"')
    return make(Tok::Error, start, "unterminated string");
  advance();
  return make(Tok::String, start, text);
}

std::string nnc::normalizeSource(llvm::StringRef text) {
  if (text.starts_with("\xEF\xBB\xBF"))
    text = text.drop_front(3);
  std::string out(text);
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i] == '\r' && (i + 1 == out.size() || out[i + 1] != '\n'))
      out[i] = '\n';
  return out;
}
