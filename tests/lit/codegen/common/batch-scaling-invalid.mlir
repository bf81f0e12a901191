// Sizes the backends cannot relate to the batch are errors at the value.
// RUN: nnc-opt --nnc-batch-scaling --split-input-file --verify-diagnostics %s

func.func @two_batch_axes(%x: tensor<?x1xf32>, %y: tensor<1x?xf32>) -> tensor<?x?xf32> {
  // expected-error @+1 {{this value has 2 batch-sized axes; the CPU backend supports one}}
  %0 = nn.mul %x, %y : tensor<?x1xf32>, tensor<1x?xf32>
  return %0 : tensor<?x?xf32>
}
