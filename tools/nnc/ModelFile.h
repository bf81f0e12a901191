//===- ModelFile.h - a model file compiled for training --------*- C++ -*-===//
//
// What train, eval, predict and build start from: the model file parsed and
// compiled to its training step, with its inputs as the data sees them.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_TOOLS_NNC_MODELFILE_H
#define NNC_TOOLS_NNC_MODELFILE_H

#include "tools/nnc/Driver.h"

#include "dialects/nn/NNOps.h"
#include "compiler/codegen/cpu/Jit.h"
#include "runtime/CompiledModel.h"
#include "runtime/Training.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/DenseSet.h"

namespace nnc::rt {
struct CudaDriver;
} // namespace nnc::rt

namespace nnc::driver {

/// One model input as the data sees it.
struct Input : rt::ModelInput {
  unsigned arg = 0; // its argument of the model function
};

/// A compiled model with its training step.
struct Loaded {
  Session session;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  mutable mlir::func::FuncOp model; // FuncOp accessors are not const
  std::vector<Input> inputs;
  mlir::DictionaryAttr train;
  std::string path;

  int64_t setting(llvm::StringRef key, int64_t dflt) const {
    auto a = train ? llvm::dyn_cast_or_null<mlir::IntegerAttr>(train.get(key)) : mlir::IntegerAttr();
    return a ? a.getInt() : dflt;
  }
  double real(llvm::StringRef key, double dflt) const {
    auto a = train ? llvm::dyn_cast_or_null<mlir::FloatAttr>(train.get(key)) : mlir::FloatAttr();
    return a ? a.getValueAsDouble() : dflt;
  }
  std::string text(llvm::StringRef key) const {
    auto a = train ? llvm::dyn_cast_or_null<mlir::StringAttr>(train.get(key)) : mlir::StringAttr();
    return a ? a.str() : "";
  }
  std::optional<unsigned> lossResult() const {
    for (unsigned i = 0; i < model.getNumResults(); ++i)
      if (auto r = model.getResultAttrOfType<mlir::StringAttr>(i, nn::attr::kRole))
        if (r.getValue() == "loss")
          return i;
    return std::nullopt;
  }
};

/// Writes `m`'s evaluation function with `tensors` (a checkpoint's) as an
/// ONNX model at `path` (tools/nnc/Onnx.cpp).
int exportOnnx(Loaded &m, const std::vector<rt::HostTensor> &tensors, const std::string &path);

/// The values `fn`'s outputs (every result but the loss) read, arguments
/// included: what prediction and an inference graph need.
llvm::DenseSet<mlir::Value> readByOutputs(mlir::func::FuncOp fn);

/// The inputs as the runtime binds data to them.
std::vector<rt::ModelInput> modelInputs(const std::vector<Input> &inputs);

/// Parses and compiles FILE to its training step; `lr` overrides the
/// optimizer's learning rate and `freeze` (when given) the train section's
/// list of tensors held fixed, before the step is built. Without `train`,
/// only the model function (no loss needed, inputs of any shape). With
/// `distributed`, the step combines its gradients over a data-parallel
/// run's ranks.
int load(const std::string &path, std::optional<double> lr, Loaded &out, bool train = true,
         const std::optional<std::vector<std::string>> &freeze = std::nullopt, bool distributed = false);

/// A model's training step and evaluation function compiled for this CPU
/// and JIT-compiled, with the table that runs them (runtime/CompiledModel.h).
struct CpuCode {
  mlir::OwningOpRef<mlir::ModuleOp> code;
  std::unique_ptr<cpu::JitModule> jit;
  rt::ModelDesc desc;
  double seconds = 0; // compilation, parse excluded
  mlir::ArrayAttr kernels; // the training step's, when profiled (lowerToLoops)
};

/// Compiles `m` for the CPU; `profile` adds per-kernel timers; without
/// `fuse` every op is a kernel of its own.
int compileCpu(const Loaded &m, bool profile, CpuCode &out, bool fuse = true);

/// A model's training step and evaluation function as CUDA modules (PTX
/// for `arch`, through NVRTC and the kernel cache), with their table.
struct CudaCode {
  rt::ModelDesc desc;
  std::string arch;
  double seconds = 0; // compilation, parse excluded
};

/// Compiles `m` for CUDA devices of `arch` ("sm_90").
int compileCuda(const Loaded &m, const std::string &arch, CudaCode &out);

/// What --target=cuda needs before a model runs: the driver loaded (GPU
/// `device` current), NVRTC present, and `m` compiled for the device (--cuda-arch
/// to override); a failure is reported here, its exit code returned.
int prepareCuda(const Args &args, const Loaded &m, rt::CudaDriver &driver, CudaCode &out, int device = 0);

/// The architecture to compile CUDA for: --cuda-arch, else the device's,
/// else sm_90.
std::string cudaArch(const Args &args);

/// What --target=auto means here: "cuda" when a CUDA device and NVRTC are
/// present, else "cpu".
std::string autoTarget();

/// The data named by --data or the train section (paths in a model file
/// are relative to the file).
int dataSource(const Loaded &m, const Args &args, rt::DataSource &out);

} // namespace nnc::driver

#endif // NNC_TOOLS_NNC_MODELFILE_H
