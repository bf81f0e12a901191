//===- CudaTest.cpp - the generated CUDA code, run on the host ------------===//
//
// Without a GPU: the CUDA source nnc generates for a function is compiled
// by the host compiler behind the emulation header and run on emulated
// blocks and threads (cuda::createHostEmulationExecutor). Every op case
// whose gradient function the CUDA backend generates must match the
// reference evaluator, and so must two whole training steps of it.
//
//===----------------------------------------------------------------------===//

#include "OpCases.h"
#include "TestUtil.h"

#include "compiler/codegen/cpu/CpuExecutor.h"
#include "compiler/codegen/cuda/CudaEmitter.h"
#include "compiler/codegen/cuda/HostEmulation.h"
#include "compiler/codegen/cuda/HostEmulationExecutor.h"
#include "compiler/reference/Trainer.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace nnc;
using ref::Tensor;

namespace {

/// Whether the CUDA backend generates every kernel of `fn`.
bool generated(mlir::func::FuncOp fn) {
  codegen::BatchScaling scaling;
  auto prepared = codegen::prepare(fn, std::nullopt, true, &scaling);
  if (failed(prepared))
    return false;
  auto code = cuda::emitCuda(*(*prepared)->getOps<mlir::func::FuncOp>().begin(), scaling, true);
  return succeeded(code) && code->skipped.empty();
}

void expectClose(const Tensor &a, const Tensor &b, const std::string &what, double scale) {
  ASSERT_EQ(a.shape, b.shape) << what;
  for (size_t i = 0; i < a.data.size(); ++i)
    if (!(std::abs(a.data[i] - b.data[i]) <= 1e-3 * std::abs(b.data[i]) + 1e-4 * scale + 1e-6)) {
      ADD_FAILURE() << what << ": element " << i << " is " << a.data[i] << " vs " << b.data[i];
      return;
    }
}

class CudaHostOp : public ::testing::TestWithParam<test::Case> {};

TEST_P(CudaHostOp, MatchesReference) {
  // SGD with momentum: an adaptive optimizer would turn the rounding noise
  // of a gradient that cancels (a bias before a batch norm) into steps of
  // lr. The examples below train with Adam.
  std::string src = test::model(GetParam()) + "train {\n  optimizer = sgd(lr=0.001, momentum=0.9)\n}\n";
  test::Compiled m(src, Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  auto grad = m.module->lookupSymbol<mlir::func::FuncOp>("m_grad");
  auto step = m.module->lookupSymbol<mlir::func::FuncOp>("m_train_step");
  ASSERT_TRUE(grad && step);
  if (!generated(step))
    GTEST_SKIP() << "the CUDA backend does not generate every kernel of this case yet";
  auto emu = std::shared_ptr<ref::Executor>(cuda::createHostEmulationExecutor(NNC_HOST_CXX));
  auto refExec = std::shared_ptr<ref::Executor>(ref::createReferenceExecutor());

  // The gradient function.
  auto model = m.module->lookupSymbol<mlir::func::FuncOp>("m");
  std::vector<Tensor> in = test::inputsFor(model, 5, 1);
  auto tr = ref::Trainer::create(*m.module, 3, refExec);
  ASSERT_TRUE(succeeded(tr));
  std::vector<Tensor> args;
  size_t k = 0;
  for (unsigned i = 0; i < grad.getNumArguments(); ++i) {
    auto role = grad.getArgAttrOfType<mlir::StringAttr>(i, nn::attr::kRole);
    args.push_back(role.getValue() == "input"
                       ? in[k++]
                       : *tr->tensor(grad.getArgAttrOfType<mlir::StringAttr>(i, nn::attr::kName).getValue()));
  }
  auto a = emu->run(grad, args, {3, 1}), b = refExec->run(grad, args, {3, 1});
  ASSERT_TRUE(succeeded(a) && succeeded(b)) << m.firstError();
  ASSERT_EQ(a->size(), b->size());
  double scale = 0;
  for (const Tensor &t : *b)
    for (double v : t.data)
      scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < a->size(); ++i)
    expectClose((*a)[i], (*b)[i], "gradient result " + std::to_string(i), scale);

  // Two training steps, state fed back by the trainer.
  auto cudaTrainer = ref::Trainer::create(*m.module, 3, emu);
  auto refTrainer = ref::Trainer::create(*m.module, 3, refExec);
  ASSERT_TRUE(succeeded(cudaTrainer) && succeeded(refTrainer));
  for (int s = 0; s < 2; ++s) {
    std::vector<Tensor> batch = test::inputsFor(model, 4, 20 + s);
    auto la = cudaTrainer->step(batch), lb = refTrainer->step(batch);
    ASSERT_TRUE(succeeded(la) && succeeded(lb)) << m.firstError();
    EXPECT_NEAR(*la, *lb, 1e-3 * (1 + std::abs(*lb))) << "loss at step " << s;
  }
  // Momentum buffers hold sums of gradients: compared at the gradients'
  // scale (a gradient that cancels, a bias before a batch norm, is f32
  // rounding of about 1e-6 of the largest one).
  for (const std::string &name : refTrainer->stateNames())
    expectClose(*cudaTrainer->tensor(name), *refTrainer->tensor(name), name,
                llvm::StringRef(name).ends_with("momentum_buffer") ? scale : 1.0);
}

INSTANTIATE_TEST_SUITE_P(Ops, CudaHostOp, ::testing::ValuesIn(test::cases()),
                         [](const auto &info) { return std::string(info.param.name); });

/// A NaN in a run is the run's maximum (torch.amax), on the device as in
/// the reference: rows shorter than, equal to and longer than a block.
TEST(CudaHostEmulation, ReductionMaximumPropagatesNaN) {
  for (int width : {7, 256, 600}) {
    std::string src = "model m {\n  input x: f32[B, " + std::to_string(width) +
                      "]\n  y = max(x, axis=1)\n  output y\n}\n";
    test::Compiled m(src, Stage::Nn);
    ASSERT_TRUE(m.module) << m.firstError();
    auto fn = m.module->lookupSymbol<mlir::func::FuncOp>("m");
    std::vector<Tensor> in = test::inputsFor(fn, 3, 4);
    in[0].data[width + 2] = std::nan(""); // row 1
    auto emu = cuda::createHostEmulationExecutor(NNC_HOST_CXX);
    auto a = emu->run(fn, in, {}), b = ref::createReferenceExecutor()->run(fn, in, {});
    ASSERT_TRUE(succeeded(a) && succeeded(b)) << m.firstError();
    ASSERT_EQ((*a)[0].data.size(), 3u);
    EXPECT_TRUE(std::isnan((*a)[0].data[1]) && std::isnan((*b)[0].data[1])) << width;
    EXPECT_FLOAT_EQ((*a)[0].data[0], (*b)[0].data[0]) << width;
    EXPECT_FLOAT_EQ((*a)[0].data[2], (*b)[0].data[2]) << width;
  }
}

/// The share of op cases generated end to end may only grow.
TEST(CudaCoverage, OpCasesGenerated) {
  size_t n = 0, all = 0;
  for (const test::Case &c : test::cases()) {
    test::Compiled m(test::model(c) + "train {\n  optimizer = adam(lr=0.01)\n}\n", Stage::Train);
    ASSERT_TRUE(m.module) << c.name;
    ++all;
    n += generated(m.module->lookupSymbol<mlir::func::FuncOp>("m_train_step"));
  }
  RecordProperty("generated", static_cast<int>(n));
  // Every op case.
  EXPECT_EQ(n, all) << n << " of " << all << " op cases generated";
}

class CudaHostExample : public ::testing::TestWithParam<const char *> {};

/// Two training steps of an example model, every kernel generated CUDA
/// run on the host, against the reference trainer.
TEST_P(CudaHostExample, TrainingStepsMatchReference) {
  test::Compiled m(test::readSource(std::string("examples/") + GetParam() + ".nn"), Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  auto emu = std::shared_ptr<ref::Executor>(cuda::createHostEmulationExecutor(NNC_HOST_CXX));
  auto refExec = std::shared_ptr<ref::Executor>(ref::createReferenceExecutor());
  auto a = ref::Trainer::create(*m.module, 5, emu), b = ref::Trainer::create(*m.module, 5, refExec);
  ASSERT_TRUE(succeeded(a) && succeeded(b)) << m.firstError();
  ASSERT_TRUE(generated(m.module->lookupSymbol<mlir::func::FuncOp>(
      (a->modelFunction().getName() + "_train_step").str())));
  for (int s = 0; s < 2; ++s) {
    std::vector<Tensor> batch = test::inputsFor(a->modelFunction(), 6, 30 + s);
    auto la = a->step(batch), lb = b->step(batch);
    ASSERT_TRUE(succeeded(la) && succeeded(lb)) << m.firstError();
    EXPECT_NEAR(*la, *lb, 1e-3 * (1 + std::abs(*lb))) << "loss at step " << s;
  }
  // Adaptive optimizers (Adam, RMSprop) turn f32 rounding of a gradient
  // that cancels (a bias before a batch norm) into steps of up to lr:
  // parameters agree to a few lr (2.5e-3).
  for (const std::string &name : b->stateNames())
    expectClose(*a->tensor(name), *b->tensor(name), name, 25.0);
  // Evaluation from the same state (a bias before a batch norm, moved by
  // lr-sized steps of rounding, would shift the running-statistics outputs
  // by as much).
  for (const std::string &name : b->stateNames())
    *a->tensor(name) = *b->tensor(name);
  std::vector<Tensor> later = test::inputsFor(a->modelFunction(), 6, 40);
  auto ea = a->evaluate(later), eb = b->evaluate(later);
  ASSERT_TRUE(succeeded(ea) && succeeded(eb)) << m.firstError();
  for (size_t i = 0; i < ea->size(); ++i)
    expectClose((*ea)[i], (*eb)[i], "result " + std::to_string(i), 1.0);
}

INSTANTIATE_TEST_SUITE_P(Examples, CudaHostExample,
                         ::testing::Values("backprop_222", "xor_mlp", "mnist_sigmoid", "mnist_mlp",
                                           "mnist_autoencoder", "weight_norm", "mnist_cnn", "lenet5",
                                           "vgg_small"));

/// The emulation runs the same source NVRTC compiles: its prelude
/// selects the host definitions only under NNC_HOST_EMULATION.
TEST(CudaHostEmulation, HeaderProvidesTheBuiltins) {
  std::string header = cuda::hostEmulationHeader(), prelude = cuda::prelude();
  for (const char *name : {"blockIdx", "threadIdx", "blockDim", "gridDim", "NNC_KERNEL", "NNC_INF"})
    EXPECT_NE(header.find(name), std::string::npos) << name;
  EXPECT_NE(prelude.find("#ifndef NNC_HOST_EMULATION"), std::string::npos);
}

} // namespace

//===----------------------------------------------------------------------===//
// NVRTC and the kernel cache (where the CUDA Toolkit is installed)
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cuda/Nvrtc.h"

#include "llvm/Support/FileSystem.h"

namespace {

constexpr const char *kSaxpy = R"(extern "C" __global__ void saxpy(float *y, const float *x, float a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += a * x[i];
})";

TEST(KernelCache, KeyCoversSourceArchitectureOptionsAndVersion) {
  std::string k = cuda::cacheKey(kSaxpy, "sm_90", {"-lineinfo"}, "13.0");
  EXPECT_EQ(k.size(), 64u);
  EXPECT_EQ(k, cuda::cacheKey(kSaxpy, "sm_90", {"-lineinfo"}, "13.0"));
  EXPECT_NE(k, cuda::cacheKey(std::string(kSaxpy) + " ", "sm_90", {"-lineinfo"}, "13.0"));
  EXPECT_NE(k, cuda::cacheKey(kSaxpy, "sm_80", {"-lineinfo"}, "13.0"));
  EXPECT_NE(k, cuda::cacheKey(kSaxpy, "sm_90", {}, "13.0"));
  EXPECT_NE(k, cuda::cacheKey(kSaxpy, "sm_90", {"-lineinfo"}, "13.1"));
  // Parts are delimited: moving text between them changes the key.
  EXPECT_NE(cuda::cacheKey("a", "b", {}, "1"), cuda::cacheKey("ab", "", {}, "1"));
}

TEST(KernelCache, HitsUntilOptionsChange) {
  if (cuda::nvrtcVersion().empty())
    GTEST_SKIP() << "no NVRTC on this machine";
  llvm::SmallString<128> dir;
  ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("nnc-cache-test", dir));
  bool hit = true;
  auto first = cuda::compileCached(kSaxpy, "saxpy.cu", "sm_90", {}, dir.str().str(), &hit);
  ASSERT_TRUE(first.ok) << first.error << "\n" << first.log;
  EXPECT_FALSE(hit);
  EXPECT_NE(first.ptx.find(".entry saxpy"), std::string::npos);
  auto second = cuda::compileCached(kSaxpy, "saxpy.cu", "sm_90", {}, dir.str().str(), &hit);
  EXPECT_TRUE(hit);
  EXPECT_EQ(second.ptx, first.ptx);
  auto other = cuda::compileCached(kSaxpy, "saxpy.cu", "sm_90", {"-lineinfo"}, dir.str().str(), &hit);
  ASSERT_TRUE(other.ok);
  EXPECT_FALSE(hit) << "new options must not hit the old entry";
  llvm::sys::fs::remove_directories(dir);
}

TEST(Nvrtc, ErrorCarriesLogAndKernel) {
  if (cuda::nvrtcVersion().empty())
    GTEST_SKIP() << "no NVRTC on this machine";
  std::string src = "// k7_0: add (m.nn:3:5)\nextern \"C\" __global__ void k7_0(float *p) { p[0] = undefined_name; }\n";
  auto r = cuda::compileToPtx(src, "m.cu", "sm_90");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("in kernel k7_0: add (m.nn:3:5)"), std::string::npos) << r.error;
  EXPECT_NE(r.log.find("undefined_name"), std::string::npos) << r.log;
}

} // namespace
