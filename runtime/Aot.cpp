//===- Aot.cpp - training binaries made by `nnc build` --------------------===//

#include "runtime/Aot.h"

#include "runtime/Training.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

using namespace nnc;
using namespace nnc::rt;
using namespace nnc::rt::aot;

namespace {

int64_t sizeAt(const TensorDesc &t, int64_t batch) {
  int64_t n = 1;
  for (int64_t d : t.shape)
    n *= d < 0 ? -d * batch : d;
  return n;
}

std::vector<int64_t> shapeAt(const TensorDesc &t, int64_t batch) {
  std::vector<int64_t> s;
  for (int64_t d : t.shape)
    s.push_back(d < 0 ? -d * batch : d);
  return s;
}

/// Buffers of one function call: words for every argument and result (i32
/// data in the same words), and the slots.
struct Frame {
  std::vector<std::vector<float>> buffers;
  std::vector<float> workspace;
  std::vector<void *> pointers, slots;

  void prepare(const FunctionDesc &f, int64_t batch) {
    buffers.resize(f.args.size() + f.results.size());
    for (size_t i = 0; i < f.results.size(); ++i)
      buffers[f.args.size() + i].resize(std::max<int64_t>(1, sizeAt(f.results[i], batch)));
    size_t total = 64;
    for (size_t i = 0; i < f.slots.size(); i += 2)
      total += static_cast<size_t>(f.slots[i] * batch + f.slots[i + 1]);
    workspace.resize(std::max(workspace.size(), total / 4 + 1));
    uintptr_t at = (reinterpret_cast<uintptr_t>(workspace.data()) + 63) & ~uintptr_t(63);
    slots.clear();
    for (size_t i = 0; i < f.slots.size(); i += 2) {
      slots.push_back(reinterpret_cast<void *>(at));
      at += static_cast<uintptr_t>(f.slots[i] * batch + f.slots[i + 1]);
    }
  }
  void set(size_t i, const TensorDesc &t, const std::vector<float> &values) {
    std::vector<float> &b = buffers[i];
    b.resize(std::max<size_t>(1, values.size()));
    if (t.integer) {
      auto *dst = reinterpret_cast<int32_t *>(b.data());
      for (size_t k = 0; k < values.size(); ++k)
        dst[k] = static_cast<int32_t>(values[k]);
    } else {
      std::copy(values.begin(), values.end(), b.begin());
    }
  }
  HostTensor result(const FunctionDesc &f, size_t r, int64_t batch) const {
    const TensorDesc &t = f.results[r];
    HostTensor h{t.name, shapeAt(t, batch), {}};
    h.data.resize(sizeAt(t, batch));
    const std::vector<float> &b = buffers[f.args.size() + r];
    if (t.integer) {
      auto *src = reinterpret_cast<const int32_t *>(b.data());
      for (size_t k = 0; k < h.data.size(); ++k)
        h.data[k] = static_cast<float>(src[k]);
    } else {
      std::copy_n(b.begin(), h.data.size(), h.data.begin());
    }
    return h;
  }
  void call(const FunctionDesc &f, int64_t batch, int64_t rng[2]) {
    pointers.clear();
    for (std::vector<float> &b : buffers)
      pointers.push_back(b.data());
    pointers.push_back(rng);
    f.call(pointers.data(), batch, slots.data());
  }
};

/// The model's state in f32, stepped by the linked kernels.
class LinkedModel : public Trainable {
public:
  LinkedModel(const ModelDesc &m, uint64_t seed) : m(m), seed(seed) {
    const FunctionDesc &f = m.trainStep;
    for (size_t i = 0; i < f.args.size(); ++i) {
      const TensorDesc &t = f.args[i];
      if (t.role == "input") {
        ModelInput in{t.name, {}, 1, t.integer};
        for (size_t d = 1; d < t.shape.size(); ++d) {
          in.dims.push_back(t.shape[d]);
          in.width *= t.shape[d];
        }
        ins.push_back(std::move(in));
        inputArgs.push_back(i);
      } else if (t.role == "step") {
        stepArg = i;
      }
      state.push_back({t.name, shapeAt(t, 0), std::vector<float>(std::max<int64_t>(0, sizeAt(t, 0)))});
    }
  }

  /// Draws the initial parameters.
  Status initialize() {
    for (size_t i = 0; i < m.inits.size(); ++i) {
      const TensorDesc &t = m.trainStep.args[i];
      if (t.role == "input")
        continue;
      std::vector<float> values;
      if (Status s = rt::initialize(m.inits[i], seed, i, values, state[i].data.size()); !s)
        return Status::error("initializing '" + t.name + "': " + s.message());
      if (t.integer)
        for (float &v : values)
          v = std::round(v);
      state[i].data = std::move(values);
    }
    return Status::ok();
  }

  std::string modelName() const override { return m.name; }
  const char *backendName() const override { return "cpu, ahead of time"; }
  const std::vector<ModelInput> &inputs() const override { return ins; }

  Status step(const std::vector<HostTensor> &batch, double &loss) override {
    int64_t n = batch.empty() || batch[0].shape.empty() ? 1 : batch[0].shape[0];
    const FunctionDesc &f = m.trainStep;
    ++stepCount;
    state[stepArg].data.assign(1, static_cast<float>(stepCount));
    trainFrame.prepare(f, n);
    for (size_t i = 0; i < f.args.size(); ++i) {
      auto in = std::find(inputArgs.begin(), inputArgs.end(), i);
      trainFrame.set(i, f.args[i], in != inputArgs.end() ? batch[in - inputArgs.begin()].data
                                                         : state[i].data);
    }
    int64_t rng[2] = {static_cast<int64_t>(seed), static_cast<int64_t>(stepCount)};
    trainFrame.call(f, n, rng);
    loss = trainFrame.result(f, 0, n).data[0];
    for (size_t r = 1; r < f.results.size(); ++r) {
      const TensorDesc &t = f.results[r];
      if (t.role != "param" && t.role != "state" && t.role != "opt_state")
        continue;
      for (size_t a = 0; a < f.args.size(); ++a)
        if (f.args[a].name == t.name)
          state[a].data = trainFrame.result(f, r, n).data;
    }
    return Status::ok();
  }

  Status evaluate(const std::vector<HostTensor> &batch, std::vector<HostTensor> &outputs,
                  double &loss) override {
    int64_t n = batch.empty() || batch[0].shape.empty() ? 1 : batch[0].shape[0];
    const FunctionDesc &f = m.model;
    evalFrame.prepare(f, n);
    for (size_t i = 0; i < f.args.size(); ++i) {
      auto in = std::find(inputArgs.begin(), inputArgs.end(), i);
      evalFrame.set(i, f.args[i], in != inputArgs.end() ? batch[in - inputArgs.begin()].data
                                                        : state[i].data);
    }
    int64_t rng[2] = {static_cast<int64_t>(seed), static_cast<int64_t>(stepCount)};
    evalFrame.call(f, n, rng);
    outputs.clear();
    for (size_t r = 0; r < f.results.size(); ++r)
      if (r != m.lossResult)
        outputs.push_back(evalFrame.result(f, r, n));
    loss = evalFrame.result(f, m.lossResult, n).data[0];
    return Status::ok();
  }

  std::vector<std::string> stateNames() const override {
    std::vector<std::string> names;
    for (size_t i = 0; i < state.size(); ++i)
      if (m.trainStep.args[i].role != "input" && i != stepArg)
        names.push_back(state[i].name);
    return names;
  }
  Status getState(const std::string &name, HostTensor &out) const override {
    for (const HostTensor &t : state)
      if (t.name == name) {
        out = t;
        return Status::ok();
      }
    return Status::error("no state tensor '" + name + "'");
  }
  Status setState(const std::string &name, const HostTensor &value) override {
    for (HostTensor &t : state)
      if (t.name == name) {
        if (t.shape != value.shape)
          return Status::error("state tensor '" + name + "' does not fit");
        t.data = value.data;
        return Status::ok();
      }
    return Status::error("no state tensor '" + name + "'");
  }
  uint64_t steps() const override { return stepCount; }
  void setSteps(uint64_t n) override { stepCount = n; }

private:
  const ModelDesc &m;
  uint64_t seed;
  std::vector<ModelInput> ins;
  std::vector<size_t> inputArgs;
  size_t stepArg = 0;
  std::vector<HostTensor> state; // per training-step argument
  uint64_t stepCount = 0;
  Frame trainFrame, evalFrame;
};

void usage(const ModelDesc &m, const char *argv0, FILE *out) {
  std::fprintf(out,
               "usage: %s [options]\n"
               "Trains model '%s' (compiled ahead of time by nnc build).\n\n"
               "  --data PATH         MNIST directory or CSV file (default: %s)\n"
               "  --epochs N          epochs (default %lld)\n"
               "  --batch N           mini-batch size (default %lld)\n"
               "  --seed N            initialization and shuffling seed (default %llu)\n"
               "  --threads N         worker threads (default: every core)\n"
               "  --checkpoint PATH   save a safetensors checkpoint after every epoch\n"
               "  --resume            continue from --checkpoint\n"
               "  --metrics PATH      append per-epoch metrics to a CSV file\n"
               "  --limit N           train on the first N samples only\n"
               "  --validation F      hold out a fraction F of the training set\n"
               "  --help              this text\n",
               argv0, m.name.c_str(), m.dataPath.empty() ? "none" : m.dataPath.c_str(),
               static_cast<long long>(m.epochs), static_cast<long long>(m.batch),
               static_cast<unsigned long long>(m.seed));
}

} // namespace

int aot::main(const ModelDesc &m, int argc, char **argv) {
  const char *tool = argc > 0 ? argv[0] : "train";
  auto bad = [&](const std::string &message) {
    std::fprintf(stderr, "%s: error: %s\n(see --help)\n", tool, message.c_str());
    return 2;
  };
  TrainOptions o;
  o.tool = tool;
  o.epochs = m.epochs;
  o.batch = m.batch;
  o.seed = m.seed;
  o.shuffle = m.shuffle;
  double validation = m.validation;
  DataSource source{m.dataKind, m.dataPath};
  int64_t threads = 0;
  std::map<std::string, std::string> given;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(m, tool, stdout);
      return 0;
    }
    if (a == "--resume") {
      o.resume = true;
      continue;
    }
    static const char *valued[] = {"--data",  "--epochs", "--batch", "--seed",      "--threads",
                                   "--checkpoint", "--metrics", "--limit", "--validation"};
    std::string value;
    size_t eq = a.find('=');
    std::string key = eq == std::string::npos ? a : a.substr(0, eq);
    if (std::find(std::begin(valued), std::end(valued), key) == std::end(valued))
      return bad("unknown option '" + a + "'");
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else {
      if (i + 1 >= argc)
        return bad(key + " needs a value");
      value = argv[++i];
    }
    given[key] = value;
  }
  auto integer = [&](const std::string &key, int64_t &out, int64_t min) -> bool {
    auto it = given.find(key);
    if (it == given.end())
      return true;
    char *end = nullptr;
    long long v = std::strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end || v < min)
      return false;
    out = v;
    return true;
  };
  int64_t seed = static_cast<int64_t>(o.seed);
  for (auto [key, out, min] : {std::tuple<const char *, int64_t *, int64_t>{"--epochs", &o.epochs, 0},
                               {"--batch", &o.batch, 1},
                               {"--seed", &seed, 0},
                               {"--threads", &threads, 1},
                               {"--limit", &o.limit, 1}})
    if (!integer(key, *out, min))
      return bad(std::string(key) + " needs an integer of at least " + std::to_string(min) +
                 ", got '" + given[key] + "'");
  o.seed = static_cast<uint64_t>(seed);
  if (given.count("--validation")) {
    char *end = nullptr;
    validation = std::strtod(given["--validation"].c_str(), &end);
    if (*end || !(validation >= 0 && validation < 1))
      return bad("--validation needs a fraction in [0, 1), got '" + given["--validation"] + "'");
  }
  if (given.count("--data")) {
    source.path = given["--data"];
    size_t n = source.path.size();
    source.kind = n >= 4 && source.path.compare(n - 4, 4, ".csv") == 0 ? "csv" : "mnist";
  }
  o.checkpoint = given["--checkpoint"];
  o.metrics = given["--metrics"];
  if (o.resume && o.checkpoint.empty())
    return bad("--resume needs --checkpoint PATH");
  if (source.path.empty())
    return bad("no training data; give --data PATH");
  // The OpenMP runtime reads its thread count when the first parallel loop runs.
  if (threads > 0)
    setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);

  BoundData data;
  LinkedModel model(m, o.seed);
  if (Status s = loadData(source, model.inputs(), validation, o.seed, data); !s) {
    std::fprintf(stderr, "%s: error: %s\n", tool, s.message().c_str());
    return 1;
  }
  if (Status s = model.initialize(); !s) {
    std::fprintf(stderr, "%s: error: %s\n", tool, s.message().c_str());
    return 1;
  }
  return train(model, data, o);
}
