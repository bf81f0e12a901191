//===- HostEmulation.h - generated CUDA kernels run on the host -*- C++ -*-===//
//
// Verifies the CUDA backend without a GPU: the very source the emitter
// writes for NVRTC is compiled by the host C++ compiler behind a header
// that provides the CUDA built-ins (blockIdx, threadIdx, blockDim, gridDim,
// the qualifiers, the math functions), loaded with dlopen and run block by
// block, thread by thread, with the launch geometry a GPU would get. The
// result is an Executor, so every check that runs the CPU backend against
// the reference evaluator runs this one too.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_HOSTEMULATION_H
#define NNC_COMPILER_CODEGEN_CUDA_HOSTEMULATION_H

#include "compiler/reference/Evaluator.h"

#include <memory>
#include <string>

namespace nnc::cuda {

/// The header put in front of generated source for the host compiler.
const char *hostEmulationHeader();

/// An executor that emits CUDA for a function, compiles it for the host
/// with `compiler` (a C++17 compiler command) and runs the launches on
/// emulated blocks and threads. Fails (located) on functions with ops the
/// CUDA backend does not generate yet.
std::unique_ptr<ref::Executor> createHostEmulationExecutor(std::string compiler);

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_HOSTEMULATION_H
