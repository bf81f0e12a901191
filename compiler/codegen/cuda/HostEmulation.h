//===- HostEmulation.h - generated CUDA kernels run on the host -*- C++ -*-===//
//
// Verifies the CUDA backend without a GPU: the very source the emitter
// writes for NVRTC is compiled by the host C++ compiler behind a header
// that provides the CUDA built-ins (blockIdx, threadIdx, blockDim, gridDim,
// the qualifiers, the math functions), loaded with dlopen and run block by
// block, thread by thread, with the launch geometry a GPU would get
// (HostEmulationExecutor.h puts it behind the evaluator's Executor).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_HOSTEMULATION_H
#define NNC_COMPILER_CODEGEN_CUDA_HOSTEMULATION_H

#include "compiler/codegen/cuda/CudaEmitter.h"

#include <memory>
#include <string>

namespace nnc::cuda {

/// The header put in front of generated source for the host compiler.
const char *hostEmulationHeader();

/// Generated CUDA source compiled for the host: one entry point per launch,
/// taking the kernel's parameters as the driver's cuLaunchKernel does (an
/// array of pointers to them) and the number of blocks.
class HostKernels {
public:
  using Entry = void (*)(void **params, long long blocks);
  /// Compiles `code` with `compiler`; errors are reported at `where`.
  static mlir::FailureOr<std::unique_ptr<HostKernels>> compile(const CudaModule &code,
                                                               const std::string &compiler,
                                                               mlir::Operation *where);
  ~HostKernels();
  /// The entry point of `kernel`, or null.
  Entry entry(const std::string &kernel) const;
  std::vector<Entry> entries; // per launch of the module
  std::vector<std::string> names;

private:
  HostKernels() = default;
  void *handle = nullptr;
};


} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_HOSTEMULATION_H
