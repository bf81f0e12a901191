//===- DeviceExecutor.h - generated CUDA run on a GPU -----------*- C++ -*-===//
//
// An Executor that runs a function's generated CUDA kernels on device 0
// through the driver API (libcuda loaded with dlopen): PTX compiled by
// NVRTC for the device's architecture (cached on disk), one module per
// function, buffers in device memory, results copied back. It is what
// `nnc train --target=cuda` trains with, through the reference trainer
// (each step copies the state in and out: correct, not yet fast).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_DEVICEEXECUTOR_H
#define NNC_COMPILER_CODEGEN_CUDA_DEVICEEXECUTOR_H

#include "compiler/reference/Evaluator.h"

#include <memory>
#include <string>

namespace nnc::cuda {

/// The executor for device 0, or null with `why` (one line) when there is
/// no driver or device.
std::unique_ptr<ref::Executor> createDeviceExecutor(std::string &why);

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_DEVICEEXECUTOR_H
