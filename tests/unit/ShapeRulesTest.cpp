//===- ShapeRulesTest.cpp - shape rules of the nn ops ---------------------===//

#include "dialects/nn/ShapeRules.h"

#include <gtest/gtest.h>

using namespace nnc::shape;

namespace {

constexpr int64_t D = kDynamic;

Shape ok(const Inferred &r) {
  EXPECT_TRUE(r.ok()) << r.error;
  return r.shape;
}

TEST(ShapeRules, Str) {
  EXPECT_EQ(str({D, 784}), "[?, 784]");
  EXPECT_EQ(str({}), "[]");
}

TEST(ShapeRules, Broadcast) {
  EXPECT_EQ(ok(broadcast({D, 10}, {10})), (Shape{D, 10}));
  EXPECT_EQ(ok(broadcast({4, 1, 3}, {5, 1})), (Shape{4, 5, 3}));
  EXPECT_EQ(ok(broadcast({}, {2, 2})), (Shape{2, 2}));
  EXPECT_EQ(ok(broadcast({D, 3}, {7, 1})), (Shape{7, 3}));
  EXPECT_EQ(ok(broadcast({1}, {D})), (Shape{D}));
  Inferred bad = broadcast({2, 3}, {4, 3});
  EXPECT_EQ(bad.error,
            "cannot broadcast shapes [2, 3] and [4, 3]: axis 0 of the result has size 2 vs 4");
}

TEST(ShapeRules, Matmul) {
  EXPECT_EQ(ok(matmul({D, 784}, {784, 128})), (Shape{D, 128}));
  EXPECT_EQ(ok(matmul({3, D}, {5, 2})), (Shape{3, 2}));
  EXPECT_FALSE(matmul({3}, {3, 2}).ok());
  EXPECT_NE(matmul({2, 3}, {4, 5}).error.find("(axis 1 of the left is 3, axis 0 of the right is 4)"),
            std::string::npos);
}

TEST(ShapeRules, Reduce) {
  EXPECT_EQ(ok(reduce({D, 10}, {1}, false)), (Shape{D}));
  EXPECT_EQ(ok(reduce({D, 10}, {1}, true)), (Shape{D, 1}));
  EXPECT_EQ(ok(reduce({2, 3, 4}, {}, false)), (Shape{}));
  EXPECT_EQ(ok(reduce({2, 3, 4}, {0, 2}, true)), (Shape{1, 3, 1}));
  EXPECT_FALSE(reduce({2, 3}, {2}, false).ok());
  EXPECT_FALSE(reduce({2, 3}, {0, 0}, false).ok());
}

TEST(ShapeRules, Reshape) {
  EXPECT_EQ(ok(reshape({2, 3, 4}, {6, -1})), (Shape{6, 4}));
  EXPECT_EQ(ok(reshape({D, 784}, {-1, 1, 28, 28})), (Shape{D, 1, 28, 28}));
  EXPECT_EQ(ok(reshape({6}, {2, 3})), (Shape{2, 3}));
  EXPECT_FALSE(reshape({6}, {4, -1}).ok());
  EXPECT_FALSE(reshape({6}, {-1, -1}).ok());
  EXPECT_FALSE(reshape({6}, {0, 6}).ok());
  EXPECT_EQ(reshape({2, 3}, {5}).error,
            "cannot reshape [2, 3] (6 elements) to [5] (5 elements)");
}

TEST(ShapeRules, TransposeAndConcat) {
  EXPECT_EQ(ok(transpose({2, 3, 4}, {2, 0, 1})), (Shape{4, 2, 3}));
  EXPECT_FALSE(transpose({2, 3}, {0}).ok());
  EXPECT_FALSE(transpose({2, 3}, {1, 1}).ok());
  EXPECT_EQ(ok(concat({{D, 3}, {D, 5}}, 1)), (Shape{D, 8}));
  EXPECT_EQ(ok(concat({{2, 3}, {4, 3}}, 0)), (Shape{6, 3}));
  EXPECT_EQ(ok(concat({{D, 3}, {4, 3}}, 0)), (Shape{D, 3}));
  EXPECT_FALSE(concat({{2, 3}, {2, 3, 1}}, 0).ok());
  EXPECT_FALSE(concat({{2, 3}, {4, 5}}, 1).ok());
}

TEST(ShapeRules, Conv2d) {
  // MNIST CNN first layer: 28x28, kernel 5, pad 2 keeps the size.
  EXPECT_EQ(ok(conv2d({D, 1, 28, 28}, {32, 1, 5, 5}, {1, 1}, {2, 2}, 1)),
            (Shape{D, 32, 28, 28}));
  // Stride 2 with odd remainder rounds down like PyTorch: (32 - 3) / 2 + 1.
  EXPECT_EQ(ok(conv2d({1, 3, 32, 32}, {8, 3, 3, 3}, {2, 2}, {0, 0}, 1)),
            (Shape{1, 8, 15, 15}));
  // Non-square stride and padding.
  EXPECT_EQ(ok(conv2d({1, 3, 10, 20}, {4, 3, 3, 5}, {1, 2}, {1, 0}, 1)),
            (Shape{1, 4, 10, 8}));
  // Grouped: 4 input channels, 2 groups, weight in-channels 2.
  EXPECT_EQ(ok(conv2d({1, 4, 8, 8}, {6, 2, 3, 3}, {1, 1}, {1, 1}, 2)), (Shape{1, 6, 8, 8}));
  EXPECT_NE(conv2d({D, 3, 28, 28}, {32, 1, 5, 5}, {1, 1}, {0, 0}, 1).error.find("has 3 channels"),
            std::string::npos);
  EXPECT_FALSE(conv2d({1, 4, 8, 8}, {5, 2, 3, 3}, {1, 1}, {1, 1}, 2).ok());
  EXPECT_FALSE(conv2d({1, 1, 4, 4}, {1, 1, 5, 5}, {1, 1}, {0, 0}, 1).ok());
  EXPECT_FALSE(conv2d({1, 1, 4, 4}, {1, 1, 3, 3}, {0, 1}, {0, 0}, 1).ok());
  EXPECT_FALSE(conv2d({1, 1, 4}, {1, 1, 3, 3}, {1, 1}, {0, 0}, 1).ok());
}

TEST(ShapeRules, Pool2d) {
  EXPECT_EQ(ok(pool2d("max_pool2d", {D, 32, 28, 28}, {2, 2}, {2, 2}, {0, 0})),
            (Shape{D, 32, 14, 14}));
  EXPECT_EQ(ok(pool2d("avg_pool2d", {1, 1, 7, 7}, {3, 3}, {2, 2}, {1, 1})), (Shape{1, 1, 4, 4}));
  EXPECT_FALSE(pool2d("max_pool2d", {1, 1, 7, 7}, {2, 2}, {2, 2}, {2, 2}).ok());
  EXPECT_FALSE(pool2d("max_pool2d", {1, 1, 7, 7}, {8, 8}, {1, 1}, {0, 0}).ok());
}

TEST(ShapeRules, ChannelParamsAndLosses) {
  EXPECT_TRUE(channelParam("batch_norm", "gamma", {D, 32, 8, 8}, {32}, 2).ok());
  EXPECT_FALSE(channelParam("batch_norm", "gamma", {D, 32, 8, 8}, {16}, 2).ok());
  EXPECT_FALSE(channelParam("batch_norm", "gamma", {32}, {32}, 2).ok());
  EXPECT_EQ(ok(pointwiseLoss("mse", {D, 10}, {D, 10}, true)), (Shape{}));
  EXPECT_EQ(ok(pointwiseLoss("mse", {D, 10}, {4, 10}, false)), (Shape{D, 10}));
  EXPECT_FALSE(pointwiseLoss("mse", {D, 10}, {D, 5}, true).ok());
  EXPECT_EQ(ok(classLoss("ce", {D, 10}, {D}, true, false)), (Shape{D}));
  EXPECT_EQ(ok(classLoss("ce", {8, 10}, {8, 10}, false, true)), (Shape{}));
  EXPECT_FALSE(classLoss("ce", {8, 10}, {4}, true, true).ok());
  EXPECT_FALSE(classLoss("ce", {8, 10, 2}, {8}, true, true).ok());
}

} // namespace
