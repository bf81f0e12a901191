//===- CompiledModel.h - a model compiled to kernels, run on the host -*- C++ -*-===//
//
// A model's training step and evaluation function as compiled kernels,
// with a table describing their buffers (ModelDesc), and the model state
// they update in f32. `nnc train` fills the table from the compiler and
// JIT-compiled kernels; a binary made by `nnc build` has it written out as
// C++ next to its object code. Both then train through CompiledModel and
// the same loop (runtime/Training.h), so they compute the same numbers.
//
// The kernels follow the CPU backend's calling convention: one pointer per
// argument and result buffer, the cache (KernelCache), the rng buffer
// (seed, step), the batch size, then one pointer per slot of the memory
// plan (compiler/codegen/cpu/LowerToLoops.h). `Kernel` receives them as
// arrays.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_COMPILEDMODEL_H
#define NNC_RUNTIME_COMPILEDMODEL_H

#include "runtime/Init.h"
#include "runtime/Memory.h"
#include "runtime/Training.h"

#include <cstdint>
#include <utility>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace nnc::rt {

using Kernel = std::function<void(void **buffers, int64_t batch, void **slots)>;

struct TensorDesc {
  std::string name, role; // role: input, param, frozen, state, opt_state, step, output, loss, ...
  bool integer = false;   // i32, else f32
  std::vector<int64_t> shape; // a negative size -k means k per batch element
  int64_t classes = 0;        // an i32 input's class count (ModelInput::classes)
  double value = 0;           // a scalar the runtime sets (role "lr"): its default

  /// The sizes and element count for a batch of `batch`.
  std::vector<int64_t> shapeAt(int64_t batch) const {
    std::vector<int64_t> s;
    for (int64_t d : shape)
      s.push_back(d < 0 ? -d * batch : d);
    return s;
  }
  int64_t numel(int64_t batch) const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d < 0 ? -d * batch : d;
    return n;
  }
};

/// How a launch of CUDA code combines its buffer over a run's ranks
/// (nn.all_reduce): not at all (a kernel), their mean weighted by each
/// rank's share of the global batch, or their sum.
enum class Collective : int8_t { None, Mean, Sum };

/// One launch of a function's CUDA code: the kernel's name, what it
/// computes ("ops at file:line:col", for errors), the buffers it takes
/// (indices into CudaCode's buffers), whether it takes the rng buffer, and
/// its threads: `threadsPerBatch * batch + threadsFixed`. A collective is
/// no kernel: it combines buffer 0 (that many floats) into buffer 1 over
/// the ranks, on a stream of its own, and the first launch after it that
/// reads a combined buffer `waits` for every collective before it.
struct CudaLaunch {
  std::string kernel, what;
  std::vector<int32_t> buffers;
  int64_t threadsPerBatch = 0, threadsFixed = 0;
  bool rng = false;
  Collective collective = Collective::None;
  bool waits = false;
};

/// A function as CUDA kernels (`--target=cuda`): the module image the
/// driver loads (PTX), its launches in order, and its device buffers: the
/// function's arguments (by position), then one per entry of `buffers`.
struct CudaCode {
  std::string image;
  std::vector<CudaLaunch> launches;
  /// Per buffer after the arguments: words per batch element, fixed words,
  /// and the slot of the memory plan holding it (-1: a buffer of its own,
  /// as every result has).
  std::vector<int64_t> buffers;
  /// Per slot of the memory plan: words per batch element, fixed words.
  std::vector<int64_t> slots;
  /// Per result of the function: the buffer holding it.
  std::vector<int32_t> results;
  /// Threads per block of every launch (the kernels' launch bounds), and
  /// the most blocks a launch gets (kernels stride over their work).
  int64_t blockSize = 256, maxBlocks = 4096;
  bool empty() const { return launches.empty(); }
};

struct FunctionDesc {
  Kernel call;
  CudaCode cuda;
  std::vector<TensorDesc> args, results;
  std::vector<int64_t> slots; // bytes per batch element and fixed bytes, per slot
  int64_t cache = 0;          // bytes the function keeps across calls (KernelCache)
  /// The buffer pointers `call` receives: the arguments, the results, the
  /// cache and the rng block.
  size_t buffers() const { return args.size() + results.size() + 2; }
  // Per result: the argument whose buffer the kernel overwrites with it
  // (an update in place), or -1 when it has a buffer of its own.
  std::vector<int64_t> inPlace;
  int64_t overwrites(size_t result) const {
    return result < inPlace.size() ? inPlace[result] : -1;
  }
};

struct ModelDesc {
  std::string name;
  FunctionDesc trainStep; // results: loss first, then new state by name
  FunctionDesc model;     // arguments: the first ones of the training step
  unsigned lossResult = 0; // of `model`
  std::vector<InitSpec> inits; // per argument of `model` (inputs: none)
  // The train section's settings (defaults of a built binary's flags).
  int64_t epochs = 1, batch = 32;
  uint64_t seed = 0;
  bool shuffle = true;
  double validation = 0;
  std::string dataKind, dataPath;
  std::string testKind, testPath;
  std::string transforms, schedule; // canonical call text (runtime/Call.h)
  int64_t patience = 0, topK = 5;
  std::string monitor = "loss";
  double minDelta = 0;
  /// Built with `nnc build --data-parallel`: the step combines gradients
  /// over a run's ranks (runtime/Distributed.h); the loss sums over the
  /// batch (instead of averaging).
  bool dataParallel = false;
  bool lossIsSum = false;
};

/// How a training step's arguments and results meet the model: the inputs
/// (in argument order) and their argument indices, the step counter's
/// argument (SIZE_MAX: none), the state tensors a checkpoint holds (every
/// argument but the inputs and the step), and the (result, argument) pairs
/// of every state tensor the step updates. Shared by every backend.
struct StepLayout {
  explicit StepLayout(const FunctionDesc &trainStep);
  std::vector<ModelInput> inputs;
  std::vector<size_t> inputArgs;
  size_t stepArg = SIZE_MAX;
  /// The learning-rate argument (SIZE_MAX: none) and its default.
  size_t lrArg = SIZE_MAX;
  double learningRate = 0;
  std::vector<std::string> stateNames;
  std::vector<std::pair<size_t, size_t>> updates;
  /// The index of `batch` feeding argument `a`, or -1 when it is state.
  int64_t inputOf(size_t a) const;
};

/// Whether argument `name` of `m`'s training step is a frozen tensor with
/// written-out values (Trainable::isConstant).
bool isConstantOf(const ModelDesc &m, const std::string &name);
/// Whether argument `name` of `m`'s training step is i32.
bool isIntegerOf(const ModelDesc &m, const std::string &name);

/// Synthetic values for `t` at `batch` (benchmarks, kernel timing): f32
/// uniform [0, 1) from the counter-based generator, integers 0.
HostTensor syntheticTensor(const TensorDesc &t, int64_t batch, uint64_t &counter);

/// Places the slots of a memory plan (`slots`: bytes per batch element and
/// fixed bytes, per slot) in one block at `base` (64-byte aligned): their
/// addresses go to `out`. Returns the bytes the block needs from `base`
/// (call with a null `base` to size it). Consecutive slots are staggered by
/// a few cache lines, a precaution against 4K aliasing between slots of
/// equal, page-multiple sizes (a loop reading one and writing another at
/// the same page offset); on the MNIST CNN it made no measurable difference.
size_t placeSlots(const std::vector<int64_t> &slots, int64_t batch, void *base,
                  std::vector<void *> *out);

/// The memory a function keeps across calls (FunctionDesc::cache): the
/// results of its kernels' weight-only work (Winograd's transformed
/// weights). Each stays valid while the weights' version passed to
/// `prepare` is the one it was computed at; version 0 (weights unknown)
/// recomputes them every call. A caller must change the version whenever
/// an argument other than an input (a weight) may have changed.
class KernelCache {
public:
  /// The cache of `bytes` (FunctionDesc::cache) for a call at `version`,
  /// zeroed when first sized.
  void *prepare(int64_t bytes, uint64_t version);

private:
  std::vector<uint64_t, CacheLineAllocator<uint64_t>> words;
};

/// The host memory a model takes while it trains, by what it holds.
struct StepMemory {
  uint64_t parameters = 0; // trained tensors
  uint64_t optimizer = 0;  // optimizer state (moments, momentum buffers)
  uint64_t state = 0;      // layer state, frozen tensors, the step counter
  uint64_t step = 0;       // a training step's inputs, results and intermediates at its batch
  uint64_t evaluation = 0; // the same for evaluation at its batch
  uint64_t total() const { return parameters + optimizer + state + step + evaluation; }
  /// "1.2 MB parameters, 2.4 MB optimizer state, ..., 9.1 MB in all".
  std::string describe(int64_t batch, int64_t evalBatch) const;
};

/// What training `m` at `batch` holds (evaluating at `evalBatch`): exact
/// for the CPU backend, whose frames are sized from the same plan.
StepMemory stepMemory(const ModelDesc &m, int64_t batch, int64_t evalBatch);

/// Fails, with the figures, when training `m` at `batch` (plus `dataBytes`
/// of data) cannot fit the memory available (availableMemory()).
Status checkFits(const ModelDesc &m, int64_t batch, int64_t evalBatch, uint64_t dataBytes);

/// The model's state in f32, stepped by the kernels of a ModelDesc.
class CompiledModel : public Trainable {
public:
  CompiledModel(const ModelDesc &m, uint64_t seed, std::string backend);
  ~CompiledModel() override;

  /// Draws the initial parameters from their initializers and the seed.
  Status initialize();

  std::string modelName() const override { return m.name; }
  const char *backendName() const override { return backend.c_str(); }
  const std::vector<ModelInput> &inputs() const override { return layout.inputs; }
  Status step(const std::vector<HostTensor> &batch, double &loss) override;
  Status evaluate(const std::vector<HostTensor> &batch, std::vector<HostTensor> &outputs,
                  double &loss) override;
  std::vector<std::string> stateNames() const override { return layout.stateNames; }
  Status getState(const std::string &name, HostTensor &out) const override;
  Status setState(const std::string &name, const HostTensor &value) override;
  bool isConstant(const std::string &name) const override { return isConstantOf(m, name); }
  const ModelDesc *desc() const { return &m; }
  double learningRate() const override { return lr; }
  void setLearningRate(double v) override { lr = v; }
  bool isInteger(const std::string &name) const override { return isIntegerOf(m, name); }
  uint64_t steps() const override { return stepCount; }
  void setSteps(uint64_t n) override { stepCount = n; }
  void setFirstRow(int64_t row) override { firstRow = row; }

private:
  struct Frame;
  /// Calls `f` on `batch` (the model inputs) and the state.
  void run(const FunctionDesc &f, Frame &frame, const std::vector<HostTensor> &batch, int64_t n);
  const ModelDesc &m;
  uint64_t seed;
  std::string backend;
  StepLayout layout;
  std::vector<HostTensor> state; // per training-step argument
  uint64_t stepCount = 0;
  /// Changes with every write of the state: what the kernels' caches of
  /// weight-only work are checked against (KernelCache).
  uint64_t version = 1;
  int64_t firstRow = 0;
  double lr = 0;
  std::unique_ptr<Frame> trainFrame, evalFrame;
};

} // namespace nnc::rt

#endif // NNC_RUNTIME_COMPILEDMODEL_H
