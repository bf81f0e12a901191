//===- HostEmulation.cpp - generated CUDA kernels run on the host --------===//

#include "compiler/codegen/cuda/HostEmulation.h"

#include "compiler/codegen/cuda/EmittedFunction.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <dlfcn.h>

#include <map>

using namespace mlir;
using namespace nnc;
using namespace nnc::cuda;

const char *cuda::hostEmulationHeader() {
  return R"(// CUDA built-ins for generated kernels compiled by a host compiler.
#define NNC_HOST_EMULATION 1
#include <math.h>
struct nnc_dim3 { unsigned x = 1, y = 1, z = 1; };
static nnc_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(n)
// One block runs at a time: its shared memory is a static of the kernel.
#define __shared__ static
#define NNC_KERNEL extern "C" void
#define NNC_INF __builtin_huge_valf()
// Threads of a block as fibers: each runs until __syncthreads, and a
// round resumes every fiber once, so all reach a barrier before any
// passes it. A fiber is entered once through swapcontext (onto its own
// stack); after that, switches are _setjmp/_longjmp, which save no signal
// mask (swapcontext makes a system call per switch).
#include <setjmp.h>
#include <ucontext.h>
#include <vector>
namespace nnc_emu {
struct Fiber {
  ucontext_t ctx;
  jmp_buf at;
  std::vector<char> stack;
  bool started = false, done = false;
};
static ucontext_t entryContext;
static jmp_buf scheduler;
static std::vector<Fiber> fibers;
static unsigned current;
static void (*body)(void *);
static void *env;
static void entry() {
  body(env);
  fibers[current].done = true;
  _longjmp(scheduler, 1);
}
template <class F> void runBlock(F &f, unsigned threads) {
  fibers.resize(threads);
  body = [](void *e) { (*static_cast<F *>(e))(); };
  env = &f;
  for (Fiber &t : fibers) {
    t.stack.resize(1 << 16);
    t.started = t.done = false;
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack.data();
    t.ctx.uc_stack.ss_size = t.stack.size();
    t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, entry, 0);
  }
  for (bool running = true; running;) {
    running = false;
    for (current = 0; current < threads; ++current) {
      Fiber &t = fibers[current];
      if (t.done)
        continue;
      threadIdx.x = current;
      if (!_setjmp(scheduler)) {
        if (!t.started) {
          t.started = true;
          swapcontext(&entryContext, &t.ctx);
        } else {
          _longjmp(t.at, 1);
        }
      }
      running |= !fibers[current].done;
    }
  }
}
} // namespace nnc_emu
inline void __syncthreads() {
  if (!_setjmp(nnc_emu::fibers[nnc_emu::current].at))
    _longjmp(nnc_emu::scheduler, 1);
  threadIdx.x = nnc_emu::current;
}
// A warp shuffle as an exchange through the block (every thread of the
// block calls it, as in the generated reductions).
inline float __shfl_down_sync(unsigned, float v, int delta) {
  static float slots[1024];
  const unsigned t = threadIdx.x;
  slots[t] = v;
  __syncthreads();
  const float r = t % 32 + delta < 32 && t + delta < blockDim.x ? slots[t + delta] : v;
  __syncthreads();
  return r;
}
// A launch with barriers: every block's threads as fibers.
#define NNC_EMULATE_BLOCKS(call, blocks, threads)                            \
  do {                                                                       \
    gridDim.x = (unsigned)(blocks);                                          \
    blockDim.x = (unsigned)(threads);                                        \
    auto nnc_thread = [&] { call; };                                         \
    for (blockIdx.x = 0; blockIdx.x < gridDim.x; ++blockIdx.x)               \
      nnc_emu::runBlock(nnc_thread, blockDim.x);                             \
  } while (0)
// Runs a launch: every block of the grid, every thread of the block, in
// order (the kernels have no barriers: threads are independent).
#define NNC_EMULATE(call, blocks, threads)                                   \
  do {                                                                       \
    gridDim.x = (unsigned)(blocks);                                          \
    blockDim.x = (unsigned)(threads);                                        \
    for (blockIdx.x = 0; blockIdx.x < gridDim.x; ++blockIdx.x)               \
      for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x)         \
        call;                                                                \
  } while (0)
)";
}


HostKernels::~HostKernels() {
  if (handle)
    dlclose(handle);
}

HostKernels::Entry HostKernels::entry(const std::string &kernel) const {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == kernel)
      return entries[i];
  return nullptr;
}

FailureOr<std::unique_ptr<HostKernels>> HostKernels::compile(const CudaModule &code, const std::string &compiler,
                                                           Operation *fn) {
  std::unique_ptr<HostKernels> c(new HostKernels);
  std::string src = std::string(hostEmulationHeader()) + code.source;
  // One entry point per launch, taking the kernel's parameters as the
  // driver does (an array of pointers to them) and the grid size.
  for (const Launch &l : code.launches) {
    if (l.collective) { // one process: the mean of one rank is its value, and so is the sum
      src += "extern \"C\" void call_" + l.name +
             "(void **p, i64) {\n  const i64 n = " + std::to_string(l.threadsPerBatch) + " * *(i64 *)p[2] + " +
             std::to_string(l.threadsFixed) +
             ";\n  const float *x = *(const float **)p[0];\n  float *y = *(float **)p[1];\n"
             "  for (i64 i = 0; i < n && x != y; ++i)\n    y[i] = x[i];\n}\n";
      continue;
    }
    src += "extern \"C\" void call_" + l.name + "(void **p, i64 blocks) {\n  ";
    src += std::string(l.barriers ? "NNC_EMULATE_BLOCKS(" : "NNC_EMULATE(") + l.name + "(";
    size_t k = 0;
    for (; k < l.params.size(); ++k)
      src += std::string("*(") + (l.params[k].integer ? "int" : "float") + " **)p[" + std::to_string(k) + "], ";
    if (l.rng)
      src += "*(const i64 **)p[" + std::to_string(k++) + "], ";
    src += "*(i64 *)p[" + std::to_string(k) + "]), blocks, " + std::to_string(kBlockSize) + ");\n}\n";
  }
  SmallString<128> dir;
  if (llvm::sys::fs::createUniqueDirectory("nnc-cuda-host", dir))
    return fn->emitError("cannot create a temporary directory for the host emulation");
  std::string cu = (dir + "/kernels.cpp").str(), so = (dir + "/kernels.so").str(),
              log = (dir + "/log.txt").str();
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(cu, ec);
    if (ec)
      return fn->emitError("cannot write ") << cu;
    os << src;
  }
  auto exe = llvm::sys::findProgramByName(compiler);
  if (!exe)
    return fn->emitError("no host compiler '") << compiler << "' for the CUDA emulation";
  std::vector<StringRef> argv = {*exe, "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o", so, cu};
  std::optional<StringRef> redirects[] = {std::nullopt, StringRef(log), StringRef(log)};
  if (llvm::sys::ExecuteAndWait(*exe, argv, std::nullopt, redirects) != 0) {
    auto text = llvm::MemoryBuffer::getFile(log);
    return fn->emitError("the host compiler rejected the generated CUDA source (")
           << cu << "):\n" << (text ? (*text)->getBuffer() : "");
  }
  c->handle = dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!c->handle)
    return fn->emitError("cannot load ") << so << ": " << dlerror();
  for (const Launch &l : code.launches) {
    auto fp = reinterpret_cast<HostKernels::Entry>(
        dlsym(c->handle, ("call_" + l.name).c_str()));
    if (!fp)
      return fn->emitError("no entry point for ") << l.name;
    c->entries.push_back(fp);
    c->names.push_back(l.name);
  }
  llvm::sys::fs::remove(cu);
  llvm::sys::fs::remove(so);
  llvm::sys::fs::remove(log);
  llvm::sys::fs::remove(dir);
  return c;
}

