//===- EvaluatorTest.cpp - reference kernels against hand-computed values -===//

#include "compiler/reference/Evaluator.h"
#include "dialects/nn/NNDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace mlir;
using nnc::ref::Tensor;

namespace {

/// Parses `ir` (one function @f) and runs it on `args`.
std::vector<Tensor> run(const std::string &ir, std::vector<Tensor> args) {
  MLIRContext ctx;
  ctx.loadDialect<nnc::nn::NNDialect, func::FuncDialect>();
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(ir, &ctx);
  EXPECT_TRUE(module) << ir;
  if (!module)
    return {};
  auto fn = module->lookupSymbol<func::FuncOp>("f");
  auto out = nnc::ref::Evaluator().run(fn, args);
  EXPECT_TRUE(succeeded(out));
  return succeeded(out) ? *out : std::vector<Tensor>{};
}

void expectNear(const Tensor &t, std::vector<double> want, double tol = 1e-12) {
  ASSERT_EQ(t.data.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(t.data[i], want[i], tol) << "element " << i;
}

Tensor iota(std::vector<int64_t> shape, double from = 1) {
  Tensor t = Tensor::filled(std::move(shape));
  for (size_t i = 0; i < t.data.size(); ++i)
    t.data[i] = from + static_cast<double>(i);
  return t;
}

TEST(Evaluator, Conv2dStrideAndPadding) {
  Tensor x = iota({1, 1, 3, 3}), w{{1, 1, 2, 2}, {1, 0, 0, 1}};
  auto plain = run(R"(func.func @f(%x: tensor<1x1x3x3xf32>, %w: tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32> {
    %y = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 0, 0>} : tensor<1x1x3x3xf32>, tensor<1x1x2x2xf32>
    return %y : tensor<1x1x2x2xf32>
  })", {x, w});
  expectNear(plain[0], {6, 8, 12, 14});
  auto strided = run(R"(func.func @f(%x: tensor<1x1x3x3xf32>, %w: tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32> {
    %y = nn.conv2d %x, %w {stride = array<i64: 2, 2>, padding = array<i64: 1, 1>} : tensor<1x1x3x3xf32>, tensor<1x1x2x2xf32>
    return %y : tensor<1x1x2x2xf32>
  })", {x, w});
  expectNear(strided[0], {1, 3, 7, 14});
}

TEST(Evaluator, GroupedConvolutionKeepsGroupsApart) {
  // Two groups of one channel: output 0 sees only channel 0, output 1 only 1.
  Tensor x{{1, 2, 1, 1}, {3, 5}}, w{{2, 1, 1, 1}, {2, 10}};
  auto out = run(R"(func.func @f(%x: tensor<1x2x1x1xf32>, %w: tensor<2x1x1x1xf32>) -> tensor<1x2x1x1xf32> {
    %y = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 0, 0>, groups = 2} : tensor<1x2x1x1xf32>, tensor<2x1x1x1xf32>
    return %y : tensor<1x2x1x1xf32>
  })", {x, w});
  expectNear(out[0], {6, 50});
}

TEST(Evaluator, Pooling) {
  Tensor x{{1, 1, 2, 2}, {1, 2, 3, 4}};
  auto out = run(R"(func.func @f(%x: tensor<1x1x2x2xf32>) -> (tensor<1x1x3x3xf32>, tensor<1x1x3x3xf32>, tensor<1x1x1x1xf32>) {
    %a = nn.avg_pool2d %x {kernel = array<i64: 2, 2>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<1x1x2x2xf32>
    %b = nn.avg_pool2d %x {kernel = array<i64: 2, 2>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>, count_include_pad = false} : tensor<1x1x2x2xf32>
    %m = nn.max_pool2d %x {kernel = array<i64: 2, 2>, stride = array<i64: 2, 2>, padding = array<i64: 0, 0>} : tensor<1x1x2x2xf32>
    return %a, %b, %m : tensor<1x1x3x3xf32>, tensor<1x1x3x3xf32>, tensor<1x1x1x1xf32>
  })", {x});
  expectNear(out[0], {0.25, 0.75, 0.5, 1.0, 2.5, 1.5, 0.75, 1.75, 1.0});
  expectNear(out[1], {1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4});
  expectNear(out[2], {4});
}

TEST(Evaluator, SoftmaxAndLosses) {
  Tensor logits{{1, 3}, {1, 2, 3}}, zeros{{2, 2}, {0, 0, 0, 0}}, labels{{2}, {0, 1}};
  auto out = run(R"(func.func @f(%x: tensor<1x3xf32>, %z: tensor<2x2xf32>, %y: tensor<2xi32>) -> (tensor<1x3xf32>, tensor<1x3xf32>, tensor<f32>, tensor<1xi32>) {
    %s = nn.softmax %x {axis = 1 : i64} : tensor<1x3xf32>
    %l = nn.log_softmax %x {axis = 1 : i64} : tensor<1x3xf32>
    %c = nn.softmax_cross_entropy %z, %y : tensor<2x2xf32>, tensor<2xi32>
    %a = nn.argmax %x {axis = 1 : i64} : tensor<1x3xf32>
    return %s, %l, %c, %a : tensor<1x3xf32>, tensor<1x3xf32>, tensor<f32>, tensor<1xi32>
  })", {logits, zeros, labels});
  double z = std::exp(1) + std::exp(2) + std::exp(3);
  expectNear(out[0], {std::exp(1) / z, std::exp(2) / z, std::exp(3) / z});
  expectNear(out[1], {1 - std::log(z), 2 - std::log(z), 3 - std::log(z)});
  expectNear(out[2], {std::log(2.0)});
  expectNear(out[3], {2});
}

TEST(Evaluator, PointwiseLossesAndReductions) {
  Tensor p{{2}, {0.5, 0.25}}, t{{2}, {1, 0}};
  auto out = run(R"(func.func @f(%p: tensor<2xf32>, %t: tensor<2xf32>) -> (tensor<f32>, tensor<f32>, tensor<2xf32>, tensor<f32>) {
    %b = nn.bce_loss %p, %t : tensor<2xf32>, tensor<2xf32>
    %m = nn.mse_loss %p, %t {reduction = "sum"} : tensor<2xf32>, tensor<2xf32>
    %a = nn.l1_loss %p, %t {reduction = "none"} : tensor<2xf32>, tensor<2xf32>
    %x = nn.reduce_max %p {axes = array<i64>} : tensor<2xf32>
    return %b, %m, %a, %x : tensor<f32>, tensor<f32>, tensor<2xf32>, tensor<f32>
  })", {p, t});
  expectNear(out[0], {(-std::log(0.5) - std::log(0.75)) / 2});
  expectNear(out[1], {0.25 + 0.0625});
  expectNear(out[2], {0.5, 0.25});
  expectNear(out[3], {0.5});
}

TEST(Evaluator, LocalResponseNormFollowsPyTorch) {
  // size 2: the window of channel c is c-1..c; d = k + alpha/size * sum x^2.
  Tensor x{{1, 3, 1, 1}, {1, 2, 3}};
  auto out = run(R"(func.func @f(%x: tensor<1x3x1x1xf32>) -> tensor<1x3x1x1xf32> {
    %y = nn.local_response_norm %x {size = 2 : i64, alpha = 1.0 : f32, beta = 1.0 : f32, k = 1.0 : f32} : tensor<1x3x1x1xf32>
    return %y : tensor<1x3x1x1xf32>
  })", {x});
  expectNear(out[0], {1 / 1.5, 2 / 3.5, 3 / 7.5});
}

TEST(Evaluator, NormalizationUsesBiasedVariance) {
  Tensor x{{2, 2}, {1, 4, 3, 8}}, one{{2}, {1, 1}}, zero{{2}, {0, 0}};
  auto out = run(R"(func.func @f(%x: tensor<2x2xf32>, %g: tensor<2xf32>, %b: tensor<2xf32>) -> (tensor<2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>) {
    %y:3 = nn.batch_norm %x, %g, %b, %b, %g {eps = 0.0 : f32, momentum = 0.1 : f32, training} : tensor<2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>
    %e:3 = nn.batch_norm %x, %g, %b, %b, %g {eps = 0.0 : f32, momentum = 0.1 : f32} : tensor<2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>
    return %y#0, %y#1, %y#2, %e#0, %e#2 : tensor<2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>
  })", {x, one, zero});
  ASSERT_EQ(out.size(), 5u);
  expectNear(out[0], {-1, -1, 1, 1});
  expectNear(out[1], {2, 6}); // the batch statistics it normalized with
  expectNear(out[2], {1, 4}); // biased: sum of squares / 2
  expectNear(out[3], {1, 4, 3, 8}); // running mean 0, variance 1
  expectNear(out[4], {1, 1});
}

TEST(Evaluator, DynamicBatchAndBroadcasting) {
  Tensor x = iota({3, 2}), b{{2}, {10, 20}};
  auto out = run(R"(func.func @f(%x: tensor<?x2xf32>, %b: tensor<2xf32>) -> (tensor<?x2xf32>, tensor<f32>, tensor<?x2x1xf32>) {
    %y = nn.add %x, %b : tensor<?x2xf32>, tensor<2xf32>
    %n = nn.count %x {axes = array<i64: 0>} : tensor<?x2xf32>
    %r = nn.reshape %y {shape = array<i64: -1, 2, 1>} : tensor<?x2xf32>
    return %y, %n, %r : tensor<?x2xf32>, tensor<f32>, tensor<?x2x1xf32>
  })", {x, b});
  expectNear(out[0], {11, 22, 13, 24, 15, 26});
  expectNear(out[1], {3});
  EXPECT_EQ(out[2].shape, (std::vector<int64_t>{3, 2, 1}));
}

TEST(Evaluator, ReportsBadArgumentsAndLabels) {
  MLIRContext ctx;
  ctx.loadDialect<nnc::nn::NNDialect, func::FuncDialect>();
  std::vector<std::string> errors;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    errors.push_back(d.str());
    return success();
  });
  auto module = parseSourceString<ModuleOp>(R"(func.func @f(%z: tensor<2x2xf32>, %y: tensor<2xi32>) -> tensor<f32> {
    %c = nn.softmax_cross_entropy %z, %y : tensor<2x2xf32>, tensor<2xi32>
    return %c : tensor<f32>
  })", &ctx);
  auto fn = module->lookupSymbol<func::FuncOp>("f");
  nnc::ref::Evaluator eval;
  EXPECT_TRUE(failed(eval.run(fn, {Tensor::filled({2, 2}), Tensor{{2}, {0, 7}}})));
  ASSERT_FALSE(errors.empty());
  EXPECT_EQ(errors.back(), "label 7 is out of range for 2 classes");
  EXPECT_TRUE(failed(eval.run(fn, {Tensor::filled({3, 2}), Tensor{{2}, {0, 1}}})));
  EXPECT_EQ(errors.back(), "argument 0 has shape [3, 2], expected 'tensor<2x2xf32>'");
}

} // namespace
