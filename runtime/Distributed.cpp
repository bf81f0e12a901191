//===- Distributed.cpp - data-parallel training over MPI ------------------===//
//
// Open MPI through dlopen: its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM,
// ...) are the addresses of exported globals (`ompi_mpi_comm_world`, ...),
// so looking those up gives the same values mpi.h's macros would, and no
// MPI header or library is needed to build nnc. Errors return codes
// (MPI_ERRORS_RETURN) so that a failed collective becomes a message.
//
//===----------------------------------------------------------------------===//

#include "runtime/Distributed.h"

#include "runtime/System.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <dlfcn.h>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

using namespace nnc::rt;

namespace {

/// The entry points and handles of the loaded MPI library.
struct Mpi {
  using Handle = void *;
  int (*initialized)(int *) = nullptr;
  int (*initThread)(int *, char ***, int, int *) = nullptr;
  int (*finalize)() = nullptr;
  int (*finalized)(int *) = nullptr;
  int (*commRank)(Handle, int *) = nullptr;
  int (*commSize)(Handle, int *) = nullptr;
  int (*setErrhandler)(Handle, Handle) = nullptr;
  int (*allreduce)(const void *, void *, int, Handle, Handle, Handle) = nullptr;
  int (*errorString)(int, char *, int *) = nullptr;
  Handle world = nullptr, f32 = nullptr, f64 = nullptr, sum = nullptr, max = nullptr,
         errorsReturn = nullptr;

  /// Loads the library; an empty string or why not.
  std::string load() {
    // NNC_MPI_LIBRARY names another build of Open MPI (a cluster's own).
    const char *given = std::getenv("NNC_MPI_LIBRARY");
    std::vector<const char *> names = {"libmpi.so.40", "libmpi.so"};
    if (given && *given)
      names = {given};
    void *lib = nullptr;
    std::string why;
    for (const char *n : names) {
      // RTLD_GLOBAL: Open MPI's own plugins resolve symbols of libmpi.
      lib = dlopen(n, RTLD_NOW | RTLD_GLOBAL);
      if (lib)
        break;
      if (why.empty())
        why = dlerror();
    }
    if (!lib)
      return "cannot load Open MPI's library (" + why + "); install it (`apt-get install openmpi-bin`) or name it "
             "in NNC_MPI_LIBRARY";
    std::string missing;
    auto get = [&](const char *name) {
      void *p = dlsym(lib, name);
      if (!p)
        missing += std::string(missing.empty() ? "" : ", ") + name;
      return p;
    };
    auto fn = [&](auto &slot, const char *name) { slot = reinterpret_cast<std::decay_t<decltype(slot)>>(get(name)); };
    fn(initialized, "MPI_Initialized");
    fn(initThread, "MPI_Init_thread");
    fn(finalize, "MPI_Finalize");
    fn(finalized, "MPI_Finalized");
    fn(commRank, "MPI_Comm_rank");
    fn(commSize, "MPI_Comm_size");
    fn(setErrhandler, "MPI_Comm_set_errhandler");
    fn(allreduce, "MPI_Allreduce");
    fn(errorString, "MPI_Error_string");
    world = get("ompi_mpi_comm_world");
    f32 = get("ompi_mpi_float");
    f64 = get("ompi_mpi_double");
    sum = get("ompi_mpi_op_sum");
    max = get("ompi_mpi_op_max");
    errorsReturn = get("ompi_mpi_errors_return");
    if (!missing.empty())
      return "the MPI library loaded is not Open MPI's (it lacks " + missing + ")";
    return "";
  }

  std::string describe(int code) const {
    char text[512];
    int len = 0;
    if (errorString && errorString(code, text, &len) == 0)
      return std::string(text, static_cast<size_t>(std::clamp(len, 0, 511)));
    return "MPI error " + std::to_string(code);
  }
};

Mpi mpi;
std::unique_ptr<Group> group;
bool joined = false;

/// An environment variable as an integer, or -1.
int envInt(const char *name) {
  const char *v = std::getenv(name);
  if (!v || !*v)
    return -1;
  char *end = nullptr;
  long x = std::strtol(v, &end, 10);
  return *end || x < 0 || x > (1 << 24) ? -1 : static_cast<int>(x);
}

// MPI counts are ints: large buffers go in pieces.
constexpr int64_t kPiece = int64_t(1) << 30;

template <typename T>
Status reduce(T *data, int64_t n, Mpi::Handle type, Mpi::Handle op, const char *what) {
  for (int64_t at = 0; at < n; at += kPiece) {
    int count = static_cast<int>(std::min(kPiece, n - at));
    // MPI_IN_PLACE is (void *)1 in Open MPI.
    if (int rc = mpi.allreduce(reinterpret_cast<void *>(1), data + at, count, type, op, mpi.world); rc != 0)
      return Status::error(std::string("MPI_Allreduce (") + what + " of " + std::to_string(n) +
                           " values) failed: " + mpi.describe(rc));
  }
  return Status::ok();
}

} // namespace

bool nnc::rt::parseDistributedMode(const std::string &text, DistributedMode &mode) {
  if (text == "auto")
    mode = DistributedMode::Auto;
  else if (text == "none")
    mode = DistributedMode::None;
  else if (text == "mpi")
    mode = DistributedMode::Mpi;
  else if (text == "nccl")
    mode = DistributedMode::Nccl;
  else
    return false;
  return true;
}

LaunchInfo nnc::rt::detectLaunch() {
  LaunchInfo l;
  struct Source {
    const char *size, *rank, *launcher;
  };
  // Open MPI's mpirun, MPICH's Hydra (PMI), then a Slurm job step (srun;
  // SLURM_STEP_ID tells it from a batch script's own process).
  const Source sources[] = {{"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "mpirun"},
                            {"PMI_SIZE", "PMI_RANK", "a PMI launcher"},
                            {"SLURM_NTASKS", "SLURM_PROCID", "srun"}};
  for (const Source &s : sources) {
    int size = envInt(s.size), rank = envInt(s.rank);
    if (size < 1 || rank < 0 || rank >= size)
      continue;
    if (std::strcmp(s.launcher, "srun") == 0 && !std::getenv("SLURM_STEP_ID"))
      continue;
    l.size = size;
    l.rank = rank;
    l.launcher = s.launcher;
    break;
  }
  for (const char *name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (int local = envInt(name); local >= 1) {
      l.local = std::min(local, l.size);
      break;
    }
  for (const char *name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (int r = envInt(name); r >= 0) {
      l.localRank = r;
      break;
    }
  return l;
}

int64_t nnc::rt::defaultThreadsPerRank(const LaunchInfo &launch) {
  return std::max<int64_t>(1, availableCpus() / std::max(1, launch.local));
}

Group *Group::current() { return group.get(); }

Status Group::join(DistributedMode mode) {
  if (joined)
    return Status::ok();
  joined = true;
  LaunchInfo launch = detectLaunch();
  if (mode == DistributedMode::None || (mode == DistributedMode::Auto && launch.size <= 1))
    return Status::ok();
  if (std::string why = mpi.load(); !why.empty())
    return Status::error(launch.launcher.empty()
                             ? std::string(mode == DistributedMode::Nccl ? "--distributed=nccl" : "--distributed=mpi") +
                                   ": " + why
                             : "started by " + launch.launcher + " as rank " + std::to_string(launch.rank) + " of " +
                                   std::to_string(launch.size) + ", but " + why);
  int ready = 0, provided = 0;
  mpi.initialized(&ready);
  // Two threads call MPI, never at once: the communication thread while a
  // step runs, the training loop's between steps (MPI_THREAD_SERIALIZED).
  constexpr int kThreadSerialized = 2;
  if (!ready)
    if (int rc = mpi.initThread(nullptr, nullptr, kThreadSerialized, &provided); rc != 0)
      return Status::error("MPI_Init_thread failed: " + mpi.describe(rc));
  mpi.setErrhandler(mpi.world, mpi.errorsReturn);
  int rank = 0, size = 1;
  mpi.commRank(mpi.world, &rank);
  mpi.commSize(mpi.world, &size);
  // A library without thread support gets its calls on the step's thread.
  group.reset(new Group(rank, size, ready || provided >= kThreadSerialized));
  return Status::ok();
}

void Group::leave() {
  if (!group)
    return;
  if (!group->wait().isOk() && group->stuck_) {
    // The thread is inside an MPI call that will not return: leave it and
    // MPI as they are, and let the process end.
    (void)group->worker_.release();
    (void)group.release();
    return;
  }
  group->worker_.reset(); // the thread ends before MPI does
  int done = 0;
  mpi.finalized(&done);
  if (!done)
    mpi.finalize();
  group.reset();
}

/// The communication thread: every MPI call after MPI_Init runs on it, so
/// that a rank waits for the others with a time limit (a rank that hangs
/// never hangs the rest). It sends buckets of what compiled code started.
/// Every rank must make the same MPI calls in the same order, so buckets
/// are cut by a rule the timing cannot change: in the order the step
/// starts combinations, closed when they reach kBucketFloats, or when the
/// step waits.
struct Group::Worker {
  struct Job {
    float *data;
    int64_t n;
  };
  using Bucket = std::vector<Job>;
  /// A bucket of gradients, or another call (the training loop's).
  struct Work {
    Bucket bucket;
    std::function<Status()> call;
  };
  std::mutex mu;
  std::condition_variable ready, drained;
  std::deque<Work> queue;
  Bucket open; // filled by the step's thread alone
  int64_t openFloats = 0;
  uint64_t started = 0, finished = 0; // buckets
  bool stopping = false;
  std::string error;
  Traffic traffic;
  std::vector<float> staging;
  std::thread thread;

  // A bucket's size: 1 MB keeps a call long enough to pay its latency and
  // short enough to start while most of the backward pass is still ahead
  // (DDP's first bucket is 1 MB too).
  static constexpr int64_t kBucketFloats = int64_t(1) << 18;

  /// Adds a job to the open bucket; a full bucket goes to the thread.
  void add(float *data, int64_t n) {
    open.push_back({data, n});
    openFloats += n;
    if (openFloats >= kBucketFloats)
      close();
  }
  void close() {
    if (open.empty())
      return;
    push(Work{std::move(open), nullptr});
    open.clear();
    openFloats = 0;
  }
  void push(Work w) {
    {
      std::lock_guard<std::mutex> lock(mu);
      queue.push_back(std::move(w));
      ++started;
    }
    ready.notify_one();
  }

  Worker() : thread([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    ready.notify_all();
    thread.join();
  }

  void loop() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      ready.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty())
        return;
      Work w = std::move(queue.front());
      queue.pop_front();
      int64_t floats = 0;
      for (const Job &j : w.bucket)
        floats += j.n;
      lock.unlock();
      auto begin = std::chrono::steady_clock::now();
      Status s = w.call ? w.call() : send(w.bucket, floats);
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
      lock.lock();
      if (!w.call) {
        traffic.busy += seconds;
        traffic.calls += 1;
        traffic.bytes += floats * static_cast<int64_t>(sizeof(float));
      }
      if (!s && error.empty())
        error = s.message();
      ++finished;
      drained.notify_all();
    }
  }

  /// One MPI call for the bucket: a lone job in place, several packed.
  Status send(const Bucket &bucket, int64_t floats) {
    if (bucket.size() == 1)
      return reduce(bucket[0].data, bucket[0].n, mpi.f32, mpi.sum, "sum");
    staging.resize(static_cast<size_t>(floats));
    float *at = staging.data();
    for (const Job &j : bucket)
      at = std::copy(j.data, j.data + j.n, at);
    if (Status s = reduce(staging.data(), floats, mpi.f32, mpi.sum, "sum"); !s)
      return s;
    const float *from = staging.data();
    for (const Job &j : bucket) {
      std::copy(from, from + j.n, j.data);
      from += j.n;
    }
    return Status::ok();
  }
};

Group::Group(int rank, int size, bool background)
    : rank_(rank), size_(size), share_(1.0 / size), worker_(background ? new Worker : nullptr) {}

Group::~Group() = default;

void Group::start(float *data, int64_t n) {
  if (!worker_) {
    if (Status s = reduce(data, n, mpi.f32, mpi.sum, "sum"); !s)
      keepError(s.message());
    return;
  }
  worker_->add(data, n);
}

int64_t nnc::rt::distributedTimeLimit() {
  const char *v = std::getenv("NNC_DISTRIBUTED_TIMEOUT");
  long s = v && *v ? std::strtol(v, nullptr, 10) : 0;
  return s > 0 ? s : 300;
}

static std::chrono::seconds timeLimit() { return std::chrono::seconds(distributedTimeLimit()); }

Status Group::wait() {
  std::string error;
  if (stuck_) // the first message says why
    return Status::error(kept_.empty() ? "the other ranks stopped answering" : kept_);
  if (worker_) {
    worker_->close();
    auto begin = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> lock(worker_->mu);
    auto limit = timeLimit();
    if (!worker_->drained.wait_for(lock, limit, [&] { return worker_->finished == worker_->started; })) {
      stuck_ = true;
      kept_ = "no answer from the other ranks for " + std::to_string(limit.count()) +
              " s: one of them stopped or hangs (NNC_DISTRIBUTED_TIMEOUT sets the limit)";
      return Status::error(kept_);
    }
    worker_->traffic.waited += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    error.swap(worker_->error);
  }
  if (error.empty())
    error.swap(kept_);
  kept_.clear();
  return error.empty() ? Status::ok() : Status::error(error);
}

Group::Traffic Group::takeTraffic() {
  if (!worker_)
    return {};
  std::lock_guard<std::mutex> lock(worker_->mu);
  Traffic t = worker_->traffic;
  worker_->traffic = {};
  return t;
}

// The training loop's own calls come between steps, after what the step
// started, on the same thread (MPI_THREAD_SERIALIZED).
Status Group::call(const std::function<Status()> &f) {
  if (!worker_)
    return f();
  if (Status s = wait(); !s)
    return s;
  Status result;
  worker_->push(Worker::Work{{}, [&] {
                               result = f();
                               return Status::ok();
                             }});
  if (Status s = wait(); !s)
    return s;
  return result;
}
Status Group::sum(float *data, int64_t n) {
  return call([&] { return reduce(data, n, mpi.f32, mpi.sum, "sum"); });
}
Status Group::sum(double *data, int64_t n) {
  return call([&] { return reduce(data, n, mpi.f64, mpi.sum, "sum"); });
}
Status Group::max(double *data, int64_t n) {
  return call([&] { return reduce(data, n, mpi.f64, mpi.max, "max"); });
}

Status Group::same(uint64_t value, bool &equal) {
  // The maxima of (v, -v) are (max, -min): equal when max == min. Doubles
  // hold 32-bit halves exactly.
  double v[4] = {double(value >> 32), double(value & 0xffffffffu), -double(value >> 32),
                 -double(value & 0xffffffffu)};
  if (Status s = max(v, 4); !s)
    return s;
  equal = v[0] == -v[2] && v[1] == -v[3];
  return Status::ok();
}

void nnc_all_reduce(int64_t in, int64_t out, int64_t n, int64_t sum) {
  const auto *src = reinterpret_cast<const float *>(in);
  auto *dst = reinterpret_cast<float *>(out);
  Group *g = Group::current();
  if (!g) {
    if (src != dst)
      std::memmove(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  // Each rank's term of the weighted mean is its value times its share;
  // the sum over the ranks is then the mean over the global batch.
  // A rank without rows of its own (share 0) adds nothing to a sum either.
  float share = sum ? (g->share() > 0 ? 1.0f : 0.0f) : static_cast<float>(g->share());
  for (int64_t i = 0; i < n; ++i)
    dst[i] = src[i] * share;
  g->start(dst, n);
}

void nnc_all_reduce_wait() {
  // Errors surface at the training loop's next call (Group::wait).
  if (Group *g = Group::current()) {
    Status s = g->wait();
    if (!s)
      g->keepError(s.message());
  }
}

uint64_t nnc::rt::hashBytes(uint64_t h, const void *data, size_t n) {
  const auto *p = static_cast<const unsigned char *>(data);
  for (size_t i = 0; i < n; ++i)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

Shard nnc::rt::shardOf(int64_t n, int rank, int ranks) {
  Shard s;
  s.from = n * rank / ranks;
  s.to = n * (rank + 1) / ranks;
  s.share = n > 0 ? static_cast<double>(s.to - s.from) / static_cast<double>(n) : 0.0;
  if (s.to == s.from)
    s.to = s.from + 1;
  return s;
}

Status nnc::rt::checkSameRun(const std::vector<std::pair<std::string, std::string>> &settings,
                             const std::string &model) {
  Group *g = Group::current();
  if (!g)
    return Status::ok();
  uint64_t h = kHashStart;
  auto mix = [&](const std::string &text) { // a separator after each text
    h = hashBytes(h, text.data(), text.size() + 1);
  };
  mix(model);
  for (const auto &[k, v] : settings)
    mix(k + "=" + v);
  bool equal = false;
  if (Status s = g->same(h, equal); !s)
    return s;
  if (!equal)
    return Status::error("the ranks of this run differ in their model or settings (model, batch, epochs, seed, "
                         "optimizer, data); every rank must run the same training");
  return Status::ok();
}
