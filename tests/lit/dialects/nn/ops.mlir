// RUN: nnc-opt %s | FileCheck %s
// RUN: nnc-opt %s | nnc-opt | FileCheck %s
// RUN: nnc-opt -mlir-print-op-generic %s | nnc-opt | FileCheck %s

// CHECK-LABEL: func.func @elementwise
func.func @elementwise(%x: tensor<?x10xf32>, %b: tensor<10xf32>) -> tensor<?x10xf32> {
  // CHECK: %[[C:.*]] = nn.constant dense<2.000000e+00> : tensor<f32>
  %c = nn.constant dense<2.0> : tensor<f32>
  // CHECK: %[[A:.*]] = nn.add %{{.*}}, %{{.*}} : tensor<?x10xf32>, tensor<10xf32>
  %0 = nn.add %x, %b : tensor<?x10xf32>, tensor<10xf32>
  // CHECK: nn.sub %[[A]], %[[C]] : tensor<?x10xf32>, tensor<f32>
  %1 = nn.sub %0, %c : tensor<?x10xf32>, tensor<f32>
  // CHECK: nn.mul
  %2 = nn.mul %1, %1 : tensor<?x10xf32>, tensor<?x10xf32>
  // CHECK: nn.div
  %3 = nn.div %2, %c : tensor<?x10xf32>, tensor<f32>
  // CHECK: nn.pow
  %4 = nn.pow %3, %c : tensor<?x10xf32>, tensor<f32>
  // CHECK: nn.neg
  %5 = nn.neg %4 : tensor<?x10xf32>
  // CHECK: nn.exp
  %6 = nn.exp %5 : tensor<?x10xf32>
  // CHECK: nn.log
  %7 = nn.log %6 : tensor<?x10xf32>
  // CHECK: nn.sqrt
  %8 = nn.sqrt %7 : tensor<?x10xf32>
  // CHECK: nn.abs
  %9 = nn.abs %8 : tensor<?x10xf32>
  // CHECK: nn.sigmoid
  %10 = nn.sigmoid %9 : tensor<?x10xf32>
  // CHECK: nn.tanh
  %11 = nn.tanh %10 : tensor<?x10xf32>
  // CHECK: nn.relu
  %12 = nn.relu %11 : tensor<?x10xf32>
  // CHECK: nn.softplus
  %13 = nn.softplus %12 : tensor<?x10xf32>
  // CHECK: nn.step
  %14 = nn.step %13 : tensor<?x10xf32>
  // CHECK: nn.identity
  %15 = nn.identity %14 : tensor<?x10xf32>
  // CHECK: nn.leaky_relu %{{.*}} {alpha = 0.00999999977 : f32}
  %16 = nn.leaky_relu %15 {alpha = 0.01 : f32} : tensor<?x10xf32>
  // CHECK: %[[D:.*]], %[[MASK:.*]] = nn.dropout %{{.*}} {rate = 5.000000e-01 : f32, training}
  %17, %mask = nn.dropout %16 {rate = 0.5 : f32, training} : tensor<?x10xf32>
  // CHECK: return %[[D]]
  return %17 : tensor<?x10xf32>
}

// CHECK-LABEL: func.func @collectives
func.func @collectives(%g: tensor<784x128xf32>, %n: tensor<f32>) -> (tensor<784x128xf32>, tensor<f32>) {
  // CHECK: nn.all_reduce %{{.*}} : tensor<784x128xf32>
  %0 = nn.all_reduce %g : tensor<784x128xf32>
  // CHECK: nn.all_reduce %{{.*}} {sum} : tensor<f32>
  %1 = nn.all_reduce %n {sum} : tensor<f32>
  return %0, %1 : tensor<784x128xf32>, tensor<f32>
}

// CHECK-LABEL: func.func @shapes
func.func @shapes(%x: tensor<?x784xf32>, %w: tensor<784x128xf32>, %a: tensor<4x3xf32>, %b: tensor<4x5xf32>)
    -> (tensor<?x128xf32>, tensor<?x1x28x28xf32>, tensor<3x4xf32>, tensor<4x8xf32>) {
  // CHECK: nn.matmul %{{.*}}, %{{.*}} : tensor<?x784xf32>, tensor<784x128xf32>
  %0 = nn.matmul %x, %w : tensor<?x784xf32>, tensor<784x128xf32>
  // CHECK: nn.reshape %{{.*}} {shape = array<i64: -1, 1, 28, 28>} : tensor<?x784xf32>
  %1 = nn.reshape %x {shape = array<i64: -1, 1, 28, 28>} : tensor<?x784xf32>
  // CHECK: nn.transpose %{{.*}} {perm = array<i64: 1, 0>} : tensor<4x3xf32>
  %2 = nn.transpose %a {perm = array<i64: 1, 0>} : tensor<4x3xf32>
  // CHECK: nn.concat %{{.*}}, %{{.*}} {axis = 1 : i64} : tensor<4x3xf32>, tensor<4x5xf32>
  %3 = nn.concat %a, %b {axis = 1 : i64} : tensor<4x3xf32>, tensor<4x5xf32>
  return %0, %1, %2, %3 : tensor<?x128xf32>, tensor<?x1x28x28xf32>, tensor<3x4xf32>, tensor<4x8xf32>
}

// CHECK-LABEL: func.func @reductions
func.func @reductions(%x: tensor<?x10xf32>, %y: tensor<?xi32>)
    -> (tensor<?xf32>, tensor<1x10xf32>, tensor<f32>, tensor<?xi32>, tensor<?x10xf32>, tensor<?x10xf32>, tensor<?x10xf32>) {
  // CHECK: nn.reduce_sum %{{.*}} {axes = array<i64: 1>} : tensor<?x10xf32>
  %0 = nn.reduce_sum %x {axes = array<i64: 1>} : tensor<?x10xf32>
  // CHECK: nn.reduce_mean %{{.*}} {axes = array<i64: 0>, keepdims = true} : tensor<?x10xf32>
  %1 = nn.reduce_mean %x {axes = array<i64: 0>, keepdims = true} : tensor<?x10xf32>
  // CHECK: nn.reduce_max %{{.*}} {axes = array<i64: 0, 1>} : tensor<?x10xf32>
  %2 = nn.reduce_max %x {axes = array<i64: 0, 1>} : tensor<?x10xf32>
  // CHECK: nn.argmax %{{.*}} {axis = 1 : i64} : tensor<?x10xf32>
  %3 = nn.argmax %x {axis = 1 : i64} : tensor<?x10xf32>
  // CHECK: nn.one_hot %{{.*}} {num_classes = 10 : i64} : tensor<?xi32>
  %4 = nn.one_hot %y {num_classes = 10 : i64} : tensor<?xi32>
  // CHECK: nn.softmax %{{.*}} {axis = 1 : i64}
  %5 = nn.softmax %x {axis = 1 : i64} : tensor<?x10xf32>
  // CHECK: nn.log_softmax %{{.*}} {axis = 1 : i64}
  %6 = nn.log_softmax %x {axis = 1 : i64} : tensor<?x10xf32>
  return %0, %1, %2, %3, %4, %5, %6 : tensor<?xf32>, tensor<1x10xf32>, tensor<f32>, tensor<?xi32>, tensor<?x10xf32>, tensor<?x10xf32>, tensor<?x10xf32>
}

// CHECK-LABEL: func.func @cnn
func.func @cnn(%x: tensor<?x3x32x32xf32>, %w: tensor<16x3x5x5xf32>, %g: tensor<16xf32>)
    -> (tensor<?x16x14x14xf32>, tensor<?x16x7x7xf32>, tensor<?x16x14x14xf32>) {
  // CHECK: %[[CONV:.*]] = nn.conv2d %{{.*}}, %{{.*}} {padding = array<i64: 0, 0>, stride = array<i64: 2, 2>} : tensor<?x3x32x32xf32>, tensor<16x3x5x5xf32>
  %0 = nn.conv2d %x, %w {stride = array<i64: 2, 2>, padding = array<i64: 0, 0>} : tensor<?x3x32x32xf32>, tensor<16x3x5x5xf32>
  // CHECK: %[[BN:[^,]*]], %{{[^,]*}}, %{{[^,]*}} = nn.batch_norm %[[CONV]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {eps = 9.99999974E-6 : f32, momentum = 1.000000e-01 : f32}
  %1, %mean, %var = nn.batch_norm %0, %g, %g, %g, %g {eps = 1.0e-5 : f32, momentum = 0.1 : f32}
      : tensor<?x16x14x14xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>
  // CHECK: nn.max_pool2d
  %2 = nn.max_pool2d %1 {kernel = array<i64: 2, 2>, stride = array<i64: 2, 2>, padding = array<i64: 0, 0>} : tensor<?x16x14x14xf32>
  // CHECK: nn.avg_pool2d %{{.*}} {count_include_pad = false
  %3 = nn.avg_pool2d %1 {kernel = array<i64: 3, 3>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>, count_include_pad = false} : tensor<?x16x14x14xf32>
  // CHECK: nn.group_norm %{{.*}}, %{{.*}}, %{{.*}} {eps = 9.99999974E-6 : f32, groups = 4 : i64}
  %4 = nn.group_norm %3, %g, %g {groups = 4 : i64, eps = 1.0e-5 : f32} : tensor<?x16x14x14xf32>, tensor<16xf32>, tensor<16xf32>
  // CHECK: nn.local_response_norm %{{.*}} {alpha = 9.99999974E-5 : f32, beta = 7.500000e-01 : f32, k = 2.000000e+00 : f32, size = 5 : i64}
  %5 = nn.local_response_norm %4 {size = 5 : i64, alpha = 1.0e-4 : f32, beta = 0.75 : f32, k = 2.0 : f32} : tensor<?x16x14x14xf32>
  return %5, %2, %3 : tensor<?x16x14x14xf32>, tensor<?x16x7x7xf32>, tensor<?x16x14x14xf32>
}

// CHECK-LABEL: func.func @losses
func.func @losses(%p: tensor<?x10xf32>, %t: tensor<?x10xf32>, %y: tensor<?xi32>)
    -> (tensor<f32>, tensor<?x10xf32>, tensor<f32>, tensor<?xf32>, tensor<f32>, tensor<f32>) {
  // CHECK: nn.mse_loss %{{.*}}, %{{.*}} : tensor<?x10xf32>, tensor<?x10xf32>
  %0 = nn.mse_loss %p, %t : tensor<?x10xf32>, tensor<?x10xf32>
  // CHECK: nn.l1_loss %{{.*}}, %{{.*}} {reduction = "none"}
  %1 = nn.l1_loss %p, %t {reduction = "none"} : tensor<?x10xf32>, tensor<?x10xf32>
  // CHECK: nn.bce_loss %{{.*}}, %{{.*}} {reduction = "sum"}
  %2 = nn.bce_loss %p, %t {reduction = "sum"} : tensor<?x10xf32>, tensor<?x10xf32>
  // CHECK: nn.cross_entropy %{{.*}}, %{{.*}} {reduction = "none"} : tensor<?x10xf32>, tensor<?xi32>
  %3 = nn.cross_entropy %p, %y {reduction = "none"} : tensor<?x10xf32>, tensor<?xi32>
  // CHECK: nn.cross_entropy %{{.*}}, %{{.*}} : tensor<?x10xf32>, tensor<?x10xf32>
  %4 = nn.cross_entropy %p, %t : tensor<?x10xf32>, tensor<?x10xf32>
  // CHECK: nn.softmax_cross_entropy
  %5 = nn.softmax_cross_entropy %p, %y : tensor<?x10xf32>, tensor<?xi32>
  return %0, %1, %2, %3, %4, %5 : tensor<f32>, tensor<?x10xf32>, tensor<f32>, tensor<?xf32>, tensor<f32>, tensor<f32>
}

// Ops that autodiff creates.
// CHECK-LABEL: func.func @backward
func.func @backward(%x: tensor<?x1x28x28xf32>, %w: tensor<32x1x5x5xf32>, %dy: tensor<?x32x28x28xf32>,
                    %g: tensor<?x1xf32>, %p: tensor<?x32x14x14xf32>, %c: tensor<?x8xf32>)
    -> (tensor<?x1x28x28xf32>, tensor<32x1x5x5xf32>, tensor<?x32x28x28xf32>, tensor<?x32x28x28xf32>,
        tensor<?x28x28xf32>, tensor<f32>, tensor<?x3xf32>, tensor<?x32x28x28xf32>) {
  // CHECK: nn.conv2d_grad_input %{{.*}}, %{{.*}} {groups = 1 : i64, input_size = array<i64: 28, 28>, padding = array<i64: 2, 2>, stride = array<i64: 1, 1>}
  %0 = nn.conv2d_grad_input %dy, %w {stride = array<i64: 1, 1>, padding = array<i64: 2, 2>, groups = 1 : i64,
      input_size = array<i64: 28, 28>} : tensor<?x32x28x28xf32>, tensor<32x1x5x5xf32>
  // CHECK: nn.conv2d_grad_weight %{{.*}}, %{{.*}} {groups = 1 : i64, kernel = array<i64: 5, 5>
  %1 = nn.conv2d_grad_weight %x, %dy {stride = array<i64: 1, 1>, padding = array<i64: 2, 2>, groups = 1 : i64,
      kernel = array<i64: 5, 5>} : tensor<?x1x28x28xf32>, tensor<?x32x28x28xf32>
  // CHECK: nn.max_pool2d_grad
  %2 = nn.max_pool2d_grad %p, %dy {kernel = array<i64: 2, 2>, stride = array<i64: 2, 2>, padding = array<i64: 0, 0>}
      : tensor<?x32x14x14xf32>, tensor<?x32x28x28xf32>
  // CHECK: nn.avg_pool2d_grad
  %3 = nn.avg_pool2d_grad %p, %dy {kernel = array<i64: 2, 2>, stride = array<i64: 2, 2>, padding = array<i64: 0, 0>}
      : tensor<?x32x14x14xf32>, tensor<?x32x28x28xf32>
  // CHECK: nn.broadcast_like %{{.*}}, %{{.*}} : tensor<?x1xf32>, tensor<?x28x28xf32>
  %r = nn.reshape %x {shape = array<i64: -1, 28, 28>} : tensor<?x1x28x28xf32>
  %4 = nn.broadcast_like %g, %r : tensor<?x1xf32>, tensor<?x28x28xf32>
  // CHECK: nn.count %{{.*}} {axes = array<i64: 0>}
  %5 = nn.count %x {axes = array<i64: 0>} : tensor<?x1x28x28xf32>
  // CHECK: nn.slice %{{.*}} {axis = 1 : i64, size = 3 : i64, start = 4 : i64}
  %6 = nn.slice %c {axis = 1 : i64, start = 4 : i64, size = 3 : i64} : tensor<?x8xf32>
  // CHECK: nn.channel_window_sum %{{.*}} {after = 1 : i64, before = 2 : i64}
  %7 = nn.channel_window_sum %dy {before = 2 : i64, after = 1 : i64} : tensor<?x32x28x28xf32>
  return %0, %1, %2, %3, %4, %5, %6, %7 : tensor<?x1x28x28xf32>, tensor<32x1x5x5xf32>, tensor<?x32x28x28xf32>,
      tensor<?x32x28x28xf32>, tensor<?x28x28xf32>, tensor<f32>, tensor<?x3xf32>, tensor<?x32x28x28xf32>
}

// CHECK-LABEL: func.func @bn_grad
func.func @bn_grad(%dy: tensor<?x16x14x14xf32>, %x: tensor<?x16x14x14xf32>, %g: tensor<16xf32>)
    -> (tensor<?x16x14x14xf32>, tensor<16xf32>, tensor<16xf32>) {
  // CHECK: = nn.batch_norm_grad %{{.*}}, %{{.*}}, %{{.*}} {eps = 9.99999974E-6 : f32} : tensor<?x16x14x14xf32>, tensor<?x16x14x14xf32>, tensor<16xf32>
  %dx, %dg, %db = nn.batch_norm_grad %dy, %x, %g {eps = 1.0e-5 : f32} : tensor<?x16x14x14xf32>, tensor<?x16x14x14xf32>, tensor<16xf32>
  return %dx, %dg, %db : tensor<?x16x14x14xf32>, tensor<16xf32>, tensor<16xf32>
}
