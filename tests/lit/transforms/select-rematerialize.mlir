// nnc-select-functions keeps the functions a backend compiles.
// RUN: nnc-opt '--nnc-select-functions=functions=b' %s | FileCheck %s --check-prefix=SEL
// SEL-NOT: func.func @a
// SEL: func.func @b

// nnc-rematerialize copies a cheap elementwise op into each reader that
// could compute it in place (here the relu, read by two elementwise ops).
// RUN: nnc-opt --pass-pipeline='builtin.module(func.func(nnc-rematerialize))' %s | FileCheck %s --check-prefix=REMAT
// REMAT-LABEL: func.func @b
// REMAT-COUNT-2: nn.relu
// REMAT-NOT: nn.relu

func.func @a(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}

func.func @b(%x: tensor<4xf32>, %y: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  %r = nn.relu %x : tensor<4xf32>
  %e = nn.exp %r : tensor<4xf32>
  %t = nn.tanh %r : tensor<4xf32>
  return %e, %t : tensor<4xf32>, tensor<4xf32>
}
