//===- OpCases.h - small models around every op ----------------*- C++ -*-===//
//
// One small model per op (or composition), shared by the gradient checks
// and the backend comparisons.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_TESTS_UNIT_OPCASES_H
#define NNC_TESTS_UNIT_OPCASES_H

#include <ostream>
#include <string>
#include <vector>

namespace nnc::test {

struct Case {
  const char *name;
  std::string body;      // statements between the inputs and the loss
  std::string inputs = "  input x: f32[B, 4]\n";
  bool wrtInputs = true;
  std::string blocks = ""; // block declarations the body calls
};

/// A cubic loss sends a different adjoint to every output element, so no
/// element's gradient goes unchecked, and it does not degenerate after a
/// normalization (whose outputs have a fixed sum and sum of squares).
inline std::string model(const Case &c) {
  return c.blocks + "model m {\n" + c.inputs + c.body +
         "  loss = sum(0.2 * out * out * out + out * out + 0.3 * out)\n  minimize loss\n}\n";
}

inline std::vector<Case> cases() {
  std::vector<Case> v;
  auto unary = [&](const char *name, const std::string &call) {
    v.push_back({name, "  param w: f32[4, 3] = normal(std=0.8)\n  h = x @ w - 0.3\n"
                       "  out = " + call + "\n"});
  };
  unary("neg", "-h");
  unary("exp", "exp(h)");
  unary("log", "log(h * h + 0.5)");
  unary("sqrt", "sqrt(h * h + 0.1)");
  unary("abs", "abs(h)");
  unary("sigmoid", "sigmoid(h)");
  unary("tanh", "tanh(h)");
  unary("relu", "relu(h)");
  unary("softplus", "softplus(h)");
  unary("leaky_relu", "leaky_relu(h, alpha=0.2)");
  unary("identity", "identity(h)");
  unary("pow_const", "h ** 3");
  unary("pow_both", "pow(h * h + 0.5, sigmoid(h))");
  unary("softmax_axis1", "softmax(h, axis=1)");
  unary("softmax_axis0", "softmax(h, axis=0)");
  unary("log_softmax", "log_softmax(h)");
  unary("sum_axis", "sum(h, axis=1, keepdims=true) * h");
  unary("mean_all", "mean(h) * h");
  unary("mean_axis0", "mean(h, axis=0) + h");
  unary("max_axis", "max(h, axis=1, keepdims=true) * h");
  unary("max_all", "max(h) + h");
  unary("norm", "norm(h, axis=0, keepdims=true) * h");
  unary("l2", "l2(w) + h");
  unary("transpose", "transpose(transpose(h) * 2)");
  unary("reshape", "reshape(reshape(h, [B, 3, 1]) * 2, [B, 3])");
  unary("concat", "concat([h, h * h], axis=1) * concat([h, h], axis=1)");
  unary("dropout", "dropout(h, rate=0.3)");
  // Broadcasting binary ops: gradients summed back to each operand's shape.
  v.push_back({"broadcast_ops",
               "  param a: f32[1, 4] = normal(std=0.5)\n  param b: f32[4] = normal(std=0.5)\n"
               "  param s: f32 = 0.7\n"
               "  out = (x + a) * b - x / (b * b + 1) + s * x - a / s\n"});
  v.push_back({"matmul_both", "  param w: f32[4, 5] = normal()\n  out = (x @ w) @ transpose(w)\n"});
  v.push_back({"fan_out", "  param w: f32[4, 4] = normal(std=0.5)\n  h = x @ w\n"
                          "  out = h * h + sigmoid(h) - h @ w\n"});
  v.push_back({"dense_layers", "  h = tanh(dense(x, 5))\n  out = dense(h, 2)\n"});
  // Products with activation epilogues (vector form): 70 inputs (two depth
  // blocks of the product), ragged widths of 20 and 70 columns.
  v.push_back({"dense_epilogues",
               "  h = softplus(dense(x, 20))\n  g = sigmoid(dense(h, 70)) * 2\n"
               "  out = tanh(dense(g, 3)) + leaky_relu(dense(g, 3), alpha=0.1)\n",
               "  input x: f32[B, 70]\n"});
  // Convolution: strides, paddings, groups, non-square kernels.
  const std::string img = "  input x: f32[B, 4, 7, 6]\n";
  v.push_back({"conv_basic", "  out = conv2d(x, 3, kernel=3)\n", img});
  v.push_back({"conv_stride_pad", "  out = conv2d(x, 2, kernel=3, stride=2, padding=1)\n", img});
  v.push_back({"conv_groups", "  out = conv2d(x, 6, kernel=[3, 2], stride=[2, 1], groups=2)\n", img});
  // Strided rows gathered across several vectors (rows of 37 and 20
  // columns), 1x1 downsampling, column strides alone, padding wider than
  // the kernel, strides of 3 with groups: the one row kernel and its
  // transposed form (each strided layer reads a computed input, so its
  // input gradient runs too) for every case.
  v.push_back({"conv_stride2_wide", "  h = tanh(conv2d(x, 3, kernel=1))\n  out = conv2d(h, 3, kernel=3, stride=2, padding=1, bias=false)\n",
               "  input x: f32[B, 3, 9, 37]\n"});
  v.push_back({"conv_1x1_stride2", "  h = tanh(conv2d(x, 3, kernel=1))\n  out = relu(conv2d(h, 5, kernel=1, stride=2, bias=false))\n",
               "  input x: f32[B, 3, 8, 20]\n"});
  v.push_back({"conv_column_stride", "  h = tanh(conv2d(x, 4, kernel=1))\n  out = conv2d(h, 4, kernel=[2, 3], stride=[1, 2], padding=[0, 2], groups=2)\n",
               img});
  v.push_back({"conv_pad_past_kernel", "  h = tanh(conv2d(x, 4, kernel=1))\n  out = conv2d(h, 2, kernel=2, stride=[3, 3], padding=[2, 3])\n", img});
  // Output rows narrower than half a vector, several to a vector: padded
  // (a ragged last group of rows), strided (gathered), and an input wider
  // than the output (gathered).
  v.push_back({"conv_narrow_rows", "  h = tanh(conv2d(x, 4, kernel=1))\n  out = conv2d(h, 5, kernel=3, padding=1)\n",
               "  input x: f32[B, 3, 5, 3]\n"});
  v.push_back({"conv_narrow_strided", "  out = relu(conv2d(x, 3, kernel=3, stride=2, padding=1))\n",
               "  input x: f32[B, 2, 9, 7]\n"});
  v.push_back({"conv_narrow_valid", "  out = conv2d(x, 3, kernel=2)\n", "  input x: f32[B, 2, 6, 5]\n"});
  // A strided row too wide for a block of channels beside it: chunks of
  // its vectors in a loop, then the rest (a partial vector).
  v.push_back({"conv_wide_strided", "  out = relu(conv2d(x, 3, kernel=3, stride=2, padding=1))\n",
               "  input x: f32[B, 2, 3, 70]\n"});
  v.push_back({"conv_narrow_tall_kernel", "  out = conv2d(x, 2, kernel=[5, 3], padding=[2, 1])\n",
               "  input x: f32[B, 2, 7, 4]\n"});
  v.push_back({"conv_op_form", "  param w: f32[2, 4, 2, 2] = normal(std=0.5)\n"
                               "  out = conv2d(x, w, padding=[1, 0])\n", img});
  v.push_back({"max_pool", "  out = max_pool2d(conv2d(x, 2, kernel=2), 2)\n", img});
  v.push_back({"max_pool_pad", "  out = max_pool2d(conv2d(x, 2, kernel=1), 3, stride=2, padding=1)\n", img});
  // 2x2 windows tiling a wide input: rows of 35 windows (vector chunks of
  // 16, 16 and a ragged 3).
  v.push_back({"max_pool_wide", "  out = max_pool2d(conv2d(x, 2, kernel=1), 2)\n",
               "  input x: f32[B, 2, 4, 70]\n"});
  // The activation's gradient as the pooling gradient's epilogue: 2x2
  // rows with a ragged vector tail, and 3x3 windows tiling the input.
  v.push_back({"max_pool_epilogue_2x2", "  out = max_pool2d(tanh(conv2d(x, 2, kernel=1, bias=false)), 2)\n",
               "  input x: f32[B, 2, 4, 70]\n"});
  v.push_back({"max_pool_epilogue_3x3",
               "  out = max_pool2d(leaky_relu(conv2d(x, 2, kernel=1, bias=false), alpha=0.1), 3)\n",
               "  input x: f32[B, 2, 6, 9]\n"});
  v.push_back({"avg_pool", "  out = avg_pool2d(conv2d(x, 2, kernel=2), [2, 3], stride=1)\n", img});
  // 2x2 windows: tiling a wide input (forward and gradient on vectors of
  // 16 windows, a ragged tail of 3), and leaving a row and column out (the
  // gradient's general loop).
  v.push_back({"avg_pool_2x2_wide", "  out = avg_pool2d(conv2d(x, 2, kernel=1), 2)\n",
               "  input x: f32[B, 2, 4, 70]\n"});
  v.push_back({"avg_pool_2x2_odd", "  out = avg_pool2d(conv2d(x, 2, kernel=1), 2)\n", "  input x: f32[B, 2, 7, 37]\n"});
  v.push_back({"avg_pool_pad", "  out = avg_pool2d(conv2d(x, 2, kernel=1), 3, stride=2, padding=1)\n", img});
  v.push_back({"avg_pool_nopad", "  out = avg_pool2d(conv2d(x, 2, kernel=1), 3, stride=2, padding=1, "
                                 "count_include_pad=false)\n", img});
  v.push_back({"batch_norm_4d", "  out = batch_norm(conv2d(x, 3, kernel=2))\n", img});
  v.push_back({"batch_norm_2d", "  param w: f32[4, 3] = normal()\n  out = batch_norm(x @ w)\n"});
  // Evaluation folds these into the layer's weights and bias.
  v.push_back({"batch_norm_dense", "  out = batch_norm(dense(x, 3))\n"});
  v.push_back({"batch_norm_conv_nobias",
               "  out = batch_norm(conv2d(x, 3, kernel=2, stride=2, bias=false), eps=0.1)\n", img});
  // Rows of 19 (whole vectors and a masked tail) into a residual add and a
  // ReLU; 4x4 maps (every row a partial vector, a sample's map whole ones).
  v.push_back({"batch_norm_residual",
               "  h = conv2d(x, 3, kernel=1, bias=false)\n"
               "  out = relu(batch_norm(conv2d(h, 3, kernel=3, padding=1, bias=false)) + h)\n",
               "  input x: f32[B, 2, 5, 19]\n"});
  v.push_back({"batch_norm_4x4", "  out = relu(batch_norm(conv2d(x, 3, kernel=1)))\n", "  input x: f32[B, 2, 4, 4]\n"});
  // A per-channel term broadcast over rows of 4 and of 11 (vectors along
  // the last axis, each row partial or with a partial tail).
  v.push_back({"broadcast_rows_4",
               "  param s: f32[3, 1, 1] = normal()\n  out = relu(x * s + x * x)\n",
               "  input x: f32[B, 3, 4, 4]\n"});
  v.push_back({"broadcast_rows_11",
               "  param s: f32[3, 1, 11] = normal()\n  out = tanh(x * s - x)\n",
               "  input x: f32[B, 3, 5, 11]\n"});
  // torchvision's ResNet pieces: the 7x7 stride-2 stem, 3x3 stride-2 max
  // pooling with padding, global average pooling; a basic block with its
  // 1x1 stride-2 projection; a bottleneck (ResNet-50) block.
  v.push_back({"resnet_stem",
               "  c = relu(batch_norm(conv2d(x, 3, kernel=7, stride=2, padding=3, bias=false)))\n"
               "  out = flatten(adaptive_avg_pool2d(max_pool2d(c, 3, stride=2, padding=1), 1))\n",
               "  input x: f32[B, 2, 13, 14]\n"});
  const std::string down =
      "block down(x, planes, stride=2) {\n"
      "  conv1 = conv2d(x, planes, kernel=3, stride=stride, padding=1, bias=false)\n"
      "  bn1 = relu(batch_norm(conv1))\n"
      "  bn2 = batch_norm(conv2d(bn1, planes, kernel=3, padding=1, bias=false))\n"
      "  sc = batch_norm(conv2d(x, planes, kernel=1, stride=stride, bias=false, name=\"downsample.0\"))\n"
      "  return relu(bn2 + sc)\n}\n";
  v.push_back({"block_downsample", "  out = down(x, 3, name=\"layer2.0\")\n", "  input x: f32[B, 2, 6, 7]\n", true, down});
  const std::string bottleneck =
      "block bottleneck(x, planes, stride=1) {\n"
      "  bn1 = relu(batch_norm(conv2d(x, planes, kernel=1, bias=false, name=\"conv1\")))\n"
      "  bn2 = relu(batch_norm(conv2d(bn1, planes, kernel=3, stride=stride, padding=1, bias=false, name=\"conv2\")))\n"
      "  bn3 = batch_norm(conv2d(bn2, planes * 4, kernel=1, bias=false, name=\"conv3\"))\n"
      "  sc = batch_norm(conv2d(x, planes * 4, kernel=1, stride=stride, bias=false, name=\"downsample.0\"))\n"
      "  return relu(bn3 + sc)\n}\n";
  v.push_back({"block_bottleneck", "  out = bottleneck(x, 2, stride=2)\n", "  input x: f32[B, 3, 5, 6]\n", true,
               bottleneck});
  v.push_back({"group_norm", "  out = group_norm(conv2d(x, 6, kernel=2), groups=3)\n", img});
  v.push_back({"lrn_odd", "  out = local_response_norm(conv2d(x, 5, kernel=2), size=3, alpha=0.5, "
                          "beta=0.75, k=1.0)\n", img});
  v.push_back({"lrn_even", "  out = local_response_norm(conv2d(x, 5, kernel=2), size=4, alpha=0.3, "
                           "beta=0.6, k=2.0)\n", img});
  // Losses, each reduction.
  const std::string cls = "  input x: f32[B, 4]\n  input y: i32[B]\n  input t: f32[B, 3]\n";
  auto loss = [&](const char *name, const std::string &expr) {
    v.push_back({name, "  param w: f32[4, 3] = normal()\n  h = x @ w\n  out = " + expr + "\n", cls});
  };
  loss("mse_mean", "mse(h, t)");
  loss("mse_sum", "mse(h, t, reduction=\"sum\")");
  loss("mse_none", "mse(h, t, reduction=\"none\")");
  loss("mae", "mae(h, t)");
  loss("bce", "binary_cross_entropy(sigmoid(h), t)");
  loss("bce_none", "binary_cross_entropy(sigmoid(h), t, reduction=\"none\")");
  loss("cross_entropy_labels", "cross_entropy(softmax(h), y)");
  loss("cross_entropy_probs", "cross_entropy(softmax(h), softmax(t), reduction=\"sum\")");
  loss("cross_entropy_none", "cross_entropy(softmax(h), y, reduction=\"none\")");
  loss("softmax_cross_entropy", "softmax_cross_entropy(h, y)");
  loss("softmax_cross_entropy_sum", "softmax_cross_entropy(h, y, reduction=\"sum\")");
  loss("softmax_cross_entropy_none", "softmax_cross_entropy(h, y, reduction=\"none\")");
  loss("one_hot_target", "mse(softmax(h), one_hot(y, 3))");
  return v;
}

/// gtest prints a case by its name (found by argument-dependent lookup).
inline void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }

} // namespace nnc::test

#endif // NNC_TESTS_UNIT_OPCASES_H
