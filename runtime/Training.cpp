//===- Training.cpp - the training loop, on any backend -------------------===//

#include "runtime/Training.h"

#include "runtime/Progress.h"
#include "runtime/System.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <numeric>

using namespace nnc;
using namespace nnc::rt;

Trainable::~Trainable() = default;

/// A data value as short as it reads back: 7, 0.5, 1e+12.
static std::string formatValue(float v) {
  char buf[32];
  for (int digits : {6, 9}) { // the shortest form that reads back as v
    std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(v));
    if (std::strtof(buf, nullptr) == v)
      break;
  }
  return buf;
}

/// Whole numbers in the i32 field `f` of `t`, within [0, in.classes) when
/// the input is a class label: compiled code indexes with them unchecked.
static Status checkLabels(const Table &t, const Field &f, const ModelInput &in) {
  auto at = [&](size_t i) {
    int64_t r = static_cast<int64_t>(i) / f.width;
    return t.where(f, r);
  };
  if (f.values.empty())
    return Status::ok(); // a field held as bytes is whole by construction
  for (size_t i = 0; i < f.values.size(); ++i) {
    float v = f.values[i];
    if (v != std::floor(v) || std::fabs(v) > 2147483647.0f)
      return Status::error(at(i) + ": input '" + in.name + "' is i32, but the data holds " +
                           formatValue(v));
    if (in.classes > 0 && (v < 0 || v >= static_cast<float>(in.classes)))
      return Status::error(at(i) + ": label " + formatValue(v) + " of input '" + in.name +
                           "' is outside the model's " + std::to_string(in.classes) +
                           " classes [0, " + std::to_string(in.classes) + ")");
  }
  return Status::ok();
}

Status rt::bindInputs(Table &&data, const std::vector<ModelInput> &inputs, bool mnist,
                      Table &out) {
  out = Table();
  out.count = data.count;
  out.lines = data.lines;
  size_t next = 0;              // next CSV column
  int movedTo[2] = {-1, -1};    // MNIST: the input each field moved to
  for (const ModelInput &in : inputs) {
    Field f{in.name, in.width, in.integer, {}};
    if (mnist) {
      int field = in.integer ? 1 : 0;
      Field &src = data.fields[field];
      if (src.width != in.width)
        return Status::error("input '" + in.name + "' takes " + std::to_string(in.width) +
                             " values per sample, but MNIST " + src.name + " have " +
                             std::to_string(src.width));
      f.source = src.source;
      if (movedTo[field] < 0) {
        f.values = std::move(src.values);
        f.pixels = std::move(src.pixels);
        movedTo[field] = static_cast<int>(out.fields.size());
      } else {
        f.values = out.fields[movedTo[field]].values;
        f.pixels = out.fields[movedTo[field]].pixels;
      }
    } else {
      if (next + in.width > data.fields.size())
        return Status::error("the CSV file has " + std::to_string(data.fields.size()) +
                             " columns, too few for input '" + in.name + "'");
      f.source = data.fields[next].source;
      f.values.resize(data.count * in.width);
      for (int64_t c = 0; c < in.width; ++c)
        for (int64_t r = 0; r < data.count; ++r)
          f.values[r * in.width + c] = data.fields[next + c].values[r];
      next += in.width;
    }
    if (in.integer)
      if (Status s = checkLabels(out, f, in); !s)
        return s;
    out.fields.push_back(std::move(f));
  }
  if (!mnist && next != data.fields.size())
    return Status::error("the CSV file has " + std::to_string(data.fields.size()) +
                         " columns, but the model's inputs take " + std::to_string(next));
  return Status::ok();
}

/// Rows of a shuffled batch lie anywhere in the data set: the loads of the
/// row this many ahead are started while a row is copied.
constexpr size_t kAhead = 4;

void rt::batchInto(const Table &t, const std::vector<ModelInput> &inputs, const std::vector<int64_t> &indices,
                   std::vector<HostTensor> &out) {
  out.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    HostTensor &x = out[i];
    x.name = inputs[i].name;
    x.shape.assign(1, static_cast<int64_t>(indices.size()));
    x.shape.insert(x.shape.end(), inputs[i].dims.begin(), inputs[i].dims.end());
    const Field &f = t.fields[i];
    x.data.resize(indices.size() * f.width);
    for (size_t r = 0; r < indices.size(); ++r) {
      if (r + kAhead < indices.size())
        f.prefetchRow(indices[r + kAhead]);
      f.copyRow(indices[r], x.data.data() + r * f.width);
    }
  }
}

std::vector<HostTensor> rt::batchOf(const Table &t, const std::vector<ModelInput> &inputs,
                                    const std::vector<int64_t> &indices) {
  std::vector<HostTensor> out;
  batchInto(t, inputs, indices, out);
  return out;
}

Status rt::loadData(const DataSource &source, const std::vector<ModelInput> &inputs,
                    double validation, uint64_t seed, BoundData &out) {
  Table raw, rawTest;
  Status s;
  bool mnist = source.kind == "mnist";
  out.hasTest = false;
  if (mnist) {
    Dataset train, test;
    s = loadMnist(source.path, "train", train);
    if (s)
      s = loadMnist(source.path, "t10k", test);
    if (s) {
      raw = fromMnist(std::move(train));
      rawTest = fromMnist(std::move(test));
      out.hasTest = true;
    }
  } else {
    s = loadCsv(source.path, raw);
  }
  if (s)
    s = bindInputs(std::move(raw), inputs, mnist, out.train);
  if (s && out.hasTest)
    s = bindInputs(std::move(rawTest), inputs, true, out.test);
  if (!s)
    return s;
  // An empty set would train on nothing and report a loss of 0/0.
  auto empty = [&](const Table &t, const char *which) {
    std::string from = t.fields.empty() ? source.path : t.fields[0].source;
    return Status::error(from + ": the " + which + " set has no samples");
  };
  if (out.train.count == 0)
    return empty(out.train, "training");
  if (out.hasTest && out.test.count == 0)
    return empty(out.test, "test");
  if (validation > 0) {
    Table all = std::move(out.train);
    splitValidation(all, validation, seed, out.train, out.test);
    out.hasTest = true;
    if (out.train.count == 0 || out.test.count == 0)
      return Status::error(source.path + ": a validation fraction of " + formatValue(static_cast<float>(validation)) +
                           " leaves " + std::to_string(out.train.count) + " of " +
                           std::to_string(all.count) + " samples for training and " +
                           std::to_string(out.test.count) + " for validation; both need at least one");
  }
  return Status::ok();
}

Status rt::score(Trainable &m, const Table &data, Score &out) {
  const std::vector<ModelInput> &inputs = m.inputs();
  int labels = -1, target = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].integer && labels < 0)
      labels = static_cast<int>(i);
    if (!inputs[i].integer && inputs[i].width == 1 && target < 0)
      target = static_cast<int>(i);
  }
  out = Score();
  int64_t correct = 0;
  bool counted = false;
  const int64_t chunk = kEvalChunk;
  std::vector<HostTensor> in;
  for (int64_t start = 0; start < data.count; start += chunk) {
    std::vector<int64_t> idx(std::min(data.count, start + chunk) - start);
    std::iota(idx.begin(), idx.end(), start);
    batchInto(data, inputs, idx, in);
    std::vector<HostTensor> outputs;
    double loss = 0;
    if (Status s = m.evaluate(in, outputs, loss); !s)
      return s;
    out.loss += loss * static_cast<double>(idx.size());
    if (outputs.empty() || outputs[0].shape.size() != 2)
      continue;
    const HostTensor &y = outputs[0];
    int64_t classes = y.shape[1];
    for (size_t r = 0; r < idx.size(); ++r) {
      if (classes > 1 && labels >= 0) {
        int64_t best = 0;
        for (int64_t c = 1; c < classes; ++c)
          if (y.data[r * classes + c] > y.data[r * classes + best])
            best = c;
        correct += best == static_cast<int64_t>(in[labels].data[r]);
        counted = true;
      } else if (classes == 1 && target >= 0) {
        correct += (y.data[r] > 0.5f) == (in[target].data[r] > 0.5f);
        counted = true;
      }
    }
  }
  out.loss /= static_cast<double>(std::max<int64_t>(1, data.count));
  if (counted) {
    out.hasAccuracy = true;
    out.accuracy = static_cast<double>(correct) / static_cast<double>(data.count);
  }
  return Status::ok();
}

Status rt::saveState(Trainable &m, const std::string &path, int64_t epoch, uint64_t seed,
                     const Metadata &extra) {
  std::vector<HostTensor> tensors;
  for (const std::string &name : m.stateNames()) {
    HostTensor t;
    if (Status s = m.getState(name, t); !s)
      return s;
    t.name = name;
    t.integer = m.isInteger(name);
    tensors.push_back(std::move(t));
  }
  Metadata meta = {{"nnc.model", m.modelName()},
                   {"nnc.epoch", std::to_string(epoch)},
                   {"nnc.step", std::to_string(m.steps())},
                   {"nnc.seed", std::to_string(seed)}};
  meta.insert(extra.begin(), extra.end());
  return saveCheckpoint(path, tensors, meta);
}

/// Metadata `key` as a whole number in [0, max]; absent reads as 0.
static Status metaInteger(const std::string &path, Metadata &meta, const char *key, int64_t max,
                          int64_t &out) {
  out = 0;
  auto it = meta.find(key);
  if (it == meta.end())
    return Status::ok();
  const std::string &v = it->second;
  char *end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || x < 0 || x > max)
    return Status::error(path + ": metadata " + key + " is '" + v + "', not a whole number in [0, " +
                         std::to_string(max) + "]");
  out = x;
  return Status::ok();
}

static std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Status rt::restoreState(Trainable &m, const std::string &path, Metadata &meta) {
  std::vector<HostTensor> tensors;
  if (Status s = loadCheckpoint(path, tensors, meta); !s)
    return s;
  return restoreFrom(m, tensors, meta, path);
}

Status rt::restoreFrom(Trainable &m, const std::vector<HostTensor> &tensors, Metadata &meta,
                       const std::string &path) {
  if (!meta.count("nnc.model"))
    return Status::error(path + ": a plain safetensors file without nnc's metadata (nnc.model, "
                         "nnc.epoch, nnc.step), not a checkpoint of model '" + m.modelName() + "'");
  if (meta["nnc.model"] != m.modelName())
    return Status::error(path + ": the checkpoint is of model '" + meta["nnc.model"] +
                         "', not '" + m.modelName() + "'");
  // Counters that later arithmetic trusts: whole numbers in a sane range.
  int64_t epoch = 0, step = 0;
  if (Status s = metaInteger(path, meta, "nnc.epoch", kMaxEpochs, epoch); !s)
    return s;
  if (Status s = metaInteger(path, meta, "nnc.step", int64_t(1) << 53, step); !s)
    return s;
  if (meta.count("nnc.seed")) {
    const std::string &v = meta["nnc.seed"];
    char *end = nullptr;
    errno = 0;
    std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
      return Status::error(path + ": metadata nnc.seed is '" + v + "', not a 64-bit unsigned integer");
  }
  // Check everything before changing anything.
  std::vector<const HostTensor *> found;
  for (const std::string &name : m.stateNames()) {
    auto it = std::find_if(tensors.begin(), tensors.end(),
                           [&](const HostTensor &h) { return h.name == name; });
    HostTensor current;
    if (Status s = m.getState(name, current); !s)
      return s;
    if (it == tensors.end())
      return Status::error(path + ": no tensor '" + name + "' (the checkpoint does not fit this model)");
    if (it->shape != current.shape)
      return Status::error(path + ": tensor '" + name + "' has shape " + shapeString(it->shape) +
                           ", but the model's is " + shapeString(current.shape) +
                           " (the checkpoint does not fit this model)");
    if (it->integer != m.isInteger(name))
      return Status::error(path + ": tensor '" + name + "' is " + (it->integer ? "I32" : "F32") +
                           ", but the model's is " + (m.isInteger(name) ? "I32" : "F32") +
                           " (the checkpoint does not fit this model)");
    found.push_back(&*it);
  }
  for (const HostTensor *t : found) {
    if (!m.isConstant(t->name))
      continue;
    HostTensor current;
    if (Status s = m.getState(t->name, current); !s)
      return s;
    if (current.data != t->data)
      return Status::error(path + ": tensor '" + t->name +
                           "' is frozen with values written in the model, which the compiled code uses as "
                           "constants, but the checkpoint holds other values (declare it with a drawn "
                           "initializer to load it from a checkpoint)");
  }
  for (const HostTensor *t : found)
    if (Status s = m.setState(t->name, *t); !s)
      return s;
  m.setSteps(static_cast<uint64_t>(step));
  return Status::ok();
}

namespace {

std::string percent(double a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * a);
  return buf;
}

} // namespace

/// A double as text that reads back to the same value.
static std::string exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

int rt::train(Trainable &m, BoundData &data, const TrainOptions &o) {
  auto fail = [&](const std::string &message) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", o.tool.c_str(), message.c_str());
    return 1;
  };
  if (o.limit > 0 && o.limit < data.train.count) {
    std::vector<int64_t> first(o.limit);
    std::iota(first.begin(), first.end(), 0);
    data.train = gather(data.train, first);
  }
  // Outputs are checked before any work, so a bad path fails in a second,
  // not after the first epoch.
  if (!o.checkpoint.empty())
    if (Status s = checkOutputPath(o.checkpoint, "the checkpoint"); !s)
      return fail(s.message());
  const int64_t count = data.train.count, batch = o.batch;
  const int64_t steps = (count + batch - 1) / batch;
  int64_t startEpoch = 1, startStep = 0;
  double startLoss = 0;
  if (o.resume) {
    Metadata meta;
    if (Status s = restoreState(m, o.checkpoint, meta); !s)
      return fail(s.message());
    startEpoch = std::strtoll(meta["nnc.epoch"].c_str(), nullptr, 10) + 1;
    // A run stopped by a signal saved where it was inside the next epoch.
    int64_t done = 0;
    if (Status s = metaInteger(o.checkpoint, meta, "nnc.epoch_step", steps, done); !s)
      return fail(s.message());
    if (done > 0) {
      startStep = done;
      startLoss = std::strtod(meta["nnc.epoch_loss"].c_str(), nullptr);
      if (!std::isfinite(startLoss))
        return fail(o.checkpoint + ": metadata nnc.epoch_loss is '" + meta["nnc.epoch_loss"] +
                    "', not a finite number");
    }
    if (startEpoch > o.epochs)
      return fail(o.checkpoint + ": the checkpoint is at epoch " + std::to_string(startEpoch - 1) +
                  ", and --epochs " + std::to_string(o.epochs) +
                  " trains no further (give --epochs above " + std::to_string(startEpoch - 1) + ")");
    if (startStep > 0)
      std::printf("resuming in epoch %lld after step %lld (step %llu)\n", static_cast<long long>(startEpoch),
                  static_cast<long long>(startStep), static_cast<unsigned long long>(m.steps()));
    else
      std::printf("resuming after epoch %lld (step %llu)\n", static_cast<long long>(startEpoch - 1),
                  static_cast<unsigned long long>(m.steps()));
  }
  std::ofstream metrics;
  // Every metrics write is checked: a full disk must not pass as success.
  auto metricsFailed = [&]() {
    return fail(o.metrics + ": writing the metrics failed (" +
                std::string(errno ? std::strerror(errno) : "write error") + ")");
  };
  if (!o.metrics.empty()) {
    bool fresh = !std::ifstream(o.metrics).good();
    metrics.open(o.metrics, std::ios::app);
    if (!metrics)
      return fail(o.metrics + ": cannot write the metrics (" + std::strerror(errno) + ")");
    if (fresh)
      metrics << "epoch,step,train_loss,eval_loss,eval_accuracy,seconds,samples_per_second\n";
    errno = 0;
    if (!metrics.flush())
      return metricsFailed();
  }

  std::printf("training %s: %lld sample%s, %lld epoch%s, batch %lld, seed %llu (%s)\n",
              m.modelName().c_str(), static_cast<long long>(count), count == 1 ? "" : "s",
              static_cast<long long>(o.epochs), o.epochs == 1 ? "" : "s", static_cast<long long>(batch),
              static_cast<unsigned long long>(o.seed), m.backendName());
  std::fflush(stdout);
  StopOnSignal stopOnSignal;
  Progress progress(stdout);
  int64_t samples = 0;
  for (int64_t epoch = startEpoch; epoch <= o.epochs; ++epoch) {
    auto begin = std::chrono::steady_clock::now();
    std::vector<int64_t> order = epochOrder(count, o.seed, epoch, o.shuffle);
    double lossSum = epoch == startEpoch ? startLoss : 0;
    // Steps are started in groups of up to stepsInFlight() (a device
    // overlaps the next batch's copy with the current step), then their
    // losses are checked and counted.
    const int64_t group = std::max<int64_t>(1, m.stepsInFlight());
    std::vector<double> losses(static_cast<size_t>(steps));
    std::vector<int64_t> sizes(static_cast<size_t>(steps));
    std::vector<int64_t> idx;
    std::vector<HostTensor> inputs; // (a step has copied what it needs when stepAsync returns)
    const int64_t first = epoch == startEpoch ? startStep : 0;
    for (int64_t k = first, settled = first; k < steps; ++k) {
      idx.assign(order.begin() + k * batch, order.begin() + std::min(count, (k + 1) * batch));
      sizes[k] = static_cast<int64_t>(idx.size());
      batchInto(data.train, m.inputs(), idx, inputs);
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
      for (; settled <= k; ++settled) {
        double loss = losses[settled];
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
      if (int sig = stopRequested()) {
        // Stopped between steps: everything up to step k+1 is applied, so
        // the checkpoint resumes exactly there.
        progress.finishLine();
        std::string where = "epoch " + std::to_string(epoch) + ", step " + std::to_string(k + 1) + " of " +
                            std::to_string(steps);
        const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
        if (o.checkpoint.empty()) {
          std::fprintf(stderr, "%s: interrupted (%s) at %s; nothing saved (no --checkpoint)\n", o.tool.c_str(),
                       name, where.c_str());
        } else {
          Status s = k + 1 == steps
                         ? saveState(m, o.checkpoint, epoch, o.seed)
                         : saveState(m, o.checkpoint, epoch - 1, o.seed,
                                     {{"nnc.epoch_step", std::to_string(k + 1)},
                                      {"nnc.epoch_loss", exact(lossSum)}});
          if (!s)
            return fail(s.message());
          std::fprintf(stderr, "%s: interrupted (%s) at %s; saved %s\n", o.tool.c_str(), name, where.c_str(),
                       o.checkpoint.c_str());
          if (!o.resumeCommand.empty())
            std::fprintf(stderr, "resume with: %s\n", o.resumeCommand.c_str());
        }
        std::fflush(stdout);
        return 128 + sig;
      }
      progress.update(epoch, o.epochs, k + 1, steps,
                      lossSum / static_cast<double>(std::min(count, (k + 1) * batch)), samples);
    }
    progress.finishLine();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    Score sc;
    if (Status s = score(m, data.hasTest ? data.test : data.train, sc); !s)
      return fail(s.message());
    double trainLoss = lossSum / static_cast<double>(count);
    // Every epoch's line for up to 50 epochs, then about 50 lines in all.
    int64_t every = std::max<int64_t>(1, o.epochs / 50);
    if (epoch == o.epochs || epoch % every == 0) {
      std::printf("epoch %lld/%lld: loss %.4f%sloss %.4f", static_cast<long long>(epoch),
                  static_cast<long long>(o.epochs), trainLoss,
                  data.hasTest ? "; test: " : "; on the training set: ", sc.loss);
      if (sc.hasAccuracy)
        std::printf(", accuracy %s", percent(sc.accuracy).c_str());
      std::printf("; %.1f s, %.0f samples/s\n", seconds, static_cast<double>(count) / seconds);
      std::fflush(stdout);
    }
    if (metrics.is_open()) {
      errno = 0;
      metrics << epoch << "," << m.steps() << "," << trainLoss << "," << sc.loss << ","
              << (sc.hasAccuracy ? std::to_string(sc.accuracy) : "") << "," << seconds << ","
              << static_cast<double>(count) / seconds << std::endl;
      if (!metrics)
        return metricsFailed();
    }
    if (!o.checkpoint.empty())
      if (Status s = saveState(m, o.checkpoint, epoch, o.seed); !s)
        return fail(s.message());
  }
  return 0;
}
