// Evaluation batch norms fold into the convolution or product before them
// (compiler/transforms/FoldBatchNorm.cpp).
// RUN: nnc-opt --nnc-fold-batch-norm %s | FileCheck %s

// conv2d + bias view + batch norm: the convolution's result is scaled per
// output channel by s = gamma / sqrt(var + eps) and shifted by beta + (b -
// mean) * s, both through [C, 1, 1] views made before the convolution; the
// weights are left as they are (no work per weight on each call).
// CHECK-LABEL: func.func @conv_bias
// CHECK-NOT: nn.batch_norm
// CHECK: %[[E:.*]] = nn.constant dense<1.000000e-01>
// CHECK: %[[V:.*]] = nn.add %arg6, %[[E]]
// CHECK: %[[R:.*]] = nn.sqrt %[[V]]
// CHECK: %[[S:.*]] = nn.div %arg3, %[[R]]
// CHECK: %[[D:.*]] = nn.sub %arg2, %arg5
// CHECK: %[[M:.*]] = nn.mul %[[D]], %[[S]]
// CHECK: %[[T:.*]] = nn.add %arg4, %[[M]]
// CHECK: %[[S3:.*]] = nn.reshape %[[S]] {shape = array<i64: 2, 1, 1>}
// CHECK: %[[T3:.*]] = nn.reshape %[[T]] {shape = array<i64: 2, 1, 1>}
// CHECK: %[[C:.*]] = nn.conv2d %arg0, %arg1 {padding = array<i64: 1, 1>, stride = array<i64: 1, 1>}
// CHECK: %[[Z:.*]] = nn.mul %[[C]], %[[S3]]
// CHECK: %[[Y:.*]] = nn.add %[[Z]], %[[T3]]
// CHECK: return %[[Y]]
// Prepared for a backend, the scale and shift are the convolution's
// epilogue: one kernel of the three.
// RUN: nnc-opt --nnc-prepare %s | FileCheck %s --check-prefix=PREP
// PREP-LABEL: func.func @conv_bias
// PREP: nn.kernel -> tensor<?x2x4x4xf32>
// PREP-NEXT: nn.conv2d
// PREP-NEXT: nn.mul
// PREP-NEXT: nn.add
// PREP-NEXT: nn.yield
func.func @conv_bias(%x: tensor<?x1x4x4xf32>, %w: tensor<2x1x3x3xf32>, %b: tensor<2xf32>,
                     %g: tensor<2xf32>, %beta: tensor<2xf32>, %rm: tensor<2xf32>, %rv: tensor<2xf32>)
    -> tensor<?x2x4x4xf32> {
  %c = nn.conv2d %x, %w {padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : tensor<?x1x4x4xf32>, tensor<2x1x3x3xf32>
  %bv = nn.reshape %b {shape = array<i64: 2, 1, 1>} : tensor<2xf32>
  %a = nn.add %c, %bv : tensor<?x2x4x4xf32>, tensor<2x1x1xf32>
  %y:3 = nn.batch_norm %a, %g, %beta, %rm, %rv {eps = 0.1 : f32, momentum = 0.1 : f32} : tensor<?x2x4x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>
  return %y#0 : tensor<?x2x4x4xf32>
}

// A product without bias: the shift is beta - mean * s; the product's
// columns are scaled.
// CHECK-LABEL: func.func @matmul
// CHECK-NOT: nn.batch_norm
// CHECK: %[[S:.*]] = nn.div %arg2
// CHECK: %[[M:.*]] = nn.mul %arg4, %[[S]]
// CHECK: %[[T:.*]] = nn.sub %arg3, %[[M]]
// CHECK: %[[P:.*]] = nn.matmul %arg0, %arg1
// CHECK: %[[Z:.*]] = nn.mul %[[P]], %[[S]] : tensor<?x3xf32>, tensor<3xf32>
// CHECK: %[[Y:.*]] = nn.add %[[Z]], %[[T]]
// The statistics it normalized with are the running ones.
// CHECK: return %[[Y]], %arg4, %arg5
func.func @matmul(%x: tensor<?x4xf32>, %w: tensor<4x3xf32>, %g: tensor<3xf32>, %beta: tensor<3xf32>,
                  %rm: tensor<3xf32>, %rv: tensor<3xf32>) -> (tensor<?x3xf32>, tensor<3xf32>, tensor<3xf32>) {
  %p = nn.matmul %x, %w : tensor<?x4xf32>, tensor<4x3xf32>
  %y:3 = nn.batch_norm %p, %g, %beta, %rm, %rv {eps = 1.0e-5 : f32, momentum = 0.1 : f32} : tensor<?x3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>
  return %y#0, %y#1, %y#2 : tensor<?x3xf32>, tensor<3xf32>, tensor<3xf32>
}

// Must not fold: training mode (batch statistics); the convolution's
// result is also returned; the input is no layer.
// CHECK-LABEL: func.func @kept
// CHECK: nn.batch_norm {{.*}} training
// CHECK: nn.batch_norm
// CHECK: nn.batch_norm
// CHECK: return
func.func @kept(%x: tensor<?x1x4x4xf32>, %w: tensor<2x1x3x3xf32>, %g: tensor<2xf32>,
                %beta: tensor<2xf32>, %rm: tensor<2xf32>, %rv: tensor<2xf32>)
    -> (tensor<?x2x4x4xf32>, tensor<?x2x4x4xf32>, tensor<?x2x4x4xf32>, tensor<?x2x4x4xf32>) {
  %c = nn.conv2d %x, %w {padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : tensor<?x1x4x4xf32>, tensor<2x1x3x3xf32>
  %t:3 = nn.batch_norm %c, %g, %beta, %rm, %rv {eps = 1.0e-5 : f32, momentum = 0.1 : f32, training} : tensor<?x2x4x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>
  %c2 = nn.conv2d %x, %w {padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : tensor<?x1x4x4xf32>, tensor<2x1x3x3xf32>
  %e:3 = nn.batch_norm %c2, %g, %beta, %rm, %rv {eps = 1.0e-5 : f32, momentum = 0.1 : f32} : tensor<?x2x4x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>
  %g1:3 = nn.batch_norm %t#0, %g, %beta, %rm, %rv {eps = 1.0e-5 : f32, momentum = 0.1 : f32} : tensor<?x2x4x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>
  return %t#0, %e#0, %c2, %g1#0 : tensor<?x2x4x4xf32>, tensor<?x2x4x4xf32>, tensor<?x2x4x4xf32>, tensor<?x2x4x4xf32>
}
