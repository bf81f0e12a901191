//===- ParserTest.cpp - the .nn parser ------------------------------------===//

#include "compiler/frontend/Parser.h"

#include <gtest/gtest.h>

using namespace nnc;

namespace {

struct Parsed {
  File file;
  std::vector<std::string> errors;
};

Parsed parse(llvm::StringRef text) {
  Parsed p;
  Parser parser(text, [&](Loc l, const std::string &msg) {
    p.errors.push_back(std::to_string(l.line) + ":" + std::to_string(l.col) + ": " + msg);
  });
  p.file = parser.parseFile();
  EXPECT_EQ(parser.errors() > 0, !p.errors.empty());
  return p;
}

std::string dump(const Parsed &p) {
  std::string s;
  llvm::raw_string_ostream os(s);
  dumpAST(p.file, os);
  return s;
}

TEST(Parser, ModelStatements) {
  auto p = parse("model mlp {\n"
                 "  input x: f32[B, 784]\n"
                 "  param w: f32[784, 10] = he_normal\n"
                 "  frozen c: f32 = 2\n"
                 "  y = x @ w\n"
                 "  output y\n"
                 "  minimize y\n"
                 "}\n");
  ASSERT_TRUE(p.errors.empty());
  ASSERT_EQ(p.file.models.size(), 1u);
  const Model &m = p.file.models[0];
  EXPECT_EQ(m.name, "mlp");
  ASSERT_EQ(m.stmts.size(), 6u);
  EXPECT_EQ(m.stmts[0].kind, Stmt::Input);
  ASSERT_EQ(m.stmts[0].type.dims.size(), 2u);
  EXPECT_EQ(m.stmts[0].type.dims[0].symbol, "B");
  EXPECT_EQ(m.stmts[0].type.dims[1].size, 784);
  EXPECT_EQ(m.stmts[1].kind, Stmt::Param);
  EXPECT_EQ(m.stmts[1].value->text, "he_normal");
  EXPECT_EQ(m.stmts[2].kind, Stmt::Frozen);
  EXPECT_TRUE(m.stmts[2].type.dims.empty());
  EXPECT_EQ(m.stmts[3].kind, Stmt::Assign);
  EXPECT_EQ(m.stmts[3].value->text, "@");
  EXPECT_EQ(m.stmts[4].kind, Stmt::Output);
  EXPECT_EQ(m.stmts[5].kind, Stmt::Minimize);
}

TEST(Parser, CallArguments) {
  auto p = parse("model m {\n  y = conv2d(x, 32, kernel=5, padding=[2, 2],)\n}");
  ASSERT_TRUE(p.errors.empty());
  const Expr &call = *p.file.models[0].stmts[0].value;
  EXPECT_EQ(call.kind, Expr::Call);
  EXPECT_EQ(call.text, "conv2d");
  ASSERT_EQ(call.args.size(), 2u);
  EXPECT_TRUE(call.args[1]->isInteger);
  ASSERT_EQ(call.kwargs.size(), 2u);
  EXPECT_EQ(call.kwargs[0].name, "kernel");
  EXPECT_EQ(call.kwargs[1].value->kind, Expr::List);
  EXPECT_EQ(call.kwargs[1].value->args.size(), 2u);
}

TEST(Parser, MultiLineCallsAndSemicolons) {
  auto p = parse("model m {\n  y = f(a,\n        b)\n  z = y; output z\n}");
  ASSERT_TRUE(p.errors.empty()) << p.errors[0];
  EXPECT_EQ(p.file.models[0].stmts.size(), 3u);
}

TEST(Parser, Precedence) {
  auto p = parse("model m {\n  y = -a + b * c ** d ** e @ f\n}");
  ASSERT_TRUE(p.errors.empty());
  // (-a) + ((b * (c ** (d ** e))) @ f)
  EXPECT_EQ(dump(p), "model m @1:1\n"
                     "  let y @2:3\n"
                     "    binary + @2:10\n"
                     "      neg @2:7\n"
                     "        name a @2:8\n"
                     "      binary @ @2:28\n"
                     "        binary * @2:14\n"
                     "          name b @2:12\n"
                     "          binary ** @2:18\n"
                     "            name c @2:16\n"
                     "            binary ** @2:23\n"
                     "              name d @2:21\n"
                     "              name e @2:26\n"
                     "        name f @2:30\n");
}

TEST(Parser, TrainSection) {
  auto p = parse("model m {\n  output x\n}\ntrain {\n  optimizer = adam(lr=1e-3)\n  batch = 64\n}\n");
  ASSERT_TRUE(p.errors.empty());
  ASSERT_TRUE(p.file.train.has_value());
  ASSERT_EQ(p.file.train->entries.size(), 2u);
  EXPECT_EQ(p.file.train->entries[0].name, "optimizer");
  EXPECT_EQ(p.file.train->entries[0].value->kwargs[0].value->number, 1e-3);
  EXPECT_EQ(p.file.train->entries[1].value->number, 64);
}

TEST(Parser, RecoversAndReportsEachBadStatement) {
  auto p = parse("model m {\n  a = \n  b = (1 +\n  c = 2\n  d = 1 2\n  e = 1\n}\n");
  ASSERT_EQ(p.errors.size(), 3u);
  EXPECT_EQ(p.errors[0], "2:7: expected an expression, found end of line");
  // Inside the open parenthesis the newline is whitespace: `(1 + c` then '='.
  EXPECT_EQ(p.errors[1], "4:5: expected ')', found '='");
  EXPECT_EQ(p.errors[2], "5:9: expected end of statement, found number 2");
  // The statement after the errors still parses.
  ASSERT_EQ(p.file.models[0].stmts.size(), 1u);
  EXPECT_EQ(p.file.models[0].stmts[0].name, "e");
}

TEST(Parser, StopsAfterTooManyErrors) {
  std::string text = "model m {\n";
  for (int i = 0; i < 50; ++i)
    text += "  x = )\n";
  text += "}\n";
  auto p = parse(text);
  ASSERT_EQ(p.errors.size(), Parser::kMaxErrors + 1);
  EXPECT_NE(p.errors.back().find("too many errors"), std::string::npos);
}

TEST(Parser, DeepNestingIsAnErrorNotACrash) {
  std::string text = "model m {\n  y = " + std::string(100000, '(') + "x\n}";
  auto p = parse(text);
  ASSERT_FALSE(p.errors.empty());
  EXPECT_NE(p.errors[0].find("nested too deeply"), std::string::npos);
}

TEST(Parser, EmptyAndCommentOnlyFiles) {
  EXPECT_TRUE(parse("").errors.empty());
  EXPECT_TRUE(parse("# nothing\n\n").file.models.empty());
}

} // namespace
