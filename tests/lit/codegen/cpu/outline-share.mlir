// nnc-outline-kernels passes the workspace views a kernel reads as
// arguments (in the order of first use) rather than rebuilding them at their
// offsets, so the same product on buffers that lie in different places,
// arguments or workspace, is one function, called four times.
// RUN: nnc-opt --nnc-prepare --nnc-lower-to-loops --nnc-outline-kernels %s | FileCheck %s
// CHECK: func.func private @m_k0(%arg0: memref<8x8xf32> {llvm.noalias}, %arg1: memref<8x8xf32> {llvm.noalias}, %arg2: memref<8x8xf32> {llvm.noalias})
// CHECK-NOT: func.func private
// CHECK: call @m_k0(%view, %arg1, %arg0)
// CHECK: call @m_k0(%view_{{[0-9]+}}, %arg2, %view)
// CHECK: call @m_k0(
// CHECK: call @m_k0(%arg4, %arg1, %view_{{[0-9]+}})
// CHECK-NOT: func.func private

// Lowered to the LLVM dialect, the step calls it four times.
// RUN: nnc-opt --nnc-prepare --nnc-lower-to-loops --nnc-cpu-llvm %s | FileCheck %s --check-prefix=LLVM
// LLVM-COUNT-4: llvm.call @m_k0(

func.func @m(%x: tensor<8x8xf32>, %w1: tensor<8x8xf32>, %w2: tensor<8x8xf32>, %w3: tensor<8x8xf32>) -> tensor<8x8xf32> {
  %0 = nn.matmul %x, %w1 : tensor<8x8xf32>, tensor<8x8xf32>
  %1 = nn.matmul %0, %w2 : tensor<8x8xf32>, tensor<8x8xf32>
  %2 = nn.matmul %1, %w3 : tensor<8x8xf32>, tensor<8x8xf32>
  %3 = nn.matmul %2, %w1 : tensor<8x8xf32>, tensor<8x8xf32>
  return %3 : tensor<8x8xf32>
}
