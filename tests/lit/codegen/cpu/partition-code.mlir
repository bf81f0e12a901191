// nnc-partition-code: every function moves into one of `parts` nested
// modules, largest first into the lightest; each partition declares
// (privately) what its functions call in the others, and the external
// declarations they use.
// RUN: nnc-opt --nnc-partition-code=parts=2 %s | FileCheck %s
// CHECK-LABEL: module @part0 {
// CHECK-DAG: func.func private @helper(f32) -> f32
// CHECK-DAG: func.func private @ext(f32) -> f32
// CHECK-DAG: func.func @big(
// CHECK-LABEL: module @part1 {
// CHECK-DAG: func.func private @small(
// CHECK-DAG: func.func private @helper(
// CHECK-NOT: func.func private @ext
// CHECK-NOT: func.func @big

// Functions are dealt, not copied: each definition exists once.
// RUN: nnc-opt --nnc-partition-code=parts=2 %s | grep -c "^    func.func @big(" | FileCheck %s --check-prefix=ONCE
// RUN: nnc-opt --nnc-partition-code=parts=3 %s | FileCheck %s --check-prefix=THREE
// ONCE: 1
// THREE: module @part0
// THREE: module @part1
// THREE: module @part2

// A private constant (a literal tensor's values) is copied into each
// partition that reads it; a global that could be written is refused.
// RUN: nnc-opt --nnc-partition-code=parts=2 %s | FileCheck %s --check-prefix=CONST
// CONST-LABEL: module @part0 {
// CONST: memref.global "private" constant @table
// CONST-LABEL: module @part1 {
// CONST: memref.global "private" constant @table
// RUN: echo 'memref.global "private" @g : memref<4xf32>' | not nnc-opt --nnc-partition-code 2>&1 | FileCheck %s --check-prefix=BAD
// BAD: only functions and private constants can be dealt into partitions

// A literal tensor lowers through the partitions to the LLVM dialect.
// RUN: nnc-opt --nnc-prepare --nnc-lower-to-loops --nnc-cpu-llvm %S/Inputs/literal.mlir | FileCheck %s --check-prefix=LIT
// LIT: llvm.mlir.global private constant @m_const0(dense<[1.000000e+00, 2.000000e+00, 3.000000e+00]>

func.func private @ext(f32) -> f32
memref.global "private" constant @table : memref<2xf32> = dense<[1.0, 2.0]>

func.func @big(%x: f32) -> f32 {
  %t = memref.get_global @table : memref<2xf32>
  %0 = func.call @helper(%x) : (f32) -> f32
  %1 = func.call @ext(%0) : (f32) -> f32
  %2 = arith.addf %1, %1 : f32
  %3 = arith.mulf %2, %2 : f32
  %4 = arith.addf %3, %3 : f32
  return %4 : f32
}

func.func private @small(%x: f32) -> f32 {
  %0 = func.call @helper(%x) : (f32) -> f32
  %t = memref.get_global @table : memref<2xf32>
  return %0 : f32
}

func.func private @helper(%x: f32) -> f32 {
  %0 = arith.addf %x, %x : f32
  return %0 : f32
}
