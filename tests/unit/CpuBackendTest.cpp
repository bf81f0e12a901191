//===- CpuBackendTest.cpp - compiled CPU code against the evaluator -------===//
//
// Every op case and every example: two training steps (forward, backward,
// optimizer update) and an evaluation on the JIT-compiled CPU backend must
// match the reference evaluator, with odd batch sizes and batch size 1.
//
//===----------------------------------------------------------------------===//

#include "OpCases.h"
#include "TestUtil.h"

#include "compiler/codegen/cpu/CpuExecutor.h"
#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/cpu/CompileModel.h"
#include "compiler/codegen/cpu/Tiling.h"
#include "compiler/transforms/Passes.h"
#include "runtime/CompiledModel.h"
#include "compiler/reference/GradCheck.h"
#include "compiler/reference/Trainer.h"
#include "dialects/nn/NNOps.h"
#include "runtime/Random.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/DynamicLibrary.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

using namespace nnc;
using ref::Tensor;

namespace {

double largest(const Tensor &t) {
  double m = 0;
  for (double v : t.data)
    m = std::max(m, std::abs(v));
  return m;
}

/// |a - b| <= rtol |b| + atol (+ 1e-6, below f32 resolution) for every element.
void expectClose(const Tensor &a, const Tensor &b, const std::string &what, double rtol,
                 double atol) {
  ASSERT_EQ(a.shape, b.shape) << what;
  for (size_t i = 0; i < a.data.size(); ++i)
    if (!(std::abs(a.data[i] - b.data[i]) <= rtol * std::abs(b.data[i]) + atol + 1e-6) &&
        !(std::isnan(a.data[i]) && std::isnan(b.data[i]))) {
      ADD_FAILURE() << what << ": element " << i << " is " << a.data[i] << " vs " << b.data[i]
                    << " (tolerance " << rtol << " relative + " << atol << ")";
      return;
    }
}

/// Runs `fn` on both executors and compares every result: f32 against
/// double, `rtol` relative plus `share` of the largest reference element.
void expectSameResults(ref::Executor &cpu, ref::Executor &reference, mlir::func::FuncOp fn,
                       const std::vector<Tensor> &args, const std::string &what, double rtol,
                       double share, const test::Compiled &m) {
  ref::EvalOptions opts{3, 1};
  auto a = cpu.run(fn, args, opts), b = reference.run(fn, args, opts);
  ASSERT_TRUE(succeeded(a) && succeeded(b)) << m.firstError();
  double scale = 0;
  for (const Tensor &t : *b)
    scale = std::max(scale, largest(t));
  for (size_t i = 0; i < a->size(); ++i)
    expectClose((*a)[i], (*b)[i], what + " " + std::to_string(i), rtol, share * scale);
}

/// Compares the backends on the gradient function, then on one training step
/// and an evaluation after it.
void compareBackends(const std::string &source, int64_t batch, bool fuse = true) {
  test::Compiled m(source, Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  auto cpuExec = std::shared_ptr<ref::Executor>(cpu::createExecutor(fuse));
  auto refExec = std::shared_ptr<ref::Executor>(ref::createReferenceExecutor());
  auto cpu = ref::Trainer::create(*m.module, 3, cpuExec);
  auto ref = ref::Trainer::create(*m.module, 3, refExec);
  ASSERT_TRUE(succeeded(cpu) && succeeded(ref)) << m.firstError();

  // Gradients: f32 against double. Where a gradient cancels to ~0 (a bias
  // before batch norm) or a max-pool window nearly ties, f32 rounding moves
  // it by a small fraction of the model's largest gradient.
  mlir::func::FuncOp model = cpu->modelFunction();
  auto grad = m.module->lookupSymbol<mlir::func::FuncOp>((model.getName() + "_grad").str());
  ASSERT_TRUE(grad);
  std::vector<Tensor> args;
  std::vector<Tensor> in = test::inputsFor(model, batch, 1);
  size_t k = 0;
  for (unsigned i = 0; i < grad.getNumArguments(); ++i) {
    auto role = grad.getArgAttrOfType<mlir::StringAttr>(i, nn::attr::kRole);
    args.push_back(role.getValue() == "input" ? in[k++] : *ref->tensor(
        grad.getArgAttrOfType<mlir::StringAttr>(i, nn::attr::kName).getValue()));
  }
  expectSameResults(*cpuExec, *refExec, grad, args, "gradient result", 2e-3, 1e-2, m);

  // One step: optimizers that normalize by the gradient's size (Adam,
  // RMSprop) turn rounding noise on a near-zero gradient into a step of up to
  // lr, so parameters agree to about 2 lr.
  auto a = cpu->step(in), b = ref->step(in);
  ASSERT_TRUE(succeeded(a) && succeeded(b)) << m.firstError();
  EXPECT_NEAR(*a, *b, 1e-3 * (1 + std::abs(*b))) << "loss";
  for (const std::string &name : ref->stateNames())
    expectClose(*cpu->tensor(name), *ref->tensor(name), name, 2e-3, 2.5e-3);
  std::vector<Tensor> later = test::inputsFor(model, batch, 9);
  auto ea = cpu->evaluate(later), eb = ref->evaluate(later);
  ASSERT_TRUE(succeeded(ea) && succeeded(eb)) << m.firstError();
  for (size_t i = 0; i < ea->size(); ++i)
    expectClose((*ea)[i], (*eb)[i], "result " + std::to_string(i), 1e-2, 1e-2 * largest((*eb)[i]));
}

class CpuOp : public ::testing::TestWithParam<test::Case> {};

TEST_P(CpuOp, MatchesReference) {
  compareBackends(test::model(GetParam()) + "train {\n  optimizer = sgd(lr=0.001)\n}\n", 3);
}

INSTANTIATE_TEST_SUITE_P(Ops, CpuOp, ::testing::ValuesIn(test::cases()),
                         [](const auto &info) { return std::string(info.param.name); });

class CpuExample : public ::testing::TestWithParam<const char *> {};

TEST_P(CpuExample, TrainingStepMatchesReference) {
  std::string src = test::readSource(std::string("examples/") + GetParam() + ".nn");
  ASSERT_FALSE(src.empty());
  compareBackends(src, 5);
}

INSTANTIATE_TEST_SUITE_P(Examples, CpuExample,
                         ::testing::Values("backprop_222", "xor_mlp", "mnist_sigmoid", "mnist_mlp",
                                           "mnist_cnn", "lenet5", "mnist_autoencoder",
                                           "weight_norm", "vgg_small"));

/// Repeated layers compile to one shared function per distinct kernel
/// (OutlineKernels); every layer still computes its own values.
TEST(CpuBackend, RepeatedLayersMatchReference) {
  std::string src = "model deep {\n  input x: f32[B, 24]\n  input y: i32[B]\n  h0 = x\n";
  for (int i = 1; i <= 6; ++i)
    src += "  h" + std::to_string(i) + " = tanh(dense(h" + std::to_string(i - 1) + ", 24))\n";
  src += "  logits = dense(h6, 5)\n  loss = softmax_cross_entropy(logits, y)\n  output logits\n"
         "  minimize loss\n}\ntrain {\n  optimizer = adam(lr=0.01)\n}\n";
  compareBackends(src, 7);
}

/// Any valid blocking recorded by hand in nnc.tiling (Tiling.h) computes the
/// same values (lit codegen/cpu/tiling.mlir checks the lowering follows it).
TEST(CpuBackend, RecordedTilingIsExact) {
  test::Compiled m("model t {\n  input x: f32[B, 2, 9, 11]\n  input y: i32[B]\n"
                   "  c = relu(conv2d(x, 6, kernel=3, padding=1))\n  h = relu(dense(flatten(c), 20))\n"
                   "  logits = dense(h, 3)\n  loss = softmax_cross_entropy(logits, y)\n  output logits\n"
                   "  minimize loss\n}\n",
                   Stage::Grad);
  ASSERT_TRUE(m.module) << m.firstError();
  auto grad = m.module->lookupSymbol<mlir::func::FuncOp>("t_grad");
  ASSERT_TRUE(grad);
  mlir::Builder b(&m.ctx);
  auto dict = [&](std::initializer_list<std::pair<const char *, int64_t>> kv) {
    llvm::SmallVector<mlir::NamedAttribute> attrs;
    for (auto [k, v] : kv)
      attrs.push_back(b.getNamedAttr(k, b.getI64IntegerAttr(v)));
    return b.getDictionaryAttr(attrs);
  };
  unsigned set = 0;
  grad.walk([&](mlir::Operation *op) {
    mlir::DictionaryAttr t;
    if (mlir::isa<nn::MatmulOp>(op))
      t = dict({{"rows", 3}, {"vectors", 1}, {"depth", 5}, {"group", 2}});
    else if (mlir::isa<nn::Conv2dOp>(op))
      t = dict({{"channel_block", 3}});
    else if (mlir::isa<nn::Conv2dGradWeightOp>(op))
      t = dict({{"channel_block", 2}, {"input_block", 1}, {"kernel_rows", 1}, {"batch_chunk", 1}});
    else if (mlir::isa<nn::Conv2dGradInputOp>(op))
      t = dict({{"channel_block", 1}});
    if (t) {
      op->setAttr("nnc.tiling", t);
      ++set;
    }
  });
  EXPECT_GE(set, 5u);
  auto cpuExec = cpu::createExecutor();
  auto refExec = ref::createReferenceExecutor();
  std::vector<Tensor> args;
  std::vector<Tensor> in = test::inputsFor(grad, 7, 3);
  size_t k = 0;
  for (unsigned i = 0; i < grad.getNumArguments(); ++i) {
    auto role = grad.getArgAttrOfType<mlir::StringAttr>(i, nn::attr::kRole);
    if (role.getValue() == "input") {
      args.push_back(in[k++]);
      continue;
    }
    auto t = mlir::cast<mlir::RankedTensorType>(grad.getArgumentTypes()[i]);
    Tensor p{std::vector<int64_t>(t.getShape()), {}};
    p.data.resize(p.numel());
    for (size_t j = 0; j < p.data.size(); ++j)
      p.data[j] = std::sin(0.37 * static_cast<double>(j + 11 * i)) * 0.4;
    args.push_back(std::move(p));
  }
  expectSameResults(*cpuExec, *refExec, grad, args, "result", 2e-3, 1e-3, m);
}

/// The same without fusion: every op a kernel of its own.
// The blocking derives from the machine: on an AVX-512 and an AVX2
// description, every product's register block (accumulators, a register
// per vector of B's row, one broadcast of A) fits the vector registers and
// its packed panel of B fits L1, and convolution blocks divide their
// channels.
TEST(CpuTiling, BlocksFitTheMachine) {
  test::Compiled m("model t {\n  input x: f32[B, 16, 12, 12]\n  input y: i32[B]\n"
                   "  c = relu(conv2d(x, 24, kernel=3, padding=1))\n  d = relu(conv2d(c, 12, kernel=1))\n"
                   "  h = relu(dense(flatten(d), 200))\n  logits = dense(h, 10)\n"
                   "  loss = softmax_cross_entropy(logits, y)\n  output logits\n  minimize loss\n}\n",
                   Stage::Grad);
  ASSERT_TRUE(m.module) << m.firstError();
  cpu::Machine avx512{"avx512", 16, 32, 48 << 10, 2 << 20, 32 << 20};
  cpu::Machine avx2{"avx2", 8, 16, 32 << 10, 512 << 10, 32 << 20};
  for (const cpu::Machine &machine : {avx512, avx2}) {
    unsigned products = 0, convs = 0;
    m.module->walk([&](mlir::Operation *op) {
      mlir::DictionaryAttr t = cpu::chooseTiling(op, machine);
      if (!t)
        return;
      auto get = [&](llvm::StringRef name) { return mlir::cast<mlir::IntegerAttr>(t.get(name)).getInt(); };
      if (mlir::isa<nn::MatmulOp>(op)) {
        ++products;
        int64_t rows = get("rows"), vectors = get("vectors"), depth = get("depth");
        EXPECT_LE(rows * vectors + vectors + 1, machine.registers) << machine.cpu;
        EXPECT_LE(depth * vectors * machine.lanes * 4, machine.l1) << machine.cpu;
        EXPECT_GE(rows * vectors, 8) << machine.cpu << ": too few FMA chains to hide the latency";
      } else {
        ++convs;
        op->setAttr("nnc.tiling", t);
        EXPECT_TRUE(mlir::succeeded(cpu::verifyTiling(op))) << machine.cpu;
        op->removeAttr("nnc.tiling");
      }
    });
    EXPECT_GE(products, 3u);
    EXPECT_GE(convs, 4u);
  }
  EXPECT_EQ(cpu::parseCacheSize("32K"), 32 << 10);
  EXPECT_EQ(cpu::parseCacheSize("32768K"), 32 << 20);
  EXPECT_EQ(cpu::parseCacheSize("1M"), 1 << 20);
  EXPECT_EQ(cpu::parseCacheSize("512"), 512);
  EXPECT_EQ(cpu::parseCacheSize("K"), 0);
  EXPECT_EQ(cpu::parseCacheSize("-4K"), 0);
  EXPECT_EQ(cpu::parseCacheSize("99999999999999M"), 0);
}

// nnc-choose-tiling takes a tuned choice (`nnc tune`) for the op it was
// tuned for, and only where the choice still verifies; other ops keep the
// defaults.
TEST(CpuTiling, TunedChoicesApplyWhereTheyVerify) {
  test::Compiled m("model t {\n  input x: f32[B, 4, 8, 8]\n  input y: i32[B]\n"
                   "  c = relu(conv2d(x, 12, kernel=3, padding=1))\n  d = relu(conv2d(c, 12, kernel=3, padding=1))\n"
                   "  logits = dense(flatten(d), 10)\n  loss = softmax_cross_entropy(logits, y)\n"
                   "  output logits\n  minimize loss\n}\n",
                   Stage::Grad);
  ASSERT_TRUE(m.module) << m.firstError();
  auto grad = m.module->lookupSymbol<mlir::func::FuncOp>("t_grad");
  ASSERT_TRUE(grad);
  std::vector<mlir::Operation *> convs;
  grad.walk([&](nn::Conv2dOp op) { convs.push_back(op); });
  ASSERT_EQ(convs.size(), 2u);
  auto chosen = [&](mlir::Operation *op) {
    op->removeAttr("nnc.tiling");
    mlir::PassManager pm(&m.ctx);
    pm.nest<mlir::func::FuncOp>().addPass(createChooseTiling());
    EXPECT_TRUE(mlir::succeeded(pm.run(*m.module)));
    return op->getAttrOfType<mlir::DictionaryAttr>("nnc.tiling");
  };
  cpu::clearTunedTilings();
  mlir::DictionaryAttr first = chosen(convs[0]), second = chosen(convs[1]);
  ASSERT_TRUE(first && second);
  // A valid tuned block for the first layer's signature (4 input channels):
  // taken there, not by the second layer (12 input channels).
  int64_t block = mlir::cast<mlir::IntegerAttr>(first.get("channel_block")).getInt() == 3 ? 4 : 3;
  cpu::setTunedTiling(cpu::tilingSignature(convs[0]), "{channel_block = " + std::to_string(block) + " : i64}");
  EXPECT_EQ(mlir::cast<mlir::IntegerAttr>(chosen(convs[0]).get("channel_block")).getInt(), block);
  EXPECT_EQ(chosen(convs[1]), second);
  // A block that does not divide the 12 channels: the default again.
  cpu::setTunedTiling(cpu::tilingSignature(convs[0]), "{channel_block = 5 : i64}");
  EXPECT_EQ(chosen(convs[0]), first);
  // Text that is no dictionary: the default.
  cpu::setTunedTiling(cpu::tilingSignature(convs[0]), "{channel_block = ");
  EXPECT_EQ(chosen(convs[0]), first);
  cpu::clearTunedTilings();
}

TEST_P(CpuExample, UnfusedTrainingStepMatchesReference) {
  std::string src = test::readSource(std::string("examples/") + GetParam() + ".nn");
  ASSERT_FALSE(src.empty());
  compareBackends(src, 5, /*fuse=*/false);
}

/// Batch size 1, for the examples without batch statistics (one sample has
/// none worth comparing).
class CpuExampleBatchOfOne : public ::testing::TestWithParam<const char *> {};

TEST_P(CpuExampleBatchOfOne, MatchesReference) {
  std::string src = test::readSource(std::string("examples/") + GetParam() + ".nn");
  ASSERT_FALSE(src.empty());
  compareBackends(src, 1);
}

INSTANTIATE_TEST_SUITE_P(Examples, CpuExampleBatchOfOne,
                         ::testing::Values("backprop_222", "xor_mlp", "mnist_sigmoid", "mnist_mlp",
                                           "lenet5", "mnist_autoencoder", "weight_norm"));

} // namespace

//===----------------------------------------------------------------------===//
// The runtime's compiled model: state kept between steps, updates in place
//===----------------------------------------------------------------------===//

namespace {

/// A convolution, batch norm (running statistics) and two dense layers, so
/// that every kind of state tensor is updated: weights through product and
/// reduction epilogues, biases, moments, running statistics. (No bias
/// before the batch norm: its gradient is rounding noise, which adaptive
/// optimizers scale up to steps of lr.)
constexpr const char *kStatefulModel = R"(model stateful {
  input x: f32[B, 1, 6, 6]
  input y: i32[B]
  c = relu(batch_norm(conv2d(x, 3, 3, padding=1, bias=false)))
  h = tanh(dense(flatten(c), 8))
  logits = dense(h, 2)
  loss = softmax_cross_entropy(logits, y)
  output logits
  minimize loss
}
train {
  )";

std::string optimizerName(size_t i) {
  static const char *names[] = {"sgd",      "nesterov", "sgd_decay", "adagrad",  "rmsprop",
                                "adadelta", "adam",     "adamw",     "clip_norm"};
  return names[i];
}

/// `code` (compileModel's) JIT-compiled, with the training step and the
/// model function of `desc` bound to its kernels; null on failure.
std::unique_ptr<cpu::JitModule> jitModel(mlir::ModuleOp code, rt::ModelDesc &desc) {
  auto jit = cpu::JitModule::compile(code);
  if (failed(jit))
    return nullptr;
  cpu::JitModule *j = jit->get();
  for (auto [f, name] : {std::pair{&desc.trainStep, cpu::kTrainStepKernel}, std::pair{&desc.model, cpu::kModelKernel}}) {
    if (failed(j->prepare(name)))
      return nullptr;
    size_t buffers = f->buffers(), slots = f->slots.size() / 2;
    f->call = [j, name, buffers, slots](void **b, int64_t n, void **s) {
      (void)j->call(name, llvm::ArrayRef<void *>(b, buffers), n, llvm::ArrayRef<void *>(s, slots));
    };
  }
  return std::move(*jit);
}

class CompiledOptimizer : public ::testing::TestWithParam<const char *> {};

/// Five steps of the JIT-compiled model through the runtime (which feeds
/// every new value back, most of them written over the old ones in place)
/// against five steps of the reference trainer.
TEST_P(CompiledOptimizer, StepsMatchReferenceTrainer) {
  std::string src = std::string(kStatefulModel) + GetParam() + "\n}\n";
  test::Compiled m(src, Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  auto code = mlir::ModuleOp::create(mlir::UnknownLoc::get(m.module->getContext()));
  mlir::OwningOpRef<mlir::ModuleOp> owner(code);
  auto desc = cpu::compileModel(*m.module, "stateful", code);
  ASSERT_TRUE(succeeded(desc)) << m.firstError();
  size_t inPlace = 0;
  for (int64_t a : desc->trainStep.inPlace)
    inPlace += a >= 0;
  EXPECT_GT(inPlace, 0u) << "no state tensor was updated in place";
  auto jit = jitModel(code, *desc);
  ASSERT_TRUE(jit) << m.firstError();
  rt::CompiledModel compiled(*desc, 3, "cpu");
  ASSERT_TRUE(compiled.initialize());
  auto ref = ref::Trainer::create(*m.module, 3, std::shared_ptr<ref::Executor>(ref::createReferenceExecutor()));
  ASSERT_TRUE(succeeded(ref));
  for (int step = 0; step < 5; ++step) {
    std::vector<Tensor> in = test::inputsFor(ref->modelFunction(), 4, 11 + step);
    std::vector<rt::HostTensor> batch;
    for (const Tensor &t : in)
      batch.push_back({"", t.shape, rt::Floats(t.data.begin(), t.data.end())});
    double loss = 0;
    ASSERT_TRUE(compiled.step(batch, loss));
    auto want = ref->step(in);
    ASSERT_TRUE(succeeded(want));
    EXPECT_NEAR(loss, *want, 1e-3 * (1 + std::abs(*want))) << "loss at step " << step;
  }
  for (const std::string &name : ref->stateNames()) {
    rt::HostTensor got;
    ASSERT_TRUE(compiled.getState(name, got)) << name;
    Tensor t{got.shape, std::vector<double>(got.data.begin(), got.data.end())};
    expectClose(t, *ref->tensor(name), name, 5e-3, 5e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Optimizers, CompiledOptimizer,
    ::testing::Values("optimizer = sgd(lr=0.1)", "optimizer = sgd(lr=0.1, momentum=0.9, nesterov=true)",
                      "optimizer = sgd(lr=0.1, weight_decay=0.01)", "optimizer = adagrad(lr=0.1)",
                      "optimizer = rmsprop(lr=0.01, alpha=0.9, momentum=0.5)",
                      "optimizer = adadelta(lr=1.0, rho=0.9)", "optimizer = adam(lr=0.01)",
                      "optimizer = adamw(lr=0.01, weight_decay=0.1)",
                      "optimizer = sgd(lr=0.1)\n  clip_norm = 0.5"),
    [](const auto &info) { return optimizerName(info.index); });

} // namespace

//===----------------------------------------------------------------------===//
// Gradcheck through the compiled, fused code
//===----------------------------------------------------------------------===//

namespace {

class CompiledGradcheck : public ::testing::TestWithParam<const char *> {};

/// The gradients of the generated CPU code (f32, fused) against central
/// finite differences of the reference evaluator's loss (double): every
/// tensor the reference gradients pass must pass from compiled code too.
TEST_P(CompiledGradcheck, PassesWhereReferencePasses) {
  test::Compiled m(test::readSource(std::string("examples/") + GetParam() + ".nn"), Stage::Nn);
  ASSERT_TRUE(m.module) << m.firstError();
  ref::GradCheckOptions o;
  o.samples = 12;
  std::string table;
  llvm::raw_string_ostream os(table);
  auto reference = ref::gradcheck(*m.module, o, os);
  auto executor = cpu::createExecutor();
  o.executor = executor.get();
  auto compiled = ref::gradcheck(*m.module, o, os);
  ASSERT_TRUE(succeeded(reference) && succeeded(compiled)) << m.firstError();
  ASSERT_EQ(reference->rows.size(), compiled->rows.size());
  ASSERT_FALSE(compiled->rows.empty());
  for (size_t i = 0; i < compiled->rows.size(); ++i)
    if (reference->rows[i].ok)
      EXPECT_TRUE(compiled->rows[i].ok) << compiled->rows[i].name << "\n" << table;
}

INSTANTIATE_TEST_SUITE_P(Examples, CompiledGradcheck,
                         ::testing::Values("backprop_222", "xor_mlp", "mnist_sigmoid", "mnist_mlp",
                                           "mnist_cnn", "lenet5", "mnist_autoencoder",
                                           "weight_norm"));

} // namespace

//===----------------------------------------------------------------------===//
// Transcendental functions of the compiled code, in ULPs
//===----------------------------------------------------------------------===//

namespace {

/// Distance in f32 units in the last place between `got` and the exact
/// value `want` (rounded to f32 first, so a correctly rounded result is 0).
double ulps(float got, double want) {
  float w = static_cast<float>(want);
  if (got == w)
    return 0;
  if (!std::isfinite(got) || !std::isfinite(w))
    return 1e9;
  double spacing = std::nextafter(std::abs(w), INFINITY) - std::abs(w);
  return std::abs(static_cast<double>(got) - static_cast<double>(w)) / spacing;
}

struct MathCase {
  const char *expr;
  double lo, hi, maxUlps;
  double (*exact)(double);
};

class CompiledMath : public ::testing::TestWithParam<MathCase> {};

/// The compiled elementwise functions (vectorized polynomial forms) over a
/// dense sweep of their useful range, against the exact value in double.
TEST_P(CompiledMath, WithinUlpsOfExact) {
  const MathCase &c = GetParam();
  std::string src = std::string("model m {\n  input x: f32[B]\n  y = ") + c.expr + "\n  output y\n}\n";
  test::Compiled m(src, Stage::Nn);
  ASSERT_TRUE(m.module) << m.firstError();
  auto fn = m.module->lookupSymbol<mlir::func::FuncOp>("m");
  const int64_t n = 200003;
  Tensor x = Tensor::filled({n});
  for (int64_t i = 0; i < n; ++i)
    x.data[i] = static_cast<float>(c.lo + (c.hi - c.lo) * static_cast<double>(i) / static_cast<double>(n - 1));
  auto exec = cpu::createExecutor();
  auto y = exec->run(fn, {x}, {});
  ASSERT_TRUE(succeeded(y)) << m.firstError();
  double worst = 0, at = 0;
  for (int64_t i = 0; i < n; ++i) {
    double e = ulps(static_cast<float>((*y)[0].data[i]), c.exact(static_cast<float>(x.data[i])));
    if (e > worst) {
      worst = e;
      at = x.data[i];
    }
  }
  RecordProperty("max_ulps", std::to_string(worst));
  EXPECT_LE(worst, c.maxUlps) << c.expr << " at x = " << at;
}

INSTANTIATE_TEST_SUITE_P(
    Functions, CompiledMath,
    ::testing::Values(MathCase{"exp(x)", -87, 88, 2, [](double v) { return std::exp(v); }},
                      MathCase{"log(x)", 1e-30, 1e30, 2, [](double v) { return std::log(v); }},
                      MathCase{"log(x)", 0.5, 2, 2, [](double v) { return std::log(v); }},
                      MathCase{"sigmoid(x)", -30, 30, 3, [](double v) { return 1 / (1 + std::exp(-v)); }},
                      MathCase{"tanh(x)", -10, 10, 2, [](double v) { return std::tanh(v); }},
                      // Near zero, and around 0.625, where the polynomial
                      // gives way to the exponential form.
                      MathCase{"tanh(x)", -1e-3, 1e-3, 2, [](double v) { return std::tanh(v); }},
                      MathCase{"tanh(x)", 0.5, 0.75, 2, [](double v) { return std::tanh(v); }},
                      MathCase{"tanh(x)", -0.75, -0.5, 2, [](double v) { return std::tanh(v); }},
                      MathCase{"softplus(x)", -30, 30, 3, [](double v) { return std::log1p(std::exp(v)); }}),
    [](const auto &info) { return std::string("f") + std::to_string(info.index); });

} // namespace

//===----------------------------------------------------------------------===//
// The on-disk cache of compiled code
//===----------------------------------------------------------------------===//

namespace {

/// One compile of `example`'s training step and the loss of one step.
struct CacheRun {
  bool cached = false;
  double loss = 0;
};

CacheRun compileAndStep(const std::string &example) {
  CacheRun out;
  test::Compiled m(test::readSource("examples/" + example + ".nn"), Stage::Train);
  EXPECT_TRUE(m.module) << m.firstError();
  auto trainer = ref::Trainer::create(*m.module, 1, std::shared_ptr<ref::Executor>(ref::createReferenceExecutor()));
  EXPECT_TRUE(succeeded(trainer));
  auto code = mlir::ModuleOp::create(mlir::UnknownLoc::get(m.module->getContext()));
  mlir::OwningOpRef<mlir::ModuleOp> owner(code);
  auto desc = cpu::compileModel(*m.module, trainer->modelFunction().getName(), code);
  EXPECT_TRUE(succeeded(desc));
  auto jit = cpu::JitModule::compile(code);
  EXPECT_TRUE(succeeded(jit)) << m.firstError();
  if (failed(jit) || failed(desc))
    return out;
  out.cached = (*jit)->cached();
  EXPECT_TRUE(succeeded((*jit)->prepare(cpu::kTrainStepKernel)));
  size_t buffers = desc->trainStep.buffers();
  size_t slots = desc->trainStep.slots.size() / 2;
  desc->trainStep.call = [j = jit->get(), buffers, slots](void **b, int64_t n, void **s) {
    (void)j->call(cpu::kTrainStepKernel, llvm::ArrayRef<void *>(b, buffers), n, llvm::ArrayRef<void *>(s, slots));
  };
  rt::CompiledModel model(*desc, 1, "cpu");
  EXPECT_TRUE(model.initialize());
  std::vector<rt::HostTensor> batch;
  for (const Tensor &t : test::inputsFor(trainer->modelFunction(), 8, 5))
    batch.push_back({"", t.shape, rt::Floats(t.data.begin(), t.data.end())});
  EXPECT_TRUE(model.step(batch, out.loss));
  return out;
}

/// A second compile of the same code loads the cached object and computes
/// the same numbers; a damaged cache file is compiled over.
TEST(CpuObjectCache, SecondCompileLoadsTheSameCode) {
  llvm::SmallString<128> dir;
  ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("nnc-object-cache", dir));
  const char *old = std::getenv("NNC_CACHE_DIR");
  std::string saved = old ? old : "";
  setenv("NNC_CACHE_DIR", dir.c_str(), 1);
  CacheRun first = compileAndStep("mnist_mlp"), second = compileAndStep("mnist_mlp");
  EXPECT_FALSE(first.cached);
  EXPECT_TRUE(second.cached);
  EXPECT_EQ(first.loss, second.loss);
  // One object per code partition; damage one of them: the next compile
  // must not load the code.
  std::error_code ec;
  std::vector<std::string> files;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    files.push_back(it->path());
  ASSERT_EQ(files.size(), cpu::kCodePartitions);
  {
    llvm::raw_fd_ostream os(files[1], ec);
    os << "not an object file";
  }
  CacheRun third = compileAndStep("mnist_mlp");
  EXPECT_FALSE(third.cached);
  EXPECT_EQ(third.loss, first.loss);
  EXPECT_TRUE(compileAndStep("mnist_mlp").cached) << "the damaged object was not replaced";
  if (old)
    setenv("NNC_CACHE_DIR", saved.c_str(), 1);
  else
    unsetenv("NNC_CACHE_DIR");
  llvm::sys::fs::remove_directories(dir);
}

} // namespace

namespace {

/// The model `src` (a function `m` of one output) compiled for the CPU and
/// run by the reference evaluator on the same inputs (batch `batch`,
/// `adjust`ed), its output compared within `tol` (relative and absolute).
void expectMatchesReference(const std::string &src, int64_t batch, uint64_t salt, double tol,
                            const std::function<void(std::vector<Tensor> &)> &adjust = {}) {
  test::Compiled c(src, Stage::Nn);
  ASSERT_TRUE(c.module) << c.firstError();
  auto fn = c.module->lookupSymbol<mlir::func::FuncOp>("m");
  std::vector<Tensor> in = test::inputsFor(fn, batch, salt);
  if (adjust)
    adjust(in);
  auto got = cpu::createExecutor()->run(fn, in, {});
  auto want = ref::createReferenceExecutor()->run(fn, in, {});
  ASSERT_TRUE(succeeded(got) && succeeded(want)) << c.firstError();
  expectClose((*got)[0], (*want)[0], src, tol, tol);
}

/// Every result of model `src` (batch `batch`, inputs from `salt`) on the
/// CPU backend against the reference evaluator, to 1e-5.
void expectAllResultsMatch(const std::string &src, int64_t batch, uint64_t salt) {
  test::Compiled c(src, Stage::Nn);
  ASSERT_TRUE(c.module) << c.firstError();
  auto fn = c.module->lookupSymbol<mlir::func::FuncOp>("m");
  std::vector<Tensor> in = test::inputsFor(fn, batch, salt);
  auto got = cpu::createExecutor()->run(fn, in, {});
  auto want = ref::createReferenceExecutor()->run(fn, in, {});
  ASSERT_TRUE(succeeded(got) && succeeded(want)) << c.firstError();
  ASSERT_EQ(got->size(), want->size());
  for (size_t i = 0; i < got->size(); ++i)
    expectClose((*got)[i], (*want)[i], src + " result " + std::to_string(i), 1e-5, 1e-5);
}

/// Products whose shapes take every path of the blocked matmul: 6-row and
/// 4-row register blocks, one-row remainders, packed and unpacked (ragged)
/// column blocks, depths that are not a multiple of the depth block.
TEST(CpuMatmulBlocking, MatchesReferenceAtAwkwardShapes) {
  for (auto [m, k, n] : {std::tuple{198, 130, 70}, std::tuple{200, 257, 64}, std::tuple{66, 129, 129},
                         std::tuple{7, 5, 3}, std::tuple{384, 128, 192},
                         // 6-row blocks then a 4-row block (and a single
                         // row); blocks of 4 throughout.
                         std::tuple{64, 784, 128}, std::tuple{11, 33, 40}, std::tuple{32, 20, 17},
                         // One vector wide: 12-row blocks, then 4 and 1.
                         std::tuple{29, 300, 10}, std::tuple{800, 64, 16}})
    expectMatchesReference("model m {\n  input a: f32[" + std::to_string(m) + ", " + std::to_string(k) +
                               "]\n  input b: f32[" + std::to_string(k) + ", " + std::to_string(n) +
                               "]\n  c = a @ b\n  output c\n}\n",
                           1, 3, 1e-5);
  // Through an epilogue, the partial sums of several depth blocks and
  // groups between (400 rows: a group of 64 blocks and one of 2).
  expectMatchesReference("model m {\n  input a: f32[400, 300]\n  input b: f32[300, 136]\n"
                         "  input s: f32[136]\n  c = tanh(a @ b * 0.1 + s)\n  output c\n}\n",
                         1, 4, 1e-5);
  expectMatchesReference("model m {\n  input a: f32[B, 700]\n  input b: f32[700, 10]\n"
                         "  input s: f32[10]\n  c = tanh(a @ b * 0.1 + s)\n  output c\n}\n",
                         37, 4, 1e-5);
}

/// Products split their row blocks into groups by the thread count at run
/// time; every element sums its terms in the same order whatever the
/// grouping, so one, two and three threads give the same bits.
TEST(CpuMatmulBlocking, SameBitsOnAnyThreadCount) {
  // Large enough to run in parallel; 66 blocks of 6 rows: one thread takes
  // groups of 64 and 2, two threads 33 each, three 22. With a batch-sized
  // dimension the size is judged at run time: 400 rows are split, 7 not.
  struct Case {
    const char *a;
    int64_t batch;
  };
  for (Case k : {Case{"f32[400, 300]", 1}, Case{"f32[B, 300]", 400}, Case{"f32[B, 300]", 7}}) {
    test::Compiled c(std::string("model m {\n  input a: ") + k.a +
                         "\n  input b: f32[300, 160]\n  c = a @ b\n  output c\n}\n",
                     Stage::Nn);
    ASSERT_TRUE(c.module) << c.firstError();
    auto fn = c.module->lookupSymbol<mlir::func::FuncOp>("m");
    std::vector<Tensor> in = test::inputsFor(fn, k.batch, 4);
    auto exec = std::unique_ptr<ref::Executor>(cpu::createExecutor());
    auto first = exec->run(fn, in, {}); // loads the OpenMP runtime
    auto want = ref::createReferenceExecutor()->run(fn, in, {});
    ASSERT_TRUE(succeeded(first) && succeeded(want)) << c.firstError();
    expectClose((*first)[0], (*want)[0], std::string("product ") + k.a, 1e-5, 1e-5);
    auto setThreads = reinterpret_cast<void (*)(int)>(
        llvm::sys::DynamicLibrary::SearchForAddressOfSymbol("omp_set_num_threads"));
    ASSERT_NE(setThreads, nullptr);
    auto getThreads = reinterpret_cast<int (*)()>(
        llvm::sys::DynamicLibrary::SearchForAddressOfSymbol("omp_get_max_threads"));
    int saved = getThreads();
    for (int threads : {1, 2, 3}) {
      setThreads(threads);
      auto got = exec->run(fn, in, {});
      ASSERT_TRUE(succeeded(got));
      EXPECT_EQ((*got)[0].data, (*first)[0].data) << k.a << ", " << threads << " threads";
    }
    setThreads(saved);
  }
}

/// Convolutions whose output-channel blocks take every kind of size (16,
/// 12, 8, 6, 4, 3, 2 and 1 channels times one to three row vectors, grouped
/// and not, with an epilogue; wide strided rows in chunks), against the
/// reference.
TEST(CpuConvBlocking, MatchesReferenceAtEveryBlockSize) {
  struct Layer {
    const char *x, *w, *expr;
  };
  for (Layer l : {Layer{"[B, 4, 9, 10]", "[32, 2, 3, 3]", "relu(conv2d(x, w, padding=1, groups=2))"}, // 16 x 1
                  Layer{"[B, 4, 9, 10]", "[8, 4, 3, 2]", "conv2d(x, w, padding=1)"},   // 8 x 1, 11 wide
                  Layer{"[B, 4, 9, 10]", "[12, 4, 3, 3]", "tanh(conv2d(x, w))"},       // 12 x 1
                  Layer{"[B, 4, 9, 10]", "[6, 2, 1, 1]", "conv2d(x, w, groups=2)"},    // 3 x 1
                  Layer{"[B, 2, 6, 7]", "[17, 2, 2, 2]", "conv2d(x, w)"},              // 1 x 1
                  Layer{"[B, 6, 14, 14]", "[6, 6, 5, 5]", "conv2d(x, w, padding=4)"},  // 6 x 2
                  Layer{"[B, 4, 9, 10]", "[2, 4, 2, 2]", "conv2d(x, w)"},              // 2 x 1
                  Layer{"[B, 3, 5, 20]", "[16, 3, 3, 3]", "conv2d(x, w, padding=1)"},  // 8 x 2
                  Layer{"[B, 3, 5, 20]", "[16, 3, 3, 3]", "conv2d(x, w, padding=[0, 11])"}, // 4 x 3
                  // Wide strided rows in chunks: 4 x 3 vectors twice, then 2
                  // (one partial); 5 x 2 vectors three times, then 1.
                  Layer{"[B, 3, 9, 120]", "[8, 3, 7, 7]", "relu(conv2d(x, w, stride=2, padding=3))"},
                  Layer{"[B, 2, 5, 97]", "[5, 2, 3, 3]", "conv2d(x, w, stride=2, padding=1)"},
                  // Strided rows narrower than half a vector, two to a vector
                  // (read row by row, every tap unrolled): padded and not.
                  Layer{"[B, 3, 8, 8]", "[6, 3, 3, 3]", "conv2d(x, w, stride=2, padding=1)"},
                  Layer{"[B, 3, 9, 9]", "[4, 3, 3, 3]", "relu(conv2d(x, w, stride=2))"}})
    expectMatchesReference(std::string("model m {\n  input x: f32") + l.x + "\n  input w: f32" + l.w +
                               "\n  y = " + l.expr + "\n  output y\n}\n",
                           3, 6, 1e-4);
}

/// Every result of the gradient function of `src` at each batch size on
/// the CPU backend against the reference, tightly.
void expectGradientsMatch(const std::string &src, std::initializer_list<int64_t> batches) {
  test::Compiled m(src, Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  auto refExec = std::shared_ptr<ref::Executor>(ref::createReferenceExecutor());
  auto trainer = ref::Trainer::create(*m.module, 3, refExec);
  ASSERT_TRUE(succeeded(trainer)) << m.firstError();
  mlir::func::FuncOp model = trainer->modelFunction();
  auto grad = m.module->lookupSymbol<mlir::func::FuncOp>("m_grad");
  ASSERT_TRUE(grad);
  for (int64_t batch : batches) {
    std::vector<Tensor> in = test::inputsFor(model, batch, 2), args;
    size_t k = 0;
    for (unsigned i = 0; i < grad.getNumArguments(); ++i)
      args.push_back(grad.getArgAttrOfType<mlir::StringAttr>(i, nn::attr::kRole).getValue() == "input"
                         ? in[k++]
                         : *trainer->tensor(grad.getArgAttrOfType<mlir::StringAttr>(i, nn::attr::kName).getValue()));
    auto got = cpu::createExecutor()->run(grad, args, {});
    auto want = ref::createReferenceExecutor()->run(grad, args, {});
    ASSERT_TRUE(succeeded(got) && succeeded(want)) << m.firstError();
    for (size_t i = 0; i < got->size(); ++i)
      expectClose((*got)[i], (*want)[i], src + ": batch " + std::to_string(batch) + " result " + std::to_string(i),
                  1e-4, 1e-4 * largest((*want)[i]));
  }
}

/// The weight gradient sums the batch in chunks (each chunk's output
/// gradient and input sized to stay in L2) and adds each chunk's sums to
/// the last: one, two and several chunks.
TEST(CpuConvBlocking, WeightGradientOverBatchChunks) {
  // 8 channels of 38 x 38 outputs and 2 of 40 x 40 inputs: 58 KiB a
  // sample, 8 samples a chunk with 512 KiB of L2.
  expectGradientsMatch("model m {\n  input x: f32[B, 2, 40, 40]\n  input c: f32[B, 8, 38, 38]\n"
                       "  param w: f32[8, 2, 3, 3] = normal(std=0.1)\n"
                       "  loss = sum(conv2d(x, w) * c)\n  minimize loss\n}\n",
                       {5, 11, 12, 30});
}

/// Weight (and input) gradients on every path of the register-blocked
/// weight gradient: small kernels with all taps at once (output rows whose
/// taps fall past the top or bottom edge, row strides, padding wider than
/// the kernel), larger ones a kernel row per pass, groups, ragged rows.
TEST(CpuConvBlocking, WeightGradientsMatchReference) {
  struct Layer {
    const char *x, *w, *args;
  };
  for (Layer l : {Layer{"[B, 4, 9, 10]", "[8, 4, 3, 3]", "padding=1"},                 // 2 x 9 taps
                  Layer{"[B, 4, 9, 10]", "[8, 4, 3, 3]", "stride=[2, 1], padding=1"},
                  Layer{"[B, 2, 5, 16]", "[4, 2, 3, 3]", "padding=2"},
                  Layer{"[B, 3, 7, 20]", "[6, 3, 3, 2]", "padding=[1, 0]"},            // 2 x 6 taps
                  Layer{"[B, 4, 9, 10]", "[6, 2, 3, 3]", "padding=1, groups=2"},
                  Layer{"[B, 4, 9, 10]", "[16, 4, 1, 1]", ""},        // 4 x 1 by 4 input channels
                  Layer{"[B, 6, 5, 9]", "[4, 6, 1, 2]", "padding=[0, 1]"},  // 2 x 2 by 6
                  Layer{"[B, 3, 12, 12]", "[6, 3, 5, 5]", "padding=2"},                 // a row per pass
                  Layer{"[B, 2, 12, 33]", "[4, 2, 5, 4]", "stride=[3, 1], padding=[2, 1]"},
                  Layer{"[B, 3, 8, 8]", "[6, 3, 3, 3]", "stride=2, padding=1"}})            // 4 x 4 outputs
    expectGradientsMatch(std::string("model m {\n  input x: f32") + l.x + "\n  param w: f32" + l.w +
                             " = normal(std=0.3)\n  loss = sum(tanh(conv2d(x, w" +
                             (*l.args ? std::string(", ") + l.args : std::string()) +
                             ")))\n  minimize loss\n}\n",
                         {1, 3});
}

/// The input gradient of a convolution with 576 KiB of weights, whose
/// flipped copy goes to the heap (smaller ones to the stack): the first
/// layer's weight gradient passes through it.
TEST(CpuConvBlocking, InputGradientWithLargeWeights) {
  expectGradientsMatch("model m {\n  input x: f32[B, 2, 6, 7]\n"
                       "  param v: f32[128, 2, 1, 1] = normal(std=0.5)\n"
                       "  param w: f32[128, 128, 3, 3] = normal(std=0.05)\n"
                       "  loss = sum(tanh(conv2d(relu(conv2d(x, v)), w, padding=1)))\n  minimize loss\n}\n",
                       {2});
}

/// Records in the tuned table, for every op of `m` that `applies` picks,
/// the choices the rules make with `name` set to `value` (so the lowering
/// takes them); returns how many ops.
int64_t forceTiling(test::Compiled &m, llvm::function_ref<bool(mlir::Operation *)> applies, llvm::StringRef name,
                    int64_t value) {
  int64_t forced = 0;
  m.module->walk([&](mlir::Operation *op) {
    if (!applies(op))
      return;
    mlir::NamedAttrList choices(cpu::chooseTiling(op));
    choices.set(name, mlir::IntegerAttr::get(mlir::IntegerType::get(&m.ctx, 64), value));
    std::string text;
    llvm::raw_string_ostream os(text);
    os << choices.getDictionary(&m.ctx);
    cpu::setTunedTiling(cpu::tilingSignature(op), text);
    ++forced;
  });
  return forced;
}

/// Convolutions and input gradients with the rows of a sample inside its
/// channel blocks (`channels_outer`, which the rules choose for weights
/// past L2): forced through the tuned table on small layers (whole rows,
/// unit-stride and strided, and the strided layer's input gradient per
/// column phase), against the reference.
TEST(CpuConvBlocking, ChannelsOuterMatchesReference) {
  // The last: an input twice the output, read per phase plane (PhaseRows.cpp).
  for (auto [shape, layer] : {std::pair{"9, 21", "  y = conv2d(x, w, padding=1)\n"},
                              std::pair{"9, 21", "  y = conv2d(x, w, stride=2, padding=1)\n"},
                              std::pair{"10, 38", "  y = conv2d(x, w, stride=2, padding=1)\n"}}) {
    std::string src = std::string("model m {\n  input x: f32[B, 3, ") + shape +
                      "]\n  param w: f32[8, 3, 3, 3] = normal(std=0.3)\n" + layer +
                      "  loss = sum(tanh(y))\n  minimize loss\n}\n";
    test::Compiled m(src, Stage::Train);
    ASSERT_TRUE(m.module) << m.firstError();
    cpu::clearTunedTilings();
    int64_t forced = forceTiling(
        m, [](mlir::Operation *op) { return mlir::isa<nn::Conv2dOp, nn::Conv2dGradInputOp>(op); }, "channels_outer", 1);
    EXPECT_GE(forced, 2) << src;
    expectGradientsMatch(src, {1, 3});
    cpu::clearTunedTilings();
  }
}

/// Strided input and weight gradients whose input is the output
/// gradient's size times the stride run per phase, several rows of a phase
/// plane to a vector (conv2dGradInputPhases, conv2dGradWeightPhases): 3x3,
/// 1x1 and 4x4 kernels at stride 2, 3x3 at stride 3, planes wider than
/// tall (the weight gradient's rows a vector wide: one row a vector); the
/// weight gradient also in chunks of 2 samples (the last one short);
/// against the reference.
TEST(CpuConvBlocking, StridedInputGradientPerPhase) {
  struct Case {
    int h, w, k, stride, pad;
  };
  for (Case t : {Case{8, 8, 3, 2, 1}, Case{8, 8, 1, 2, 0}, Case{8, 8, 4, 2, 1}, Case{9, 9, 3, 3, 0},
                 Case{4, 12, 3, 2, 1}, Case{16, 16, 3, 2, 1}, Case{8, 32, 3, 2, 1}}) {
    std::string src = "model m {\n  input x: f32[B, 3, " + std::to_string(t.h) + ", " + std::to_string(t.w) +
                      "]\n  param w1: f32[8, 3, 3, 3] = normal(std=0.3)\n  param w2: f32[16, 8, " +
                      std::to_string(t.k) + ", " + std::to_string(t.k) +
                      "] = normal(std=0.3)\n  h = relu(conv2d(x, w1, padding=1))\n  y = conv2d(h, w2, stride=" +
                      std::to_string(t.stride) + ", padding=" + std::to_string(t.pad) +
                      ")\n  loss = sum(tanh(y))\n  minimize loss\n}\n";
    expectGradientsMatch(src, {1, 3});
    test::Compiled m(src, Stage::Train);
    ASSERT_TRUE(m.module) << m.firstError();
    cpu::clearTunedTilings();
    EXPECT_GE(forceTiling(
                  m, [](mlir::Operation *op) { return mlir::isa<nn::Conv2dGradWeightOp>(op); }, "batch_chunk", 2),
              2)
        << src;
    expectGradientsMatch(src, {5});
    cpu::clearTunedTilings();
  }
}

/// 3x3 unit-stride convolutions by Winograd's F(2x2, 3x3), forced through
/// the tuned table: the forward convolution (through a bias-and-relu
/// epilogue, and without one), the input and weight gradients, at paddings 0, 1 and
/// 2, odd and even planes (tiles past the output's edge), ragged channel
/// counts, one tile row a block to the whole plane, and the run-time choice
/// of the direct convolution for too few tiles; against the reference.
TEST(CpuWinograd, MatchesReference) {
  struct Case {
    int c, k, h, w, pad, rows;
  };
  for (Case t : {Case{16, 16, 8, 8, 1, 1}, Case{16, 24, 9, 13, 1, 2}, Case{20, 16, 7, 21, 0, 3},
                 Case{16, 16, 6, 5, 2, 8}, Case{17, 19, 34, 35, 1, 2}}) {
    std::string src = "model m {\n  input x: f32[B, " + std::to_string(t.c) + ", " + std::to_string(t.h) + ", " +
                      std::to_string(t.w) + "]\n  param w1: f32[" + std::to_string(t.k) + ", " + std::to_string(t.c) +
                      ", 3, 3] = normal(std=0.2)\n  param b: f32[" + std::to_string(t.k) +
                      ", 1, 1] = normal(std=0.2)\n  param w2: f32[" + std::to_string(t.k) + ", " + std::to_string(t.k) +
                      ", 3, 3] = normal(std=0.2)\n  h = relu(conv2d(x, w1, padding=" + std::to_string(t.pad) +
                      ") + b)\n  y = conv2d(h, w2, padding=" + std::to_string(t.pad) +
                      ")\n  loss = sum(tanh(y))\n  minimize loss\n}\n";
    test::Compiled m(src, Stage::Train);
    ASSERT_TRUE(m.module) << m.firstError();
    cpu::clearTunedTilings();
    int64_t forced = forceTiling(m, cpu::winogradApplies, "winograd", t.rows);
    EXPECT_GE(forced, 5) << src; // two convolutions, an input gradient, two weight gradients
    // Batch 1 takes the direct branch (too few tiles), batch 5 Winograd.
    expectGradientsMatch(src, {1, 5});
    cpu::clearTunedTilings();
  }
}

/// Transformed weights past half of L2, made every call (a training step's
/// forward and input gradient), are packed for the multiply and read once a
/// block: blocks of a sample (a small batch) and of as many tiles as half
/// of L2 holds one position's products for (a batch that has them), both
/// against the reference. The channel count and batch follow this machine's
/// L2.
TEST(CpuWinograd, LargeWeightsPackedEveryCall) {
  int64_t l2 = cpu::host().l2, c = 16;
  while (64 * c * c <= l2 / 2)
    c += 16;
  int64_t large = l2 / 2 / (8 * c) / 16 + 2; // a large block's tiles, 16 tiles a sample
  std::string ch = std::to_string(c);
  std::string src = "model m {\n  input x: f32[B, " + ch + ", 8, 8]\n  input w: f32[" + ch + ", " + ch +
                    ", 3, 3]\n  y = conv2d(x, w, padding=1)\n  output y\n}\n";
  test::Compiled m(src, Stage::Nn);
  ASSERT_TRUE(m.module) << m.firstError();
  cpu::clearTunedTilings();
  EXPECT_EQ(forceTiling(m, cpu::winogradApplies, "winograd", 2), 1);
  for (int64_t batch : {int64_t{3}, large})
    expectMatchesReference(src, batch, 8, 1e-4);
  cpu::clearTunedTilings();
}

/// The model function keeps Winograd's transformed weights across calls
/// (its cache); they must follow every change of the weights. Evaluations
/// match the reference before and after training steps and after a weight
/// is set, twice in a row each and at other batches (blocks of one sample
/// and of several); the training step, which changes its weights, keeps
/// nothing. (Checked to fail when a step or setState leaves the version.)
TEST(CpuWinograd, KeptWeightsFollowEveryChange) {
  const std::string src = "model m {\n  input x: f32[B, 16, 8, 8]\n"
                          "  param w1: f32[16, 16, 3, 3] = normal(std=0.2)\n"
                          "  param w2: f32[20, 16, 3, 3] = normal(std=0.2)\n"
                          "  y = conv2d(relu(conv2d(x, w1, padding=1)), w2, padding=1)\n"
                          "  loss = mean(y * y)\n  output y\n  minimize loss\n}\n"
                          "train {\n  optimizer = sgd(lr=0.5)\n}\n";
  test::Compiled m(src, Stage::Train);
  ASSERT_TRUE(m.module) << m.firstError();
  cpu::clearTunedTilings();
  EXPECT_GE(forceTiling(m, cpu::winogradApplies, "winograd", 2), 2);
  auto code = mlir::ModuleOp::create(mlir::UnknownLoc::get(m.module->getContext()));
  mlir::OwningOpRef<mlir::ModuleOp> owner(code);
  auto desc = cpu::compileModel(*m.module, "m", code);
  ASSERT_TRUE(succeeded(desc)) << m.firstError();
  EXPECT_GT(desc->model.cache, 0) << "the model function keeps no weights";
  EXPECT_EQ(desc->trainStep.cache, 0) << "the training step keeps weights it changes";
  auto jit = jitModel(code, *desc);
  ASSERT_TRUE(jit) << m.firstError();
  rt::CompiledModel compiled(*desc, 3, "cpu");
  ASSERT_TRUE(compiled.initialize());
  auto ref = ref::Trainer::create(*m.module, 3, std::shared_ptr<ref::Executor>(ref::createReferenceExecutor()));
  ASSERT_TRUE(succeeded(ref));
  uint64_t salt = 40;
  auto inputs = [&](int64_t batch) { return test::inputsFor(ref->modelFunction(), batch, salt++); };
  auto hostBatch = [](const std::vector<Tensor> &in) {
    std::vector<rt::HostTensor> batch;
    for (const Tensor &t : in)
      batch.push_back({"", t.shape, rt::Floats(t.data.begin(), t.data.end())});
    return batch;
  };
  auto evaluations = [&](const std::string &when) {
    for (int64_t batch : {4, 4, 1, 3}) {
      std::vector<Tensor> in = inputs(batch);
      std::vector<rt::HostTensor> outputs;
      double loss = 0;
      ASSERT_TRUE(compiled.evaluate(hostBatch(in), outputs, loss));
      auto want = ref->evaluate(in);
      ASSERT_TRUE(succeeded(want));
      ASSERT_FALSE(outputs.empty());
      Tensor got{outputs[0].shape, std::vector<double>(outputs[0].data.begin(), outputs[0].data.end())};
      expectClose(got, (*want)[0], when + ", batch " + std::to_string(batch), 1e-4, 1e-4 * largest((*want)[0]));
    }
  };
  evaluations("initial weights");
  for (int step = 0; step < 2; ++step) {
    std::vector<Tensor> in = inputs(4);
    double loss = 0;
    ASSERT_TRUE(compiled.step(hostBatch(in), loss));
    ASSERT_TRUE(succeeded(ref->step(in)));
    evaluations("after step " + std::to_string(step + 1));
  }
  rt::HostTensor w1;
  ASSERT_TRUE(compiled.getState("w1", w1));
  for (float &v : w1.data)
    v = -v;
  ASSERT_TRUE(compiled.setState("w1", w1));
  for (double &v : ref->tensor("w1")->data)
    v = -v;
  evaluations("after w1 is set");
  cpu::clearTunedTilings();
}

/// Elementwise kernels over short trailing axes run as one flat loop when
/// every buffer has the result's shape or one element; with an operand
/// broadcast along an axis they keep the nested loops. Every result (a
/// fused producer stored for a second use included) against the reference.
TEST(CpuElementwiseFlat, MatchesReference) {
  for (const char *body :
       {"  z = x * s - y / 2\n  output z\n",                           // flat, a one-element operand
        "  z = x + b\n  output z\n",                                   // broadcast: nested loops
        "  h = exp(x) * 0.5\n  z = h + y\n  output z\n  output h\n",  // flat, h stored as well
        "  z = x * y + s\n  w = sum(z, axis=1)\n  output w\n  output z\n"}) {
    expectAllResultsMatch(std::string("model m {\n  input x: f32[B, 5, 3]\n  input y: f32[B, 5, 3]\n"
                                      "  input s: f32[1, 1, 1]\n  input b: f32[3]\n") + body + "}\n",
                          7, 8);
  }
}

/// Reductions whose trailing axes are all reduced read one contiguous run
/// per leading index: every form of them against the reference.
TEST(CpuReductionRuns, MatchReference) {
  for (const char *expr : {"sum(x, axis=[0, 2, 3])", "mean(x, axis=[2, 3], keepdims=true)",
                           "max(x, axis=[1, 2, 3])", "sum(x)", "max(x, axis=[0, 3])",
                           "sum(x, axis=[0, 2, 3], keepdims=true)", "mean(x, axis=3)"})
    expectMatchesReference(std::string("model m {\n  input x: f32[B, 3, 5, 7]\n  y = ") + expr +
                               "\n  output y\n}\n",
                           4, 9, 1e-5);
}

/// Sums and maxima over trailing axes of values computed by fused
/// producers (a bias gradient behind an activation's gradient): the
/// trailing axes are collapsed in every buffer the producers touch, the
/// stored producer included; a one-element operand, an epilogue after the
/// reduction, and a broadcast operand (not collapsed) alongside. Every
/// result against the reference.
TEST(CpuReductionRuns, FusedProducersOverTrailingAxes) {
  for (const char *body :
       {"  d = g * (1 - y * y)\n  b = sum(d, axis=[0, 2, 3])\n  output d\n  output b\n",
        "  d = g * (1 - y * y) * s\n  b = sum(d, axis=[2, 3])\n  output d\n  output b\n",
        "  b = exp(max(g * y, axis=[1, 2, 3])) * 2\n  output b\n",
        "  d = g * c\n  b = sum(d, axis=[0, 2, 3])\n  output b\n  output d\n"}) {
    expectAllResultsMatch(std::string("model m {\n  input y: f32[B, 3, 5, 9]\n  input g: f32[B, 3, 5, 9]\n"
                                      "  input s: f32[1]\n  input c: f32[3, 1, 1]\n") + body + "}\n",
                          6, 10);
  }
}

/// Maxima over contiguous runs (whole vectors, then a masked tail) at
/// lengths below, at and past a vector, rows and flattened trailing axes;
/// a NaN anywhere in a run is the run's maximum, as in PyTorch; -inf and
/// all-negative runs.
TEST(CpuReductionMaxRuns, MatchReferenceWithNaNs) {
  for (const char *type : {"f32[B, 5]", "f32[B, 16]", "f32[B, 33]", "f32[B, 1000]", "f32[B, 3, 4, 7]"}) {
    std::string axis = llvm::StringRef(type).count(',') == 1 ? "1" : "[2, 3]";
    expectMatchesReference(std::string("model m {\n  input x: ") + type + "\n  y = max(x, axis=" + axis +
                               ")\n  output y\n}\n",
                           5, 3, 0, [](std::vector<Tensor> &in) {
                             std::vector<double> &v = in[0].data;
                             size_t n = v.size();
                             v[n / 5 + 1] = std::nan("");          // one run (row) has a NaN
                             v[n - 1] = -std::numeric_limits<double>::infinity();
                             for (size_t i = 0; i < n / 5; ++i)    // the first row all negative
                               v[i] = -1.0 - std::fabs(v[i]);
                           });
  }
}

/// The vectorized 2x2 max pool at widths that end rows in every way (less
/// than a vector, several vectors, odd input widths), with ties.
TEST(CpuMaxPool2x2, MatchesReferenceAtRaggedWidths) {
  for (int w : {8, 29, 64, 70, 33})
    expectMatchesReference("model m {\n  input x: f32[B, 2, 6, " + std::to_string(w) +
                               "]\n  y = max_pool2d(x, 2)\n  output y\n}\n",
                           3, 4, 0, [](std::vector<Tensor> &in) {
                             for (double &v : in[0].data)
                               v = std::round(v * 4) / 4; // ties within windows
                           });
}

/// Strided forward convolutions per input phase plane: kernels of 3, 4
/// and 5 taps a side at strides 2 and 3, paddings 0-2, planes of one to
/// four rows a vector and rows of several vectors (the last one partial),
/// ragged channel blocks, with a bias and ReLU through the epilogue and
/// without, and a layer whose samples take several chunks of phase planes;
/// against the reference.
TEST(CpuConvPhases, StridedForwardMatchesReference) {
  struct Case {
    int c, k, h, w, kernel, stride, pad;
    bool epilogue;
  } cases[] = {{16, 32, 8, 8, 3, 2, 1, true},   {5, 7, 14, 14, 3, 2, 1, false}, {8, 16, 12, 12, 3, 3, 1, true},
               {6, 12, 8, 8, 4, 2, 1, false},   {4, 10, 8, 8, 5, 2, 2, true},   {3, 8, 6, 6, 3, 2, 0, false},
               {256, 16, 16, 16, 3, 2, 1, true},
               // Rows wider than half a vector (PhaseRows.cpp): several
               // vectors, the last one partial; 5x5 at padding 2; stride 3.
               {6, 10, 12, 38, 3, 2, 1, true}, {4, 8, 10, 40, 5, 2, 2, false}, {3, 5, 9, 30, 3, 3, 0, true},
               {8, 12, 8, 64, 3, 2, 1, false}};
  for (const Case &t : cases) {
    std::string conv = "conv2d(x, w, stride=" + std::to_string(t.stride) + ", padding=" + std::to_string(t.pad) + ")";
    std::string src = "model m {\n  input x: f32[B, " + std::to_string(t.c) + ", " + std::to_string(t.h) + ", " +
                      std::to_string(t.w) + "]\n  input w: f32[" + std::to_string(t.k) + ", " + std::to_string(t.c) +
                      ", " + std::to_string(t.kernel) + ", " + std::to_string(t.kernel) + "]\n  input b: f32[" +
                      std::to_string(t.k) + ", 1, 1]\n  y = " + (t.epilogue ? "relu(" + conv + " + b)" : conv) +
                      "\n  output y\n}\n";
    for (int64_t batch : {1, 5})
      expectMatchesReference(src, batch, 9, 1e-4);
  }
}

/// Max pools of any window on row vectors: overlapping windows with
/// padding (ResNet's 3 / 2 / 1), unit and large strides (a gather), rows
/// shorter than a vector and spanning several, ties, a NaN (skipped unless
/// it is a window's first tap, as in the scalar rule) and -inf; and a size
/// past the unrolling limit (the scalar loop).
TEST(CpuMaxPoolRows, MatchesReference) {
  struct Case {
    const char *shape, *call;
  } cases[] = {{"2, 12, 37", "3, stride=2, padding=1"}, {"3, 9, 16", "3, stride=1, padding=1"},
               {"1, 7, 70", "2, stride=1"},             {"2, 10, 50", "3, stride=3"},
               {"1, 11, 45", "5, stride=2, padding=2"}, {"2, 5, 33", "[2, 3], stride=[1, 2], padding=[1, 1]"},
               {"1, 4, 600", "3, stride=1, padding=1"}};
  for (const Case &c : cases)
    expectMatchesReference(std::string("model m {\n  input x: f32[B, ") + c.shape + "]\n  y = max_pool2d(x, " +
                               c.call + ")\n  output y\n}\n",
                           3, 6, 0, [](std::vector<Tensor> &in) {
                             std::vector<double> &v = in[0].data;
                             for (double &x : v) // ties within windows; below the padding's zeros
                               x = std::round(x * 4) / 4 - 1;
                             v[v.size() / 3] = std::nan("");
                             v[v.size() / 2] = -std::numeric_limits<double>::infinity();
                           });
}

/// Reductions over leading axes keeping trailing ones (column sums):
/// vectors of outputs accumulated down the rows, against the reference.
TEST(CpuReductionColumns, MatchReference) {
  for (auto [type, expr] : {std::pair{"f32[B, 32]", "sum(x, axis=0)"},
                            std::pair{"f32[B, 128]", "mean(x, axis=0, keepdims=true)"},
                            std::pair{"f32[B, 64]", "max(x, axis=0)"},
                            std::pair{"f32[B, 3, 64]", "sum(x, axis=0)"},
                            std::pair{"f32[B, 3, 16]", "sum(x, axis=[0, 1])"},
                            std::pair{"f32[B, 10]", "sum(x, axis=0)"},
                            // Large: rows stream through panels of
                            // accumulators (one, two, over two axes).
                            std::pair{"f32[B, 4096]", "sum(x, axis=0)"},
                            std::pair{"f32[B, 4608]", "max(x, axis=0, keepdims=true)"},
                            std::pair{"f32[B, 2, 2304]", "mean(x, axis=[0, 1])"}})
    expectMatchesReference(std::string("model m {\n  input x: ") + type + "\n  y = " + expr +
                               "\n  output y\n}\n",
                           7, 2, 1e-5);
}

/// Column sums whose operand is computed in the same loops (elementwise
/// producers, read as vectors along the kept axis, with operands broadcast
/// along either axis) and whose consumer runs as they store (an epilogue,
/// on vectors of outputs); a one-hot producer (indexed across the vector)
/// keeps the scalar form. Against the reference.
TEST(CpuReductionColumns, FusedProducersAndEpilogueMatchReference) {
  for (const char *body :
       {"  input x: f32[B, 64]\n  input s: f32[B, 1]\n  input w: f32[64]\n"
        "  y = sum(relu(x) * s + w, axis=0) * 0.5 - w\n",
        "  input x: f32[B, 128]\n  input z: f32[B, 128]\n  y = sum(step(x) * z, axis=0)\n",
        "  input x: f32[B, 3, 32]\n  y = max(x * x - 1, axis=0, keepdims=true)\n",
        "  input x: f32[B, 2, 16]\n  input w: f32[2, 16]\n  y = exp(mean(tanh(x) - w, axis=0)) + w\n",
        "  input l: i32[B]\n  input w: f32[16]\n  y = sum(one_hot(l, 16) * w, axis=0)\n",
        "  input x: f32[B, 4096]\n  input s: f32[B, 1]\n  input w: f32[4096]\n"
        "  y = sum(relu(x) * s, axis=0) - w\n"})
    for (int64_t batch : {1, 7, 64})
      expectMatchesReference(std::string("model m {\n") + body + "  output y\n}\n", batch, 5, 1e-5);
}

} // namespace
