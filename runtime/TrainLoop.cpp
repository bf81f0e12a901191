//===- TrainLoop.cpp - the epoch loop --------------------------------------===//
//
// Batches come from a BatchLoader (on a thread of its own when transforms
// make them costly, so that they are made while the previous step runs);
// the learning rate follows the schedule; each epoch is scored, logged,
// checkpointed, and checked for early stopping.
//
//===----------------------------------------------------------------------===//

#include "runtime/Training.h"

#include "runtime/Distributed.h"
#include "runtime/Progress.h"
#include "runtime/Schedule.h"
#include "runtime/System.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <numeric>
#include <thread>
#include <unistd.h>

using namespace nnc;
using namespace nnc::rt;

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string percent(double a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * a);
  return buf;
}

/// A double as text that reads back to the same value.
std::string exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string shortNumber(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

/// Makes batches: on the calling thread, or (with `background`) on a
/// thread of its own, one batch ahead. Two buffers alternate, so the batch
/// a step reads is never the one being made.
class BatchLoader {
public:
  BatchLoader(const Table &t, const std::vector<ModelInput> &inputs, const Pipeline *pipeline, bool background)
      : t(t), inputs(inputs), pipeline(pipeline) {
    if (background)
      worker = std::thread([this] { run(); });
  }
  ~BatchLoader() {
    if (worker.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu);
        quit = true;
      }
      cv.notify_all();
      worker.join();
    }
  }
  /// Starts making the batch of rows `idx` of epoch `epoch`.
  void request(std::vector<int64_t> idx, int64_t epoch) {
    std::unique_lock<std::mutex> lock(mu);
    next = std::move(idx);
    nextEpoch = epoch;
    pending = true;
    ready = false;
    lock.unlock();
    cv.notify_all();
  }
  /// The batch requested last, once it is made (or why it could not be).
  Status take(std::vector<HostTensor> *&batch) {
    auto begin = Clock::now();
    if (!worker.joinable()) {
      make();
    } else {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return ready; });
    }
    waited += since(begin);
    batch = &buffers[filled];
    filled ^= 1; // the next batch goes to the other buffer
    return status;
  }
  double waited = 0; // seconds the training loop waited for batches
  double busy = 0;   // seconds spent making them

private:
  void make() {
    auto begin = Clock::now();
    status = batchInto(t, inputs, next, buffers[filled], pipeline, nextEpoch);
    busy += since(begin);
    pending = false;
    ready = true;
  }
  void run() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return quit || pending; });
      if (quit)
        return;
      lock.unlock();
      auto begin = Clock::now();
      Status s = batchInto(t, inputs, next, buffers[filled], pipeline, nextEpoch);
      lock.lock();
      status = s;
      busy += since(begin);
      pending = false;
      ready = true;
      cv.notify_all();
    }
  }
  const Table &t;
  const std::vector<ModelInput> &inputs;
  const Pipeline *pipeline;
  std::vector<HostTensor> buffers[2];
  int filled = 0;
  std::vector<int64_t> next;
  int64_t nextEpoch = 0;
  bool pending = false, ready = false, quit = false;
  Status status;
  std::mutex mu;
  std::condition_variable cv;
  std::thread worker;
};

/// One epoch's figures, for the line printed and the metrics file.
struct EpochRecord {
  int64_t epoch = 0;
  uint64_t step = 0;
  double lr = 0, trainLoss = 0, seconds = 0, dataShare = 0;
  /// A data-parallel run: seconds the gradients spent in MPI, and seconds
  /// the steps waited for them (the rest overlapped the backward pass).
  double commSeconds = 0, commWaited = 0;
  Score score;
};

/// The metrics file: CSV, or JSON lines when its name ends in .json or
/// .jsonl. A run id and the run's settings come first.
class MetricsLog {
public:
  Status open(const TrainOptions &o, const std::string &run, const std::string &split) {
    path = o.metrics;
    this->run = run;
    this->split = split;
    json = path.size() >= 5 && (path.compare(path.size() - 5, 5, ".json") == 0 ||
                                (path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0));
    bool append = o.append || o.resume;
    bool fresh = !append || !std::ifstream(path).good();
    out.open(path, append ? std::ios::app : std::ios::trunc);
    if (!out)
      return Status::error(path + ": cannot write the metrics (" + std::strerror(errno) + ")");
    std::string settings = "{\"run\": \"" + run + "\", \"settings\": {";
    for (size_t i = 0; i < o.settings.size(); ++i)
      settings += (i ? ", " : "") + quote(o.settings[i].first) + ": " + quote(o.settings[i].second);
    settings += "}}\n";
    if (json) {
      out << settings;
    } else {
      // A CSV file stays one table (header first); each run's settings go
      // beside it, one JSON line per run.
      std::string side = path + ".runs.jsonl";
      std::ofstream runs(side, append ? std::ios::app : std::ios::trunc);
      errno = 0;
      if (!(runs << settings) || !runs.flush())
        return Status::error(side + ": cannot write the run's settings (" +
                             std::string(errno ? std::strerror(errno) : "write error") + ")");
      if (fresh)
        out << "run,epoch,step,lr,train_loss,eval_set,eval_loss,eval_accuracy,eval_top_k,eval_mse,eval_mae,eval_r2,"
               "seconds,samples_per_second\n";
    }
    return flush();
  }
  Status write(const EpochRecord &r, int64_t samples) {
    const Score &s = r.score;
    double rate = static_cast<double>(samples) / std::max(r.seconds, 1e-9);
    auto opt = [](bool has, double v) { return has ? shortNumber(v) : std::string(); };
    if (json) {
      out << "{\"run\": \"" << run << "\", \"epoch\": " << r.epoch << ", \"step\": " << r.step
          << ", \"lr\": " << shortNumber(r.lr) << ", \"train_loss\": " << exact(r.trainLoss) << ", \"" << split
          << "_loss\": " << exact(s.loss);
      if (s.hasAccuracy)
        out << ", \"" << split << "_accuracy\": " << shortNumber(s.accuracy);
      if (s.k)
        out << ", \"" << split << "_top" << s.k << "\": " << shortNumber(s.topK);
      if (s.hasRegression)
        out << ", \"" << split << "_mse\": " << shortNumber(s.mse) << ", \"" << split
            << "_mae\": " << shortNumber(s.mae) << ", \"" << split << "_r2\": " << shortNumber(s.r2);
      out << ", \"seconds\": " << shortNumber(r.seconds) << ", \"samples_per_second\": " << shortNumber(rate)
          << "}\n";
    } else {
      out << run << "," << r.epoch << "," << r.step << "," << shortNumber(r.lr) << "," << exact(r.trainLoss) << ","
          << split << "," << exact(s.loss) << "," << opt(s.hasAccuracy, s.accuracy) << "," << opt(s.k > 0, s.topK) << ","
          << opt(s.hasRegression, s.mse) << "," << opt(s.hasRegression, s.mae) << ","
          << opt(s.hasRegression, s.r2) << "," << shortNumber(r.seconds) << "," << shortNumber(rate) << "\n";
    }
    return flush();
  }
  bool isOpen() const { return out.is_open(); }

private:
  // Every write is checked: a full disk must not pass as success.
  Status flush() {
    errno = 0;
    if (!out.flush())
      return Status::error(path + ": writing the metrics failed (" +
                           std::string(errno ? std::strerror(errno) : "write error") + ")");
    return Status::ok();
  }
  static std::string quote(const std::string &s) {
    std::string q = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\')
        q += '\\';
      if (static_cast<unsigned char>(c) >= 0x20)
        q += c;
    }
    return q + "\"";
  }
  std::ofstream out;
  std::string path, run, split;
  bool json = false;
};

/// A run id: the start time and the process, e.g. 20261207-014502-1a2b.
std::string runId() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d%02d%02d-%02d%02d%02d-%04x", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<unsigned>(getpid()) & 0xffff);
  return buf;
}

/// The scored set's part of an epoch line: "loss 0.1234, accuracy 97.50%".
std::string describeScore(const Score &s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "loss %.4f", s.loss);
  std::string text = buf;
  if (s.hasAccuracy) {
    text += ", accuracy " + percent(s.accuracy);
    if (s.k)
      text += ", top-" + std::to_string(s.k) + " " + percent(s.topK);
  }
  if (s.hasRegression) {
    std::snprintf(buf, sizeof buf, ", mse %.4g, mae %.4g, r2 %.4f", s.mse, s.mae, s.r2);
    text += buf;
  }
  return text;
}

/// Checkpoints are written by rank 0 alone (every rank holds the same
/// state); the others wait for it, so that no rank runs ahead of a file
/// it may resume from.
Status saveByLeader(Trainable &m, const std::string &path, int64_t epoch, uint64_t seed, const Metadata &extra) {
  Status written = isLeader() ? saveState(m, path, epoch, seed, extra) : Status::ok();
  Group *g = Group::current();
  if (!g)
    return written;
  double failed = written ? 0 : 1;
  if (Status s = g->max(&failed, 1); !s)
    return s;
  if (!written)
    return written;
  return failed ? Status::error("rank 0 could not write " + path) : Status::ok();
}

/// The rows of global batch `k` (`global` rows of `order`) this process
/// trains on: all of them, or in a data-parallel run this rank's part of
/// near-equal contiguous parts, and its share of the batch (a rank left
/// without rows by a last batch smaller than the ranks gets one row at
/// share 0, so that every rank runs the same steps), and where its part
/// starts in the global batch.
std::vector<int64_t> shardRows(const std::vector<int64_t> &order, int64_t k, int64_t global, double &share,
                               int64_t &first) {
  int64_t count = static_cast<int64_t>(order.size());
  int64_t begin = k * global, n = std::min(count, (k + 1) * global) - begin;
  share = 1;
  first = 0;
  if (Group *g = Group::current()) {
    Shard s = shardOf(n, g->rank(), g->size());
    share = s.share;
    first = s.from;
    begin += s.from;
    n = s.to - s.from;
  }
  return std::vector<int64_t>(order.begin() + begin, order.begin() + begin + n);
}

/// A step's loss over the whole global batch: the ranks' losses summed
/// (a summed loss) or weighted by their shares (a mean).
/// A signal that stops one rank stops them all after the same step
/// (`sig`: this rank's signal in, the run's out), so that every rank runs
/// the same collectives.
Status globalLoss(double &loss, double share, bool summed, int &sig) {
  Group *g = Group::current();
  if (!g)
    return Status::ok();
  double v[2] = {summed ? (share > 0 ? loss : 0) : loss * share, sig ? 1.0 : 0.0};
  if (Status s = g->sum(v, 2); !s)
    return s;
  loss = v[0];
  if (v[1] > 0 && !sig)
    sig = SIGTERM;
  return Status::ok();
}

/// --verify-replicas: whether every rank holds the same state (a hash of
/// every state tensor's bytes).
Status verifyReplicas(Trainable &m, int64_t epoch) {
  Group *g = Group::current();
  if (!g)
    return Status::ok();
  uint64_t h = kHashStart;
  for (const std::string &name : m.stateNames()) {
    HostTensor t;
    if (Status s = m.getState(name, t); !s)
      return s;
    h = hashBytes(h, t.data.data(), t.data.size() * sizeof(float));
  }
  bool equal = false;
  if (Status s = g->same(h, equal); !s)
    return s;
  if (!equal)
    return Status::error("--verify-replicas: the ranks' parameters and optimizer state differ after epoch " +
                         std::to_string(epoch));
  return Status::ok();
}

/// The rows of one step: in a data-parallel run, every rank's batch.
int64_t globalBatch(const TrainOptions &o) { return o.batch * (Group::current() ? Group::current()->size() : 1); }

/// What is checked and cut before any work, so that a bad path or setting
/// fails in a second, not after the first epoch: the --limit subset, the
/// output paths, and a onecycle schedule long enough for the run.
Status prepareRun(BoundData &data, const TrainOptions &o) {
  if (o.limit > 0 && o.limit < data.train.count) {
    std::vector<int64_t> first(o.limit);
    std::iota(first.begin(), first.end(), 0);
    data.train = gather(data.train, first);
  }
  for (const auto &[path, what] : {std::pair{o.checkpoint, "the checkpoint"}, std::pair{o.saveBest, "the best model"}})
    if (!path.empty())
      if (Status s = checkOutputPath(path, what); !s)
        return s;
  int64_t global = globalBatch(o), steps = (data.train.count + global - 1) / global;
  double total = o.schedule.name == "onecycle" ? o.schedule.number("total_steps") : 0;
  if (total > 0 && total < static_cast<double>(o.epochs * steps))
    return Status::error("schedule onecycle: total_steps " + shortNumber(total) + " is fewer than the " +
                         std::to_string(o.epochs * steps) + " steps of " + std::to_string(o.epochs) + " epochs");
  return Status::ok();
}

/// "64", or in a data-parallel run "64 (32 on each of 2 ranks)".
std::string batchText(int64_t batch) {
  Group *g = Group::current();
  if (!g)
    return std::to_string(batch);
  return std::to_string(batch * g->size()) + " (" + std::to_string(batch) + " on each of " +
         std::to_string(g->size()) + " ranks)";
}

/// Early stopping's state: the best value of the monitored metric so far.
struct Best {
  bool seen = false;
  double value = 0;
  int64_t epoch = 0, wait = 0;
};

/// Where a resumed run starts: the checkpoint's state restored, the epoch
/// (and step, when a signal stopped it inside one) after it, and early
/// stopping's record.
Status resume(Trainable &m, const TrainOptions &o, int64_t steps, int64_t &startEpoch, int64_t &startStep,
              double &startLoss, Best &best) {
  Metadata meta;
  if (Status s = restoreState(m, o.checkpoint, meta); !s)
    return s;
  startEpoch = std::strtoll(meta["nnc.epoch"].c_str(), nullptr, 10) + 1;
  // A run stopped by a signal saved where it was inside the next epoch.
  int64_t done = 0;
  if (Status s = metaInteger(o.checkpoint, meta, "nnc.epoch_step", steps, done); !s)
    return s;
  if (done > 0) {
    // Steps count global batches: the rest of the epoch is the same only
    // with the same global batch (the ranks times their batch).
    int64_t global = globalBatch(o), saved = global;
    if (meta.count("nnc.global_batch"))
      if (Status s = metaInteger(o.checkpoint, meta, "nnc.global_batch", int64_t(1) << 40, saved); !s)
        return s;
    if (saved != global)
      return Status::error(o.checkpoint + ": the run stopped inside epoch " + std::to_string(startEpoch) +
                           " with a global batch of " + std::to_string(saved) + " rows; resuming it needs the same "
                           "(now " + std::to_string(global) + ": ranks x --batch)");
    startStep = done;
    startLoss = std::strtod(meta["nnc.epoch_loss"].c_str(), nullptr);
    if (!std::isfinite(startLoss))
      return Status::error(o.checkpoint + ": metadata nnc.epoch_loss is '" + meta["nnc.epoch_loss"] +
                           "', not a finite number");
  }
  if (meta.count("nnc.best")) { // early stopping carries on where it was
    best.seen = true;
    best.value = std::strtod(meta["nnc.best"].c_str(), nullptr);
    if (Status s = metaInteger(o.checkpoint, meta, "nnc.best_epoch", kMaxEpochs, best.epoch); !s)
      return s;
    if (Status s = metaInteger(o.checkpoint, meta, "nnc.patience_wait", kMaxEpochs, best.wait); !s)
      return s;
  }
  if (startEpoch > o.epochs)
    return Status::error(o.checkpoint + ": the checkpoint is at epoch " + std::to_string(startEpoch - 1) +
                         ", and --epochs " + std::to_string(o.epochs) + " trains no further (give --epochs above " +
                         std::to_string(startEpoch - 1) + ")");
  if (o.verbosity >= 1 && isLeader()) {
    if (startStep > 0)
      std::printf("resuming in epoch %lld after step %lld (step %llu)\n", static_cast<long long>(startEpoch),
                  static_cast<long long>(startStep), static_cast<unsigned long long>(m.steps()));
    else
      std::printf("resuming after epoch %lld (step %llu)\n", static_cast<long long>(startEpoch - 1),
                  static_cast<unsigned long long>(m.steps()));
  }
  return Status::ok();
}

/// Saves where a signal stopped the run (after step `step` of `steps`) and
/// says how to resume.
Status stopped(Trainable &m, const TrainOptions &o, int sig, int64_t epoch, int64_t step, int64_t steps,
               const Metadata &extra) {
  std::string where = "epoch " + std::to_string(epoch) + ", step " + std::to_string(step) + " of " +
                      std::to_string(steps);
  const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
  if (!isLeader())
    return o.checkpoint.empty() ? Status::ok() : saveByLeader(m, o.checkpoint, 0, 0, extra);
  if (o.checkpoint.empty()) {
    std::fprintf(stderr, "%s: interrupted (%s) at %s; nothing saved (no --checkpoint)\n", o.tool.c_str(), name,
                 where.c_str());
  } else {
    if (Status s = saveByLeader(m, o.checkpoint, step == steps ? epoch : epoch - 1, o.seed, extra); !s)
      return s;
    std::fprintf(stderr, "%s: interrupted (%s) at %s; saved %s\n", o.tool.c_str(), name, where.c_str(),
                 o.checkpoint.c_str());
    if (!o.resumeCommand.empty())
      std::fprintf(stderr, "resume with: %s\n", o.resumeCommand.c_str());
  }
  std::fflush(stdout);
  return Status::ok();
}

/// An epoch's line: "epoch 3/10: loss 0.1234, lr 0.01; test: loss ...; 1.2 s, ...".
std::string epochLine(const EpochRecord &r, const TrainOptions &o, const BoundData &data, int64_t count,
                      bool scheduled, bool background) {
  char head[160];
  std::snprintf(head, sizeof head, "epoch %lld/%lld: loss %.4f", static_cast<long long>(r.epoch),
                static_cast<long long>(o.epochs), r.trainLoss);
  std::string line = head;
  if (scheduled)
    line += ", lr " + shortNumber(r.lr);
  line += data.hasTest ? "; " + data.testName + ": " : "; on the training set: ";
  line += describeScore(r.score);
  char tail[160];
  std::snprintf(tail, sizeof tail, "; %.1f s, %.0f samples/s", r.seconds, static_cast<double>(count) / r.seconds);
  line += tail;
  if (o.verbosity >= 2)
    line += "; data " + percent(r.dataShare) + " of the time" + (background ? " (made in the background)" : "");
  if (o.verbosity >= 2 && Group::current())
    line += "; communication " + percent(r.commSeconds / std::max(r.seconds, 1e-9)) + " of the time, " +
            percent(r.commWaited / std::max(r.seconds, 1e-9)) + " waited for (the rest behind the backward pass)";
  return line;
}

} // namespace

int rt::train(Trainable &m, BoundData &data, const TrainOptions &o) {
  auto fail = [&](const std::string &message) {
    std::fflush(stdout);
    std::string rank = isLeader() ? "" : "rank " + std::to_string(Group::current()->rank()) + ": ";
    std::fprintf(stderr, "%s: error: %s%s\n", o.tool.c_str(), rank.c_str(), message.c_str());
    return 1;
  };
  if (Status s = prepareRun(data, o); !s)
    return fail(s.message());
  const int64_t count = data.train.count, batch = o.batch;
  const int64_t global = globalBatch(o), steps = (count + global - 1) / global;
  const bool loud = o.verbosity >= 1 && isLeader();
  const std::string split = data.hasTest ? data.testName : "train_eval";
  const double baseLr = m.learningRate();
  const bool scheduled = !o.schedule.name.empty();
  int64_t startEpoch = 1, startStep = 0;
  double startLoss = 0;
  Best best;
  if (o.resume)
    if (Status st = resume(m, o, steps, startEpoch, startStep, startLoss, best); !st)
      return fail(st.message());
  MetricsLog metrics;
  std::string run = runId();
  if (!o.metrics.empty() && isLeader())
    if (Status s = metrics.open(o, run, split); !s)
      return fail(s.message());

  if (loud)
    std::printf("training %s: %lld sample%s, %lld epoch%s, batch %s, seed %llu (%s)\n", m.modelName().c_str(),
                static_cast<long long>(count), count == 1 ? "" : "s", static_cast<long long>(o.epochs),
                o.epochs == 1 ? "" : "s", batchText(batch).c_str(), static_cast<unsigned long long>(o.seed),
                m.backendName());
  std::fflush(stdout);
  StopOnSignal stopOnSignal;
  Progress progress(loud ? stdout : nullptr);
  const Pipeline *pipeline = data.pipeline.empty() ? nullptr : &data.pipeline;
  // Transforms cost real time; plain gathers are cheaper than a hand-off.
  BatchLoader loader(data.train, m.inputs(), pipeline, pipeline != nullptr);
  int64_t samples = 0;
  double trainSeconds = 0; // the epochs' steps, scoring excluded
  std::string lastLine;
  auto metadata = [&]() {
    Metadata extra;
    if (best.seen)
      extra = {{"nnc.best", exact(best.value)},
               {"nnc.best_epoch", std::to_string(best.epoch)},
               {"nnc.patience_wait", std::to_string(best.wait)}};
    return extra;
  };
  for (int64_t epoch = startEpoch; epoch <= o.epochs; ++epoch) {
    auto begin = Clock::now();
    double waitedBefore = loader.waited;
    std::vector<int64_t> order = epochOrder(count, o.seed, epoch, o.shuffle);
    double lossSum = epoch == startEpoch ? startLoss : 0;
    // Steps are started in groups of up to stepsInFlight() (a device
    // overlaps the next batch's copy with the current step), then their
    // losses are checked and counted.
    const int64_t group = std::max<int64_t>(1, m.stepsInFlight());
    std::vector<double> losses(static_cast<size_t>(steps));
    std::vector<int64_t> sizes(static_cast<size_t>(steps));
    std::vector<double> shares(static_cast<size_t>(steps));
    std::vector<int64_t> firsts(static_cast<size_t>(steps));
    auto rows = [&](int64_t k) { return shardRows(order, k, global, shares[k], firsts[k]); };
    const int64_t first = epoch == startEpoch ? startStep : 0;
    if (first < steps)
      loader.request(rows(first), epoch);
    SchedulePoint at{epoch, 0, steps, o.epochs};
    for (int64_t k = first, settled = first; k < steps; ++k) {
      std::vector<HostTensor> *batchPtr = nullptr;
      if (Status s = loader.take(batchPtr); !s) {
        progress.finishLine();
        return fail(s.message() + " (training stopped at epoch " + std::to_string(epoch) + ", step " +
                    std::to_string(k + 1) + "; the last checkpoint is intact)");
      }
      std::vector<HostTensor> &inputs = *batchPtr;
      sizes[k] = std::min(count, (k + 1) * global) - k * global;
      if (k + 1 < steps)
        loader.request(rows(k + 1), epoch);
      if (scheduled) {
        at.step = static_cast<int64_t>(m.steps());
        m.setLearningRate(scheduledRate(o.schedule, baseLr, at));
      }
      if (Group *g = Group::current()) {
        g->setShare(shares[k]);
        m.setShare(shares[k]);
        m.setFirstRow(firsts[k]);
      }
      if (Status s = m.stepAsync(inputs, &losses[k]); !s) {
        progress.finishLine();
        return fail(s.message());
      }
      if ((k + 1) % group != 0 && k + 1 != steps)
        continue;
      if (Status s = m.sync(); !s) {
        progress.finishLine();
        return fail(s.message());
      }
      int sig = stopRequested();
      for (; settled <= k; ++settled) {
        double loss = losses[settled];
        if (Status s = globalLoss(loss, shares[settled], o.lossIsSum, sig); !s) {
          progress.finishLine();
          return fail(s.message());
        }
        if (!std::isfinite(loss)) {
          progress.finishLine();
          std::string value = std::isnan(loss) ? "NaN" : loss > 0 ? "+inf" : "-inf";
          // The first step's loss comes before any update: no learning rate
          // is to blame, the model or its data computes it.
          if (samples == 0 && !o.resume)
            return fail("the loss is " + value +
                        " at the first step, before any update: the model computes a non-finite value "
                        "from its initial parameters and the first batch (check initializers and data)");
          return fail("the loss became " + value + " at epoch " + std::to_string(epoch) + ", step " +
                      std::to_string(settled + 1) + "; try a smaller learning rate");
        }
        lossSum += loss * static_cast<double>(sizes[settled]);
        samples += sizes[settled];
      }
      if (sig) {
        // Stopped between steps: everything up to step k+1 is applied, so
        // the checkpoint resumes exactly there.
        progress.finishLine();
        Metadata extra = metadata();
        if (k + 1 != steps) {
          extra["nnc.epoch_step"] = std::to_string(k + 1);
          extra["nnc.global_batch"] = std::to_string(global);
          extra["nnc.epoch_loss"] = exact(lossSum);
        }
        if (Status s = stopped(m, o, sig, epoch, k + 1, steps, extra); !s)
          return fail(s.message());
        return 128 + sig;
      }
      progress.update(epoch, o.epochs, k + 1, steps,
                      lossSum / static_cast<double>(std::min(count, (k + 1) * global)), samples);
    }
    progress.finishLine();
    EpochRecord r;
    r.epoch = epoch;
    r.step = m.steps();
    r.lr = m.learningRate();
    r.seconds = since(begin);
    trainSeconds += r.seconds;
    r.dataShare = (loader.waited - waitedBefore) / std::max(r.seconds, 1e-9);
    if (Group *g = Group::current()) {
      Group::Traffic t = g->takeTraffic();
      r.commSeconds = t.busy;
      r.commWaited = t.waited;
      if (double busy = 0, waited = 0; m.takeDeviceTraffic(busy, waited)) {
        r.commSeconds += busy;
        r.commWaited += waited;
      }
    }
    r.trainLoss = lossSum / static_cast<double>(count);
    if (Status s = score(m, data.hasTest ? data.test : data.train, r.score, batch, pipeline, o.topK); !s)
      return fail(s.message());
    if (o.verifyReplicas)
      if (Status s = verifyReplicas(m, epoch); !s)
        return fail(s.message());
    std::string line = epochLine(r, o, data, count, scheduled, pipeline != nullptr);
    lastLine = line;
    // Every epoch's line for up to 50 epochs, then about 50 lines in all.
    int64_t every = std::max<int64_t>(1, o.epochs / 50);
    if (loud && (epoch == o.epochs || epoch % every == 0 || o.verbosity >= 2)) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    if (metrics.isOpen())
      if (Status s = metrics.write(r, count); !s)
        return fail(s.message());
    // Early stopping and the best model, on the monitored metric.
    bool byAccuracy = o.monitor == "accuracy";
    if (byAccuracy && !r.score.hasAccuracy && (o.patience > 0 || !o.saveBest.empty()))
      return fail("early stopping monitors accuracy, but this model reports none (monitor \"loss\" instead)");
    double value = byAccuracy ? r.score.accuracy : r.score.loss;
    bool improved = !best.seen || (byAccuracy ? value > best.value + o.minDelta : value < best.value - o.minDelta);
    if (improved) {
      best = Best{true, value, epoch, 0};
      if (!o.saveBest.empty())
        if (Status s = saveByLeader(m, o.saveBest, epoch, o.seed, metadata()); !s)
          return fail(s.message());
    } else {
      ++best.wait;
    }
    if (!o.checkpoint.empty())
      if (Status s = saveByLeader(m, o.checkpoint, epoch, o.seed, metadata()); !s)
        return fail(s.message());
    if (o.patience > 0 && best.wait >= o.patience && epoch < o.epochs) {
      if (loud)
        std::printf("early stopping after epoch %lld: %s %s has not improved for %lld epochs; best %s at epoch %lld\n",
                    static_cast<long long>(epoch), split.c_str(), o.monitor.c_str(),
                    static_cast<long long>(best.wait), shortNumber(best.value).c_str(),
                    static_cast<long long>(best.epoch));
      break;
    }
  }
  if (!loud && isLeader() && !lastLine.empty())
    std::printf("%s\n", lastLine.c_str());
  if (o.verbosity >= 2 && loader.busy > 0) {
    double total = std::max(trainSeconds, 1e-9);
    std::printf("data loading: %.3f s making batches (%s of the training time), %.3f s waited for by the steps "
                "(%s)\n",
                loader.busy, percent(loader.busy / total).c_str(), loader.waited,
                percent(loader.waited / total).c_str());
  }
  std::fflush(stdout);
  return 0;
}
