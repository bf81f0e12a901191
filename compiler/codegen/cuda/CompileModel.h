//===- CompileModel.h - a whole model compiled for a CUDA device -*- C++ -*-===//
//
// The training step and evaluation function of a model as CUDA modules,
// with what the runtime needs to run them on a device (rt::CudaCode per
// function: the module image, the launch table, the device buffers and
// their memory plan). `nnc train --target=cuda` runs the result through
// rt::CudaModel; `nnc build --target=cuda` writes it into a binary.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_COMPILEMODEL_H
#define NNC_COMPILER_CODEGEN_CUDA_COMPILEMODEL_H

#include "compiler/codegen/cuda/CudaEmitter.h"
#include "runtime/CompiledModel.h"

#include "mlir/IR/BuiltinOps.h"

#include <functional>

namespace nnc::cuda {

/// Turns a function's generated source into the image the driver loads.
using ImageFn = std::function<mlir::FailureOr<std::string>(const CudaModule &, mlir::func::FuncOp)>;

/// PTX for `arch` through NVRTC and the on-disk kernel cache (errors carry
/// the NVRTC log and the kernel's DSL location).
ImageFn ptxImage(std::string arch);

/// Emits `@model` and `@model_train_step` of `module` (the training
/// pipeline's output) as CUDA and describes them for the runtime. With
/// `modules`, the emitted code of each function is kept there (train step
/// first).
mlir::FailureOr<rt::ModelDesc> compileModel(mlir::ModuleOp module, llvm::StringRef model,
                                            const ImageFn &image,
                                            std::vector<CudaModule> *modules = nullptr);

/// The device buffers of `code` for a function of `numArgs` arguments: the
/// arguments, then every other buffer a launch touches; results get
/// buffers of their own, the rest share the slots of a memory plan (a
/// buffer's slot is free again after the last launch that touches it).
mlir::FailureOr<rt::CudaCode> planBuffers(const CudaModule &code, size_t numArgs,
                                          mlir::func::FuncOp fn);

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_COMPILEMODEL_H
