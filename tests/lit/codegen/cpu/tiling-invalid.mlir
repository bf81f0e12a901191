// Recorded blocking choices are checked against the op's shapes.
// RUN: nnc-opt --pass-pipeline='builtin.module(func.func(nnc-choose-tiling))' --split-input-file --verify-diagnostics %s

func.func @block(%x: tensor<?x3x8x8xf32>, %w: tensor<6x3x3x3xf32>) -> tensor<?x6x8x8xf32> {
  // expected-error @+1 {{tiling choice 'channel_block' = 4 does not divide 6}}
  %0 = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>, nnc.tiling = {channel_block = 4 : i64}} : tensor<?x3x8x8xf32>, tensor<6x3x3x3xf32>
  return %0 : tensor<?x6x8x8xf32>
}

// -----

func.func @rows(%a: tensor<?x32xf32>, %b: tensor<32x4xf32>) -> tensor<?x4xf32> {
  // expected-error @+1 {{a register block of at most 16 rows and 8 vectors}}
  %0 = nn.matmul %a, %b {nnc.tiling = {depth = 8 : i64, group = 2 : i64, rows = 40 : i64, vectors = 1 : i64}} : tensor<?x32xf32>, tensor<32x4xf32>
  return %0 : tensor<?x4xf32>
}

// -----

func.func @unknown(%a: tensor<?x32xf32>, %b: tensor<32x4xf32>) -> tensor<?x4xf32> {
  // expected-error @+1 {{unknown or non-integer tiling choice 'tile'}}
  %0 = nn.matmul %a, %b {nnc.tiling = {tile = 8 : i64}} : tensor<?x32xf32>, tensor<32x4xf32>
  return %0 : tensor<?x4xf32>
}

// -----

func.func @kernel_rows(%x: tensor<?x3x8x8xf32>, %dy: tensor<?x6x8x8xf32>) -> tensor<6x3x3x3xf32> {
  // expected-error @+1 {{tiling choice 'kernel_rows' = 2 is neither 1 nor the kernel's 3}}
  %0 = nn.conv2d_grad_weight %x, %dy {groups = 1 : i64, kernel = array<i64: 3, 3>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>, nnc.tiling = {kernel_rows = 2 : i64}} : tensor<?x3x8x8xf32>, tensor<?x6x8x8xf32>
  return %0 : tensor<6x3x3x3xf32>
}

// -----

func.func @winograd_strided(%x: tensor<?x16x8x8xf32>, %w: tensor<16x16x3x3xf32>) -> tensor<?x16x4x4xf32> {
  // expected-error @+1 {{tiling choice 'winograd' on a convolution that is not 3x3, unit-stride, one-group with padding of at most 2}}
  %0 = nn.conv2d %x, %w {stride = array<i64: 2, 2>, padding = array<i64: 1, 1>, nnc.tiling = {channel_block = 1 : i64, winograd = 1 : i64}} : tensor<?x16x8x8xf32>, tensor<16x16x3x3xf32>
  return %0 : tensor<?x16x4x4xf32>
}

// -----

func.func @winograd_block(%x: tensor<?x512x56x56xf32>, %w: tensor<512x512x3x3xf32>) -> tensor<?x512x56x56xf32> {
  // expected-error-re @+1 {{tiling choice 'winograd' = 28 takes {{[0-9]+}} bytes a block, more than 1048576}}
  %0 = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>, nnc.tiling = {channel_block = 1 : i64, winograd = 28 : i64}} : tensor<?x512x56x56xf32>, tensor<512x512x3x3xf32>
  return %0 : tensor<?x512x56x56xf32>
}
