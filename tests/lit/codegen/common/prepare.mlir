// The passes that prepare a function for either backend, one at a time.

// nnc-specialize-batch gives the batch a value and re-infers every type.
// RUN: nnc-opt --pass-pipeline='builtin.module(func.func(nnc-specialize-batch{batch=8}))' %s | FileCheck %s --check-prefix=SPEC
// SPEC: func.func @m(%arg0: tensor<8x4xf32>, %arg1: tensor<8xi32>, %arg2: tensor<4x3xf32>, %arg3: tensor<3xf32>) -> (tensor<8x3xf32>, tensor<f32>)
// SPEC: nn.matmul {{.*}} : tensor<8x4xf32>, tensor<4x3xf32>
// SPEC: nn.relu {{.*}} : tensor<8x3xf32>
// A batch of 0 leaves it symbolic.
// RUN: nnc-opt --pass-pipeline='builtin.module(func.func(nnc-specialize-batch))' %s | FileCheck %s --check-prefix=SYM
// SYM: nn.relu {{.*}} : tensor<?x3xf32>

// nnc-decompose leaves only core ops: the loss becomes a maximum, exp, log,
// sums and a one-hot.
// RUN: nnc-opt --nnc-decompose %s | FileCheck %s --check-prefix=DEC
// DEC-NOT: nn.softmax_cross_entropy
// DEC: nn.reduce_max
// DEC: nn.exp
// DEC: nn.log
// DEC: nn.one_hot
// DEC: nn.reduce_sum

// nnc-batch-scaling records each dynamic size per batch element.
// RUN: nnc-opt --nnc-batch-scaling %s | FileCheck %s --check-prefix=SCALE
// SCALE: %arg0: tensor<?x4xf32> {nn.per_batch = array<i64: 1, 4>}
// SCALE: nn.matmul {{.*}} {nn.per_batch = [array<i64: 1, 3>]}
// SCALE: nn.softmax_cross_entropy %2, %arg1 : tensor

// The whole preparation (nnc-prepare): decomposed, scaled, fused.
// RUN: nnc-opt --nnc-prepare %s | FileCheck %s --check-prefix=PREP
// PREP: nn.kernel
// PREP-NOT: nn.softmax_cross_entropy
// PREP: nn.per_batch

func.func @m(%arg0: tensor<?x4xf32>, %arg1: tensor<?xi32>, %arg2: tensor<4x3xf32>, %arg3: tensor<3xf32>) -> (tensor<?x3xf32>, tensor<f32>) {
  %0 = nn.matmul %arg0, %arg2 : tensor<?x4xf32>, tensor<4x3xf32>
  %1 = nn.add %0, %arg3 : tensor<?x3xf32>, tensor<3xf32>
  %2 = nn.relu %1 : tensor<?x3xf32>
  %3 = nn.softmax_cross_entropy %2, %arg1 : tensor<?x3xf32>, tensor<?xi32>
  return %2, %3 : tensor<?x3xf32>, tensor<f32>
}
