func.func @m(%arg0: tensor<4x3xf32>) -> tensor<4x3xf32> {
  %c = nn.constant dense<[1.0, 2.0, 3.0]> : tensor<3xf32>
  %0 = nn.add %arg0, %c : tensor<4x3xf32>, tensor<3xf32>
  return %0 : tensor<4x3xf32>
}
