//===- CudaEmitter.h - fused kernels as CUDA C++ ----------------*- C++ -*-===//
//
// Turns the fused IR (nn.kernel ops, as the fusion pass leaves them) into
// CUDA C++: per nn.kernel, one `extern "C" __global__` function per pass
// over memory (elementwise chains with their broadcasts and multi-output
// stores; reductions with their elementwise producers and epilogue), with
// launch geometry computed from the shapes and the batch size. The same
// source compiles with NVRTC for a GPU and with the host compiler behind
// an emulation header for the tests.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_CUDAEMITTER_H
#define NNC_COMPILER_CODEGEN_CUDA_CUDAEMITTER_H

#include "compiler/codegen/common/Prepare.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <string>
#include <vector>

namespace nnc::cuda {

/// One buffer a launch reads or writes: the IR value's position (argument
/// k, or result r of op n of the function body), element type and shape
/// (a negative size -k is k per batch element).
struct Param {
  std::string name;      // in the source
  std::string viewOf;    // a reshape: the buffer it views (else empty)
  bool output = false;   // written by the launch
  bool integer = false;  // i32, else f32
  std::vector<int64_t> shape;
};

/// One `__global__` function: its name, the nn.kernel it comes from, its
/// DSL location and member ops, its buffers in parameter order (then the
/// batch size), and its thread count as `perBatch * batch + fixed`.
struct Launch {
  std::string name, loc, ops;
  unsigned kernel = 0;
  std::vector<Param> params;
  int64_t threadsPerBatch = 0, threadsFixed = 0;
  /// Takes `const i64 *rng` (seed, step) before the batch size (dropout).
  bool rng = false;
  /// Threads of a block meet at barriers (`__syncthreads`, shared memory).
  bool barriers = false;
  /// nn.all_reduce: no kernel, but params[0] combined into params[1] over
  /// a run's ranks (their sum with `sum`, else their weighted mean) by the
  /// runtime; its threads are the elements.
  bool collective = false, sum = false;
};

struct CudaModule {
  std::string source;
  std::vector<Launch> launches;
  /// nn.kernels not generated (with `skipUnsupported`): "ops at loc".
  std::vector<std::string> skipped;
  /// The buffers holding the function's arguments and results, by name
  /// (a returned view names the buffer it views).
  std::vector<std::string> args, results;
};

/// Threads per block of every launch (the prelude's launch bounds).
inline constexpr int kBlockSize = 256;
/// The most blocks a launch gets: kernels loop over their work (grid
/// stride), so a grid larger than the device holds at once only adds
/// scheduling; 4096 blocks of 256 threads fill the largest GPUs.
inline constexpr int kMaxBlocks = 4096;

/// Emits the kernels of `fn`, a function after codegen::prepare (decomposed,
/// fused; `scaling` from the same call). Fails with a located error on an
/// op the CUDA backend cannot generate yet, or, with `skipUnsupported`,
/// lists that kernel in `skipped` and goes on.
mlir::FailureOr<CudaModule> emitCuda(mlir::func::FuncOp fn, const codegen::BatchScaling &scaling,
                                     bool skipUnsupported = false);

/// The prelude every generated source starts with: types, launch bounds,
/// the index helpers. Separate so that the host emulation can replace the
/// CUDA built-ins underneath it.
const char *prelude();

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_CUDAEMITTER_H
