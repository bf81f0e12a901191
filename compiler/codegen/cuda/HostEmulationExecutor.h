//===- HostEmulationExecutor.h - the CUDA backend as a test executor -*- C++ -*-===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_HOSTEMULATIONEXECUTOR_H
#define NNC_COMPILER_CODEGEN_CUDA_HOSTEMULATIONEXECUTOR_H

#include "compiler/reference/Evaluator.h"

#include <memory>
#include <string>

namespace nnc::cuda {

/// An executor that emits CUDA for a function, compiles it for the host
/// with `compiler` (a C++17 compiler command) and runs the launches on
/// emulated blocks and threads (HostKernels). Fails (located) on functions
/// with ops the CUDA backend does not generate yet.
std::unique_ptr<ref::Executor> createHostEmulationExecutor(std::string compiler);

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_HOSTEMULATIONEXECUTOR_H
