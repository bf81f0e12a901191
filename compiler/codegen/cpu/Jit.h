//===- Jit.h - compiling and running CPU code in process --------*- C++ -*-===//
//
// Lowers a loops-level module (LowerToLoops) to the LLVM dialect, optimizes
// it for the host CPU (its features, AVX-512 where present) and JIT-compiles
// it. Functions take one pointer per buffer (bare-pointer convention), in
// the order lowerToLoops gives them.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_JIT_H
#define NNC_COMPILER_CODEGEN_CPU_JIT_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/ADT/StringMap.h"

#include <memory>
#include <string>
#include <vector>

namespace llvm {
class MemoryBuffer;
class TargetMachine;
namespace orc {
class LLJIT;
} // namespace orc
} // namespace llvm

namespace nnc::cpu {

/// The partitions a module's code is generated in, taken in turn by as
/// many threads as there are cores: a fixed count, so that the cached
/// objects do not depend on the machine's cores; more partitions than
/// cores, so that the threads finish together although a kernel's cost
/// after optimization is hard to foresee. One object file each.
constexpr unsigned kCodePartitions = 16;

/// The passes from loops-level IR to the LLVM dialect: kernels outlined,
/// functions dealt into kCodePartitions nested modules, then on each (in
/// parallel) the conversions and alias scopes.
void buildLLVMPipeline(mlir::OpPassManager &pm);

/// Lowers loops-level IR in `module` to the LLVM dialect (in place).
mlir::LogicalResult lowerToLLVM(mlir::ModuleOp module);

/// The optimized LLVM IR (asm = false) or host assembly of an LLVM-dialect
/// module, as text.
mlir::FailureOr<std::string> emitHostCode(mlir::ModuleOp module, bool asm_);

/// Compiles an LLVM-dialect module to an object file for the host CPU (or
/// for LLVM's CPU `cpu`, e.g. x86-64-v3, to run on older machines), with
/// the optimizations the JIT applies, so that it computes the same numbers.
mlir::LogicalResult emitObjectFile(mlir::ModuleOp module, llvm::StringRef path, llvm::StringRef cpu = "");

class JitModule {
public:
  /// Lowers and compiles `module` (loops level); reports failures as
  /// diagnostics. Its partitions are lowered in parallel, then translated,
  /// optimized and compiled on threads of their own. The object code is
  /// kept in rt::cacheDirectory() under a hash of `module`, the compiler
  /// executable, the CPU and the LLVM version; a later compile of the same
  /// module loads it instead of lowering and generating code again (cache
  /// files that do not load are compiled over).
  static mlir::FailureOr<std::unique_ptr<JitModule>> compile(mlir::ModuleOp module);
  /// Whether the code came from the cache.
  bool cached() const { return fromCache; }
  ~JitModule();

  /// Compiles `name` now rather than at its first call (the JIT compiles
  /// lazily); fails if there is no such function.
  mlir::LogicalResult prepare(llvm::StringRef name);

  /// Calls `name` with one buffer pointer per argument, the batch size and
  /// the slot pointers (lowerToLoops' calling convention).
  mlir::LogicalResult call(llvm::StringRef name, llvm::ArrayRef<void *> buffers, int64_t batch,
                           llvm::ArrayRef<void *> slots);

private:
  JitModule() = default;
  /// Object files linked into a JIT (the host process and OpenMP runtime
  /// resolving the rest), every function of `names` looked up; null when
  /// they do not load or link.
  static std::unique_ptr<JitModule> load(std::vector<std::unique_ptr<llvm::MemoryBuffer>> objects,
                                         llvm::TargetMachine &tm, const std::vector<std::string> &names);
  std::unique_ptr<llvm::orc::LLJIT> jit;
  bool fromCache = false;
  llvm::StringMap<void (*)(void **)> functions; // looked up once each
};

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_JIT_H
