//===- Training.cpp - the training loop, on any backend -------------------===//

#include "runtime/Training.h"

#include "runtime/Progress.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>

using namespace nnc;
using namespace nnc::rt;

Trainable::~Trainable() = default;

Status rt::bindInputs(Table &&data, const std::vector<ModelInput> &inputs, bool mnist,
                      Table &out) {
  out = Table();
  out.count = data.count;
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
      f.values.resize(data.count * in.width);
      for (int64_t c = 0; c < in.width; ++c)
        for (int64_t r = 0; r < data.count; ++r)
          f.values[r * in.width + c] = data.fields[next + c].values[r];
      next += in.width;
    }
    if (in.integer)
      for (float v : f.values)
        if (v != std::floor(v))
          return Status::error("input '" + in.name + "' is i32, but the data holds " +
                               std::to_string(v));
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
  if (validation > 0) {
    Table all = std::move(out.train);
    splitValidation(all, validation, seed, out.train, out.test);
    out.hasTest = true;
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
  const int64_t chunk = 1000;
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

Status rt::saveState(Trainable &m, const std::string &path, int64_t epoch, uint64_t seed) {
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
  return saveCheckpoint(path, tensors, meta);
}

Status rt::restoreState(Trainable &m, const std::string &path, Metadata &meta) {
  std::vector<HostTensor> tensors;
  if (Status s = loadCheckpoint(path, tensors, meta); !s)
    return s;
  if (meta["nnc.model"] != m.modelName())
    return Status::error(path + ": the checkpoint is of model '" + meta["nnc.model"] +
                         "', not '" + m.modelName() + "'");
  // Check everything before changing anything.
  std::vector<const HostTensor *> found;
  for (const std::string &name : m.stateNames()) {
    auto it = std::find_if(tensors.begin(), tensors.end(),
                           [&](const HostTensor &h) { return h.name == name; });
    HostTensor current;
    if (Status s = m.getState(name, current); !s)
      return s;
    if (it == tensors.end() || it->shape != current.shape)
      return Status::error(path + ": " +
                           (it == tensors.end() ? "no tensor '" + name + "'"
                                                : "tensor '" + name + "' has another shape") +
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
  m.setSteps(std::strtoull(meta["nnc.step"].c_str(), nullptr, 10));
  return Status::ok();
}

namespace {

std::string percent(double a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * a);
  return buf;
}

} // namespace

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
  int64_t startEpoch = 1;
  if (o.resume) {
    Metadata meta;
    if (Status s = restoreState(m, o.checkpoint, meta); !s)
      return fail(s.message());
    startEpoch = std::strtoll(meta["nnc.epoch"].c_str(), nullptr, 10) + 1;
    std::printf("resuming after epoch %lld (step %llu)\n", static_cast<long long>(startEpoch - 1),
                static_cast<unsigned long long>(m.steps()));
  }
  std::ofstream metrics;
  if (!o.metrics.empty()) {
    bool fresh = !std::ifstream(o.metrics).good();
    metrics.open(o.metrics, std::ios::app);
    if (!metrics)
      return fail("cannot write '" + o.metrics + "'");
    if (fresh)
      metrics << "epoch,step,train_loss,eval_loss,eval_accuracy,seconds,samples_per_second\n";
  }

  const int64_t count = data.train.count, batch = o.batch;
  int64_t steps = (count + batch - 1) / batch;
  std::printf("training %s: %lld sample%s, %lld epoch%s, batch %lld, seed %llu (%s)\n",
              m.modelName().c_str(), static_cast<long long>(count), count == 1 ? "" : "s",
              static_cast<long long>(o.epochs), o.epochs == 1 ? "" : "s", static_cast<long long>(batch),
              static_cast<unsigned long long>(o.seed), m.backendName());
  std::fflush(stdout);
  Progress progress(stdout);
  int64_t samples = 0;
  for (int64_t epoch = startEpoch; epoch <= o.epochs; ++epoch) {
    auto begin = std::chrono::steady_clock::now();
    std::vector<int64_t> order = epochOrder(count, o.seed, epoch, o.shuffle);
    double lossSum = 0;
    // Steps are started in groups of up to stepsInFlight() (a device
    // overlaps the next batch's copy with the current step), then their
    // losses are checked and counted.
    const int64_t group = std::max<int64_t>(1, m.stepsInFlight());
    std::vector<double> losses(static_cast<size_t>(steps));
    std::vector<int64_t> sizes(static_cast<size_t>(steps));
    std::vector<int64_t> idx;
    std::vector<HostTensor> inputs; // (a step has copied what it needs when stepAsync returns)
    for (int64_t k = 0, settled = 0; k < steps; ++k) {
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
          return fail(std::string("the loss became ") + (std::isnan(loss) ? "NaN" : loss > 0 ? "+inf" : "-inf") +
                      " at epoch " +
                      std::to_string(epoch) + ", step " + std::to_string(settled + 1) +
                      "; try a smaller learning rate");
        }
        lossSum += loss * static_cast<double>(sizes[settled]);
        samples += sizes[settled];
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
    if (metrics.is_open())
      metrics << epoch << "," << m.steps() << "," << trainLoss << "," << sc.loss << ","
              << (sc.hasAccuracy ? std::to_string(sc.accuracy) : "") << "," << seconds << ","
              << static_cast<double>(count) / seconds << std::endl;
    if (!o.checkpoint.empty())
      if (Status s = saveState(m, o.checkpoint, epoch, o.seed); !s)
        return fail(s.message());
  }
  return 0;
}
