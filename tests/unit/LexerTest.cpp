//===- LexerTest.cpp - tokens of the .nn language -------------------------===//

#include "compiler/frontend/Lexer.h"

#include <gtest/gtest.h>

using namespace nnc;

namespace {

std::vector<Token> lexAll(llvm::StringRef text) {
  Lexer lexer(text);
  std::vector<Token> out;
  for (;;) {
    out.push_back(lexer.next());
    if (out.back().kind == Tok::Eof)
      return out;
  }
}

std::vector<Tok> kinds(llvm::StringRef text) {
  std::vector<Tok> out;
  for (const Token &t : lexAll(text))
    out.push_back(t.kind);
  return out;
}

TEST(Lexer, PunctuationAndOperators) {
  EXPECT_EQ(kinds("( ) [ ] { } , : ; = + - * ** / @"),
            (std::vector<Tok>{Tok::LParen, Tok::RParen, Tok::LBracket, Tok::RBracket,
                              Tok::LBrace, Tok::RBrace, Tok::Comma, Tok::Colon,
                              Tok::Semicolon, Tok::Equal, Tok::Plus, Tok::Minus,
                              Tok::Star, Tok::StarStar, Tok::Slash, Tok::At, Tok::Eof}));
}

TEST(Lexer, IdentifiersMayBeDotted) {
  auto toks = lexAll("fc1.w x_2 a.b.c .5");
  ASSERT_EQ(toks.size(), 5u);
  EXPECT_EQ(toks[0].text, "fc1.w");
  EXPECT_EQ(toks[1].text, "x_2");
  EXPECT_EQ(toks[2].text, "a.b.c");
  EXPECT_EQ(toks[3].kind, Tok::Number);
  EXPECT_EQ(toks[3].text, ".5");
}

TEST(Lexer, Numbers) {
  auto toks = lexAll("1 2.5 1e-3 3E+2 7.");
  std::vector<std::string> texts;
  for (auto &t : toks)
    if (t.kind == Tok::Number)
      texts.push_back(t.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"1", "2.5", "1e-3", "3E+2", "7."}));
}

TEST(Lexer, MalformedNumberIsOneErrorToken) {
  auto toks = lexAll("1.2.3 + 4abc");
  ASSERT_EQ(toks[0].kind, Tok::Error);
  EXPECT_EQ(toks[0].text, "malformed number '1.2.3'");
  EXPECT_EQ(toks[1].kind, Tok::Plus);
  EXPECT_EQ(toks[2].kind, Tok::Error);
  EXPECT_EQ(toks[2].text, "malformed number '4abc'");
}

TEST(Lexer, CommentsAndNewlines) {
  EXPECT_EQ(kinds("a # comment ( [\nb"),
            (std::vector<Tok>{Tok::Ident, Tok::Newline, Tok::Ident, Tok::Eof}));
}

TEST(Lexer, Positions) {
  auto toks = lexAll("model m {\n  input x\n}");
  EXPECT_EQ(toks[0].loc.line, 1u);
  EXPECT_EQ(toks[0].loc.col, 1u);
  EXPECT_EQ(toks[1].loc.col, 7u);
  // "input" on line 2, column 3.
  EXPECT_EQ(toks[4].text, "input");
  EXPECT_EQ(toks[4].loc.line, 2u);
  EXPECT_EQ(toks[4].loc.col, 3u);
}

TEST(Lexer, Strings) {
  auto toks = lexAll("\"data/mnist\" \"open");
  EXPECT_EQ(toks[0].kind, Tok::String);
  EXPECT_EQ(toks[0].text, "data/mnist");
  EXPECT_EQ(toks[1].kind, Tok::Error);
  EXPECT_EQ(toks[1].text, "unterminated string");
}

TEST(Lexer, BadCharacters) {
  auto toks = lexAll("$\x7f");
  EXPECT_EQ(toks[0].text, "unexpected character '$'");
  EXPECT_EQ(toks[1].text, "unexpected character byte 0x7f");
  EXPECT_EQ(toks[2].kind, Tok::Eof);
}

TEST(Lexer, EofIsSticky) {
  Lexer lexer("x");
  EXPECT_EQ(lexer.next().kind, Tok::Ident);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(lexer.next().kind, Tok::Eof);
}

} // namespace
