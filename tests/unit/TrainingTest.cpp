//===- TrainingTest.cpp - training steps on the reference evaluator -------===//
//
// The classic backpropagation worked example to 1e-6, every optimizer
// against its textbook formula, XOR learned by the XOR example, and the
// MNIST MLP example lowering its loss on real data.
//
//===----------------------------------------------------------------------===//

#include "TestUtil.h"

#include "compiler/reference/Trainer.h"
#include "runtime/Mnist.h"
#include "runtime/Random.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

using namespace nnc;
using ref::Tensor;

namespace {

ref::Trainer makeTrainer(test::Compiled &m, uint64_t seed) {
  auto t = ref::Trainer::create(*m.module, seed);
  EXPECT_TRUE(succeeded(t)) << m.firstError();
  return std::move(*t);
}

TEST(Training, BackpropagationWorkedExample) {
  test::Compiled m(test::readSource("examples/backprop_222.nn"), Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  ref::Trainer t = makeTrainer(m, 0);
  Tensor in{{1, 2}, {0.05, 0.10}}, target{{1, 2}, {0.01, 0.99}};

  auto fwd = t.evaluate({in, target});
  ASSERT_TRUE(succeeded(fwd));
  EXPECT_NEAR((*fwd)[0].data[0], 0.75136507, 1e-6);
  EXPECT_NEAR((*fwd)[0].data[1], 0.772928465, 1e-6);
  EXPECT_NEAR((*fwd)[1].data[0], 0.298371109, 1e-6);

  auto loss = t.step({in, target});
  ASSERT_TRUE(succeeded(loss));
  EXPECT_NEAR(*loss, 0.298371109, 1e-6);
  // Weights are [inputs, units]: w_out = [[w5, w7], [w6, w8]].
  const Tensor &wo = *t.tensor("w_out"), &wh = *t.tensor("w_hidden");
  EXPECT_NEAR(wo.data[0], 0.35891648, 1e-6);  // w5
  EXPECT_NEAR(wo.data[2], 0.408666186, 1e-6); // w6
  EXPECT_NEAR(wo.data[1], 0.511301270, 1e-6); // w7
  EXPECT_NEAR(wo.data[3], 0.561370121, 1e-6); // w8
  EXPECT_NEAR(wh.data[0], 0.149780716, 1e-6); // w1
  EXPECT_NEAR(wh.data[2], 0.19956143, 1e-6);  // w2
  EXPECT_NEAR(wh.data[1], 0.24975114, 1e-6);  // w3
  EXPECT_NEAR(wh.data[3], 0.29950229, 1e-6);  // w4
  // The frozen biases did not move.
  EXPECT_NEAR(t.tensor("b1")->data[0], 0.35, 1e-7);
}

//===----------------------------------------------------------------------===//
// Optimizers against their textbook (torch.optim) formulas
//===----------------------------------------------------------------------===//

/// loss = sum(x * w * w) + 0.1 * sum(w^3), so dL/dw_j = 2 w_j sum_b x_bj + 0.3 w_j^2.
const char *kQuadratic = "model q {\n"
                         "  input x: f32[B, 3]\n"
                         "  param w: f32[3] = [0.5, -1.0, 2.0]\n"
                         "  loss = sum(x * w * w) + 0.1 * sum(w * w * w)\n"
                         "  minimize loss\n"
                         "}\n";
const double kX[2][3] = {{0.1, 0.2, 0.3}, {0.4, -0.5, 0.6}};

std::vector<double> gradient(const std::vector<double> &w) {
  std::vector<double> g(3);
  for (int j = 0; j < 3; ++j)
    g[j] = 2 * w[j] * (kX[0][j] + kX[1][j]) + 0.3 * w[j] * w[j];
  return g;
}

/// A reference update: (weights, gradient, state, step t) -> new weights.
using RefStep = std::function<void(std::vector<double> &, std::vector<double>,
                                   std::vector<std::vector<double>> &, int)>;

struct OptCase {
  const char *name;
  const char *train;
  RefStep step;
};

/// Optimizer state slot i (zero-initialized). Both slots exist from the
/// first call, so references to them stay valid.
std::vector<double> &slot(std::vector<std::vector<double>> &s, size_t i) {
  if (s.empty())
    s.assign(2, std::vector<double>(3, 0.0));
  return s[i];
}

RefStep sgd(double lr, double mu, bool nesterov, double wd) {
  return [=](auto &w, auto g, auto &s, int) {
    auto &buf = slot(s, 0);
    for (int j = 0; j < 3; ++j) {
      double d = g[j] + wd * w[j];
      if (mu != 0) {
        buf[j] = mu * buf[j] + d;
        d = nesterov ? d + mu * buf[j] : buf[j];
      }
      w[j] -= lr * d;
    }
  };
}

RefStep adam(double lr, double b1, double b2, double eps, double wd, bool decoupled) {
  return [=](auto &w, auto g, auto &s, int t) {
    auto &m = slot(s, 0);
    auto &v = slot(s, 1);
    for (int j = 0; j < 3; ++j) {
      if (decoupled)
        w[j] *= 1 - lr * wd;
      else
        g[j] += wd * w[j];
      m[j] = b1 * m[j] + (1 - b1) * g[j];
      v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
      double mhat = m[j] / (1 - std::pow(b1, t));
      double denom = std::sqrt(v[j]) / std::sqrt(1 - std::pow(b2, t)) + eps;
      w[j] -= lr * mhat / denom;
    }
  };
}

std::vector<OptCase> optimizerCases() {
  return {
      {"sgd", "optimizer = sgd(lr=0.1)", sgd(0.1, 0, false, 0)},
      {"sgd_weight_decay", "optimizer = sgd(lr=0.1, weight_decay=0.01)", sgd(0.1, 0, false, 0.01)},
      {"momentum", "optimizer = momentum(lr=0.1, momentum=0.9)", sgd(0.1, 0.9, false, 0)},
      {"nesterov", "optimizer = nesterov(lr=0.1, momentum=0.8)", sgd(0.1, 0.8, true, 0)},
      {"adagrad", "optimizer = adagrad(lr=0.1)",
       [](auto &w, auto g, auto &s, int) {
         auto &sum = slot(s, 0);
         for (int j = 0; j < 3; ++j) {
           sum[j] += g[j] * g[j];
           w[j] -= 0.1 * g[j] / (std::sqrt(sum[j]) + 1e-10);
         }
       }},
      {"rmsprop", "optimizer = rmsprop(lr=0.01)",
       [](auto &w, auto g, auto &s, int) {
         auto &v = slot(s, 0);
         for (int j = 0; j < 3; ++j) {
           v[j] = 0.99 * v[j] + 0.01 * g[j] * g[j];
           w[j] -= 0.01 * g[j] / (std::sqrt(v[j]) + 1e-8);
         }
       }},
      {"rmsprop_momentum", "optimizer = rmsprop(lr=0.01, alpha=0.9, momentum=0.5)",
       [](auto &w, auto g, auto &s, int) {
         auto &v = slot(s, 0);
         auto &buf = slot(s, 1);
         for (int j = 0; j < 3; ++j) {
           v[j] = 0.9 * v[j] + 0.1 * g[j] * g[j];
           buf[j] = 0.5 * buf[j] + g[j] / (std::sqrt(v[j]) + 1e-8);
           w[j] -= 0.01 * buf[j];
         }
       }},
      {"adadelta", "optimizer = adadelta(lr=1.0, rho=0.9)",
       [](auto &w, auto g, auto &s, int) {
         auto &v = slot(s, 0);
         auto &u = slot(s, 1);
         for (int j = 0; j < 3; ++j) {
           v[j] = 0.9 * v[j] + 0.1 * g[j] * g[j];
           double delta = std::sqrt(u[j] + 1e-6) / std::sqrt(v[j] + 1e-6) * g[j];
           u[j] = 0.9 * u[j] + 0.1 * delta * delta;
           w[j] -= delta;
         }
       }},
      {"adam", "optimizer = adam(lr=0.01)", adam(0.01, 0.9, 0.999, 1e-8, 0, false)},
      {"adam_weight_decay", "optimizer = adam(lr=0.01, beta1=0.8, weight_decay=0.1)",
       adam(0.01, 0.8, 0.999, 1e-8, 0.1, false)},
      {"adamw", "optimizer = adamw(lr=0.01, weight_decay=0.1)",
       adam(0.01, 0.9, 0.999, 1e-8, 0.1, true)},
      {"clip_norm", "optimizer = sgd(lr=0.1)\n  clip_norm = 0.5",
       [](auto &w, auto g, auto &s, int) {
         double norm = 0;
         for (double v : g)
           norm += v * v;
         double coef = std::min(1.0, 0.5 / (std::sqrt(norm) + 1e-6));
         for (int j = 0; j < 3; ++j)
           w[j] -= 0.1 * g[j] * coef;
       }},
  };
}

void PrintTo(const OptCase &c, std::ostream *os) { *os << c.name; }

class Optimizer : public ::testing::TestWithParam<OptCase> {};

TEST_P(Optimizer, MatchesTextbookFormula) {
  const OptCase &c = GetParam();
  std::string src = std::string(kQuadratic) + "train {\n  " + c.train + "\n}\n";
  test::Compiled m(src, Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  ref::Trainer t = makeTrainer(m, 0);
  Tensor x{{2, 3}, {kX[0][0], kX[0][1], kX[0][2], kX[1][0], kX[1][1], kX[1][2]}};
  std::vector<double> w = {0.5, -1.0, 2.0};
  std::vector<std::vector<double>> state;
  for (int step = 1; step <= 4; ++step) {
    ASSERT_TRUE(succeeded(t.step({x})));
    c.step(w, gradient(w), state, step);
    const Tensor &got = *t.tensor("w");
    for (int j = 0; j < 3; ++j)
      // The IR holds hyper-parameters as f32 constants: agree to f32 rounding.
      EXPECT_NEAR(got.data[j], w[j], 1e-6 * std::max(1.0, std::abs(w[j])))
          << c.name << " step " << step << " element " << j;
  }
}

INSTANTIATE_TEST_SUITE_P(All, Optimizer, ::testing::ValuesIn(optimizerCases()),
                         [](const auto &info) { return std::string(info.param.name); });

//===----------------------------------------------------------------------===//
// Learning
//===----------------------------------------------------------------------===//

TEST(Training, XorMlpLearnsXor) {
  test::Compiled m(test::readSource("examples/xor_mlp.nn"), Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  ref::Trainer t = makeTrainer(m, 0);
  Tensor x{{4, 2}, {0, 0, 0, 1, 1, 0, 1, 1}}, y{{4, 1}, {0, 1, 1, 0}};
  double first = 0, last = 0;
  for (int epoch = 0; epoch < 500; ++epoch) {
    auto loss = t.step({x, y});
    ASSERT_TRUE(succeeded(loss));
    (epoch == 0 ? first : last) = *loss;
  }
  EXPECT_LT(last, 0.05);
  EXPECT_LT(last, first / 10);
  auto out = t.evaluate({x, y});
  ASSERT_TRUE(succeeded(out));
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(std::round((*out)[0].data[i]), y.data[i]) << "sample " << i;
}

TEST(Training, MnistMlpLowersItsLossOnRealData) {
  rt::Dataset train, test;
  std::string dir = std::string(NNC_SOURCE_DIR) + "/examples/data/mnist";
  rt::Status s = rt::loadMnist(dir, "train", train);
  ASSERT_TRUE(s.isOk()) << s.message() << " (run scripts/fetch-mnist.sh)";
  s = rt::loadMnist(dir, "t10k", test);
  ASSERT_TRUE(s.isOk()) << s.message();

  test::Compiled m(test::readSource("examples/mnist_mlp.nn"), Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  ref::Trainer t = makeTrainer(m, 1);
  const int64_t batch = 16, steps = 300;
  std::vector<double> losses;
  for (int64_t k = 0; k < steps; ++k) {
    Tensor x = Tensor::filled({batch, 784}), y = Tensor::filled({batch});
    for (int64_t b = 0; b < batch; ++b) {
      int64_t i = rt::randomBits(1, 42, k * batch + b) % train.count;
      for (int64_t p = 0; p < 784; ++p)
        x.data[b * 784 + p] = train.image(i * 784 + p);
      y.data[b] = train.labels[i];
    }
    auto loss = t.step({x, y});
    ASSERT_TRUE(succeeded(loss));
    losses.push_back(*loss);
  }
  auto avg = [&](size_t from, size_t to) {
    double s = 0;
    for (size_t i = from; i < to; ++i)
      s += losses[i];
    return s / static_cast<double>(to - from);
  };
  double early = avg(0, 30), late = avg(steps - 30, steps);
  EXPECT_LT(late, 0.6 * early) << "loss " << early << " -> " << late;

  const int64_t n = 1000;
  Tensor x = Tensor::filled({n, 784}), y = Tensor::filled({n});
  for (int64_t i = 0; i < n * 784; ++i)
    x.data[i] = test.image(i);
  for (int64_t i = 0; i < n; ++i)
    y.data[i] = test.labels[i];
  auto out = t.evaluate({x, y});
  ASSERT_TRUE(succeeded(out));
  const Tensor &logits = (*out)[0];
  int correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t best = 0;
    for (int64_t c = 1; c < 10; ++c)
      if (logits.data[i * 10 + c] > logits.data[i * 10 + best])
        best = c;
    correct += best == static_cast<int64_t>(y.data[i]);
  }
  EXPECT_GT(correct, 800) << "accuracy " << correct / 10.0 << "% after " << steps << " steps";
}

TEST(Training, BatchNormRunningStatisticsFollowPyTorch) {
  // running = 0.9 * running + 0.1 * batch statistic (unbiased variance).
  test::Compiled m("model bn {\n  input x: f32[B, 2]\n  y = batch_norm(x)\n"
                   "  loss = sum(y * y)\n  output y\n  minimize loss\n}\ntrain {\n  optimizer = sgd(lr=0.0)\n}\n",
                   Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  ref::Trainer t = makeTrainer(m, 0);
  Tensor x{{4, 2}, {1, 10, 2, 20, 3, 30, 6, 40}};
  ASSERT_TRUE(succeeded(t.step({x})));
  // Channel 0: mean 3, unbiased variance (4 + 1 + 0 + 9) / 3.
  // (momentum is an f32 constant in the IR: agreement to f32 rounding.)
  EXPECT_NEAR(t.tensor("y.running_mean")->data[0], 0.1 * 3.0, 1e-6);
  EXPECT_NEAR(t.tensor("y.running_var")->data[0], 0.9 + 0.1 * 14.0 / 3.0, 1e-6);
  EXPECT_NEAR(t.tensor("y.running_mean")->data[1], 0.1 * 25.0, 1e-6);
  // Evaluation normalizes with the running statistics.
  auto out = t.evaluate({x});
  ASSERT_TRUE(succeeded(out));
  double rm = t.tensor("y.running_mean")->data[0], rv = t.tensor("y.running_var")->data[0];
  EXPECT_NEAR((*out)[0].data[0], (1 - rm) / std::sqrt(rv + 1e-5), 1e-7);
}

TEST(Training, SameSeedSameRun) {
  std::string src = test::readSource("examples/xor_mlp.nn");
  Tensor x{{4, 2}, {0, 0, 0, 1, 1, 0, 1, 1}}, y{{4, 1}, {0, 1, 1, 0}};
  std::vector<double> runs[3];
  uint64_t seeds[3] = {5, 5, 6};
  for (int r = 0; r < 3; ++r) {
    test::Compiled m(src, Stage::Train);
    ref::Trainer t = makeTrainer(m, seeds[r]);
    for (int k = 0; k < 5; ++k)
      runs[r].push_back(*t.step({x, y}));
  }
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_NE(runs[0], runs[2]);
}

} // namespace

namespace {

TEST(Training, SoftmaxThenCrossEntropyStaysFiniteForHugeLogits) {
  // softmax underflows to 0 for the wrong classes; the fused stable form
  // still gives the exact gradient softmax - onehot = [-1, 1] / 2 per row.
  test::Compiled m("model m {\n  input y: i32[B]\n  param z: f32[2, 2] = [[500, -500], [-500, 500]]\n"
                   "  loss = cross_entropy(softmax(z, axis=1), y)\n  minimize loss\n}\n",
                   Stage::Grad);
  ASSERT_TRUE(m.module) << m.firstError();
  auto fn = m.module->lookupSymbol<mlir::func::FuncOp>("m_grad");
  ASSERT_TRUE(fn);
  Tensor y{{2}, {1, 0}}, z{{2, 2}, {500, -500, -500, 500}};
  auto out = ref::Evaluator().run(fn, {y, z});
  ASSERT_TRUE(succeeded(out));
  EXPECT_DOUBLE_EQ((*out)[0].data[0], 1000.0); // loss: mean of 1000 and 1000
  const Tensor &dz = (*out)[1];
  std::vector<double> want = {0.5, -0.5, -0.5, 0.5};
  for (int i = 0; i < 4; ++i)
    EXPECT_DOUBLE_EQ(dz.data[i], want[i]) << i;
}

} // namespace
