// The fusion policy (compiler/transforms/Fusion.cpp, docs/fusion.md):
// which core ops become one nn.kernel, and which must not.
// RUN: nnc-opt --nnc-fuse %s | FileCheck %s
// The fused form round-trips.
// RUN: nnc-opt --nnc-fuse %s | nnc-opt | FileCheck %s

// An elementwise chain of one shape is one kernel; the splat constant
// stays outside as a literal.
// CHECK-LABEL: func.func @chain
// CHECK: nn.constant
// CHECK-NEXT: %[[K:.*]] = nn.kernel -> tensor<?x4xf32> {
// CHECK-NEXT: nn.exp
// CHECK-NEXT: nn.mul
// CHECK-NEXT: nn.add
// CHECK-NEXT: nn.yield
// CHECK-NEXT: }
// CHECK-NEXT: return %[[K]]
func.func @chain(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {
  %c = nn.constant dense<2.0> : tensor<f32>
  %e = nn.exp %x : tensor<?x4xf32>
  %m = nn.mul %e, %c : tensor<?x4xf32>, tensor<f32>
  %a = nn.add %m, %m : tensor<?x4xf32>, tensor<?x4xf32>
  return %a : tensor<?x4xf32>
}

// NOT fused: a producer of another shape into a broadcasting consumer
// (it would be recomputed per element), and a value with readers in two
// kernels (the product: its result is materialized once). The two
// independent readers of the product then run as one kernel (horizontal).
// CHECK-LABEL: func.func @broadcast_and_shared
// CHECK: %[[P:.*]] = nn.kernel -> tensor<?x4xf32> {
// CHECK-NEXT: nn.matmul
// CHECK-NEXT: nn.yield
// CHECK: %[[S:.*]] = nn.kernel -> tensor<4xf32> {
// CHECK-NEXT: nn.exp %{{.*}} : tensor<4xf32>
// CHECK-NEXT: nn.yield
// CHECK: nn.kernel -> tensor<?x4xf32>, tensor<?x4xf32> {
// CHECK-NEXT: nn.tanh %[[P]]
// CHECK-NEXT: nn.mul %{{.*}}, %[[S]]
// CHECK-NEXT: nn.sigmoid %[[P]]
func.func @broadcast_and_shared(%x: tensor<?x4xf32>, %w: tensor<4x4xf32>, %s: tensor<4xf32>)
    -> (tensor<?x4xf32>, tensor<?x4xf32>) {
  %h = nn.matmul %x, %w : tensor<?x4xf32>, tensor<4x4xf32>
  %e = nn.exp %s : tensor<4xf32>
  %t = nn.tanh %h : tensor<?x4xf32>
  %d = nn.mul %t, %e : tensor<?x4xf32>, tensor<4xf32>
  %g = nn.sigmoid %h : tensor<?x4xf32>
  return %d, %g : tensor<?x4xf32>, tensor<?x4xf32>
}

// Matrix product epilogue: bias and activation run as the product stores.
// CHECK-LABEL: func.func @dense
// CHECK: nn.kernel -> tensor<?x8xf32> {
// CHECK-NEXT: nn.matmul
// CHECK-NEXT: nn.add
// CHECK-NEXT: nn.relu
// CHECK-NEXT: nn.yield
// CHECK-NOT: nn.kernel
// CHECK: return
func.func @dense(%x: tensor<?x4xf32>, %w: tensor<4x8xf32>, %b: tensor<8xf32>) -> tensor<?x8xf32> {
  %h = nn.matmul %x, %w : tensor<?x4xf32>, tensor<4x8xf32>
  %a = nn.add %h, %b : tensor<?x8xf32>, tensor<8xf32>
  %r = nn.relu %a : tensor<?x8xf32>
  return %r : tensor<?x8xf32>
}

// An epilogue may compute what it reads from the function's arguments
// (exp(%y) below), but NOT read a kernel that runs after the product
// (%late), nor broadcast the product's result.
// CHECK-LABEL: func.func @ready
// CHECK: nn.kernel -> tensor<?x8xf32> {
// CHECK-NEXT: nn.matmul
// CHECK-NEXT: nn.exp
// CHECK-NEXT: nn.add
// CHECK-NEXT: nn.yield
// CHECK-LABEL: func.func @not_ready
// CHECK: nn.kernel -> tensor<?x8xf32> {
// CHECK-NEXT: nn.matmul
// CHECK-NEXT: nn.yield
// CHECK: nn.kernel -> tensor<?x1xf32> {
// CHECK-NEXT: nn.reduce_sum
// CHECK-NEXT: nn.yield
// CHECK: nn.kernel -> tensor<?x8xf32> {
// CHECK-NEXT: nn.add
// CHECK-NEXT: nn.yield
func.func @ready(%x: tensor<?x4xf32>, %w: tensor<4x8xf32>, %y: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %h = nn.matmul %x, %w : tensor<?x4xf32>, tensor<4x8xf32>
  %e = nn.exp %y : tensor<?x8xf32>
  %a = nn.add %h, %e : tensor<?x8xf32>, tensor<?x8xf32>
  return %a : tensor<?x8xf32>
}
func.func @not_ready(%x: tensor<?x4xf32>, %w: tensor<4x8xf32>, %y: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %h = nn.matmul %x, %w : tensor<?x4xf32>, tensor<4x8xf32>
  %late = nn.reduce_sum %y {axes = array<i64: 1>, keepdims = true} : tensor<?x8xf32>
  %a = nn.add %h, %late : tensor<?x8xf32>, tensor<?x1xf32>
  return %a : tensor<?x8xf32>
}

// A reduction computes its elementwise producer, and its elementwise
// consumer of the same shape runs as it stores: sqrt(sum(x * x)) is one
// kernel. A producer also read after the reduction is stored by it
// (multi-output): %d feeds the product below.
// CHECK-LABEL: func.func @reductions
// CHECK: %[[R:.*]]:2 = nn.kernel -> tensor<?x4xf32>, tensor<4xf32> {
// CHECK-NEXT: nn.mul
// CHECK-NEXT: nn.reduce_sum
// CHECK-NEXT: nn.sqrt
// CHECK-NEXT: nn.yield
// CHECK: nn.kernel
// CHECK-NEXT: nn.transpose
// CHECK-NEXT: nn.matmul %{{.*}}, %[[R]]#0
func.func @reductions(%x: tensor<?x4xf32>, %y: tensor<?x4xf32>) -> (tensor<4xf32>, tensor<4x4xf32>) {
  %d = nn.mul %x, %y : tensor<?x4xf32>, tensor<?x4xf32>
  %s = nn.reduce_sum %d {axes = array<i64: 0>} : tensor<?x4xf32>
  %n = nn.sqrt %s : tensor<4xf32>
  %t = nn.transpose %x {perm = array<i64: 1, 0>} : tensor<?x4xf32>
  %g = nn.matmul %t, %d : tensor<4x?xf32>, tensor<?x4xf32>
  return %n, %g : tensor<4xf32>, tensor<4x4xf32>
}

// A transpose read as a product's right operand is materialized.
// CHECK-LABEL: func.func @right_transpose
// CHECK: nn.kernel -> tensor<8x4xf32> {
// CHECK-NEXT: nn.transpose
// CHECK-NEXT: nn.yield
// CHECK: nn.kernel -> tensor<?x4xf32> {
// CHECK-NEXT: nn.matmul
func.func @right_transpose(%x: tensor<?x8xf32>, %w: tensor<4x8xf32>) -> tensor<?x4xf32> {
  %t = nn.transpose %w {perm = array<i64: 1, 0>} : tensor<4x8xf32>
  %h = nn.matmul %x, %t : tensor<?x8xf32>, tensor<8x4xf32>
  return %h : tensor<?x4xf32>
}

// Horizontal: independent updates of two weights are one kernel; a kernel
// that reads one of their results (through a view) is not merged with it.
// CHECK-LABEL: func.func @updates
// CHECK: %[[U:.*]]:2 = nn.kernel -> tensor<4xf32>, tensor<8xf32> {
// CHECK-NEXT: nn.mul
// CHECK-NEXT: nn.sub
// CHECK-NEXT: nn.mul
// CHECK-NEXT: nn.sub
// CHECK-NEXT: nn.yield
// CHECK: %[[V:.*]] = nn.reshape %[[U]]#0
// CHECK-NEXT: nn.kernel -> tensor<2x2xf32> {
// CHECK-NEXT: nn.exp %[[V]]
func.func @updates(%a: tensor<4xf32>, %ga: tensor<4xf32>, %b: tensor<8xf32>, %gb: tensor<8xf32>)
    -> (tensor<4xf32>, tensor<8xf32>, tensor<2x2xf32>) {
  %lr = nn.constant dense<0.1> : tensor<f32>
  %sa = nn.mul %ga, %lr : tensor<4xf32>, tensor<f32>
  %na = nn.sub %a, %sa : tensor<4xf32>, tensor<4xf32>
  %sb = nn.mul %gb, %lr : tensor<8xf32>, tensor<f32>
  %nb = nn.sub %b, %sb : tensor<8xf32>, tensor<8xf32>
  %v = nn.reshape %na {shape = array<i64: 2, 2>} : tensor<4xf32>
  %dep = nn.exp %v : tensor<2x2xf32>
  return %na, %nb, %dep : tensor<4xf32>, tensor<8xf32>, tensor<2x2xf32>
}

// Rematerialization: relu(x) is read by two elementwise ops, and x is an
// argument (alive anyway): each reader computes relu again instead of
// reading a stored copy; no kernel stores it.
// CHECK-LABEL: func.func @remat
// CHECK: nn.kernel
// CHECK-NEXT: nn.relu %arg0
// CHECK-NEXT: nn.mul
// CHECK: nn.kernel
// CHECK-NEXT: nn.relu %arg0
// CHECK-NEXT: nn.add
func.func @remat(%x: tensor<4xf32>, %y: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  %r = nn.relu %x : tensor<4xf32>
  %a = nn.mul %r, %y : tensor<4xf32>, tensor<4xf32>
  %s = nn.reduce_sum %a {axes = array<i64: 0>, keepdims = true} : tensor<4xf32>
  %b = nn.add %r, %s : tensor<4xf32>, tensor<1xf32>
  return %a, %b : tensor<4xf32>, tensor<4xf32>
}

// Must not: exp is no cheap op; and relu(e) would keep e (dead after it
// otherwise) alive until its last reader.
// CHECK-LABEL: func.func @no_remat
// CHECK-COUNT-1: nn.exp
// CHECK-COUNT-1: nn.relu
// CHECK: return
func.func @no_remat(%x: tensor<4xf32>, %y: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  %e = nn.exp %x : tensor<4xf32>
  %r = nn.relu %e : tensor<4xf32>
  %a = nn.mul %r, %y : tensor<4xf32>, tensor<4xf32>
  %s = nn.reduce_sum %a {axes = array<i64: 0>, keepdims = true} : tensor<4xf32>
  %b = nn.add %r, %s : tensor<4xf32>, tensor<1xf32>
  return %a, %b : tensor<4xf32>, tensor<4xf32>
}
