// RUN: nnc-opt %s -nnc-autodiff -nnc-build-train-step -canonicalize | FileCheck %s

// Adam: two state tensors per parameter, bias correction from the step t.
// CHECK-LABEL: func.func @q_train_step
// CHECK-SAME: (%[[X:.*]]: tensor<?x3xf32> {{.*}}, %[[W:.*]]: tensor<3xf32> {nn.name = "w", nn.role = "param"},
// CHECK-SAME: %[[M:.*]]: tensor<3xf32> {nn.name = "w.exp_avg", nn.role = "opt_state"},
// CHECK-SAME: %[[V:.*]]: tensor<3xf32> {nn.name = "w.exp_avg_sq", nn.role = "opt_state"},
// CHECK-SAME: %[[T:.*]]: tensor<f32> {nn.name = "step", nn.role = "step"},
// CHECK-SAME: %[[LR:.*]]: tensor<f32> {nn.name = "lr", nn.role = "lr", nn.value = 1.000000e-03 : f64})
// CHECK-SAME: -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}, tensor<3xf32> {nn.name = "w", nn.role = "param"},
// CHECK-SAME: tensor<3xf32> {nn.name = "w.exp_avg", nn.role = "opt_state"}, tensor<3xf32> {nn.name = "w.exp_avg_sq", nn.role = "opt_state"})
// CHECK-DAG: %[[B1:.*]] = nn.constant dense<0.899999976> : tensor<f32>
// CHECK-DAG: %[[B2:.*]] = nn.constant dense<9.990000e-01> : tensor<f32>
// CHECK: nn.pow %[[B2]], %[[T]]
// CHECK: nn.pow %[[B1]], %[[T]]
// The learning rate is an argument (a schedule sets it between steps).
// CHECK: nn.mul {{.*}}, %[[LR]]
// CHECK: return
module attributes {nn.train = {optimizer = {kind = "adam", lr = 1.0e-03 : f64, beta1 = 0.9 : f64,
                                            beta2 = 0.999 : f64, eps = 1.0e-08 : f64,
                                            weight_decay = 0.0 : f64}}} {
  func.func @q(%x: tensor<?x3xf32> {nn.name = "x", nn.role = "input"},
               %w: tensor<3xf32> {nn.name = "w", nn.role = "param"})
      -> (tensor<f32> {nn.name = "loss", nn.role = "loss"}) {
    %a = nn.mul %x, %w : tensor<?x3xf32>, tensor<3xf32>
    %l = nn.reduce_mean %a {axes = array<i64: 0, 1>} : tensor<?x3xf32>
    return %l : tensor<f32>
  }
}
