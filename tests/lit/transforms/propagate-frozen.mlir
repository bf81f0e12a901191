// Frozen tensors with literal initializers become constants
// (compiler/transforms/FrozenConstants.cpp).
// RUN: nnc-opt --nnc-propagate-frozen %s | FileCheck %s

// CHECK-LABEL: func.func @frozen
// A constant(0.35) read by an add: a splat constant.
// CHECK-DAG: %[[B:.*]] = nn.constant dense<3.500000e-01> : tensor<f32>
// Written-out values, all equal: a splat of them.
// CHECK-DAG: %[[S:.*]] = nn.constant dense<2.000000e+00> : tensor<3xf32>
// CHECK: nn.add %arg0, %[[B]]
// CHECK: nn.mul {{.*}}, %[[S]]
// Must not: varied values, a product's operand, a random initializer, a
// parameter.
// CHECK: nn.sub {{.*}}, %arg3
// CHECK: nn.matmul {{.*}}, %arg4
// CHECK: nn.add {{.*}}, %arg5
// CHECK: nn.add {{.*}}, %arg6
func.func @frozen(%x: tensor<2x3xf32>,
                  %b: tensor<f32> {nn.role = "frozen", nn.init = {kind = "constant", value = 0.35 : f64}},
                  %s: tensor<3xf32> {nn.role = "frozen", nn.init = {kind = "literal", value = dense<2.0> : tensor<3xf32>}},
                  %v: tensor<3xf32> {nn.role = "frozen", nn.init = {kind = "literal", value = dense<[1.0, 2.0, 3.0]> : tensor<3xf32>}},
                  %w: tensor<3x3xf32> {nn.role = "frozen", nn.init = {kind = "ones"}},
                  %r: tensor<3xf32> {nn.role = "frozen", nn.init = {kind = "normal", std = 1.0 : f64}},
                  %p: tensor<3xf32> {nn.role = "param", nn.init = {kind = "zeros"}}) -> tensor<2x3xf32> {
  %0 = nn.add %x, %b : tensor<2x3xf32>, tensor<f32>
  %1 = nn.mul %0, %s : tensor<2x3xf32>, tensor<3xf32>
  %2 = nn.sub %1, %v : tensor<2x3xf32>, tensor<3xf32>
  %3 = nn.matmul %2, %w : tensor<2x3xf32>, tensor<3x3xf32>
  %4 = nn.add %3, %r : tensor<2x3xf32>, tensor<3xf32>
  %5 = nn.add %4, %p : tensor<2x3xf32>, tensor<3xf32>
  return %5 : tensor<2x3xf32>
}
