// The fusion pass writes each kernel member's role once, for both
// backends: computed where its one reader in the kernel reads it
// (nn.fused), and stored as it goes when read outside the kernel too
// (nn.stored). The rest are the kernel's roots.
// RUN: nnc-opt --nnc-fuse %s | FileCheck %s

// CHECK-LABEL: func.func @chain
// CHECK: nn.exp {{.*}} {nn.fused}
// CHECK-NEXT: nn.mul {{.*}} {nn.fused}
// CHECK-NEXT: nn.add
// CHECK-NOT: nn.fused
// CHECK: nn.yield
func.func @chain(%x: tensor<?x4xf32>, %y: tensor<?x4xf32>) -> tensor<?x4xf32> {
  %e = nn.exp %x : tensor<?x4xf32>
  %m = nn.mul %e, %y : tensor<?x4xf32>, tensor<?x4xf32>
  %a = nn.add %m, %y : tensor<?x4xf32>, tensor<?x4xf32>
  return %a : tensor<?x4xf32>
}

// A value also returned is stored as it is computed.
// CHECK-LABEL: func.func @stored
// CHECK: nn.exp {{.*}} {nn.fused, nn.stored}
// CHECK: nn.add
func.func @stored(%x: tensor<?x4xf32>, %y: tensor<?x4xf32>) -> (tensor<?x4xf32>, tensor<?x4xf32>) {
  %e = nn.exp %x : tensor<?x4xf32>
  %a = nn.add %e, %y : tensor<?x4xf32>, tensor<?x4xf32>
  return %e, %a : tensor<?x4xf32>, tensor<?x4xf32>
}

// A reduction's operand is computed in the reduction's loop.
// CHECK-LABEL: func.func @sum
// CHECK: nn.mul {{.*}} {nn.fused}
// CHECK: nn.reduce_sum
func.func @sum(%x: tensor<?x4xf32>) -> tensor<?xf32> {
  %m = nn.mul %x, %x : tensor<?x4xf32>, tensor<?x4xf32>
  %s = nn.reduce_sum %m {axes = array<i64: 1>} : tensor<?x4xf32>
  return %s : tensor<?xf32>
}
