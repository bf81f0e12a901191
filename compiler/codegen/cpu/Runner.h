//===- Runner.h - one function compiled and bound to buffers ----*- C++ -*-===//
//
// What kernel benchmarks time: one function of a module (a model's forward
// function, say) lowered with the CPU backend, JIT-compiled, and bound to
// buffers holding synthetic inputs (uniform [0, 1), labels 0), so that
// `run` is exactly the compiled code. `nnc bench --kernel` and the Google
// Benchmark suite (benchmarks/kernels.cpp) use it.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_RUNNER_H
#define NNC_COMPILER_CODEGEN_CPU_RUNNER_H

#include "runtime/CompiledModel.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <memory>

namespace nnc::cpu {

class JitModule;

class FunctionRunner {
public:
  /// Compiles `fn` (with per-kernel timers when `profile`) and binds it to
  /// synthetic buffers for a batch of `batch`. With `fixedWeights`, its
  /// weight-only work is kept across calls, as an inference keeps it
  /// (rt::KernelCache); else every call does it, as a training step must.
  static mlir::FailureOr<std::unique_ptr<FunctionRunner>> create(mlir::func::FuncOp fn, int64_t batch,
                                                                 bool profile = false, bool fuse = true,
                                                                 bool fixedWeights = false);
  ~FunctionRunner();

  /// One call of the compiled function.
  void run();

  const rt::FunctionDesc &desc() const { return f; }
  /// The kernel table (ops, locations, flops and bytes per kernel).
  mlir::ArrayAttr kernels() const { return table; }
  double compileSeconds() const { return seconds; }

private:
  FunctionRunner() = default;
  mlir::OwningOpRef<mlir::ModuleOp> code;
  std::unique_ptr<JitModule> jit;
  rt::FunctionDesc f;
  mlir::ArrayAttr table;
  int64_t batch = 1;
  std::vector<std::vector<int32_t, rt::CacheLineAllocator<int32_t>>> buffers; // arguments, then results (32-bit words)
  std::vector<float> workspace;
  std::vector<void *> pointers, slots;
  rt::KernelCache cache;
  int64_t rng[3] = {1, 0, 0};
  double seconds = 0;
};

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_RUNNER_H
