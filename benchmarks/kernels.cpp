//===- kernels.cpp - nnc's kernel, step, epoch and compile benchmarks -----===//
//
// Google Benchmark suite: every workload is compiled through the whole
// CPU pipeline (fusion, loops, LLVM, JIT) from .nn source, so what is timed
// is the code `nnc train` runs.
//
//   gemm at 256..2048 and at the MNIST MLP's shapes; each example's
//   convolution layers forward and backward; fused elementwise chains;
//   reductions; softmax + cross-entropy (forward and backward);
//   the MNIST MLP and CNN training step and epoch (60,000 synthetic
//   samples, batch 64); parse-to-ready compile time of both models.
//
// Counters: GFLOP/s (or GB/s) from the kernel table's estimates. The same
// workloads in PyTorch: benchmarks/peer_kernels.py; both side by side with
// the machine's limits: benchmarks/compare.sh.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/cpu/CompileModel.h"
#include "compiler/codegen/cpu/Runner.h"
#include "compiler/frontend/KernelSpec.h"
#include "compiler/frontend/MLIRGen.h"
#include "compiler/frontend/Parser.h"
#include "compiler/transforms/Pipeline.h"
#include "dialects/nn/NNDialect.h"
#include "runtime/CompiledModel.h"
#include "runtime/Random.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <array>
#include <fstream>
#include <sstream>

using namespace nnc;

namespace {

/// A .nn source parsed and compiled to `stage` (its own context).
struct Source {
  mlir::MLIRContext ctx;
  llvm::SourceMgr sm;
  mlir::OwningOpRef<mlir::ModuleOp> module;

  Source(const std::string &text, Stage stage) {
    ctx.loadDialect<nn::NNDialect, mlir::func::FuncDialect>();
    sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(text, "bench.nn"), llvm::SMLoc());
    auto file = parseSource(sm, ctx);
    if (!file)
      return;
    module = mlirGen(ctx, *file, "bench.nn");
    if (!module)
      return;
    mlir::PassManager pm(&ctx);
    buildPipeline(pm, stage);
    if (mlir::failed(pm.run(*module)))
      module = nullptr;
  }
  mlir::func::FuncOp model() { return *module->getOps<mlir::func::FuncOp>().begin(); }
};

std::string example(const std::string &name) {
  // The real-size models kept with the benchmarks, else the examples.
  std::ifstream f(std::string(NNC_SOURCE_DIR) + "/benchmarks/" + name + ".nn");
  if (!f)
    f = std::ifstream(std::string(NNC_SOURCE_DIR) + "/examples/" + name + ".nn");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Flops and bytes per call from a kernel table (batch-scaled entries at
/// `batch`).
std::pair<double, double> work(mlir::ArrayAttr table, int64_t batch) {
  double flops = 0, bytes = 0;
  for (mlir::Attribute a : table) {
    auto d = mlir::cast<mlir::DictionaryAttr>(a);
    auto f = mlir::cast<mlir::DenseI64ArrayAttr>(d.get("flops")).asArrayRef();
    auto b = mlir::cast<mlir::DenseI64ArrayAttr>(d.get("bytes")).asArrayRef();
    flops += static_cast<double>(f[0] * batch + f[1]);
    bytes += static_cast<double>(b[0] * batch + b[1]);
  }
  return {flops, bytes};
}

/// One op at a named shape (compiler/frontend/KernelSpec.h), forward.
void kernel(benchmark::State &state, const std::string &spec) {
  std::string error, text = kernelSource(spec, false, error);
  Source s(text, Stage::Nn);
  if (!s.module) {
    state.SkipWithError(("cannot compile " + spec + " " + error).c_str());
    return;
  }
  auto r = cpu::FunctionRunner::create(s.model(), 1);
  if (mlir::failed(r)) {
    state.SkipWithError("cannot compile the kernel");
    return;
  }
  for (auto _ : state)
    (*r)->run();
  auto [flops, bytes] = work((*r)->kernels(), 1);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

/// A model compiled for training and JIT-compiled, as `nnc train` runs it.
struct Trainable {
  std::unique_ptr<Source> source;
  mlir::OwningOpRef<mlir::ModuleOp> code;
  std::unique_ptr<cpu::JitModule> jit;
  rt::ModelDesc desc;
  std::unique_ptr<rt::CompiledModel> model;

  bool build(const std::string &text) {
    source = std::make_unique<Source>(text, Stage::Train);
    if (!source->module)
      return false;
    auto fn = source->model();
    code = mlir::ModuleOp::create(fn.getLoc());
    auto d = cpu::compileModel(*source->module, fn.getName(), *code);
    if (mlir::failed(d))
      return false;
    desc = std::move(*d);
    auto j = cpu::JitModule::compile(*code);
    if (mlir::failed(j))
      return false;
    jit = std::move(*j);
    for (auto [f, name] : {std::pair{&desc.trainStep, cpu::kTrainStepKernel},
                           std::pair{&desc.model, cpu::kModelKernel}}) {
      if (mlir::failed(jit->prepare(name)))
        return false;
      size_t buffers = f->buffers(), slots = f->slots.size() / 2;
      f->call = [j = jit.get(), name, buffers, slots](void **b, int64_t n, void **s) {
        (void)j->call(name, llvm::ArrayRef<void *>(b, buffers), n, llvm::ArrayRef<void *>(s, slots));
      };
    }
    model = std::make_unique<rt::CompiledModel>(desc, 1, "cpu");
    return static_cast<bool>(model->initialize());
  }

  /// A synthetic batch of `n` (pixels uniform [0, 1), labels 0..9).
  std::vector<rt::HostTensor> batch(int64_t n, uint64_t salt) const {
    std::vector<rt::HostTensor> out;
    uint64_t counter = 0;
    for (const rt::ModelInput &in : model->inputs()) {
      rt::HostTensor t{in.name, {n}, {}};
      t.shape.insert(t.shape.end(), in.dims.begin(), in.dims.end());
      t.data.resize(static_cast<size_t>(t.numel()));
      for (float &v : t.data) {
        double u = rt::uniform01(salt, 0, counter++);
        v = in.integer ? static_cast<float>(static_cast<int>(u * 10)) : static_cast<float>(u);
      }
      out.push_back(std::move(t));
    }
    return out;
  }
};

void step(benchmark::State &state, const std::string &name) {
  Trainable t;
  if (!t.build(example(name))) {
    state.SkipWithError("cannot compile the model");
    return;
  }
  std::vector<rt::HostTensor> b = t.batch(64, 3);
  double loss = 0;
  for (auto _ : state)
    benchmark::DoNotOptimize(t.model->step(b, loss));
  state.counters["samples/s"] = benchmark::Counter(64, benchmark::Counter::kIsIterationInvariantRate);
}

/// Inference: the model in evaluation mode on one sample.
void infer(benchmark::State &state, const std::string &name) {
  Trainable t;
  if (!t.build(example(name))) {
    state.SkipWithError("cannot compile the model");
    return;
  }
  std::vector<rt::HostTensor> b = t.batch(1, 5), outputs;
  double loss = 0;
  // Steady state, as a deployed model runs: the first call transforms the
  // weights that later calls keep (rt::KernelCache).
  benchmark::DoNotOptimize(t.model->evaluate(b, outputs, loss));
  for (auto _ : state)
    benchmark::DoNotOptimize(t.model->evaluate(b, outputs, loss));
}

/// One epoch: 60,000 samples in batches of 64 (the last one ragged), the
/// batches drawn in advance from a pool so that data handling is not timed.
void epoch(benchmark::State &state, const std::string &name) {
  Trainable t;
  if (!t.build(example(name))) {
    state.SkipWithError("cannot compile the model");
    return;
  }
  std::vector<std::vector<rt::HostTensor>> pool;
  for (uint64_t i = 0; i < 16; ++i)
    pool.push_back(t.batch(64, 100 + i));
  std::vector<rt::HostTensor> last = t.batch(60000 % 64, 99);
  double loss = 0;
  for (auto _ : state) {
    for (int64_t k = 0; k < 60000 / 64; ++k)
      benchmark::DoNotOptimize(t.model->step(pool[k % pool.size()], loss));
    benchmark::DoNotOptimize(t.model->step(last, loss));
  }
  state.counters["samples/s"] = benchmark::Counter(60000, benchmark::Counter::kIsIterationInvariantRate);
}

/// Parse to ready code: training step and evaluation function.
void compile(benchmark::State &state, const std::string &name) {
  std::string text = example(name);
  for (auto _ : state) {
    Trainable t;
    if (!t.build(text)) {
      state.SkipWithError("cannot compile the model");
      return;
    }
  }
}

/// With --benchmark_repetitions, the fastest repetition too (the peer's
/// figure is its best time; benchmarks/compare.sh reads both so).
double fastest(const std::vector<double> &v) { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }

void registerAll() {
  auto add = [](const std::string &name, auto fn, const std::string &arg) {
    return benchmark::RegisterBenchmark(name.c_str(), [fn, arg](benchmark::State &s) { fn(s, arg); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->ComputeStatistics("min", fastest);
  };
  for (int n : {256, 512, 1024, 2048})
    add("gemm/" + std::to_string(n), kernel, "gemm:" + std::to_string(n) + "x" + std::to_string(n) + "x" +
                                                 std::to_string(n));
  // The MNIST MLP's products at batch 64 (forward), and its first layer's
  // weight gradient (x^T @ dy).
  for (const char *s : {"gemm:64x128x784", "gemm:64x64x128", "gemm:64x10x64", "gemm:784x128x64"})
    add(std::string("mlp_") + s, kernel, s);
  // Convolution layers of the examples, batch 64 (MNIST CNN, LeNet-5) and
  // 32 (VGG-small), forward; then forward and backward (a training step of
  // the layer alone).
  const char *convs[][2] = {{"mnist_cnn", "conv2d:64,1,28,28,32,5,1,2"},
                            {"lenet5_c1", "conv2d:64,1,28,28,6,5,1,2"},
                            {"lenet5_c3", "conv2d:64,6,14,14,16,5"},
                            {"vgg_small_a2", "conv2d:32,32,32,32,32,3,1,1"},
                            {"vgg_small_b2", "conv2d:32,64,16,16,64,3,1,1"}};
  // The convolution layers of the CIFAR ResNet-18 at batch 64
  // (benchmarks/resnet18_cifar.nn): per stage the 3x3 layer, and where the
  // stage starts the stride-2 3x3 layer and the 1x1 stride-2 shortcut.
  const char *resnet[][2] = {{"rn18_stem", "conv2d:64,3,32,32,64,3,1,1"},
                             {"rn18_s1", "conv2d:64,64,32,32,64,3,1,1"},
                             {"rn18_s2_down", "conv2d:64,64,32,32,128,3,2,1"},
                             {"rn18_s2_short", "conv2d:64,64,32,32,128,1,2,0"},
                             {"rn18_s2", "conv2d:64,128,16,16,128,3,1,1"},
                             {"rn18_s3_down", "conv2d:64,128,16,16,256,3,2,1"},
                             {"rn18_s3_short", "conv2d:64,128,16,16,256,1,2,0"},
                             {"rn18_s3", "conv2d:64,256,8,8,256,3,1,1"},
                             {"rn18_s4_down", "conv2d:64,256,8,8,512,3,2,1"},
                             {"rn18_s4_short", "conv2d:64,256,8,8,512,1,2,0"},
                             {"rn18_s4", "conv2d:64,512,4,4,512,3,1,1"}};
  std::vector<std::array<const char *, 2>> layers;
  for (auto &c : convs)
    layers.push_back({c[0], c[1]});
  for (auto &c : resnet)
    layers.push_back({c[0], c[1]});
  for (auto &c : layers) {
    add(std::string("conv/") + c[0], kernel, c[1]);
    benchmark::RegisterBenchmark((std::string("conv_fwd_bwd/") + c[0]).c_str(),
                                 [spec = std::string(c[1])](benchmark::State &state) {
                                   std::string error, text = kernelSource(spec, true, error);
                                   Trainable t;
                                   if (!t.build(text)) {
                                     state.SkipWithError("cannot compile");
                                     return;
                                   }
                                   double loss = 0;
                                   for (auto _ : state)
                                     benchmark::DoNotOptimize(t.model->step({}, loss));
                                 })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->ComputeStatistics("min", fastest);
  }
  for (const char *s : {"elementwise:16777216:relu(x * 0.5 + y)", "elementwise:16777216:sigmoid(x * y + z)",
                        "elementwise:16777216:x - 0.1 * y"})
    add(std::string("chain/") + (s + 21), kernel, s);
  add("reduction/rows_4096x4096", kernel, "reduction:4096x4096:1");
  add("reduction/cols_4096x4096", kernel, "reduction:4096x4096:0");
  add("softmax_ce/64x10", kernel, "softmax_ce:64x10");
  add("softmax_ce/1024x1000", kernel, "softmax_ce:1024x1000");
  add("step/resnet18_cifar", step, "resnet18_cifar");
  add("infer/resnet18_224", infer, "resnet18"); // torchvision's, examples/resnet18.nn
  for (const char *m : {"mnist_mlp", "mnist_cnn"}) {
    add(std::string("step/") + m, step, m);
    add(std::string("epoch/") + m, epoch, m)->Iterations(1);
    add(std::string("compile/") + m, compile, m)->Iterations(3);
  }
}

} // namespace

int main(int argc, char **argv) {
  registerAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
