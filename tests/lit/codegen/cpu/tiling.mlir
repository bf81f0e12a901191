// nnc-choose-tiling records each product's and convolution's blocking as
// data (nnc.tiling); the lowerings read it back.
// RUN: nnc-opt --pass-pipeline='builtin.module(func.func(nnc-choose-tiling))' %s | FileCheck %s
// The choices follow the machine the options describe: AVX-512's 32
// registers of 16 lanes with a 48 KiB L1, AVX2's 16 registers of 8 lanes
// with a 32 KiB L1.
// RUN: nnc-opt --pass-pipeline='builtin.module(func.func(nnc-choose-tiling{lanes=16 registers=32 l1=49152 l2=1048576}))' %s | FileCheck %s --check-prefix=AVX512
// RUN: nnc-opt --pass-pipeline='builtin.module(func.func(nnc-choose-tiling{lanes=8 registers=16 l1=32768 l2=524288}))' %s | FileCheck %s --check-prefix=AVX2
// A product at most one vector wide takes blocks of 12 rows.
// CHECK-LABEL: func.func @product
// CHECK: nn.matmul {{.*}} {nnc.tiling = {depth = {{[0-9]+}} : i64, group = {{[0-9]+}} : i64, rows = 12 : i64, vectors = 1 : i64}}
// AVX512-LABEL: func.func @product
// AVX512: nnc.tiling = {depth = 512 : i64, group = 21 : i64, rows = 12 : i64, vectors = 1 : i64}
// AVX2-LABEL: func.func @product
// AVX2: nnc.tiling = {depth = 512 : i64, group = 10 : i64, rows = 12 : i64, vectors = 1 : i64}
func.func @product(%a: tensor<?x32xf32>, %b: tensor<32x4xf32>) -> tensor<?x4xf32> {
  %0 = nn.matmul %a, %b : tensor<?x32xf32>, tensor<32x4xf32>
  return %0 : tensor<?x4xf32>
}

// A recorded choice is kept.
// CHECK-LABEL: func.func @recorded
// CHECK: nnc.tiling = {depth = 8 : i64, group = 2 : i64, rows = 3 : i64, vectors = 1 : i64}
func.func @recorded(%a: tensor<?x32xf32>, %b: tensor<32x4xf32>) -> tensor<?x4xf32> {
  %0 = nn.matmul %a, %b {nnc.tiling = {depth = 8 : i64, group = 2 : i64, rows = 3 : i64, vectors = 1 : i64}} : tensor<?x32xf32>, tensor<32x4xf32>
  return %0 : tensor<?x4xf32>
}

// Convolutions and their gradients get channel blocks that divide their
// channels, and a weight gradient its batch chunk.
// CHECK-LABEL: func.func @conv
// CHECK: nn.conv2d {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64}
// CHECK: nn.conv2d_grad_weight {{.*}}nnc.tiling = {batch_chunk = {{[0-9]+}} : i64, channel_block = {{[0-9]+}} : i64, input_block = {{[0-9]+}} : i64, kernel_rows = {{[0-9]+}} : i64}
func.func @conv(%x: tensor<?x3x8x8xf32>, %w: tensor<6x3x3x3xf32>, %dy: tensor<?x6x8x8xf32>) -> (tensor<?x6x8x8xf32>, tensor<6x3x3x3xf32>) {
  %0 = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x3x8x8xf32>, tensor<6x3x3x3xf32>
  %1 = nn.conv2d_grad_weight %x, %dy {groups = 1 : i64, kernel = array<i64: 3, 3>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x3x8x8xf32>, tensor<?x6x8x8xf32>
  return %0, %1 : tensor<?x6x8x8xf32>, tensor<6x3x3x3xf32>
}

// The lowering follows the recorded choice: depth blocks of 37 steps for
// @recorded, the chosen 128 for @chosen (on the AVX-512 machine above).
// RUN: nnc-opt --nnc-prepare --nnc-choose-tiling='lanes=16 registers=32 l1=49152 l2=1048576' --nnc-lower-to-loops %s | FileCheck %s --check-prefix=LOOPS
// LOOPS-LABEL: func.func @recorded_depth
// LOOPS: arith.constant 37 : index
// LOOPS-LABEL: func.func @chosen_depth
// LOOPS-NOT: arith.constant 37 : index
// LOOPS: arith.constant 128 : index
// LOOPS-NOT: arith.constant 37 : index
func.func @recorded_depth(%a: tensor<?x32xf32>, %b: tensor<32x4xf32>) -> tensor<?x4xf32> {
  %0 = nn.matmul %a, %b {nnc.tiling = {depth = 37 : i64, group = 2 : i64, rows = 3 : i64, vectors = 1 : i64}} : tensor<?x32xf32>, tensor<32x4xf32>
  return %0 : tensor<?x4xf32>
}

func.func @chosen_depth(%a: tensor<?x32xf32>, %b: tensor<32x64xf32>) -> tensor<?x64xf32> {
  %0 = nn.matmul %a, %b : tensor<?x32xf32>, tensor<32x64xf32>
  return %0 : tensor<?x64xf32>
}

// A strided row too wide for a block of channels beside it (an ImageNet
// stem: 112 columns, 14 AVX2 vectors), read from its phase planes, is
// taken in chunks of vectors; a unit-stride one keeps whole rows (and runs
// as Winograd's). AVX-512's multiply-adds broadcast their weights from
// memory, so there a taller block of channels takes fewer vectors.
// AVX512-LABEL: func.func @wide
// AVX512: nn.conv2d {{.*}}nnc.tiling = {channel_block = 8 : i64, row_vectors = 2 : i64}
// AVX2-LABEL: func.func @wide
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = 4 : i64, row_vectors = 3 : i64}
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = 1 : i64, winograd = 2 : i64}
func.func @wide(%x: tensor<1x3x224x224xf32>, %w: tensor<64x3x7x7xf32>, %y: tensor<1x64x56x56xf32>, %v: tensor<64x64x3x3xf32>) -> (tensor<1x64x112x112xf32>, tensor<1x64x56x56xf32>) {
  %0 = nn.conv2d %x, %w {stride = array<i64: 2, 2>, padding = array<i64: 3, 3>} : tensor<1x3x224x224xf32>, tensor<64x3x7x7xf32>
  %1 = nn.conv2d %y, %v {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<1x64x56x56xf32>, tensor<64x64x3x3xf32>
  return %0, %1 : tensor<1x64x112x112xf32>, tensor<1x64x56x56xf32>
}

// A row that does not divide into chunks leaves a last one with fewer
// accumulators than a multiply-add's latency needs: 28 columns (4 AVX2
// vectors) take a block of 2 channels on the whole row, or 2 chunks of 2,
// not a chunk of 3 and one of 1 (4 sums, each waiting on the last).
// AVX2-LABEL: func.func @uneven
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = 2 : i64}
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = 4 : i64, row_vectors = 2 : i64}
func.func @uneven(%x: tensor<1x64x56x56xf32>, %w: tensor<128x64x3x3xf32>, %w1: tensor<128x64x1x1xf32>) -> (tensor<1x128x28x28xf32>, tensor<1x128x28x28xf32>) {
  %0 = nn.conv2d %x, %w {stride = array<i64: 2, 2>, padding = array<i64: 1, 1>} : tensor<1x64x56x56xf32>, tensor<128x64x3x3xf32>
  %1 = nn.conv2d %x, %w1 {stride = array<i64: 2, 2>, padding = array<i64: 0, 0>} : tensor<1x64x56x56xf32>, tensor<128x64x1x1xf32>
  return %0, %1 : tensor<1x128x28x28xf32>, tensor<1x128x28x28xf32>
}

// A strided weight gradient, whose input (64 planes of 32 x 32, 256 KiB a
// sample) outweighs its output gradient (128 of 16 x 16, 128 KiB): input
// channel blocks outside, and chunks of the samples whose output gradient
// takes three quarters of L2 (3); a unit-stride one, its input and output
// gradient the same size, keeps channel blocks outside, its chunk holding
// both.
// AVX2-LABEL: func.func @strided_weight_grad
// AVX2: nn.conv2d_grad_weight {{.*}}nnc.tiling = {batch_chunk = 3 : i64, channel_block = 4 : i64, input_block = 1 : i64, inputs_outer = 1 : i64, kernel_rows = 1 : i64}
// AVX2: nn.conv2d_grad_weight {{.*}}nnc.tiling = {batch_chunk = 20 : i64, channel_block = 1 : i64, input_block = 1 : i64, kernel_rows = 3 : i64, winograd = {{[0-9]+}} : i64}
func.func @strided_weight_grad(%x: tensor<?x64x32x32xf32>, %dy: tensor<?x128x16x16xf32>, %x7: tensor<?x64x7x7xf32>, %dy7: tensor<?x64x7x7xf32>) -> (tensor<128x64x3x3xf32>, tensor<64x64x3x3xf32>) {
  %0 = nn.conv2d_grad_weight %x, %dy {groups = 1 : i64, kernel = array<i64: 3, 3>, stride = array<i64: 2, 2>, padding = array<i64: 1, 1>} : tensor<?x64x32x32xf32>, tensor<?x128x16x16xf32>
  %1 = nn.conv2d_grad_weight %x7, %dy7 {groups = 1 : i64, kernel = array<i64: 3, 3>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x64x7x7xf32>, tensor<?x64x7x7xf32>
  return %0, %1 : tensor<128x64x3x3xf32>, tensor<64x64x3x3xf32>
}

// Weights past L2 with a sample's input inside half of it (ResNet's last
// stage, 9 MiB of weights, a 98 KiB input): the rows of a sample run inside
// its channel blocks; with a larger input (VGG-scale, 1.6 MiB) they do not.
// The input gradient follows the same rule.
// AVX2-LABEL: func.func @big_weights
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64, channels_outer = 1 : i64, winograd = 2 : i64}
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64, winograd = 1 : i64}
// AVX2: nn.conv2d_grad_input {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64, channels_outer = 1 : i64, winograd = 2 : i64}
func.func @big_weights(%x: tensor<?x512x7x7xf32>, %w: tensor<512x512x3x3xf32>, %big: tensor<?x512x28x28xf32>, %dy: tensor<?x512x7x7xf32>) -> (tensor<?x512x7x7xf32>, tensor<?x512x28x28xf32>, tensor<?x512x7x7xf32>) {
  %0 = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x512x7x7xf32>, tensor<512x512x3x3xf32>
  %1 = nn.conv2d %big, %w {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x512x28x28xf32>, tensor<512x512x3x3xf32>
  %2 = nn.conv2d_grad_input %dy, %w {groups = 1 : i64, input_size = array<i64: 7, 7>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x512x7x7xf32>, tensor<512x512x3x3xf32>
  return %0, %1, %2 : tensor<?x512x7x7xf32>, tensor<?x512x28x28xf32>, tensor<?x512x7x7xf32>
}

// A weight gradient's batch chunk keeps the chunk's output gradient and
// input in L2: 64 + 64 planes of 32 x 32 (512 KiB a sample) one sample a
// chunk; 512 + 512 planes of 4 x 4 (64 KiB) eight.
// Both are Winograd's too (the direct kernel below 48 tiles a call), in
// blocks of tile rows whose transformed input and output gradient take L2
// per position: 64 rows of 16 and of 2 tiles.
// AVX2-LABEL: func.func @chunks
// AVX2: nn.conv2d_grad_weight {{.*}}nnc.tiling = {batch_chunk = 1 : i64, {{.*}}, winograd = 64 : i64}
// AVX2: nn.conv2d_grad_weight {{.*}}nnc.tiling = {batch_chunk = 8 : i64, {{.*}}, winograd = 64 : i64}
func.func @chunks(%x: tensor<?x64x32x32xf32>, %dy: tensor<?x64x32x32xf32>, %x4: tensor<?x512x4x4xf32>, %dy4: tensor<?x512x4x4xf32>) -> (tensor<64x64x3x3xf32>, tensor<512x512x3x3xf32>) {
  %0 = nn.conv2d_grad_weight %x, %dy {groups = 1 : i64, kernel = array<i64: 3, 3>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x64x32x32xf32>, tensor<?x64x32x32xf32>
  %1 = nn.conv2d_grad_weight %x4, %dy4 {groups = 1 : i64, kernel = array<i64: 3, 3>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x512x4x4xf32>, tensor<?x512x4x4xf32>
  return %0, %1 : tensor<64x64x3x3xf32>, tensor<512x512x3x3xf32>
}

// Winograd's F(2x2, 3x3) for 3x3 unit-stride layers of 16 channels or more
// both ways, the most tile rows a block whose transformed input and
// products (16 x 128 channels x tiles x 4 bytes) fit in L2: 4 rows of 16
// tiles with AVX2's 512 KiB, 8 with AVX-512's 1 MiB. 4x4 planes (2x2
// tiles) take their blocks' rows from several samples: 32 and 64 rows.
// Not for strided layers or 8 input channels.
// AVX2-LABEL: func.func @winograd
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64, winograd = 4 : i64}
// AVX2: nn.conv2d_grad_input {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64, winograd = 4 : i64}
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64}
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64}
// AVX2: nn.conv2d {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64, winograd = 32 : i64}
// AVX512-LABEL: func.func @winograd
// AVX512: nn.conv2d {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64, winograd = 8 : i64}
// AVX512: nn.conv2d {{.*}}nnc.tiling = {channel_block = {{[0-9]+}} : i64, winograd = 64 : i64}
func.func @winograd(%x: tensor<?x64x32x32xf32>, %w: tensor<64x64x3x3xf32>, %dy: tensor<?x64x32x32xf32>, %x8: tensor<?x8x32x32xf32>, %w8: tensor<64x8x3x3xf32>, %x4: tensor<?x64x4x4xf32>) -> (tensor<?x64x32x32xf32>, tensor<?x64x32x32xf32>, tensor<?x64x16x16xf32>, tensor<?x64x32x32xf32>, tensor<?x64x4x4xf32>) {
  %0 = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x64x32x32xf32>, tensor<64x64x3x3xf32>
  %1 = nn.conv2d_grad_input %dy, %w {groups = 1 : i64, input_size = array<i64: 32, 32>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x64x32x32xf32>, tensor<64x64x3x3xf32>
  %2 = nn.conv2d %x, %w {stride = array<i64: 2, 2>, padding = array<i64: 1, 1>} : tensor<?x64x32x32xf32>, tensor<64x64x3x3xf32>
  %3 = nn.conv2d %x8, %w8 {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x8x32x32xf32>, tensor<64x8x3x3xf32>
  %4 = nn.conv2d %x4, %w {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x64x4x4xf32>, tensor<64x64x3x3xf32>
  return %0, %1, %2, %3, %4 : tensor<?x64x32x32xf32>, tensor<?x64x32x32xf32>, tensor<?x64x16x16xf32>, tensor<?x64x32x32xf32>, tensor<?x64x4x4xf32>
}
