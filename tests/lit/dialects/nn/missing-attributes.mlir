// Hand-written IR reaches type inference before the verifier: ops missing
// an attribute they require, or with operands that are not ranked tensors,
// are errors at the op, never a crash.
// RUN: nnc-opt --split-input-file --verify-diagnostics %s

func.func @conv(%x: tensor<?x3x8x8xf32>, %w: tensor<6x3x3x3xf32>) -> tensor<?x6x8x8xf32> {
  // expected-error @+1 {{'nn.conv2d' op requires attribute 'stride'}}
  %0 = nn.conv2d %x, %w {padding = array<i64: 1, 1>} : tensor<?x3x8x8xf32>, tensor<6x3x3x3xf32>
  return %0 : tensor<?x6x8x8xf32>
}

// -----

func.func @pool(%x: tensor<?x3x8x8xf32>) -> tensor<?x3x4x4xf32> {
  // expected-error @+1 {{'nn.max_pool2d' op requires attribute 'padding'}}
  %0 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, stride = array<i64: 2, 2>} : tensor<?x3x8x8xf32>
  return %0 : tensor<?x3x4x4xf32>
}

// -----

func.func @reshape(%x: tensor<?x3x8x8xf32>) -> tensor<?x192xf32> {
  // expected-error @+1 {{'nn.reshape' op requires attribute 'shape'}}
  %0 = nn.reshape %x : tensor<?x3x8x8xf32>
  return %0 : tensor<?x192xf32>
}

// -----

func.func @transpose(%x: tensor<2x3xf32>) -> tensor<3x2xf32> {
  // expected-error @+1 {{'nn.transpose' op requires attribute 'perm'}}
  %0 = nn.transpose %x : tensor<2x3xf32>
  return %0 : tensor<3x2xf32>
}

// -----

func.func @grad_weight(%x: tensor<?x3x8x8xf32>, %dy: tensor<?x6x8x8xf32>) -> tensor<6x3x3x3xf32> {
  // expected-error @+1 {{'nn.conv2d_grad_weight' op requires attribute 'kernel'}}
  %0 = nn.conv2d_grad_weight %x, %dy {groups = 1 : i64, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x3x8x8xf32>, tensor<?x6x8x8xf32>
  return %0 : tensor<6x3x3x3xf32>
}
