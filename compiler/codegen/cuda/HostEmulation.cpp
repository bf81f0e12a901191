//===- HostEmulation.cpp - generated CUDA kernels run on the host --------===//

#include "compiler/codegen/cuda/HostEmulation.h"

#include "compiler/codegen/cpu/CpuExecutor.h"
#include "compiler/codegen/cuda/CudaEmitter.h"

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
// passes it.
#include <ucontext.h>
#include <vector>
namespace nnc_emu {
struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
};
static ucontext_t scheduler;
static std::vector<Fiber> fibers;
static unsigned current;
static void (*body)(void *);
static void *env;
static void entry() {
  body(env);
  fibers[current].done = true;
  swapcontext(&fibers[current].ctx, &scheduler);
}
template <class F> void runBlock(F &f, unsigned threads) {
  fibers.resize(threads);
  body = [](void *e) { (*static_cast<F *>(e))(); };
  env = &f;
  for (Fiber &t : fibers) {
    t.stack.resize(1 << 16);
    t.done = false;
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack.data();
    t.ctx.uc_stack.ss_size = t.stack.size();
    t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, entry, 0);
  }
  for (bool running = true; running;) {
    running = false;
    for (current = 0; current < threads; ++current) {
      if (fibers[current].done)
        continue;
      threadIdx.x = current;
      swapcontext(&scheduler, &fibers[current].ctx);
      running |= !fibers[current].done;
    }
  }
}
} // namespace nnc_emu
inline void __syncthreads() {
  swapcontext(&nnc_emu::fibers[nnc_emu::current].ctx, &nnc_emu::scheduler);
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

namespace {

struct Compiled {
  CudaModule code;
  void *handle = nullptr;
  std::vector<void (*)(void **, const long long *, long long, long long)> calls;
  ~Compiled() {
    if (handle)
      dlclose(handle);
  }
};

class HostEmulationExecutor : public ref::Executor {
public:
  explicit HostEmulationExecutor(std::string compiler) : compiler(std::move(compiler)) {}
  const char *name() const override { return "cuda-host"; }

  FailureOr<std::vector<ref::Tensor>> run(func::FuncOp fn, ArrayRef<ref::Tensor> args,
                                          const ref::EvalOptions &options) override {
    long long rng[2] = {static_cast<long long>(options.seed), static_cast<long long>(options.step)};
    // The batch size: the first dynamic axis of an argument.
    int64_t batch = 1;
    for (auto [a, t] : llvm::zip(fn.getArgumentTypes(), args)) {
      auto type = cast<RankedTensorType>(a);
      for (int64_t i = 0; i < type.getRank(); ++i)
        if (type.isDynamicDim(i))
          batch = t.shape[i];
    }
    cpu::BatchScaling scaling;
    auto prepared = cpu::prepare(fn, std::nullopt, /*fuse=*/true, &scaling);
    if (failed(prepared))
      return failure();
    auto pfn = *(*prepared)->getOps<func::FuncOp>().begin();
    auto code = emitCuda(pfn, scaling);
    if (failed(code))
      return failure();
    auto c = build(fn, *code);
    if (failed(c))
      return failure();

    // Buffers by name: arguments (i32 stored as int), then what launches
    // write; views share their root's.
    std::map<std::string, std::vector<float>> buffers;
    auto size = [&](const std::vector<int64_t> &shape) {
      int64_t n = 1;
      for (int64_t d : shape)
        n *= d < 0 ? -d * batch : d;
      return static_cast<size_t>(std::max<int64_t>(n, 1));
    };
    for (auto [i, t] : llvm::enumerate(args)) {
      std::vector<float> &b = buffers[(*c)->code.args[i]];
      b.resize(std::max<size_t>(t.data.size(), 1));
      bool integer = getElementTypeOrSelf(fn.getArgumentTypes()[i]).isInteger(32);
      for (size_t k = 0; k < t.data.size(); ++k) {
        if (integer)
          reinterpret_cast<int32_t *>(b.data())[k] = static_cast<int32_t>(t.data[k]);
        else
          b[k] = static_cast<float>(t.data[k]);
      }
    }
    for (auto [launch, call] : llvm::zip((*c)->code.launches, (*c)->calls)) {
      std::vector<void *> ptrs;
      for (const Param &p : launch.params) {
        std::vector<float> &b = buffers[p.viewOf.empty() ? p.name : p.viewOf];
        if (b.size() < size(p.shape))
          b.resize(size(p.shape));
        ptrs.push_back(b.data());
      }
      long long threads = launch.threadsPerBatch * batch + launch.threadsFixed;
      call(ptrs.data(), rng, batch, threads);
    }
    std::vector<ref::Tensor> out;
    Operation *ret = pfn.front().getTerminator();
    for (auto [i, r] : llvm::enumerate((*c)->code.results)) {
      Value v = ret->getOperand(i);
      auto t = cast<RankedTensorType>(v.getType());
      ref::Tensor res{std::vector<int64_t>(t.getShape()), {}};
      for (int64_t d = 0; d < t.getRank(); ++d)
        if (t.isDynamicDim(d)) {
          auto s = scaling.find(v);
          res.shape[d] = (s == scaling.end() ? 1 : s->second[d]) * batch;
        }
      res.data.resize(res.numel());
      auto found = buffers.find(r);
      if (found == buffers.end())
        return fn.emitError("the emulated CUDA code wrote no result '") << r << "'";
      bool integer = t.getElementType().isInteger(32);
      for (size_t k = 0; k < res.data.size() && k < found->second.size(); ++k)
        res.data[k] = integer ? reinterpret_cast<const int32_t *>(found->second.data())[k] : found->second[k];
      out.push_back(std::move(res));
    }
    return out;
  }

private:
  std::string compiler;
  std::vector<std::unique_ptr<Compiled>> keep;

  FailureOr<Compiled *> build(func::FuncOp fn, CudaModule code) {
    auto c = std::make_unique<Compiled>();
    std::string src = std::string(hostEmulationHeader()) + code.source;
    // One entry point per launch: the emulated grid around the kernel.
    for (const Launch &l : code.launches) {
      src += "extern \"C\" void call_" + l.name + "(void **b, const i64 *rng, i64 n, i64 threads) {\n";
      src += "  i64 blocks = (threads + 255) / 256;\n  if (blocks < 1) blocks = 1;\n";
      src += "  if (blocks > 4096) blocks = 4096;\n  ";
      src += std::string(l.barriers ? "NNC_EMULATE_BLOCKS(" : "NNC_EMULATE(") + l.name + "(";
      for (size_t i = 0; i < l.params.size(); ++i)
        src += std::string("(") + (l.params[i].integer ? "int" : "float") + " *)b[" + std::to_string(i) + "], ";
      src += std::string(l.rng ? "rng, " : "") + "n), blocks, 256);\n  (void)rng;\n}\n";
    }
    SmallString<128> dir;
    if (llvm::sys::fs::createUniqueDirectory("nnc-cuda-host", dir))
      return fn.emitError("cannot create a temporary directory for the host emulation");
    std::string cu = (dir + "/kernels.cpp").str(), so = (dir + "/kernels.so").str(),
                log = (dir + "/log.txt").str();
    {
      std::error_code ec;
      llvm::raw_fd_ostream os(cu, ec);
      if (ec)
        return fn.emitError("cannot write ") << cu;
      os << src;
    }
    auto exe = llvm::sys::findProgramByName(compiler);
    if (!exe)
      return fn.emitError("no host compiler '") << compiler << "' for the CUDA emulation";
    std::vector<StringRef> argv = {*exe, "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o", so, cu};
    std::optional<StringRef> redirects[] = {std::nullopt, StringRef(log), StringRef(log)};
    if (llvm::sys::ExecuteAndWait(*exe, argv, std::nullopt, redirects) != 0) {
      auto text = llvm::MemoryBuffer::getFile(log);
      return fn.emitError("the host compiler rejected the generated CUDA source (")
             << cu << "):\n" << (text ? (*text)->getBuffer() : "");
    }
    c->handle = dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!c->handle)
      return fn.emitError("cannot load ") << so << ": " << dlerror();
    for (const Launch &l : code.launches) {
      auto fp = reinterpret_cast<void (*)(void **, const long long *, long long, long long)>(
          dlsym(c->handle, ("call_" + l.name).c_str()));
      if (!fp)
        return fn.emitError("no entry point for ") << l.name;
      c->calls.push_back(fp);
    }
    llvm::sys::fs::remove(cu);
    llvm::sys::fs::remove(so);
    llvm::sys::fs::remove(log);
    llvm::sys::fs::remove(dir);
    c->code = std::move(code);
    keep.push_back(std::move(c));
    return keep.back().get();
  }
};

} // namespace

std::unique_ptr<ref::Executor> cuda::createHostEmulationExecutor(std::string compiler) {
  return std::make_unique<HostEmulationExecutor>(std::move(compiler));
}
