// RUN: nnc-opt %s -canonicalize | FileCheck %s

// CHECK-LABEL: func.func @identities
// CHECK-SAME: (%[[X:.*]]: tensor<4x3xf32>)
func.func @identities(%x: tensor<4x3xf32>) -> (tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>) {
  %zero = nn.constant dense<0.0> : tensor<f32>
  %one = nn.constant dense<1.0> : tensor<f32>
  %0 = nn.add %x, %zero : tensor<4x3xf32>, tensor<f32>
  %1 = nn.mul %x, %one : tensor<4x3xf32>, tensor<f32>
  %2 = nn.sub %x, %zero : tensor<4x3xf32>, tensor<f32>
  %3 = nn.div %x, %one : tensor<4x3xf32>, tensor<f32>
  %4 = nn.identity %x : tensor<4x3xf32>
  %n = nn.neg %x : tensor<4x3xf32>
  %5 = nn.neg %n : tensor<4x3xf32>
  // CHECK-NOT: nn.
  // CHECK: return %[[X]], %[[X]], %[[X]], %[[X]], %[[X]], %[[X]]
  return %0, %1, %2, %3, %4, %5 : tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>
}

// Adding a scalar zero to a smaller tensor broadcasts, so it must stay.
// CHECK-LABEL: func.func @broadcasting_zero_stays
func.func @broadcasting_zero_stays(%x: tensor<3xf32>) -> tensor<2x3xf32> {
  %zero = nn.constant dense<0.0> : tensor<2x3xf32>
  // CHECK: nn.add
  %0 = nn.add %x, %zero : tensor<3xf32>, tensor<2x3xf32>
  return %0 : tensor<2x3xf32>
}

// CHECK-LABEL: func.func @constants
func.func @constants() -> (tensor<2xf32>, tensor<2xf32>, tensor<2xi32>, tensor<3x2xf32>) {
  %a = nn.constant dense<[1.0, 2.0]> : tensor<2xf32>
  %b = nn.constant dense<[3.0, 4.0]> : tensor<2xf32>
  %i = nn.constant dense<[1, 2]> : tensor<2xi32>
  // CHECK-DAG: nn.constant dense<[4.000000e+00, 6.000000e+00]> : tensor<2xf32>
  %0 = nn.add %a, %b : tensor<2xf32>, tensor<2xf32>
  // CHECK-DAG: nn.constant dense<[-1.000000e+00, -2.000000e+00]> : tensor<2xf32>
  %1 = nn.neg %a : tensor<2xf32>
  // CHECK-DAG: nn.constant dense<[1, 4]> : tensor<2xi32>
  %2 = nn.mul %i, %i : tensor<2xi32>, tensor<2xi32>
  // CHECK-DAG: nn.constant dense<{{\[}}[1.000000e+00, 2.000000e+00, 3.000000e+00], [4.000000e+00, 5.000000e+00, 6.000000e+00]]> : tensor<2x3xf32>
  %c = nn.constant dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]> : tensor<6xf32>
  %r = nn.reshape %c {shape = array<i64: 2, 3>} : tensor<6xf32>
  %3 = nn.transpose %r {perm = array<i64: 1, 0>} : tensor<2x3xf32>
  // CHECK: return
  return %0, %1, %2, %3 : tensor<2xf32>, tensor<2xf32>, tensor<2xi32>, tensor<3x2xf32>
}

// CHECK-LABEL: func.func @shape_chains
// CHECK-SAME: (%[[X:.*]]: tensor<?x784xf32>, %[[Y:.*]]: tensor<4x3x2xf32>)
func.func @shape_chains(%x: tensor<?x784xf32>, %y: tensor<4x3x2xf32>) -> (tensor<?x784xf32>, tensor<?x28x28xf32>, tensor<4x3x2xf32>, tensor<2x4x3xf32>) {
  %0 = nn.reshape %x {shape = array<i64: -1, 784>} : tensor<?x784xf32>
  // CHECK: %[[R:.*]] = nn.reshape %[[X]] {shape = array<i64: -1, 28, 28>}
  %1 = nn.reshape %x {shape = array<i64: -1, 1, 28, 28>} : tensor<?x784xf32>
  %2 = nn.reshape %1 {shape = array<i64: -1, 28, 28>} : tensor<?x1x28x28xf32>
  // transpose(transpose(y)) with inverse permutations is y.
  %t = nn.transpose %y {perm = array<i64: 1, 2, 0>} : tensor<4x3x2xf32>
  %3 = nn.transpose %t {perm = array<i64: 2, 0, 1>} : tensor<3x2x4xf32>
  // Two rotations compose into one transpose.
  // CHECK: %[[T:.*]] = nn.transpose %[[Y]] {perm = array<i64: 2, 0, 1>}
  %4 = nn.transpose %t {perm = array<i64: 1, 2, 0>} : tensor<3x2x4xf32>
  // CHECK: return %[[X]], %[[R]], %[[Y]], %[[T]]
  return %0, %2, %3, %4 : tensor<?x784xf32>, tensor<?x28x28xf32>, tensor<4x3x2xf32>, tensor<2x4x3xf32>
}

// Probabilities from a softmax fed to cross_entropy (or log) become the
// stable fused forms.
// CHECK-LABEL: func.func @stable_forms
// CHECK-SAME: (%[[X:.*]]: tensor<?x10xf32>, %[[Y:.*]]: tensor<?xi32>)
// CHECK: %[[L:.*]] = nn.softmax_cross_entropy %[[X]], %[[Y]] {reduction = "sum"}
// CHECK: %[[LS:.*]] = nn.log_softmax %[[X]] {axis = 1 : i64}
// CHECK: return %[[L]], %[[LS]]
func.func @stable_forms(%x: tensor<?x10xf32>, %y: tensor<?xi32>) -> (tensor<f32>, tensor<?x10xf32>) {
  %p = nn.softmax %x {axis = 1 : i64} : tensor<?x10xf32>
  %l = nn.cross_entropy %p, %y {reduction = "sum"} : tensor<?x10xf32>, tensor<?xi32>
  %lp = nn.log %p : tensor<?x10xf32>
  return %l, %lp : tensor<f32>, tensor<?x10xf32>
}
