//===- CudaRuntimeTest.cpp - the device runtime over an emulated driver ---===//
//
// rt::CudaModel drives a GPU through a table of driver entry points. Here
// the table is filled with a driver that runs the same generated kernels
// on the host (cuda::HostKernels, each kernel taking its parameters as
// cuLaunchKernel passes them): module images are the CUDA source, device
// memory is host memory filled with NaNs when allocated, streams run in
// order. What is checked is everything above the driver: the compiled
// model's launch table and memory plan, the state kept on the device and
// swapped with its updates, double-buffered uploads, losses read back in
// groups, evaluation, state reads and writes, errors.
//
//===----------------------------------------------------------------------===//

#include "TestUtil.h"

#include "compiler/codegen/cuda/CompileModel.h"
#include "compiler/codegen/cuda/HostEmulation.h"
#include "compiler/codegen/cuda/HostEmulationExecutor.h"
#include "compiler/reference/Trainer.h"
#include "runtime/CudaModel.h"
#include "runtime/Distributed.h"
#include "runtime/Nccl.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

using namespace nnc;
using ref::Tensor;

namespace {

/// The emulated driver: its modules by image, its allocations, and faults
/// to inject. Models on several threads (the ranks of a run) share it:
/// allocations are guarded, and kernels run one at a time (the emulation's
/// block state is global).
struct FakeDriver {
  static inline std::map<std::string, cuda::HostKernels *> modules;
  static inline std::map<rt::CuDevicePtr, size_t> live; // device allocations
  static inline int allocsLeft = -1;                      // fail after this many (-1: never)
  static inline std::atomic<int> launches = 0;
  static inline std::recursive_mutex mu;

  static int loadModule(void **m, const void *image, unsigned n, int *options, void **values) {
    auto it = modules.find(static_cast<const char *>(image));
    if (it == modules.end()) {
      for (unsigned i = 0; i < n; ++i)
        if (options[i] == 5) // the error log buffer
          std::strcpy(static_cast<char *>(values[i]), "ptxas fatal: not a module this driver knows");
      return 200; // CUDA_ERROR_INVALID_IMAGE
    }
    *m = it->second;
    return 0;
  }
  static int getFunction(void **f, void *m, const char *name) {
    auto e = static_cast<cuda::HostKernels *>(m)->entry(name);
    *f = reinterpret_cast<void *>(e);
    return e ? 0 : 500; // CUDA_ERROR_NOT_FOUND
  }
  static int alloc(rt::CuDevicePtr *p, size_t bytes) {
    std::lock_guard<std::recursive_mutex> lock(mu);
    if (allocsLeft == 0)
      return 2; // CUDA_ERROR_OUT_OF_MEMORY
    if (allocsLeft > 0)
      --allocsLeft;
    void *q = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    std::memset(q, 0xff, bytes); // NaN: nothing may read memory it did not write
    *p = reinterpret_cast<rt::CuDevicePtr>(q);
    live[*p] = bytes;
    return 0;
  }
  static int free(rt::CuDevicePtr p) {
    std::lock_guard<std::recursive_mutex> lock(mu);
    if (!live.erase(p))
      return 1; // CUDA_ERROR_INVALID_VALUE
    std::free(reinterpret_cast<void *>(p));
    return 0;
  }
  static int hostAlloc(void **p, size_t bytes, unsigned) {
    *p = std::malloc(std::max<size_t>(bytes, 1));
    return 0;
  }
  static int hostFree(void *p) {
    std::free(p);
    return 0;
  }
  static int copyToDevice(rt::CuDevicePtr d, const void *s, size_t n, void *) {
    return inside(d, n) ? (std::memcpy(reinterpret_cast<void *>(d), s, n), 0) : 1;
  }
  static int copyToHost(void *d, rt::CuDevicePtr s, size_t n, void *) {
    return inside(s, n) ? (std::memcpy(d, reinterpret_cast<void *>(s), n), 0) : 1;
  }
  static int copyOnDevice(rt::CuDevicePtr d, rt::CuDevicePtr s, size_t n, void *) {
    return inside(d, n) && inside(s, n)
               ? (std::memcpy(reinterpret_cast<void *>(d), reinterpret_cast<void *>(s), n), 0)
               : 1;
  }
  /// Whether [p, p+n) lies in one live allocation.
  static bool inside(rt::CuDevicePtr p, size_t n) {
    std::lock_guard<std::recursive_mutex> lock(mu);
    auto it = live.upper_bound(p);
    if (it == live.begin())
      return false;
    --it;
    return p + n <= it->first + it->second;
  }
  static int create(void **h, unsigned) {
    *h = new int(0);
    return 0;
  }
  static int destroy(void *h) {
    delete static_cast<int *>(h);
    return 0;
  }
  static int done(void *) { return 0; }
  static int wait(void *, void *, unsigned) { return 0; }
  /// An event holds the number of launches before it; a launch takes 1 ms.
  static int record(void *e, void *) {
    *static_cast<int *>(e) = launches;
    return 0;
  }
  static int elapsed(float *ms, void *start, void *end) {
    *ms = static_cast<float>(*static_cast<int *>(end) - *static_cast<int *>(start));
    return 0;
  }
  static int launch(void *f, unsigned gx, unsigned, unsigned, unsigned bx, unsigned, unsigned, unsigned,
                    void *, void **params, void **) {
    if (bx != cuda::kBlockSize || gx == 0 || gx > 65535)
      return 1;
    std::lock_guard<std::recursive_mutex> lock(mu);
    ++launches;
    reinterpret_cast<cuda::HostKernels::Entry>(f)(params, gx);
    return 0;
  }
  static int errorString(int rc, const char **text) {
    *text = rc == 2 ? "out of memory" : rc == 200 ? "device kernel image is invalid" : "error";
    return 0;
  }

  static rt::CudaDriver table() {
    rt::CudaDriver d;
    d.moduleLoadDataEx = loadModule;
    d.moduleUnload = [](void *) { return 0; };
    d.moduleGetFunction = getFunction;
    d.memAlloc = alloc;
    d.memFree = free;
    d.memHostAlloc = hostAlloc;
    d.memFreeHost = hostFree;
    d.memcpyHtoDAsync = copyToDevice;
    d.memcpyDtoHAsync = copyToHost;
    d.memcpyDtoDAsync = copyOnDevice;
    d.streamCreate = create;
    d.streamDestroy = destroy;
    d.streamSynchronize = done;
    d.streamWaitEvent = wait;
    d.eventCreate = create;
    d.eventDestroy = destroy;
    d.eventRecord = record;
    d.eventSynchronize = done;
    d.eventQuery = done;
    d.eventElapsedTime = elapsed;
    d.launchKernel = launch;
    d.getErrorString = errorString;
    d.device = "emulated";
    return d;
  }
};

/// A model compiled for CUDA with the source as its module images, and
/// those sources compiled for the emulated driver.
struct Compiled {
  test::Compiled m;
  std::string name;
  rt::ModelDesc desc;
  std::vector<cuda::CudaModule> code;
  std::vector<std::unique_ptr<cuda::HostKernels>> kernels;

  /// An example by name, or a model's source; `distributed`: the training
  /// step of a data-parallel run.
  explicit Compiled(const std::string &example, bool distributed = false)
      : m(example.find('{') != std::string::npos ? example : test::readSource("examples/" + example + ".nn"),
          Stage::Train, "test.nn", distributed) {
    if (!m.module)
      return;
    auto t = ref::Trainer::create(*m.module, 0, std::shared_ptr<ref::Executor>(ref::createReferenceExecutor()));
    if (failed(t))
      return;
    name = t->modelFunction().getName().str();
    auto source = [](const cuda::CudaModule &c, mlir::func::FuncOp) -> mlir::FailureOr<std::string> {
      return c.source;
    };
    auto d = cuda::compileModel(*m.module, name, source, &code);
    if (failed(d))
      return;
    desc = std::move(*d);
    for (const cuda::CudaModule &c : code) {
      auto k = cuda::HostKernels::compile(c, NNC_HOST_CXX, m.module->getOperation());
      if (failed(k))
        return;
      FakeDriver::modules[c.source] = k->get();
      kernels.push_back(std::move(*k));
    }
  }
  bool ok() const { return kernels.size() == 2; }
};

std::vector<rt::HostTensor> hostBatch(const std::vector<Tensor> &in) {
  std::vector<rt::HostTensor> out;
  for (const Tensor &t : in)
    out.push_back({"", t.shape, rt::Floats(t.data.begin(), t.data.end())});
  return out;
}

/// Within f32 rounding: the same kernels, fed the same numbers (the
/// emulation's tensors pass through doubles between calls).
void expectClose(const rt::HostTensor &a, const Tensor &b, const std::string &what) {
  ASSERT_EQ(a.shape, b.shape) << what;
  for (size_t i = 0; i < a.data.size(); ++i)
    if (!(std::abs(a.data[i] - b.data[i]) <= 1e-5 * std::abs(b.data[i]) + 1e-6)) {
      ADD_FAILURE() << what << ": element " << i << " is " << a.data[i] << " vs " << b.data[i];
      return;
    }
}

/// Dropout (random numbers from the seed and the step), group and
/// local-response normalization, a weight penalty, Adam: vgg_small's ops at
/// a size the emulation runs quickly.
constexpr const char *kSmallVgg = R"(model small_vgg {
  input x: f32[B, 2, 8, 8]
  input y: i32[B]
  a = relu(conv2d(x, 4, kernel=3, padding=1))
  n = local_response_norm(a, size=3, alpha=1e-4, beta=0.75, k=2.0)
  p = max_pool2d(n, 2)
  b = relu(group_norm(conv2d(p, 8, kernel=3, padding=1), groups=2))
  f = dropout(relu(dense(flatten(b), 16)), rate=0.5)
  logits = dense(f, 3)
  loss = softmax_cross_entropy(logits, y) + 5e-4 * l2(f.w)
  output logits
  minimize loss
}
train {
  optimizer = adam(lr=1e-3)
}
)";

class CudaRuntime : public ::testing::TestWithParam<const char *> {};

/// Steps of the device runtime (batches of changing size, started
/// asynchronously and synced in a group), then evaluation, against the
/// same kernels run by the reference trainer through the host emulation
/// (which CudaTest.cpp checks against the reference evaluator): the
/// runtime must compute the same numbers, whatever it keeps on the device,
/// swaps or reuses.
TEST_P(CudaRuntime, ComputesWhatTheEmulatedKernelsCompute) {
  Compiled c(GetParam());
  ASSERT_TRUE(c.ok()) << c.m.firstError();
  rt::CudaModel gpu(c.desc, 5, FakeDriver::table());
  ASSERT_TRUE(gpu.initialize());
  auto ref = ref::Trainer::create(*c.m.module, 5,
                                  std::shared_ptr<ref::Executor>(cuda::createHostEmulationExecutor(NNC_HOST_CXX)));
  ASSERT_TRUE(succeeded(ref));
  // Batches of 4, 4 and 3: the buffers grow, then a ragged batch reuses them.
  std::vector<int64_t> sizes = {4, 4, 3};
  std::vector<double> losses(sizes.size());
  std::vector<double> want;
  for (size_t s = 0; s < sizes.size(); ++s) {
    std::vector<Tensor> in = test::inputsFor(ref->modelFunction(), sizes[s], 30 + static_cast<int>(s));
    ASSERT_TRUE(gpu.stepAsync(hostBatch(in), &losses[s]));
    auto l = ref->step(in);
    ASSERT_TRUE(succeeded(l));
    want.push_back(*l);
  }
  ASSERT_TRUE(gpu.sync());
  EXPECT_EQ(gpu.steps(), sizes.size());
  for (size_t s = 0; s < sizes.size(); ++s)
    EXPECT_NEAR(losses[s], want[s], 1e-5 * (1 + std::abs(want[s]))) << "loss at step " << s;
  for (const std::string &name : ref->stateNames()) {
    rt::HostTensor got;
    ASSERT_TRUE(gpu.getState(name, got)) << name;
    expectClose(got, *ref->tensor(name), name);
  }
  std::vector<Tensor> later = test::inputsFor(ref->modelFunction(), 5, 40);
  std::vector<rt::HostTensor> outputs;
  double loss = 0;
  ASSERT_TRUE(gpu.evaluate(hostBatch(later), outputs, loss));
  auto wantOut = ref->evaluate(later);
  ASSERT_TRUE(succeeded(wantOut));
  size_t k = 0;
  for (size_t i = 0; i < wantOut->size(); ++i) {
    if ((*wantOut)[i].data.size() == 1 && i == c.desc.lossResult) {
      EXPECT_NEAR(loss, (*wantOut)[i].data[0], 1e-5 * (1 + std::abs((*wantOut)[i].data[0])));
      continue;
    }
    ASSERT_LT(k, outputs.size());
    expectClose(outputs[k++], (*wantOut)[i], "output " + std::to_string(i));
  }
}

INSTANTIATE_TEST_SUITE_P(Examples, CudaRuntime,
                         ::testing::Values("xor_mlp", "mnist_mlp", "weight_norm", "mnist_cnn", kSmallVgg),
                         [](const auto &info) {
                           std::string p = info.param;
                           return p.find('{') == std::string::npos ? p : std::string("small_vgg");
                         });

/// A state written into a second model (a checkpoint restored) continues
/// bit for bit as the first.
TEST(CudaRuntimeState, RestoredStateContinuesBitForBit) {
  Compiled c("mnist_cnn");
  ASSERT_TRUE(c.ok()) << c.m.firstError();
  rt::CudaModel a(c.desc, 7, FakeDriver::table()), b(c.desc, 99, FakeDriver::table());
  ASSERT_TRUE(a.initialize());
  ASSERT_TRUE(b.initialize());
  auto fn = c.m.module->lookupSymbol<mlir::func::FuncOp>(c.name);
  for (int s = 0; s < 2; ++s) {
    double loss = 0;
    ASSERT_TRUE(a.step(hostBatch(test::inputsFor(fn, 3, 50 + s)), loss));
  }
  for (const std::string &name : a.stateNames()) {
    rt::HostTensor t;
    ASSERT_TRUE(a.getState(name, t));
    ASSERT_TRUE(b.setState(name, t)) << name;
  }
  b.setSteps(a.steps());
  rt::HostTensor wrong{"", {1}, {0}};
  EXPECT_FALSE(b.setState(a.stateNames()[0], wrong)) << "a state of the wrong shape was accepted";
  EXPECT_FALSE(b.setState("no_such_tensor", wrong));
  std::vector<Tensor> in = test::inputsFor(fn, 3, 60);
  double la = 0, lb = 0;
  ASSERT_TRUE(a.step(hostBatch(in), la));
  ASSERT_TRUE(b.step(hostBatch(in), lb));
  EXPECT_EQ(la, lb);
  for (const std::string &name : a.stateNames()) {
    rt::HostTensor x, y;
    ASSERT_TRUE(a.getState(name, x));
    ASSERT_TRUE(b.getState(name, y));
    EXPECT_EQ(x.data, y.data) << name;
  }
}

/// The memory plan: intermediates share slots, never two that a launch
/// touches while both are live; results keep buffers of their own.
TEST(CudaRuntimePlan, SlotsAreSharedOnlyBetweenDisjointLifetimes) {
  Compiled c("mnist_cnn");
  ASSERT_TRUE(c.ok()) << c.m.firstError();
  const rt::CudaCode &code = c.desc.trainStep.cuda;
  size_t nargs = c.desc.trainStep.args.size(), buffers = code.buffers.size() / 3;
  std::vector<size_t> first(buffers, SIZE_MAX), last(buffers, 0);
  for (size_t k = 0; k < code.launches.size(); ++k)
    for (int32_t b : code.launches[k].buffers)
      if (static_cast<size_t>(b) >= nargs) {
        first[b - nargs] = std::min(first[b - nargs], k);
        last[b - nargs] = std::max(last[b - nargs], k);
      }
  size_t inSlots = 0;
  for (size_t i = 0; i < buffers; ++i) {
    int64_t slot = code.buffers[3 * i + 2];
    bool result = std::count(code.results.begin(), code.results.end(), static_cast<int32_t>(nargs + i)) > 0;
    EXPECT_EQ(slot < 0, result) << "buffer " << i;
    if (slot < 0)
      continue;
    ++inSlots;
    EXPECT_GE(code.slots[2 * slot], code.buffers[3 * i]);
    EXPECT_GE(code.slots[2 * slot + 1], code.buffers[3 * i + 1]);
    for (size_t j = 0; j < i; ++j)
      if (code.buffers[3 * j + 2] == slot)
        EXPECT_TRUE(last[j] < first[i] || last[i] < first[j]) << "buffers " << j << " and " << i;
  }
  EXPECT_LT(code.slots.size() / 2, inSlots) << "no slot is shared";
}

/// A profiled step times each launch of the training step between events
/// of its own, and is a step like any other: the same state after it as
/// after `step`.
TEST(CudaRuntimeProfile, TimesEachLaunchOfTheStep) {
  Compiled c("mnist_cnn");
  ASSERT_TRUE(c.ok()) << c.m.firstError();
  rt::CudaModel a(c.desc, 3, FakeDriver::table()), b(c.desc, 3, FakeDriver::table());
  ASSERT_TRUE(a.initialize());
  ASSERT_TRUE(b.initialize());
  auto fn = c.m.module->lookupSymbol<mlir::func::FuncOp>(c.name);
  std::vector<rt::HostTensor> batch = hostBatch(test::inputsFor(fn, 4, 1));
  std::vector<double> seconds;
  double loss = 0;
  for (int s = 0; s < 2; ++s) {
    ASSERT_TRUE(a.profileStep(batch, seconds));
    ASSERT_TRUE(b.step(batch, loss));
    ASSERT_EQ(seconds.size(), c.desc.trainStep.cuda.launches.size());
    for (size_t k = 0; k < seconds.size(); ++k)
      EXPECT_DOUBLE_EQ(seconds[k], 1e-3) << "launch " << k << " (" << c.desc.trainStep.cuda.launches[k].kernel << ")";
  }
  EXPECT_EQ(a.steps(), 2u);
  for (const std::string &name : a.stateNames()) {
    rt::HostTensor x, y;
    ASSERT_TRUE(a.getState(name, x));
    ASSERT_TRUE(b.getState(name, y));
    EXPECT_EQ(x.data, y.data) << name;
  }
}

/// Driver failures come back as statuses naming the call and the reason.
TEST(CudaRuntimeErrors, FailuresAreStatusesWithContext) {
  Compiled c("xor_mlp");
  ASSERT_TRUE(c.ok()) << c.m.firstError();
  FakeDriver::allocsLeft = 3;
  {
    rt::CudaModel gpu(c.desc, 1, FakeDriver::table());
    rt::Status s = gpu.initialize();
    FakeDriver::allocsLeft = -1;
    ASSERT_FALSE(s);
    EXPECT_NE(s.message().find("cuMemAlloc"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("out of memory"), std::string::npos) << s.message();
  }
  rt::ModelDesc bad = c.desc;
  bad.trainStep.cuda.image = "not a module";
  rt::CudaModel gpu(bad, 1, FakeDriver::table());
  rt::Status s = gpu.initialize();
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("loading the CUDA module of the training step"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("ptxas fatal"), std::string::npos) << "the JIT log is missing: " << s.message();
}

/// Every device allocation is released with the model.
TEST(CudaRuntimeErrors, ReleasesEverything) {
  Compiled c("mnist_mlp");
  ASSERT_TRUE(c.ok()) << c.m.firstError();
  size_t before = FakeDriver::live.size();
  {
    rt::CudaModel gpu(c.desc, 1, FakeDriver::table());
    ASSERT_TRUE(gpu.initialize());
    double loss = 0;
    auto fn = c.m.module->lookupSymbol<mlir::func::FuncOp>(c.name);
    ASSERT_TRUE(gpu.step(hostBatch(test::inputsFor(fn, 4, 1)), loss));
    EXPECT_GT(FakeDriver::live.size(), before);
    EXPECT_GT(gpu.deviceBytes(), 0u);
  }
  EXPECT_EQ(FakeDriver::live.size(), before);
}

} // namespace

namespace {

/// NCCL emulated for ranks that are threads of this process: an allreduce
/// waits until every rank has called it, then writes the sum of the ranks'
/// values, each times its premultiplier, in f32 and rank order, into every
/// rank's output.
struct FakeNccl {
  struct Comm {
    int rank;
  };
  static inline std::mutex mu;
  static inline std::condition_variable met;
  static inline int ranks = 0, arrived = 0, calls = 0, nextOp = 100;
  static inline uint64_t round = 0;
  static inline std::vector<const float *> in;
  static inline std::vector<float *> out;
  static inline std::vector<float> scale;
  static inline std::vector<size_t> count;
  static inline std::map<int, float> ops;
  static inline std::vector<float> premultipliers; // every one made
  static inline int asyncError = 0;
  static inline bool aborted = false;
  static inline int cost = 0; // milliseconds of FakeDriver's clock an allreduce takes

  static void start(int n) {
    std::lock_guard<std::mutex> lock(mu);
    ranks = n;
    arrived = calls = 0;
    in.assign(n, nullptr);
    out.assign(n, nullptr);
    scale.assign(n, 0);
    count.assign(n, 0);
    premultipliers.clear();
    asyncError = 0;
    aborted = false;
    cost = 0;
  }
  static int allReduce(const void *send, void *recv, size_t n, int type, int op, void *comm, void *) {
    std::unique_lock<std::mutex> lock(mu);
    int r = static_cast<Comm *>(comm)->rank;
    if (type != rt::kNcclFloat32 || (op != rt::kNcclSum && !ops.count(op)))
      return 4; // ncclInvalidArgument
    in[r] = static_cast<const float *>(send);
    out[r] = static_cast<float *>(recv);
    scale[r] = op == rt::kNcclSum ? 1.0f : ops[op];
    count[r] = n;
    uint64_t mine = round;
    if (++arrived < ranks) {
      met.wait(lock, [&] { return round != mine; });
      return 0;
    }
    std::vector<float> sum(n, 0.0f);
    for (int k = 0; k < ranks; ++k) {
      if (count[k] != n)
        return 4;
      for (size_t i = 0; i < n; ++i)
        sum[i] += scale[k] * in[k][i];
    }
    for (int k = 0; k < ranks; ++k)
      std::memcpy(out[k], sum.data(), n * sizeof(float));
    ++calls;
    FakeDriver::launches += cost;
    arrived = 0;
    ++round;
    met.notify_all();
    return 0;
  }
  static rt::NcclLibrary table() {
    rt::NcclLibrary n;
    n.commDestroy = [](void *c) {
      delete static_cast<Comm *>(c);
      return 0;
    };
    n.commAbort = [](void *c) {
      aborted = true;
      delete static_cast<Comm *>(c);
      return 0;
    };
    n.commGetAsyncError = [](void *, int *e) {
      *e = asyncError;
      return 0;
    };
    n.allReduce = allReduce;
    n.redOpCreatePreMulSum = [](int *op, void *scalar, int, int residence, void *) {
      std::lock_guard<std::mutex> lock(mu);
      if (residence != rt::kNcclScalarHostImmediate)
        return 4;
      *op = nextOp++;
      ops[*op] = *static_cast<float *>(scalar);
      premultipliers.push_back(ops[*op]);
      return 0;
    };
    n.redOpDestroy = [](int op, void *) {
      std::lock_guard<std::mutex> lock(mu);
      return ops.erase(op) ? 0 : 4;
    };
    n.getErrorString = [](int rc) { return rc == 6 ? "remote process exited or there was a network error" : "error"; };
    return n;
  }
  static std::unique_ptr<rt::NcclComm> comm(int rank, int size) {
    return std::make_unique<rt::NcclComm>(table(), new Comm{rank}, rank, size);
  }
};

/// Rows [from, to) of each tensor of a batch.
std::vector<rt::HostTensor> rowsOf(const std::vector<rt::HostTensor> &batch, int64_t from, int64_t to) {
  std::vector<rt::HostTensor> out;
  for (const rt::HostTensor &t : batch) {
    size_t per = t.data.size() / static_cast<size_t>(t.shape[0]);
    rt::HostTensor s{t.name, t.shape, {}};
    s.shape[0] = to - from;
    s.data.assign(t.data.begin() + from * per, t.data.begin() + to * per);
    out.push_back(std::move(s));
  }
  return out;
}

/// Batch norm over the global batch (sync_batch_norm: collectives inside
/// the forward pass too), dropout, momentum.
constexpr const char *kDataParallel = R"(model ddp {
  input x: f32[B, 2, 5, 5]
  input y: i32[B]
  h = relu(batch_norm(conv2d(x, 3, kernel=3, padding=1)))
  f = dropout(relu(dense(flatten(h), 8)), rate=0.3)
  logits = dense(f, 3)
  loss = softmax_cross_entropy(logits, y)
  output logits
  minimize loss
}
train {
  optimizer = sgd(lr=0.1, momentum=0.9)
  sync_batch_norm = true
}
)";

/// Two ranks of a data-parallel run on emulated devices, their gradients
/// and batch statistics combined by the emulated NCCL, train as one
/// process does with their global batch (an even one, then a ragged one
/// whose ranks weigh 3/5 and 2/5): the same losses, parameters, momenta
/// and running statistics to f32 reduction order, and replicas identical
/// to the bit.
TEST(CudaRuntimeNccl, RanksTrainAsOneProcess) {
  Compiled alone(kDataParallel), ddp(kDataParallel, /*distributed=*/true);
  ASSERT_TRUE(alone.ok()) << alone.m.firstError();
  ASSERT_TRUE(ddp.ok()) << ddp.m.firstError();
  rt::CudaModel one(alone.desc, 5, FakeDriver::table());
  ASSERT_TRUE(one.initialize());
  FakeNccl::start(2);
  std::vector<std::unique_ptr<rt::CudaModel>> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.push_back(std::make_unique<rt::CudaModel>(ddp.desc, 5, FakeDriver::table()));
    ASSERT_TRUE(ranks.back()->initialize());
    ASSERT_TRUE(ranks.back()->attach(FakeNccl::comm(r, 2), 30));
  }
  auto fn = alone.m.module->lookupSymbol<mlir::func::FuncOp>(alone.name);
  uint64_t salt = 70;
  for (int64_t rows : {6, 6, 5}) {
    std::vector<rt::HostTensor> batch = hostBatch(test::inputsFor(fn, rows, salt++));
    double want = 0;
    ASSERT_TRUE(one.step(batch, want));
    double loss[2] = {0, 0};
    rt::Status status[2];
    rt::Shard shard[2] = {rt::shardOf(rows, 0, 2), rt::shardOf(rows, 1, 2)};
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r)
      threads.emplace_back([&, r] {
        ranks[r]->setShare(shard[r].share);
        ranks[r]->setFirstRow(shard[r].from);
        status[r] = ranks[r]->step(rowsOf(batch, shard[r].from, shard[r].to), loss[r]);
      });
    for (std::thread &t : threads)
      t.join();
    ASSERT_TRUE(status[0]) << status[0].message();
    ASSERT_TRUE(status[1]) << status[1].message();
    double global = shard[0].share * loss[0] + shard[1].share * loss[1];
    EXPECT_NEAR(global, want, 1e-5 * (1 + std::abs(want))) << "the global batch of " << rows;
  }
  EXPECT_GT(FakeNccl::calls, 0);
  EXPECT_NE(std::find(FakeNccl::premultipliers.begin(), FakeNccl::premultipliers.end(), 0.6f),
            FakeNccl::premultipliers.end())
      << "the ragged batch's first rank did not weigh its gradients by its share";
  for (const std::string &name : one.stateNames()) {
    rt::HostTensor a, b, want;
    ASSERT_TRUE(one.getState(name, want));
    ASSERT_TRUE(ranks[0]->getState(name, a)) << name;
    ASSERT_TRUE(ranks[1]->getState(name, b)) << name;
    EXPECT_EQ(a.data, b.data) << name << ": the replicas differ";
    ASSERT_EQ(a.data.size(), want.data.size()) << name;
    for (size_t i = 0; i < a.data.size(); ++i)
      if (!(std::abs(a.data[i] - want.data[i]) <= 1e-5 * std::abs(want.data[i]) + 1e-6)) {
        ADD_FAILURE() << name << ": element " << i << " is " << a.data[i] << ", one process has " << want.data[i];
        break;
      }
  }
}

/// A data-parallel step reports the time its collectives took (timed
/// events around each on their stream) and the time the computation waited
/// for them (around each wait), once its steps are synced. Here each
/// allreduce advances the emulated clock by FakeNccl::cost, and the waits
/// not at all.
TEST(CudaRuntimeNccl, ReportsTheTimeCollectivesTake) {
  Compiled c(kDataParallel, /*distributed=*/true);
  ASSERT_TRUE(c.ok()) << c.m.firstError();
  auto fn = c.m.module->lookupSymbol<mlir::func::FuncOp>(c.name);
  FakeNccl::start(1);
  FakeNccl::cost = 2;
  rt::CudaModel gpu(c.desc, 1, FakeDriver::table());
  ASSERT_TRUE(gpu.initialize());
  ASSERT_TRUE(gpu.attach(FakeNccl::comm(0, 1), 30));
  double busy = -1, waited = -1, loss = 0;
  for (uint64_t salt : {1, 2, 3})
    ASSERT_TRUE(gpu.stepAsync(hostBatch(test::inputsFor(fn, 4, salt)), &loss));
  ASSERT_TRUE(gpu.sync());
  ASSERT_TRUE(gpu.takeDeviceTraffic(busy, waited));
  EXPECT_GT(FakeNccl::calls, 0);
  EXPECT_NEAR(busy, FakeNccl::calls * 2e-3, 1e-9);
  EXPECT_EQ(waited, 0);
  ASSERT_TRUE(gpu.takeDeviceTraffic(busy, waited));
  EXPECT_EQ(busy, 0) << "handed out twice";
  rt::CudaModel alone(c.desc, 1, FakeDriver::table());
  ASSERT_TRUE(alone.initialize());
  EXPECT_FALSE(alone.takeDeviceTraffic(busy, waited)) << "no communicator, nothing of its own to report";
}

/// A rank whose peers stop answering gives up after the time limit, and an
/// error NCCL reports (a peer gone) ends the wait at once in NCCL's words;
/// either way NCCL's kernels are aborted, never left waiting.
TEST(CudaRuntimeNccl, WaitsGiveUpOnRanksThatDoNotAnswer) {
  Compiled c(kDataParallel, /*distributed=*/true);
  ASSERT_TRUE(c.ok()) << c.m.firstError();
  rt::CudaDriver stuck = FakeDriver::table();
  stuck.eventQuery = [](void *) { return 600; }; // CUDA_ERROR_NOT_READY, forever
  auto fn = c.m.module->lookupSymbol<mlir::func::FuncOp>(c.name);
  std::vector<rt::HostTensor> batch = hostBatch(test::inputsFor(fn, 3, 1));
  {
    FakeNccl::start(1);
    rt::CudaModel gpu(c.desc, 1, stuck);
    ASSERT_TRUE(gpu.initialize());
    ASSERT_TRUE(gpu.attach(FakeNccl::comm(0, 1), 1));
    double loss = 0;
    auto begin = std::chrono::steady_clock::now();
    rt::Status s = gpu.step(batch, loss);
    ASSERT_FALSE(s);
    EXPECT_NE(s.message().find("no answer from the other ranks for 1 s"), std::string::npos) << s.message();
    EXPECT_GE(std::chrono::steady_clock::now() - begin, std::chrono::seconds(1));
    EXPECT_TRUE(FakeNccl::aborted);
  }
  {
    FakeNccl::start(1);
    FakeNccl::asyncError = 6; // ncclRemoteError
    rt::CudaModel gpu(c.desc, 1, stuck);
    ASSERT_TRUE(gpu.initialize());
    ASSERT_TRUE(gpu.attach(FakeNccl::comm(0, 1), 300));
    double loss = 0;
    rt::Status s = gpu.step(batch, loss);
    ASSERT_FALSE(s);
    EXPECT_NE(s.message().find("remote process exited"), std::string::npos) << s.message();
    EXPECT_TRUE(FakeNccl::aborted);
  }
}

/// The launch table of a data-parallel step: collectives (no kernel) take
/// the gradient and its combined buffer; the first launch reading a
/// combined buffer waits, no launch reads one before; and until that wait
/// no launch touches a slot a collective in flight still uses.
TEST(CudaRuntimePlan, CollectivesKeepTheirBuffersUntilWaitedFor) {
  Compiled c(kDataParallel, /*distributed=*/true);
  ASSERT_TRUE(c.ok()) << c.m.firstError();
  const rt::CudaCode &code = c.desc.trainStep.cuda;
  size_t nargs = c.desc.trainStep.args.size();
  auto slotOf = [&](int32_t b) {
    return static_cast<size_t>(b) < nargs ? -1 : code.buffers[3 * (static_cast<size_t>(b) - nargs) + 2];
  };
  int collectives = 0, waits = 0;
  for (size_t k = 0; k < code.launches.size(); ++k) {
    const rt::CudaLaunch &l = code.launches[k];
    waits += l.waits;
    if (l.collective == rt::Collective::None)
      continue;
    ++collectives;
    ASSERT_EQ(l.buffers.size(), 2u) << l.what;
    size_t w = k + 1;
    while (w < code.launches.size() && !code.launches[w].waits)
      ++w;
    for (size_t j = k + 1; j < w; ++j)
      for (int32_t b : code.launches[j].buffers) {
        EXPECT_NE(b, l.buffers[1]) << code.launches[j].what << " reads " << l.what << " before the wait";
        if (b != l.buffers[0] && b != l.buffers[1] && slotOf(b) >= 0)
          for (int32_t mine : l.buffers)
            EXPECT_NE(slotOf(b), slotOf(mine)) << code.launches[j].what << " takes the slot of " << l.what;
      }
  }
  EXPECT_GE(collectives, 8) << "gradients, batch statistics and running statistics are combined";
  EXPECT_GE(waits, 2) << "the sync batch norm's forward and the updates wait";
}

} // namespace
