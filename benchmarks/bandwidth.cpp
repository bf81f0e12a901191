//===- bandwidth.cpp - fused elementwise chains against STREAM triad ------===//
//
// nnc-bandwidth [--n N] [--reps R] [--threads T]
//
// Measures, in one run, the machine's peak FMA throughput with its widest
// vector unit (independent fused multiply-adds on 512-bit vectors where
// the CPU has them, compiled for this CPU), its memory bandwidth with a
// STREAM-style triad (a = b + s * c, compiled ahead of time with -O3) and
// the bandwidth of nnc's code for elementwise chains over the same number
// of elements, compiled through the whole CPU pipeline (fusion, loops,
// LLVM, JIT). Bytes count what a chain must read and write at the least:
// every input once, the output once. Prints one line per workload and its
// fraction of the triad's bandwidth.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/CompileModel.h"
#include "compiler/codegen/cpu/Jit.h"
#include "dialects/nn/NNDialect.h"
#include "runtime/CompiledModel.h"
#include "runtime/Memory.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

double bestOf(int reps, const std::function<void()> &run) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto begin = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count());
  }
  return best;
}

/// a = b + s * c over [lo, hi).
__attribute__((noinline)) void triad(float *__restrict a, const float *__restrict b,
                                     const float *__restrict c, float s, int64_t lo, int64_t hi) {
  for (int64_t i = lo; i < hi; ++i)
    a[i] = b[i] + s * c[i];
}

/// Peak FMA GFLOP/s of one thread: kChains independent accumulators of the
/// widest vector, each step an FMA per accumulator (enough independent
/// chains to cover the FMA latency on two ports).
// The widest vector the machine has: 16 lanes with AVX-512 (32 registers),
// else 8 (AVX2, 16 registers). The chains, with the two operands, must fit
// the registers, or spills halve the rate; more chains than the FMA latency
// times the FMA units are not needed.
#ifdef __AVX512F__
constexpr int kLanes = 16, kChains = 16;
#else
constexpr int kLanes = 8, kChains = 12;
#endif
typedef float Vec __attribute__((vector_size(kLanes * 4)));
__attribute__((noinline)) double fmaPeak(int64_t steps) {
  Vec acc[kChains], m, a;
  for (int k = 0; k < kChains; ++k)
    acc[k] = Vec{} + static_cast<float>(k) * 1e-3f;
  m = Vec{} + 0.999999f;
  a = Vec{} + 1e-7f;
  auto begin = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) {
    for (int k = 0; k < kChains; ++k)
      acc[k] = acc[k] * m + a;
    asm volatile("" : "+v"(m)); // keep the loop from being folded (v: any vector register, zmm included)
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  float sink = 0;
  for (int k = 0; k < kChains; ++k)
    sink += acc[k][0];
  asm volatile("" ::"v"(sink));
  return 2.0 * kChains * kLanes * static_cast<double>(steps) / seconds / 1e9;
}

struct Chain {
  const char *name;
  int inputs;      // tensors of n floats read
  const char *body; // nn ops over %a0.. (inputs), ending in %y
};

} // namespace

int main(int argc, char **argv) {
  int64_t n = int64_t(1) << 24;
  int reps = 10, threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    long long v = std::atoll(argv[i + 1]);
    if (flag == "--n")
      n = v;
    else if (flag == "--reps")
      reps = static_cast<int>(v);
    else if (flag == "--threads")
      threads = static_cast<int>(v);
    else {
      fmt::print(stderr, "usage: nnc-bandwidth [--n N] [--reps R] [--threads T]\n");
      return 2;
    }
  }
  if (n < 1024 || reps < 1 || threads < 1) {
    fmt::print(stderr, "nnc-bandwidth: --n must be at least 1024, --reps and --threads at least 1\n");
    return 2;
  }
  // The compiled code's thread count (libomp reads it when first used).
  setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);

  // Peak FMA: every thread at once, best of the repetitions.
  double peak = 0;
  for (int r = 0; r < std::max(reps, 3); ++r) {
    std::vector<double> each(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&each, t] { each[t] = fmaPeak(int64_t(1) << 24); });
    for (std::thread &t : pool)
      t.join();
    double sum = 0;
    for (double g : each)
      sum += g;
    peak = std::max(peak, sum);
  }

  // Pages touched before timing, as STREAM does; on huge pages where the
  // system grants them and on cache lines, as the runtime's large buffers
  // are (runtime/Memory.h).
  nnc::rt::Floats a, b, c, d;
  for (auto [v, x] : {std::pair{&a, 0.0f}, std::pair{&b, 1.0f}, std::pair{&c, 2.0f}, std::pair{&d, 0.5f}}) {
    nnc::rt::resizeLarge(*v, n);
    std::fill(v->begin(), v->end(), x);
  }
  double triadSeconds = bestOf(reps, [&] {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back(triad, a.data(), b.data(), c.data(), 3.0f, n * t / threads, n * (t + 1) / threads);
    for (std::thread &t : pool)
      t.join();
  });
  double triadGBs = 12.0 * static_cast<double>(n) / triadSeconds / 1e9;
  fmt::print("n = {} floats, {} thread(s), best of {}\n", n, threads, reps);
  fmt::print("{:<34} {:>12} {:>8.1f} GFLOP/s\n",
             fmt::format("peak FMA ({} x {}-bit chains)", kChains, kLanes * 32), "", peak);
  fmt::print("{:<34} {:>9.3f} ms {:>8.1f} GB/s\n", "STREAM triad a = b + s*c", triadSeconds * 1e3, triadGBs);

  mlir::MLIRContext ctx;
  ctx.loadDialect<nnc::nn::NNDialect, mlir::func::FuncDialect>();
  const Chain chains[] = {
      {"sigmoid(x * w + b)", 3,
       "%m = nn.mul %a0, %a1 : T, T\n %s = nn.add %m, %a2 : T, T\n %y = nn.sigmoid %s : T"},
      {"relu(x * 0.5 + y)", 2,
       "%h = nn.constant dense<0.5> : tensor<f32>\n %m = nn.mul %a0, %h : T, tensor<f32>\n"
       " %s = nn.add %m, %a1 : T, T\n %y = nn.relu %s : T"},
      {"SGD update w - 0.1 * g", 2,
       "%lr = nn.constant dense<0.1> : tensor<f32>\n %m = nn.mul %a1, %lr : T, tensor<f32>\n"
       " %y = nn.sub %a0, %m : T, T"},
  };
  int failures = 0;
  for (const Chain &chain : chains) {
    std::string type = fmt::format("tensor<{}xf32>", n);
    std::string args;
    for (int i = 0; i < chain.inputs; ++i)
      args += fmt::format("{}%a{}: T", i ? ", " : "", i);
    std::string ir = fmt::format("func.func @chain({}) -> T {{\n {}\n return %y : T\n}}\n", args, chain.body);
    // The tensor type for the placeholder T (the text has no other capital T).
    for (size_t p = ir.find('T'); p != std::string::npos; p = ir.find('T', p + type.size()))
      ir.replace(p, 1, type);
    auto module = mlir::parseSourceString<mlir::ModuleOp>(ir, &ctx);
    if (!module) {
      ++failures;
      continue;
    }
    auto fn = *module->getOps<mlir::func::FuncOp>().begin();
    auto loops = nnc::cpu::buildLoops(fn, std::nullopt);
    if (mlir::failed(loops)) {
      ++failures;
      continue;
    }
    auto kernelFn = (*loops)->lookupSymbol<mlir::func::FuncOp>("kernel");
    auto plan = kernelFn->getAttrOfType<mlir::DenseI64ArrayAttr>("nnc.slots").asArrayRef().vec();
    size_t kernels = kernelFn->getAttrOfType<mlir::ArrayAttr>("nnc.kernels").size();
    auto jit = nnc::cpu::JitModule::compile(**loops);
    if (mlir::failed(jit) || mlir::failed((*jit)->prepare("kernel"))) {
      ++failures;
      continue;
    }
    std::vector<void *> buffers = {b.data(), c.data(), d.data()};
    buffers.resize(chain.inputs);
    buffers.push_back(a.data());
    nnc::rt::KernelCache cache; // nothing kept: no weights
    buffers.push_back(cache.prepare(0, 0));
    int64_t rng[3] = {0, 0, 0};
    buffers.push_back(rng);
    std::vector<float> workspace(nnc::rt::placeSlots(plan, 1, nullptr, nullptr) / 4 + 16);
    std::vector<void *> slots;
    auto base = (reinterpret_cast<uintptr_t>(workspace.data()) + 63) & ~uintptr_t(63);
    nnc::rt::placeSlots(plan, 1, reinterpret_cast<void *>(base), &slots);
    double seconds = bestOf(reps, [&] { (void)(*jit)->call("kernel", buffers, 1, slots); });
    double gbs = 4.0 * (chain.inputs + 1) * static_cast<double>(n) / seconds / 1e9;
    fmt::print("{:<34} {:>9.3f} ms {:>8.1f} GB/s  {:>5.1f}% of triad  ({} kernel{})\n", chain.name,
               seconds * 1e3, gbs, 100.0 * gbs / triadGBs, kernels, kernels == 1 ? "" : "s");
  }
  return failures ? 1 : 0;
}
