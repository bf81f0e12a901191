// nnc-lower-to-loops: a prepared function becomes loops over buffers of the
// same name; each kernel an execute_region that outlining makes a function.
// RUN: nnc-opt --nnc-prepare --nnc-lower-to-loops %s | FileCheck %s
// CHECK-LABEL: func.func @m(
// CHECK-SAME: memref<1xi8>
// CHECK-SAME: index
// CHECK-SAME: attributes {nnc.cache = 0 : i64, nnc.inplace = array<i64: -1>, nnc.kernels = [{{.*}}ops = "matmul+add+relu"{{.*}}nnc.slots = array<i64
// CHECK: scf.execute_region {
// CHECK: vector.fma
// CHECK: } {nnc.kernel = 0 : i64}

// With profile=true every kernel is bracketed by the runtime's timers.
// RUN: nnc-opt --nnc-prepare --nnc-lower-to-loops=profile=true %s | FileCheck %s --check-prefix=PROF
// PROF: call @nnc_profile_begin(
// PROF: scf.execute_region
// PROF: call @nnc_profile_end(

// nnc-outline-kernels: one private function per kernel, called in order.
// RUN: nnc-opt --nnc-prepare --nnc-lower-to-loops --nnc-outline-kernels %s | FileCheck %s --check-prefix=OUT
// OUT-DAG: func.func private @m_k0({{.*}}memref{{.*}}{llvm.noalias}{{.*}}) attributes {passthrough = ["noinline"]}
// OUT-DAG: call @m_k0(
// OUT-NOT: scf.execute_region

// Down to the LLVM dialect (nnc-cpu-llvm), with alias scopes on accesses.
// RUN: nnc-opt --nnc-prepare --nnc-lower-to-loops --nnc-cpu-llvm %s | FileCheck %s --check-prefix=LLVM
// LLVM: llvm.func @m(
// LLVM: llvm.call @m_k0(
// LLVM: alias_scopes =

func.func @m(%arg0: tensor<?x4xf32>, %arg1: tensor<4x3xf32>, %arg2: tensor<3xf32>) -> tensor<?x3xf32> {
  %0 = nn.matmul %arg0, %arg1 : tensor<?x4xf32>, tensor<4x3xf32>
  %1 = nn.add %0, %arg2 : tensor<?x3xf32>, tensor<3xf32>
  %2 = nn.relu %1 : tensor<?x3xf32>
  return %2 : tensor<?x3xf32>
}
