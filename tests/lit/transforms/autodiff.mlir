// RUN: nnc-opt %s -split-input-file -nnc-autodiff | FileCheck %s
// RUN: nnc-opt %s -split-input-file -nnc-autodiff -mlir-print-local-scope -mlir-print-debuginfo | FileCheck %s --check-prefix=LOC
// RUN: nnc-opt %s -split-input-file -nnc-autodiff=wrt-inputs -canonicalize | FileCheck %s --check-prefix=INPUTS

// Gradient of a matmul: dW = transpose(x) @ dy; the loss seeds dy = 1.
// CHECK-LABEL: func.func @matmul_grad
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x3xf32> {{[^)]*}}, %[[W:[a-z0-9]+]]: tensor<3x2xf32> {{[^)]*}})
// CHECK-SAME: -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}, tensor<3x2xf32> {nn.name = "w", nn.role = "grad"})
// CHECK: %[[Y:.*]] = nn.matmul %[[X]], %[[W]]
// CHECK: %[[L:.*]] = nn.reduce_sum %[[Y]]
// CHECK: %[[SEED:.*]] = nn.constant dense<1.000000e+00> : tensor<f32>
// CHECK: %[[DY:.*]] = nn.broadcast_like %{{.*}}, %[[Y]] : tensor<1x1xf32>, tensor<?x2xf32>
// CHECK: %[[XT:.*]] = nn.transpose %[[X]] {perm = array<i64: 1, 0>} : tensor<?x3xf32>
// CHECK: %[[DW:.*]] = nn.matmul %[[XT]], %[[DY]] : tensor<3x?xf32>, tensor<?x2xf32>
// CHECK: return %[[L]], %[[DW]]
// Backward ops keep the location of the forward op they come from.
// LOC-LABEL: func.func @matmul_grad
// LOC: nn.matmul {{.*}} loc("m.nn":2:8)
// LOC: nn.reduce_sum {{.*}} loc("m.nn":3:8)
// LOC: nn.constant dense<1.000000e+00> : tensor<f32> loc("grad"("m.nn":3:8))
// LOC: nn.broadcast_like {{.*}} loc("grad"("m.nn":3:8))
// LOC: nn.transpose {{.*}} loc("grad"("m.nn":2:8))
// LOC: nn.matmul {{.*}} loc("grad"("m.nn":2:8))
// INPUTS-LABEL: func.func @matmul_grad
// INPUTS-SAME: -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}, tensor<?x3xf32> {nn.name = "x", nn.role = "grad"}, tensor<3x2xf32> {nn.name = "w", nn.role = "grad"})
func.func @matmul(%x: tensor<?x3xf32> {nn.name = "x", nn.role = "input"},
                  %w: tensor<3x2xf32> {nn.name = "w", nn.role = "param"})
    -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}) {
  %y = nn.matmul %x, %w : tensor<?x3xf32>, tensor<3x2xf32> loc("m.nn":2:8)
  %l = nn.reduce_sum %y {axes = array<i64: 0, 1>} : tensor<?x2xf32> loc("m.nn":3:8)
  return %l : tensor<f32>
}

// -----

// A broadcast add: the bias gradient sums dy over the batch axis.
// CHECK-LABEL: func.func @bias_grad
// CHECK: %[[Y:.*]] = nn.add %{{.*}}, %[[B:.*]] : tensor<?x4xf32>, tensor<4xf32>
// CHECK: %[[DY:.*]] = nn.broadcast_like
// CHECK: %[[DB:.*]] = nn.reduce_sum %[[DY]] {axes = array<i64: 0>} : tensor<?x4xf32>
// CHECK: return %{{.*}}, %[[DB]] : tensor<f32>, tensor<4xf32>
func.func @bias(%x: tensor<?x4xf32> {nn.name = "x", nn.role = "input"},
                %b: tensor<4xf32> {nn.name = "b", nn.role = "param"})
    -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}) {
  %y = nn.add %x, %b : tensor<?x4xf32>, tensor<4xf32>
  %l = nn.reduce_sum %y {axes = array<i64: 0, 1>} : tensor<?x4xf32>
  return %l : tensor<f32>
}

// -----

// Fan-out: w is used twice, so its adjoint is the sum of both contributions.
// CHECK-LABEL: func.func @fanout_grad
// CHECK: %[[A:.*]] = nn.mul %[[W:.*]], %[[W]]
// CHECK: %[[D1:.*]] = nn.mul %[[DA:.*]], %[[W]]
// CHECK: %[[D2:.*]] = nn.mul %[[DA]], %[[W]]
// CHECK: %[[SUM:.*]] = nn.add %[[D1]], %[[D2]]
// CHECK: return %{{.*}}, %[[SUM]]
func.func @fanout(%w: tensor<3xf32> {nn.name = "w", nn.role = "param"})
    -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}) {
  %a = nn.mul %w, %w : tensor<3xf32>, tensor<3xf32>
  %l = nn.reduce_sum %a {axes = array<i64: 0>} : tensor<3xf32>
  return %l : tensor<f32>
}

// -----

// softmax_cross_entropy differentiates to the stable (softmax - onehot) / N.
// CHECK-LABEL: func.func @sce_grad
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x10xf32> {{[^)]*}}, %[[Y:[a-z0-9]+]]: tensor<?xi32> {{[^)]*}})
// CHECK: %[[P:.*]] = nn.softmax %[[X]] {axis = 1 : i64}
// CHECK: %[[T:.*]] = nn.one_hot %[[Y]] {num_classes = 10 : i64}
// CHECK: %[[D:.*]] = nn.sub %[[P]], %[[T]]
// CHECK: %[[N:.*]] = nn.count %[[X]] {axes = array<i64: 0>}
// CHECK: %[[S:.*]] = nn.div %{{.*}}, %[[N]]
// CHECK: %[[G:.*]] = nn.mul %[[D]], %[[S]]
// CHECK: return %{{.*}}, %[[G]]
// INPUTS-LABEL: func.func @sce_grad
// INPUTS-SAME: -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}, tensor<?x10xf32> {nn.name = "x", nn.role = "grad"})
func.func @sce(%x: tensor<?x10xf32> {nn.name = "x", nn.role = "param"},
               %y: tensor<?xi32> {nn.name = "y", nn.role = "input"})
    -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}) {
  %l = nn.softmax_cross_entropy %x, %y : tensor<?x10xf32>, tensor<?xi32>
  return %l : tensor<f32>
}

// -----

// Training mode: the gradient function normalizes with batch statistics and
// the dropout gradient reuses the forward mask.
// The model itself stays in evaluation mode.
// CHECK-LABEL: func.func @modes(
// CHECK-NOT: training
// CHECK-LABEL: func.func @modes_grad
// CHECK: %[[BN:[^,]*]], %{{[^,]*}}, %{{[^,]*}} = nn.batch_norm {{.*}} {eps = {{.*}}, momentum = {{.*}}, training}
// CHECK: %[[Y:.*]], %[[MASK:.*]] = nn.dropout %[[BN]] {rate = 5.000000e-01 : f32, training}
// CHECK: nn.mul %{{.*}}, %[[MASK]]
func.func @modes(%x: tensor<?x4xf32> {nn.name = "x", nn.role = "param"},
                 %g: tensor<4xf32> {nn.name = "g", nn.role = "param"})
    -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}) {
  %bn, %mean, %var = nn.batch_norm %x, %g, %g, %g, %g {eps = 1.0e-5 : f32, momentum = 0.1 : f32}
      : tensor<?x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
  %y, %m = nn.dropout %bn {rate = 0.5 : f32} : tensor<?x4xf32>
  %l = nn.reduce_mean %y {axes = array<i64: 0, 1>} : tensor<?x4xf32>
  return %l : tensor<f32>
}
