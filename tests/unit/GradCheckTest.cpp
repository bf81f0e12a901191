//===- GradCheckTest.cpp - every gradient rule against finite differences ===//
//
// Each case is a small model around one op (or a composition), checked on
// every parameter element (and every f32 input element) against central
// finite differences on the reference evaluator.
//
//===----------------------------------------------------------------------===//

#include "OpCases.h"
#include "TestUtil.h"

#include "compiler/reference/GradCheck.h"

#include <gtest/gtest.h>

using namespace nnc;
using nnc::test::Case;
using nnc::test::cases;
using nnc::test::model;

namespace {

class GradCheckOp : public ::testing::TestWithParam<Case> {};

TEST_P(GradCheckOp, MatchesFiniteDifferences) {
  const Case &c = GetParam();
  std::string src = model(c);
  test::Compiled m(src, Stage::Nn);
  ASSERT_TRUE(m.module) << c.name << ": " << m.firstError() << "\n" << src;
  ref::GradCheckOptions opts;
  opts.samples = 0; // every element
  opts.batch = 3;
  opts.wrtInputs = c.wrtInputs;
  std::string table;
  llvm::raw_string_ostream os(table);
  auto report = ref::gradcheck(*m.module, opts, os);
  ASSERT_TRUE(succeeded(report)) << m.firstError();
  EXPECT_TRUE(report->passed) << table;
  EXPECT_FALSE(report->rows.empty());
}

INSTANTIATE_TEST_SUITE_P(Ops, GradCheckOp, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return std::string(info.param.name); });

} // namespace
