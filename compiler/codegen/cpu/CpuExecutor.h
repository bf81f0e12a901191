//===- CpuExecutor.h - running nn functions as compiled CPU code -*- C++ -*-===//
//
// An Executor that compiles each function once, for every batch size: the
// function is cloned, composite ops decomposed, lowered to loops over a
// run-time batch size and to LLVM, and JIT-compiled for the host. Tensors
// cross the boundary as f32 (i32 for integer tensors). A library of its
// own (NNCCpuExecutor), for the tests and gradcheck: the CPU backend itself
// does not depend on the evaluator.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_CPUEXECUTOR_H
#define NNC_COMPILER_CODEGEN_CPU_CPUEXECUTOR_H

#include "compiler/reference/Evaluator.h"

#include <memory>

namespace nnc::cpu {

/// The compiled CPU code as an Executor; without `fuse`, every op is a
/// kernel of its own (to test fusion against).
std::unique_ptr<ref::Executor> createExecutor(bool fuse = true);
} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_CPUEXECUTOR_H
