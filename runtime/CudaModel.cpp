//===- CudaModel.cpp - a model's CUDA kernels, run on a device -----------===//
//
// Streams: `compute` runs every launch, the per-step scalars (step count,
// rng) and the loss copy; `copy` uploads batches. Inputs are double
// buffered: step k uses set k % 2, whose pinned staging is rewritten only
// once its previous upload is done (event `copied`), and whose device
// buffers are overwritten only once the step that read them is done (event
// `consumed`). Per-step scalars and losses live in a pinned ring, drained
// by sync().
//
// In a data-parallel run a third stream, `collectives`, runs the NCCL
// allreduces of the step's gradients as the backward pass produces them:
// each waits for the compute stream's work so far (event `produced`), and
// the first launch that reads a combined buffer waits for all of them
// (event `combined`), as does the end of every call.
//
//===----------------------------------------------------------------------===//

#include "runtime/CudaModel.h"

#include "runtime/Nccl.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>
#include <utility>

using namespace nnc;
using namespace nnc::rt;

namespace {

constexpr size_t kAlign = 256;
constexpr size_t kRing = 64;      // pinned per-step scalars
constexpr int64_t kInFlight = 16; // steps started before their losses are read

size_t roundUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

size_t wordsAt(int64_t perBatch, int64_t fixed, int64_t batch) {
  return static_cast<size_t>(std::max<int64_t>(1, perBatch * batch + fixed));
}

/// Host values (f32, or integers held in f32) as the device's 32-bit words.
void toWords(const TensorDesc &t, const float *src, size_t n, void *dst) {
  if (!t.integer) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  auto *w = static_cast<int32_t *>(dst);
  for (size_t k = 0; k < n; ++k)
    w[k] = static_cast<int32_t>(src[k]);
}

void fromWords(const TensorDesc &t, const void *src, size_t n, float *dst) {
  if (!t.integer) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  auto *w = static_cast<const int32_t *>(src);
  for (size_t k = 0; k < n; ++k)
    dst[k] = static_cast<float>(w[k]);
}

/// What the host writes for each step, and the loss it reads back.
struct Scalars {
  int64_t rng[3]; // seed, step, the batch's first row in the global batch
  union {
    float f;
    int32_t i;
  } stepWord;
  float lr;
  float loss;
};

} // namespace

struct CudaModel::Impl {
  /// One function's module, launches and device buffers.
  struct Function {
    const char *what = "";
    const FunctionDesc *f = nullptr;
    void *module = nullptr;
    std::vector<void *> kernels;
    int64_t capacity = 0;           // the batch size the buffers hold
    std::vector<CuDevicePtr> own;   // per buffer after the arguments (slot -1)
    CuDevicePtr block = 0;          // the memory plan's slots
    size_t bytes = 0;
    std::vector<CuDevicePtr> ptr;   // per buffer, for the current call
  };
  /// Device buffers and pinned staging for the inputs of one step.
  struct InputSet {
    std::vector<CuDevicePtr> dev;
    std::vector<void *> pinned;
    void *copied = nullptr, *consumed = nullptr;
    bool used = false;
  };

  const ModelDesc &m;
  uint64_t seed;
  CudaDriver d;
  StepLayout layout;
  const std::vector<size_t> &inputArgs = layout.inputArgs;
  const size_t &stepArg = layout.stepArg;
  uint64_t stepCount = 0;
  double lr = layout.learningRate;
  void *compute = nullptr, *copy = nullptr;
  std::vector<CuDevicePtr> state; // per training-step argument (inputs: 0)
  CuDevicePtr rng = 0;
  Function train, eval;
  InputSet sets[2];
  int64_t inputCapacity = 0;
  Scalars *ring = nullptr;
  std::vector<std::pair<size_t, double *>> pending; // ring entry, loss destination
  size_t next = 0;                                  // ring entry of the next step
  /// A data-parallel run's collectives: the communicator, its stream, this
  /// rank's share of the coming step's global batch and its first row.
  std::unique_ptr<NcclComm> comm;
  int64_t timeLimit = 300;
  void *collectives = nullptr, *produced = nullptr, *combined = nullptr, *drained = nullptr;
  double share = 1;
  int64_t firstRow = 0;
  /// With a communicator, per ring entry (a step in flight): timed events
  /// in pairs, around each collective on its stream (`busy`) and around
  /// each wait of the compute stream for them (`waited`), read once the
  /// step is drained into the seconds takeTraffic hands out. `current`:
  /// the entry of the step being launched.
  struct Marks {
    std::vector<void *> events;
    size_t used = 0;
  };
  Marks busy[kRing], waited[kRing];
  size_t current = 0;
  double busySeconds = 0, waitedSeconds = 0;
  /// profileStep: while `timing`, the training step's launch k is preceded
  /// by an event record of marks[k], and the last followed by marks.back().
  std::vector<void *> marks;
  bool timing = false;

  Impl(const ModelDesc &m, uint64_t seed, const CudaDriver &d) : m(m), seed(seed), d(d), layout(m.trainStep) {
    train.f = &m.trainStep;
    train.what = "the training step";
    eval.f = &m.model;
    eval.what = "the evaluation function";
  }

  ~Impl() {
    for (void *s : {compute, copy, collectives})
      if (s)
        d.streamSynchronize(s);
    comm.reset(); // before its stream goes
    for (Function *fn : {&train, &eval}) {
      for (CuDevicePtr p : fn->own)
        if (p)
          d.memFree(p);
      if (fn->block)
        d.memFree(fn->block);
      if (fn->module)
        d.moduleUnload(fn->module);
    }
    for (CuDevicePtr p : state)
      if (p)
        d.memFree(p);
    if (rng)
      d.memFree(rng);
    releaseInputs();
    for (InputSet &s : sets)
      for (void *e : {s.copied, s.consumed})
        if (e)
          d.eventDestroy(e);
    for (void *e : marks)
      if (e)
        d.eventDestroy(e);
    for (void *e : {produced, combined, drained})
      if (e)
        d.eventDestroy(e);
    for (Marks *set : {busy, waited})
      for (size_t k = 0; k < kRing; ++k)
        for (void *e : set[k].events)
          d.eventDestroy(e);
    if (ring)
      d.memFreeHost(ring);
    for (void *s : {compute, copy, collectives})
      if (s)
        d.streamDestroy(s);
  }

  void releaseInputs() {
    for (InputSet &s : sets) {
      for (CuDevicePtr p : s.dev)
        if (p)
          d.memFree(p);
      for (void *p : s.pinned)
        if (p)
          d.memFreeHost(p);
      s.dev.clear();
      s.pinned.clear();
    }
  }

  Status alloc(CuDevicePtr &p, size_t bytes, const std::string &what) {
    if (int rc = d.memAlloc(&p, std::max<size_t>(bytes, 4)))
      return d.fail("cuMemAlloc(" + std::to_string(bytes) + " bytes) for " + what, rc);
    return Status::ok();
  }

  Status load(Function &fn) {
    const CudaCode &code = fn.f->cuda;
    if (code.empty())
      return Status::error(std::string(fn.what) + " has no CUDA code (compile it with --target=cuda)");
    char log[8192] = {};
    int options[] = {5 /*CU_JIT_ERROR_LOG_BUFFER*/, 6 /*CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES*/};
    void *values[] = {log, reinterpret_cast<void *>(sizeof log)};
    if (int rc = d.moduleLoadDataEx(&fn.module, code.image.c_str(), 2, options, values)) {
      fn.module = nullptr;
      Status s = d.fail(std::string("loading the CUDA module of ") + fn.what, rc);
      return log[0] ? Status::error(s.message() + "\n" + log) : s;
    }
    for (const CudaLaunch &l : code.launches) {
      void *k = nullptr;
      if (l.collective != Collective::None) { // the runtime's, not the module's
        fn.kernels.push_back(nullptr);
        continue;
      }
      if (int rc = d.moduleGetFunction(&k, fn.module, l.kernel.c_str()))
        return d.fail("the CUDA module of " + std::string(fn.what) + " has no kernel " + l.kernel, rc);
      fn.kernels.push_back(k);
    }
    return Status::ok();
  }

  Status start() {
    if (Status s = load(train); !s)
      return s;
    if (Status s = load(eval); !s)
      return s;
    if (int rc = d.streamCreate(&compute, 1 /*CU_STREAM_NON_BLOCKING*/))
      return d.fail("cuStreamCreate", rc);
    if (int rc = d.streamCreate(&copy, 1))
      return d.fail("cuStreamCreate", rc);
    for (InputSet &s : sets)
      for (void **e : {&s.copied, &s.consumed})
        if (int rc = d.eventCreate(e, 2 /*CU_EVENT_DISABLE_TIMING*/))
          return d.fail("cuEventCreate", rc);
    if (int rc = d.memHostAlloc(reinterpret_cast<void **>(&ring), kRing * sizeof(Scalars), 0))
      return d.fail("cuMemHostAlloc (" + std::to_string(kRing * sizeof(Scalars)) + " bytes)", rc);
    if (Status s = alloc(rng, sizeof(Scalars::rng), "the random seed"); !s)
      return s;
    const FunctionDesc &f = m.trainStep;
    state.assign(f.args.size(), 0);
    for (size_t i = 0; i < f.args.size(); ++i)
      if (f.args[i].role != "input")
        if (Status s = alloc(state[i], static_cast<size_t>(std::max<int64_t>(1, f.args[i].numel(0))) * 4,
                             "'" + f.args[i].name + "'");
            !s)
          return s;
    return Status::ok();
  }

  /// Buffers of `fn` for batches up to `n` (reallocated when `n` grows).
  Status reserve(Function &fn, int64_t n) {
    if (n <= fn.capacity)
      return Status::ok();
    if (int rc = d.streamSynchronize(compute))
      return d.fail(std::string("the CUDA kernels of ") + fn.what, rc);
    const CudaCode &code = fn.f->cuda;
    for (CuDevicePtr &p : fn.own)
      if (p)
        d.memFree(p);
    if (fn.block)
      d.memFree(fn.block);
    fn.block = 0;
    fn.own.assign(code.buffers.size() / 3, 0);
    fn.bytes = 0;
    std::vector<size_t> offsets;
    size_t total = 0;
    for (size_t s = 0; s + 1 < code.slots.size(); s += 2) {
      offsets.push_back(total);
      total += roundUp(wordsAt(code.slots[s], code.slots[s + 1], n) * 4);
    }
    if (total)
      if (Status s = alloc(fn.block, total, std::string("the memory plan of ") + fn.what); !s)
        return s;
    fn.bytes = total;
    size_t nargs = fn.f->args.size();
    fn.ptr.assign(nargs + fn.own.size(), 0);
    for (size_t b = 0; b < fn.own.size(); ++b) {
      int64_t perBatch = code.buffers[3 * b], fixed = code.buffers[3 * b + 1], slot = code.buffers[3 * b + 2];
      if (slot >= 0) {
        fn.ptr[nargs + b] = fn.block + offsets[static_cast<size_t>(slot)];
        continue;
      }
      size_t bytes = wordsAt(perBatch, fixed, n) * 4;
      if (Status s = alloc(fn.own[b], bytes, std::string("a result of ") + fn.what); !s)
        return s;
      fn.bytes += bytes;
    }
    fn.capacity = n;
    return Status::ok();
  }

  /// Device and pinned buffers for inputs of batches up to `n`.
  Status reserveInputs(int64_t n) {
    if (n <= inputCapacity)
      return Status::ok();
    for (void *s : {compute, copy})
      if (int rc = d.streamSynchronize(s))
        return d.fail("the CUDA stream", rc);
    releaseInputs();
    for (InputSet &s : sets) {
      s.used = false;
      for (size_t i : inputArgs) {
        size_t bytes = static_cast<size_t>(std::max<int64_t>(1, m.trainStep.args[i].numel(n))) * 4;
        s.dev.push_back(0);
        s.pinned.push_back(nullptr);
        if (Status st = alloc(s.dev.back(), bytes, "the input '" + m.trainStep.args[i].name + "'"); !st)
          return st;
        if (int rc = d.memHostAlloc(&s.pinned.back(), bytes, 0))
          return d.fail("cuMemHostAlloc(" + std::to_string(bytes) + " bytes) for the input '" +
                            m.trainStep.args[i].name + "'",
                        rc);
      }
    }
    inputCapacity = n;
    return Status::ok();
  }

  /// Points `fn`'s argument buffers at the state and the inputs of `set`.
  void bind(Function &fn, const InputSet &set) {
    for (size_t a = 0; a < fn.f->args.size(); ++a) {
      int64_t in = layout.inputOf(a);
      fn.ptr[a] = in >= 0 ? set.dev[static_cast<size_t>(in)] : state[a];
    }
    for (size_t b = 0; b < fn.own.size(); ++b)
      if (fn.own[b])
        fn.ptr[fn.f->args.size() + b] = fn.own[b];
  }

  Status launch(Function &fn, int64_t n) {
    const CudaCode &code = fn.f->cuda;
    std::vector<CuDevicePtr> ptrs;
    std::vector<void *> params;
    long long batch = n;
    bool inFlight = false; // collectives the compute stream has not waited for
    // A profiled step's marks: a collective's time is what the compute
    // stream spends on it (nothing); the wait shows in the launch after it.
    bool timed = timing && &fn == &train;
    for (size_t k = 0; k < code.launches.size(); ++k) {
      const CudaLaunch &l = code.launches[k];
      if (timed)
        if (int rc = d.eventRecord(marks[k], compute))
          return d.fail("cuEventRecord", rc);
      if (l.waits && inFlight) {
        if (Status s = awaitCollectives(); !s)
          return s;
        inFlight = false;
      }
      if (l.collective != Collective::None) {
        if (Status s = collective(fn, l, n); !s)
          return s;
        inFlight = comm.get() != nullptr;
        continue;
      }
      ptrs.clear();
      params.clear();
      for (int32_t b : l.buffers)
        ptrs.push_back(fn.ptr[static_cast<size_t>(b)]);
      for (CuDevicePtr &p : ptrs)
        params.push_back(&p);
      if (l.rng)
        params.push_back(&rng);
      params.push_back(&batch);
      int64_t threads = l.threadsPerBatch * n + l.threadsFixed;
      unsigned blocks = static_cast<unsigned>(
          std::clamp<int64_t>((threads + code.blockSize - 1) / code.blockSize, 1, code.maxBlocks));
      if (int rc = d.launchKernel(fn.kernels[k], blocks, 1, 1, static_cast<unsigned>(code.blockSize), 1, 1,
                                  0, compute, params.data(), nullptr))
        return d.fail(std::string(fn.what) + ": launching " + l.kernel + " (" + l.what + ")", rc);
    }
    if (inFlight)
      if (Status s = awaitCollectives(); !s)
        return s;
    if (timed)
      if (int rc = d.eventRecord(marks.back(), compute))
        return d.fail("cuEventRecord", rc);
    return Status::ok();
  }

  /// Launch `l`, a collective: its buffer combined over the ranks on the
  /// collectives' stream once the compute stream has produced it. Alone,
  /// the mean of one rank's gradients is its own, and so is their sum.
  Status collective(Function &fn, const CudaLaunch &l, int64_t n) {
    CuDevicePtr in = fn.ptr[static_cast<size_t>(l.buffers[0])], out = fn.ptr[static_cast<size_t>(l.buffers[1])];
    int64_t count = l.threadsPerBatch * n + l.threadsFixed;
    if (!comm) {
      if (in != out)
        if (int rc = d.memcpyDtoDAsync(out, in, static_cast<size_t>(count) * 4, compute))
          return d.fail(std::string(fn.what) + ": copying " + l.what, rc);
      return Status::ok();
    }
    if (int rc = d.eventRecord(produced, compute))
      return d.fail("cuEventRecord", rc);
    if (int rc = d.streamWaitEvent(collectives, produced, 0))
      return d.fail("cuStreamWaitEvent", rc);
    if (Status s = mark(busy[current], collectives); !s)
      return s;
    double scale = l.collective == Collective::Mean ? share : 1.0;
    if (Status s = comm->allReduce(in, out, count, scale, collectives); !s)
      return Status::error(std::string(fn.what) + ": combining " + l.what + " over the ranks: " + s.message());
    return mark(busy[current], collectives);
  }

  /// The compute stream waits for every collective enqueued so far.
  Status awaitCollectives() {
    if (int rc = d.eventRecord(combined, collectives))
      return d.fail("cuEventRecord", rc);
    if (Status s = mark(waited[current], compute); !s)
      return s;
    if (int rc = d.streamWaitEvent(compute, combined, 0))
      return d.fail("cuStreamWaitEvent", rc);
    return mark(waited[current], compute);
  }

  /// Records the next timed event of `marks` on `stream` (none where the
  /// driver cannot time events).
  Status mark(Marks &marks, void *stream) {
    if (!d.eventElapsedTime)
      return Status::ok();
    if (marks.used == marks.events.size()) {
      marks.events.push_back(nullptr);
      if (int rc = d.eventCreate(&marks.events.back(), 0 /*CU_EVENT_DEFAULT: timed*/)) {
        marks.events.pop_back();
        return d.fail("cuEventCreate", rc);
      }
    }
    if (int rc = d.eventRecord(marks.events[marks.used++], stream))
      return d.fail("cuEventRecord", rc);
    return Status::ok();
  }

  /// Adds the times between the pairs of `marks` (a drained step's) to
  /// `seconds`, and frees them for the entry's next step.
  Status harvest(Marks &marks, double &seconds) {
    for (size_t k = 0; k + 1 < marks.used; k += 2) {
      float ms = 0;
      if (int rc = d.eventElapsedTime(&ms, marks.events[k], marks.events[k + 1]))
        return d.fail("cuEventElapsedTime", rc);
      seconds += ms * 1e-3;
    }
    marks.used = 0;
    return Status::ok();
  }

  /// Joins the ranks of `c` (before the first step).
  Status attach(std::unique_ptr<NcclComm> c, int64_t seconds) {
    comm = std::move(c);
    timeLimit = seconds;
    if (int rc = d.streamCreate(&collectives, 1 /*CU_STREAM_NON_BLOCKING*/))
      return d.fail("cuStreamCreate", rc);
    for (void **e : {&produced, &combined, &drained})
      if (int rc = d.eventCreate(e, 2 /*CU_EVENT_DISABLE_TIMING*/))
        return d.fail("cuEventCreate", rc);
    return Status::ok();
  }

  /// Waits for the compute stream. A rank that died leaves the others'
  /// NCCL kernels waiting for it forever, so with collectives the wait
  /// polls, watches the communicator for errors and gives up (aborting
  /// NCCL's kernels) after the run's time limit.
  Status settle(const char *what) {
    if (!comm || !d.eventQuery) {
      if (int rc = d.streamSynchronize(compute))
        return d.fail(what, rc);
      return Status::ok();
    }
    if (int rc = d.eventRecord(drained, compute))
      return d.fail("cuEventRecord", rc);
    auto begin = std::chrono::steady_clock::now();
    for (auto pause = std::chrono::microseconds(20);; pause = std::min(pause * 2, std::chrono::microseconds(2000))) {
      int rc = d.eventQuery(drained);
      if (rc == 0)
        return Status::ok();
      if (rc != 600) // CUDA_ERROR_NOT_READY
        return d.fail(what, rc);
      if (Status s = comm->asyncError(); !s) {
        comm->abort();
        return Status::error(std::string(what) + ": " + s.message());
      }
      if (std::chrono::steady_clock::now() - begin > std::chrono::seconds(timeLimit)) {
        comm->abort();
        return Status::error("no answer from the other ranks for " + std::to_string(timeLimit) +
                             " s: one of them stopped or hangs (NNC_DISTRIBUTED_TIMEOUT sets the limit)");
      }
      std::this_thread::sleep_for(pause);
    }
  }

  Status profileStep(const std::vector<HostTensor> &batch, std::vector<double> &seconds) {
    size_t n = m.trainStep.cuda.launches.size();
    if (!d.eventElapsedTime)
      return Status::error("the CUDA driver has no cuEventElapsedTime");
    if (marks.empty()) {
      marks.assign(n + 1, nullptr);
      for (void *&e : marks)
        if (int rc = d.eventCreate(&e, 0 /*CU_EVENT_DEFAULT: timed*/))
          return d.fail("cuEventCreate", rc);
    }
    double loss = 0;
    timing = true;
    Status s = stepAsync(batch, &loss);
    timing = false;
    if (!s)
      return s;
    if (Status s = drain(); !s)
      return s;
    seconds.assign(n, 0.0);
    for (size_t k = 0; k < n; ++k) {
      float ms = 0;
      if (int rc = d.eventElapsedTime(&ms, marks[k], marks[k + 1]))
        return d.fail("cuEventElapsedTime", rc);
      seconds[k] = ms * 1e-3;
    }
    return Status::ok();
  }

  /// Stages the batch in `set` and starts its upload on the copy stream;
  /// the compute stream waits for it.
  Status upload(InputSet &set, const std::vector<HostTensor> &batch) {
    if (batch.size() != inputArgs.size())
      return Status::error("the batch has " + std::to_string(batch.size()) + " tensors, the model " +
                           std::to_string(inputArgs.size()) + " inputs");
    if (set.used)
      if (int rc = d.eventSynchronize(set.copied))
        return d.fail("uploading a batch", rc);
    if (set.used)
      if (int rc = d.streamWaitEvent(copy, set.consumed, 0))
        return d.fail("cuStreamWaitEvent", rc);
    for (size_t i = 0; i < inputArgs.size(); ++i) {
      const TensorDesc &t = m.trainStep.args[inputArgs[i]];
      size_t n = batch[i].data.size();
      toWords(t, batch[i].data.data(), n, set.pinned[i]);
      if (int rc = d.memcpyHtoDAsync(set.dev[i], set.pinned[i], std::max<size_t>(n, 1) * 4, copy))
        return d.fail("uploading the input '" + t.name + "'", rc);
    }
    if (int rc = d.eventRecord(set.copied, copy))
      return d.fail("cuEventRecord", rc);
    if (int rc = d.streamWaitEvent(compute, set.copied, 0))
      return d.fail("cuStreamWaitEvent", rc);
    set.used = true;
    return Status::ok();
  }

  /// Sends the step count and rng words of the coming call from ring
  /// entry `e`.
  Status scalars(size_t e) {
    Scalars &s = ring[e];
    s.rng[0] = static_cast<int64_t>(seed);
    s.rng[1] = static_cast<int64_t>(stepCount);
    s.rng[2] = firstRow;
    if (int rc = d.memcpyHtoDAsync(rng, s.rng, sizeof s.rng, compute))
      return d.fail("sending the random seed", rc);
    if (stepArg != SIZE_MAX) {
      if (m.trainStep.args[stepArg].integer)
        s.stepWord.i = static_cast<int32_t>(stepCount);
      else
        s.stepWord.f = static_cast<float>(stepCount);
      if (int rc = d.memcpyHtoDAsync(state[stepArg], &s.stepWord, 4, compute))
        return d.fail("sending the step count", rc);
    }
    if (layout.lrArg != SIZE_MAX) {
      s.lr = static_cast<float>(lr);
      if (int rc = d.memcpyHtoDAsync(state[layout.lrArg], &s.lr, 4, compute))
        return d.fail("sending the learning rate", rc);
    }
    return Status::ok();
  }

  /// One call of `fn` on `batch` (`n` samples): buffers sized, the batch
  /// uploaded into the step's input set, the step counted when `counts`,
  /// the scalars sent from ring entry `entry`, the kernels launched.
  Status run(Function &fn, const std::vector<HostTensor> &batch, int64_t n, size_t entry, bool counts) {
    if (Status s = reserveInputs(n); !s)
      return s;
    if (Status s = reserve(fn, n); !s)
      return s;
    InputSet &set = sets[stepCount % 2];
    if (Status s = upload(set, batch); !s)
      return s;
    if (counts)
      ++stepCount;
    if (Status s = scalars(entry); !s)
      return s;
    bind(fn, set);
    if (Status s = launch(fn, n); !s)
      return s;
    if (int rc = d.eventRecord(set.consumed, compute))
      return d.fail("cuEventRecord", rc);
    return Status::ok();
  }

  Status stepAsync(const std::vector<HostTensor> &batch, double *loss) {
    if (pending.size() >= kRing)
      if (Status s = drain(); !s)
        return s;
    int64_t n = batchSize(batch);
    size_t e = next;
    current = e;
    if (Status s = run(train, batch, n, e, /*counts=*/true); !s)
      return s;
    next = (next + 1) % kRing;
    const CudaCode &code = m.trainStep.cuda;
    if (int rc = d.memcpyDtoHAsync(&ring[e].loss, train.ptr[code.results[0]], 4, compute))
      return d.fail("reading the loss", rc);
    pending.push_back({e, loss});
    // The new state: a result in a buffer of its own trades places with the
    // tensor it replaces; any other is copied over it.
    size_t nargs = m.trainStep.args.size();
    for (auto [r, a] : layout.updates) {
      size_t b = static_cast<size_t>(code.results[r]);
      bool own = b >= nargs && train.own[b - nargs] &&
                 std::count(code.results.begin(), code.results.end(), code.results[r]) == 1;
      if (own) {
        std::swap(state[a], train.own[b - nargs]);
        continue;
      }
      if (b == a)
        continue; // written in place
      size_t bytes = static_cast<size_t>(std::max<int64_t>(1, m.trainStep.args[a].numel(0))) * 4;
      if (int rc = d.memcpyDtoDAsync(state[a], train.ptr[b], bytes, compute))
        return d.fail("updating '" + m.trainStep.args[a].name + "'", rc);
    }
    return Status::ok();
  }

  /// Waits for the steps started and hands out their losses.
  Status drain() {
    if (Status s = settle("the CUDA kernels of the training step"); !s)
      return s;
    for (auto [e, loss] : pending) {
      *loss = ring[e].loss;
      if (Status s = harvest(busy[e], busySeconds); !s)
        return s;
      if (Status s = harvest(waited[e], waitedSeconds); !s)
        return s;
    }
    pending.clear();
    return Status::ok();
  }

  /// Every stream idle (before the host reads or writes device data).
  Status idle() {
    if (Status s = drain(); !s)
      return s;
    if (int rc = d.streamSynchronize(copy))
      return d.fail("the CUDA copy stream", rc);
    return Status::ok();
  }

  Status download(CuDevicePtr p, const TensorDesc &t, int64_t n, HostTensor &out) {
    out.name = t.name;
    out.shape = t.shapeAt(n);
    out.data.resize(static_cast<size_t>(t.numel(n)));
    std::vector<int32_t> words(std::max<size_t>(out.data.size(), 1));
    if (int rc = d.memcpyDtoHAsync(words.data(), p, words.size() * 4, compute))
      return d.fail("reading '" + t.name + "'", rc);
    if (int rc = d.streamSynchronize(compute))
      return d.fail("reading '" + t.name + "'", rc);
    fromWords(t, words.data(), out.data.size(), out.data.data());
    return Status::ok();
  }

  Status upload(CuDevicePtr p, const TensorDesc &t, const Floats &values) {
    std::vector<int32_t> words(std::max<size_t>(values.size(), 1));
    toWords(t, values.data(), values.size(), words.data());
    if (int rc = d.memcpyHtoDAsync(p, words.data(), words.size() * 4, compute))
      return d.fail("writing '" + t.name + "'", rc);
    if (int rc = d.streamSynchronize(compute))
      return d.fail("writing '" + t.name + "'", rc);
    return Status::ok();
  }

  Status evaluate(const std::vector<HostTensor> &batch, std::vector<HostTensor> &outputs, double &loss) {
    if (Status s = idle(); !s)
      return s;
    int64_t n = batchSize(batch);
    if (Status s = run(eval, batch, n, next, /*counts=*/false); !s)
      return s;
    const FunctionDesc &f = m.model;
    outputs.clear();
    for (size_t r = 0; r < f.results.size(); ++r) {
      HostTensor h;
      if (Status s = download(eval.ptr[f.cuda.results[r]], f.results[r], n, h); !s)
        return s;
      if (r == m.lossResult)
        loss = h.data.empty() ? 0 : h.data[0];
      else
        outputs.push_back(std::move(h));
    }
    return Status::ok();
  }

  size_t indexOf(const std::string &name) const {
    for (size_t i = 0; i < m.trainStep.args.size(); ++i)
      if (m.trainStep.args[i].name == name && m.trainStep.args[i].role != "input" && i != stepArg &&
          i != layout.lrArg)
        return i;
    return SIZE_MAX;
  }
};

CudaModel::CudaModel(const ModelDesc &m, uint64_t seed, const CudaDriver &driver)
    : impl(new Impl(m, seed, driver)) {}

CudaModel::~CudaModel() = default;

Status CudaModel::initialize() {
  Impl &x = *impl;
  if (Status s = x.start(); !s)
    return s;
  // Parameters from their initializers; the rest of the state (optimizer
  // moments, the step) starts at zero.
  for (size_t i = 0; i < x.m.trainStep.args.size(); ++i) {
    const TensorDesc &t = x.m.trainStep.args[i];
    if (t.role == "input")
      continue;
    size_t count = static_cast<size_t>(std::max<int64_t>(0, t.numel(0)));
    Floats values(count, 0.0f);
    if (i < x.m.inits.size())
      if (Status s = rt::initialize(x.m.inits[i], x.seed, i, values, count); !s)
        return Status::error("initializing '" + t.name + "': " + s.message());
    if (t.integer)
      for (float &v : values)
        v = std::round(v);
    if (Status s = x.upload(x.state[i], t, values); !s)
      return s;
  }
  return Status::ok();
}

std::string CudaModel::modelName() const { return impl->m.name; }
const std::vector<ModelInput> &CudaModel::inputs() const { return impl->layout.inputs; }
uint64_t CudaModel::steps() const { return impl->stepCount; }
void CudaModel::setSteps(uint64_t n) { impl->stepCount = n; }
double CudaModel::learningRate() const { return impl->lr; }
void CudaModel::setLearningRate(double lr) { impl->lr = lr; }
int64_t CudaModel::stepsInFlight() const { return kInFlight; }

Status CudaModel::stepAsync(const std::vector<HostTensor> &batch, double *loss) {
  return impl->stepAsync(batch, loss);
}

Status CudaModel::sync() { return impl->drain(); }

Status CudaModel::step(const std::vector<HostTensor> &batch, double &loss) {
  if (Status s = impl->stepAsync(batch, &loss); !s)
    return s;
  return impl->drain();
}

Status CudaModel::attach(std::unique_ptr<NcclComm> comm, int64_t timeLimitSeconds) {
  return impl->attach(std::move(comm), timeLimitSeconds);
}
void CudaModel::setShare(double share) { impl->share = share; }

bool CudaModel::takeDeviceTraffic(double &busy, double &waited) {
  if (!impl->comm)
    return false;
  busy = std::exchange(impl->busySeconds, 0.0);
  waited = std::exchange(impl->waitedSeconds, 0.0);
  return true;
}
void CudaModel::setFirstRow(int64_t row) { impl->firstRow = row; }

Status CudaModel::profileStep(const std::vector<HostTensor> &batch, std::vector<double> &seconds) {
  return impl->profileStep(batch, seconds);
}

Status CudaModel::evaluate(const std::vector<HostTensor> &batch, std::vector<HostTensor> &outputs,
                           double &loss) {
  return impl->evaluate(batch, outputs, loss);
}

std::vector<std::string> CudaModel::stateNames() const { return impl->layout.stateNames; }
bool CudaModel::isConstant(const std::string &name) const { return isConstantOf(impl->m, name); }
bool CudaModel::isInteger(const std::string &name) const { return isIntegerOf(impl->m, name); }

Status CudaModel::getState(const std::string &name, HostTensor &out) const {
  size_t i = impl->indexOf(name);
  if (i == SIZE_MAX)
    return Status::error("no state tensor '" + name + "'");
  if (Status s = impl->idle(); !s)
    return s;
  return impl->download(impl->state[i], impl->m.trainStep.args[i], 0, out);
}

Status CudaModel::setState(const std::string &name, const HostTensor &value) {
  size_t i = impl->indexOf(name);
  if (i == SIZE_MAX)
    return Status::error("no state tensor '" + name + "'");
  const TensorDesc &t = impl->m.trainStep.args[i];
  if (t.shapeAt(0) != value.shape)
    return Status::error("state tensor '" + name + "' does not fit");
  if (Status s = impl->idle(); !s)
    return s;
  return impl->upload(impl->state[i], t, value.data);
}

size_t CudaModel::deviceBytes() const {
  size_t n = impl->train.bytes + impl->eval.bytes;
  for (size_t i = 0; i < impl->state.size(); ++i)
    if (impl->state[i])
      n += static_cast<size_t>(std::max<int64_t>(1, impl->m.trainStep.args[i].numel(0))) * 4;
  for (size_t i : impl->inputArgs)
    n += 2 * static_cast<size_t>(std::max<int64_t>(1, impl->m.trainStep.args[i].numel(impl->inputCapacity))) * 4;
  return n;
}
