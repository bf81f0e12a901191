// RUN: nnc-opt %s -nnc-autodiff -verify-diagnostics -split-input-file

// A gradient cannot flow through step (a perceptron's threshold).
func.func @through_step(%w: tensor<3xf32> {nn.name = "w", nn.role = "param"})
    -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}) {
  // expected-error @+1 {{cannot differentiate through 'nn.step': it has no gradient, but the loss depends on a trained parameter through it}}
  %s = nn.step %w : tensor<3xf32>
  %l = nn.reduce_sum %s {axes = array<i64: 0>} : tensor<3xf32>
  return %l : tensor<f32>
}

// -----

// A step that no parameter reaches is fine: the gradient simply stops.
func.func @frozen_step(%x: tensor<3xf32> {nn.name = "x", nn.role = "input"},
                       %w: tensor<3xf32> {nn.name = "w", nn.role = "param"})
    -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}) {
  %s = nn.step %x : tensor<3xf32>
  %p = nn.mul %s, %w : tensor<3xf32>, tensor<3xf32>
  %l = nn.reduce_sum %p {axes = array<i64: 0>} : tensor<3xf32>
  return %l : tensor<f32>
}
