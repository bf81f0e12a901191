// RUN: nnc-opt %s -split-input-file -verify-diagnostics

func.func @matmul_inner(%a: tensor<?x784xf32>, %b: tensor<100x10xf32>) {
  // expected-error @+1 {{matmul inner dimensions differ: [?, 784] @ [100, 10] (axis 1 of the left is 784, axis 0 of the right is 100)}}
  %0 = nn.matmul %a, %b : tensor<?x784xf32>, tensor<100x10xf32>
  return
}

// -----

func.func @matmul_rank(%a: tensor<784xf32>, %b: tensor<784x10xf32>) {
  // expected-error @+1 {{matmul needs two rank-2 operands, got [784] and [784, 10]}}
  %0 = nn.matmul %a, %b : tensor<784xf32>, tensor<784x10xf32>
  return
}

// -----

func.func @broadcast(%a: tensor<2x3xf32>, %b: tensor<4x3xf32>) {
  // expected-error @+1 {{cannot broadcast shapes [2, 3] and [4, 3]: axis 0 of the result has size 2 vs 4}}
  %0 = nn.add %a, %b : tensor<2x3xf32>, tensor<4x3xf32>
  return
}

// -----

func.func @mixed_types(%a: tensor<3xf32>, %b: tensor<3xi32>) {
  // expected-error @+1 {{operands have different element types ('f32' and 'i32')}}
  %0 = nn.mul %a, %b : tensor<3xf32>, tensor<3xi32>
  return
}

// -----

func.func @unary_int(%a: tensor<3xi32>) {
  // expected-error @+1 {{operand #0 must be ranked tensor of 32-bit float values}}
  %0 = "nn.exp"(%a) : (tensor<3xi32>) -> tensor<3xi32>
  return
}

// -----

func.func @conv_channels(%x: tensor<?x3x28x28xf32>, %w: tensor<32x1x5x5xf32>) {
  // expected-error @+1 {{conv2d input [?, 3, 28, 28] has 3 channels but weight [32, 1, 5, 5] expects 1 (axis 1 of the weight times groups = 1)}}
  %0 = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 0, 0>} : tensor<?x3x28x28xf32>, tensor<32x1x5x5xf32>
  return
}

// -----

func.func @conv_stride(%x: tensor<?x1x28x28xf32>, %w: tensor<32x1x5x5xf32>) {
  // expected-error @+1 {{conv2d stride [0, 1] must be >= 1}}
  %0 = nn.conv2d %x, %w {stride = array<i64: 0, 1>, padding = array<i64: 0, 0>} : tensor<?x1x28x28xf32>, tensor<32x1x5x5xf32>
  return
}

// -----

func.func @conv_fit(%x: tensor<?x1x4x4xf32>, %w: tensor<32x1x5x5xf32>) {
  // expected-error @+1 {{conv2d kernel [32, 1, 5, 5] does not fit input [?, 1, 4, 4] with padding [0, 0]}}
  %0 = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 0, 0>} : tensor<?x1x4x4xf32>, tensor<32x1x5x5xf32>
  return
}

// -----

func.func @pool_rank(%x: tensor<?x10xf32>) {
  // expected-error @+1 {{max_pool2d input must be rank 4 (N, C, H, W), got [?, 10]}}
  %0 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, stride = array<i64: 2, 2>, padding = array<i64: 0, 0>} : tensor<?x10xf32>
  return
}

// -----

func.func @pool_padding(%x: tensor<?x1x8x8xf32>) {
  // expected-error @+1 {{avg_pool2d padding [2, 2] must be at most half the kernel [2, 2]}}
  %0 = nn.avg_pool2d %x {kernel = array<i64: 2, 2>, stride = array<i64: 2, 2>, padding = array<i64: 2, 2>} : tensor<?x1x8x8xf32>
  return
}

// -----

func.func @reshape_count(%x: tensor<2x3xf32>) {
  // expected-error @+1 {{cannot reshape [2, 3] (6 elements) to [4, 2] (8 elements)}}
  %0 = nn.reshape %x {shape = array<i64: 4, 2>} : tensor<2x3xf32>
  return
}

// -----

func.func @reshape_two_inferred(%x: tensor<2x3xf32>) {
  // expected-error @+1 {{reshape target [-1, -1] has more than one inferred (-1) size}}
  %0 = nn.reshape %x {shape = array<i64: -1, -1>} : tensor<2x3xf32>
  return
}

// -----

func.func @transpose_perm(%x: tensor<2x3xf32>) {
  // expected-error @+1 {{transpose permutation [0, 0] is not a permutation of 0..1}}
  %0 = nn.transpose %x {perm = array<i64: 0, 0>} : tensor<2x3xf32>
  return
}

// -----

func.func @concat_axis(%a: tensor<2x3xf32>, %b: tensor<4x5xf32>) {
  // expected-error @+1 {{concat inputs [2, 3] and [4, 5] differ at axis 0 (2 vs 4)}}
  %0 = nn.concat %a, %b {axis = 1 : i64} : tensor<2x3xf32>, tensor<4x5xf32>
  return
}

// -----

func.func @reduce_axis(%x: tensor<2x3xf32>) {
  // expected-error @+1 {{reduction axis 2 is out of range for [2, 3] (rank 2)}}
  %0 = nn.reduce_sum %x {axes = array<i64: 2>} : tensor<2x3xf32>
  return
}

// -----

func.func @reduce_twice(%x: tensor<2x3xf32>) {
  // expected-error @+1 {{reduction axis 1 is listed twice}}
  %0 = nn.reduce_mean %x {axes = array<i64: 1, 1>} : tensor<2x3xf32>
  return
}

// -----

func.func @softmax_axis(%x: tensor<2x3xf32>) {
  // expected-error @+1 {{softmax axis 2 is out of range for [2, 3] (rank 2)}}
  %0 = nn.softmax %x {axis = 2 : i64} : tensor<2x3xf32>
  return
}

// -----

func.func @bn_channels(%x: tensor<?x32x8x8xf32>, %g: tensor<16xf32>) {
  // expected-error @+1 {{batch_norm gamma has shape [16] but the input [?, 32, 8, 8] has 32 channels (axis 1)}}
  %0:3 = nn.batch_norm %x, %g, %g, %g, %g {eps = 1.0e-5 : f32, momentum = 0.1 : f32} : tensor<?x32x8x8xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>
  return
}

// -----

func.func @gn_groups(%x: tensor<?x32x8x8xf32>, %g: tensor<32xf32>) {
  // expected-error @+1 {{group_norm groups (5) must be >= 1 and divide the channel count of [?, 32, 8, 8]}}
  %0 = nn.group_norm %x, %g, %g {groups = 5 : i64, eps = 1.0e-5 : f32} : tensor<?x32x8x8xf32>, tensor<32xf32>, tensor<32xf32>
  return
}

// -----

func.func @lrn_rank(%x: tensor<?x32xf32>) {
  // expected-error @+1 {{local_response_norm input must have rank >= 3 (N, C, ...), got [?, 32]}}
  %0 = nn.local_response_norm %x {size = 5 : i64, alpha = 1.0e-4 : f32, beta = 0.75 : f32, k = 2.0 : f32} : tensor<?x32xf32>
  return
}

// -----

func.func @dropout_rate(%x: tensor<?x32xf32>) {
  // expected-error @+1 {{'nn.dropout' op rate must be in [0, 1), got 1.5}}
  %0, %m = nn.dropout %x {rate = 1.5 : f32} : tensor<?x32xf32>
  return
}

// -----

func.func @mse_shapes(%p: tensor<?x10xf32>, %t: tensor<?x5xf32>) {
  // expected-error @+1 {{mse_loss input [?, 10] and target [?, 5] must have the same shape}}
  %0 = nn.mse_loss %p, %t : tensor<?x10xf32>, tensor<?x5xf32>
  return
}

// -----

func.func @sce_labels(%p: tensor<8x10xf32>, %y: tensor<4xi32>) {
  // expected-error @+1 {{softmax_cross_entropy labels must be [batch] = [8] for input [8, 10], got [4]}}
  %0 = nn.softmax_cross_entropy %p, %y : tensor<8x10xf32>, tensor<4xi32>
  return
}

// -----

func.func @bad_reduction(%p: tensor<8x10xf32>, %t: tensor<8x10xf32>) {
  // expected-error @+1 {{attribute 'reduction' failed to satisfy constraint: string attribute one of "mean", "sum", "none"}}
  %0 = nn.mse_loss %p, %t {reduction = "avg"} : tensor<8x10xf32>, tensor<8x10xf32>
  return
}

// -----

func.func @wrong_result_type(%a: tensor<2x3xf32>) {
  // expected-error @+2 {{'nn.relu' op inferred type(s) 'tensor<2x3xf32>' are incompatible with return type(s) of operation 'tensor<3x2xf32>'}}
  // expected-error @+1 {{'nn.relu' op failed to infer returned types}}
  %0 = "nn.relu"(%a) : (tensor<2x3xf32>) -> tensor<3x2xf32>
  return
}

// -----

func.func @one_hot_int(%y: tensor<4xf32>) {
  // expected-error @+1 {{operand #0 must be ranked tensor of 32-bit signless integer values}}
  %0 = "nn.one_hot"(%y) {num_classes = 3 : i64} : (tensor<4xf32>) -> tensor<4x3xf32>
  return
}

// -----

func.func @slice_range(%x: tensor<?x8xf32>) {
  // expected-error @+1 {{slice [6, 9) is out of range for axis 1 of [?, 8]}}
  %0 = nn.slice %x {axis = 1 : i64, start = 6 : i64, size = 3 : i64} : tensor<?x8xf32>
  return
}

// -----

func.func @conv_grad_mismatch(%dy: tensor<?x32x27x27xf32>, %w: tensor<32x1x5x5xf32>) {
  // expected-error @+1 {{conv2d_grad_input gradient [?, 32, 27, 27] does not match the convolution output [?, 32, 28, 28]}}
  %0 = nn.conv2d_grad_input %dy, %w {stride = array<i64: 1, 1>, padding = array<i64: 2, 2>, groups = 1 : i64,
      input_size = array<i64: 28, 28>} : tensor<?x32x27x27xf32>, tensor<32x1x5x5xf32>
  return
}

// -----

func.func @broadcast_like_rank(%a: tensor<2x3xf32>, %b: tensor<3xf32>) {
  // expected-error @+1 {{broadcast_like input [2, 3] has a higher rank than [3]}}
  %0 = nn.broadcast_like %a, %b : tensor<2x3xf32>, tensor<3xf32>
  return
}

// -----

func.func @bn_grad_shapes(%dy: tensor<?x16x8x8xf32>, %x: tensor<?x32x8x8xf32>, %g: tensor<32xf32>) {
  // expected-error @+1 {{batch_norm_grad: the gradient and the input differ in shape}}
  %0:3 = nn.batch_norm_grad %dy, %x, %g {eps = 1.0e-5 : f32} : tensor<?x16x8x8xf32>, tensor<?x32x8x8xf32>, tensor<32xf32>
  return
}

// -----

func.func @bn_grad_gamma(%x: tensor<?x32x8x8xf32>, %g: tensor<16xf32>) {
  // expected-error @+1 {{batch_norm_grad gamma has shape [16] but the input [?, 32, 8, 8] has 32 channels (axis 1)}}
  %0:3 = nn.batch_norm_grad %x, %x, %g {eps = 1.0e-5 : f32} : tensor<?x32x8x8xf32>, tensor<?x32x8x8xf32>, tensor<16xf32>
  return
}
