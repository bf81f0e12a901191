//===- CompiledModel.cpp - a model compiled to kernels, run on the host ---===//

#include "runtime/CompiledModel.h"
#include "runtime/System.h"

#include "runtime/Memory.h"
#include "runtime/Random.h"

#include <algorithm>
#include <cmath>

using namespace nnc;
using namespace nnc::rt;

size_t rt::placeSlots(const std::vector<int64_t> &slots, int64_t batch, void *base,
                      std::vector<void *> *out) {
  size_t at = 0;
  if (out)
    out->clear();
  for (size_t i = 0; i + 1 < slots.size(); i += 2) {
    if (out)
      out->push_back(static_cast<char *>(base) + at);
    at += static_cast<size_t>(slots[i] * batch + slots[i + 1]);
    at += 64 * (1 + (i / 2 * 5) % 16); // the stagger: 1 to 16 cache lines
  }
  return at;
}

void *KernelCache::prepare(int64_t bytes, uint64_t v) {
  size_t n = static_cast<size_t>(std::max<int64_t>(bytes, 64)) / 8;
  if (words.size() != n)
    words.assign(n, 0); // no result computed yet
  words[0] = v;
  return words.data();
}

/// Buffers of one function call: words for every argument and result (i32
/// data in the same words), the cache and the slots.
struct CompiledModel::Frame {
  std::vector<Floats> buffers;
  std::vector<const float *> borrowed; // per argument: f32 data passed in place
  Floats workspace;
  KernelCache cache;
  std::vector<void *> pointers, slots;

  void prepare(const FunctionDesc &f, int64_t batch) {
    buffers.resize(f.args.size() + f.results.size());
    borrowed.assign(f.args.size(), nullptr);
    for (size_t i = 0; i < f.results.size(); ++i)
      resizeLarge(buffers[f.args.size() + i],
                  f.overwrites(i) >= 0 ? 1 : std::max<int64_t>(1, f.results[i].numel(batch)));
    size_t total = placeSlots(f.slots, batch, nullptr, nullptr) + 64;
    resizeLarge(workspace, std::max(workspace.size(), total / 4 + 1));
    uintptr_t base = (reinterpret_cast<uintptr_t>(workspace.data()) + 63) & ~uintptr_t(63);
    placeSlots(f.slots, batch, reinterpret_cast<void *>(base), &slots);
  }
  /// Argument `i`: f32 data is used where it is (kernels write only the
  /// arguments they update in place); i32 data is converted into the
  /// frame's buffer.
  void set(size_t i, const TensorDesc &t, const Floats &values) {
    if (!t.integer && !values.empty()) {
      borrowed[i] = values.data();
      return;
    }
    Floats &b = buffers[i];
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
    HostTensor h{t.name, t.shapeAt(batch), {}};
    h.data.resize(t.numel(batch));
    const float *b = buffers[f.args.size() + r].data();
    if (int64_t a = f.overwrites(r); a >= 0)
      b = borrowed[a] ? borrowed[a] : buffers[a].data();
    if (t.integer) {
      auto *src = reinterpret_cast<const int32_t *>(b);
      for (size_t k = 0; k < h.data.size(); ++k)
        h.data[k] = static_cast<float>(src[k]);
    } else {
      std::copy_n(b, h.data.size(), h.data.begin());
    }
    return h;
  }
  /// An f32 result copied into `out` (its size is the state's).
  void resultInto(const FunctionDesc &f, size_t r, Floats &out) const {
    const Floats &b = buffers[f.args.size() + r];
    std::copy_n(b.begin(), out.size(), out.begin());
  }
  void call(const FunctionDesc &f, int64_t batch, int64_t rng[3], uint64_t version) {
    pointers.clear();
    for (size_t i = 0; i < buffers.size(); ++i)
      pointers.push_back(i < borrowed.size() && borrowed[i] ? const_cast<float *>(borrowed[i])
                                                             : buffers[i].data());
    pointers.push_back(cache.prepare(f.cache, version));
    pointers.push_back(rng);
    f.call(pointers.data(), batch, slots.data());
  }
};

StepLayout::StepLayout(const FunctionDesc &f) {
  for (size_t i = 0; i < f.args.size(); ++i) {
    const TensorDesc &t = f.args[i];
    if (t.role == "input") {
      ModelInput in{t.name, {}, 1, t.integer, t.classes};
      for (size_t d = 1; d < t.shape.size(); ++d) {
        in.dims.push_back(t.shape[d]);
        in.width *= t.shape[d];
      }
      inputs.push_back(std::move(in));
      inputArgs.push_back(i);
      continue;
    }
    if (t.role == "step")
      stepArg = i;
    else if (t.role == "lr") {
      lrArg = i;
      learningRate = t.value;
    } else
      stateNames.push_back(t.name);
  }
  for (size_t r = 1; r < f.results.size(); ++r) {
    const TensorDesc &t = f.results[r];
    if (t.role != "param" && t.role != "state" && t.role != "opt_state")
      continue;
    for (size_t a = 0; a < f.args.size(); ++a)
      if (f.args[a].name == t.name)
        updates.push_back({r, a});
  }
}

/// Bytes of a function's buffers at `batch`: inputs, results and the slots
/// of its memory plan (state arguments are counted apart).
static uint64_t frameBytes(const FunctionDesc &f, int64_t batch) {
  uint64_t bytes = placeSlots(f.slots, batch, nullptr, nullptr) + static_cast<uint64_t>(f.cache);
  for (const TensorDesc &t : f.args)
    if (t.role == "input")
      bytes += static_cast<uint64_t>(t.numel(batch)) * 4;
  for (size_t r = 0; r < f.results.size(); ++r)
    if (f.overwrites(r) < 0)
      bytes += static_cast<uint64_t>(f.results[r].numel(batch)) * 4;
  return bytes;
}

StepMemory rt::stepMemory(const ModelDesc &m, int64_t batch, int64_t evalBatch) {
  StepMemory s;
  for (const TensorDesc &t : m.trainStep.args) {
    uint64_t bytes = static_cast<uint64_t>(t.numel(0)) * 4;
    if (t.role == "param")
      s.parameters += bytes;
    else if (t.role == "opt_state")
      s.optimizer += bytes;
    else if (t.role != "input")
      s.state += bytes;
  }
  s.step = frameBytes(m.trainStep, batch);
  s.evaluation = frameBytes(m.model, evalBatch);
  return s;
}

std::string StepMemory::describe(int64_t batch, int64_t evalBatch) const {
  return formatBytes(parameters) + " parameters, " + formatBytes(optimizer) + " optimizer state, " +
         formatBytes(state) + " other state, " + formatBytes(step) + " for a step at batch " +
         std::to_string(batch) + ", " + formatBytes(evaluation) + " for evaluation at batch " +
         std::to_string(evalBatch) + "; " + formatBytes(total()) + " in all";
}

Status rt::checkFits(const ModelDesc &m, int64_t batch, int64_t evalBatch, uint64_t dataBytes) {
  StepMemory s = stepMemory(m, batch, evalBatch);
  uint64_t need = s.total() + dataBytes, have = availableMemory();
  if (have == 0 || need <= have)
    return Status::ok();
  return Status::error("training '" + m.name + "' needs " + formatBytes(need) + " (" + s.describe(batch, evalBatch) +
                       (dataBytes ? "; " + formatBytes(dataBytes) + " of data" : std::string()) + "), but " +
                       formatBytes(have) + " of memory is available" +
                       (s.parameters + s.optimizer + s.state > have
                            ? " (its parameters and state alone do not fit)"
                            : "; try a smaller --batch"));
}

bool rt::isConstantOf(const ModelDesc &m, const std::string &name) {
  for (size_t i = 0; i < m.trainStep.args.size() && i < m.inits.size(); ++i)
    if (m.trainStep.args[i].name == name)
      return m.trainStep.args[i].role == "frozen" && writtenOut(m.inits[i].kind) && !m.inits[i].loaded;
  return false;
}

bool rt::isIntegerOf(const ModelDesc &m, const std::string &name) {
  for (const TensorDesc &t : m.trainStep.args)
    if (t.name == name)
      return t.integer;
  return false;
}

HostTensor rt::syntheticTensor(const TensorDesc &t, int64_t batch, uint64_t &counter) {
  HostTensor h{t.name, t.shapeAt(batch), {}};
  h.data.resize(static_cast<size_t>(std::max<int64_t>(0, t.numel(batch))));
  for (float &v : h.data)
    v = t.integer ? 0.0f : static_cast<float>(uniform01(7, 0, counter++));
  return h;
}

int64_t StepLayout::inputOf(size_t a) const {
  auto in = std::find(inputArgs.begin(), inputArgs.end(), a);
  return in == inputArgs.end() ? -1 : in - inputArgs.begin();
}

CompiledModel::CompiledModel(const ModelDesc &m, uint64_t seed, std::string backend)
    : m(m), seed(seed), backend(std::move(backend)), layout(m.trainStep), trainFrame(new Frame),
      evalFrame(new Frame) {
  lr = layout.learningRate;
  for (const TensorDesc &t : m.trainStep.args)
    state.push_back({t.name, t.shapeAt(0), Floats(std::max<int64_t>(0, t.numel(0)))});
}

CompiledModel::~CompiledModel() = default;

Status CompiledModel::initialize() {
  for (size_t i = 0; i < m.inits.size(); ++i) {
    const TensorDesc &t = m.trainStep.args[i];
    if (t.role == "input")
      continue;
    Floats values;
    if (Status s = rt::initialize(m.inits[i], seed, i, values, state[i].data.size()); !s)
      return Status::error("initializing '" + t.name + "': " + s.message());
    if (t.integer)
      for (float &v : values)
        v = std::round(v);
    state[i].data = std::move(values);
  }
  ++version;
  return Status::ok();
}

void CompiledModel::run(const FunctionDesc &f, Frame &frame, const std::vector<HostTensor> &batch,
                        int64_t n) {
  frame.prepare(f, n);
  for (size_t i = 0; i < f.args.size(); ++i) {
    int64_t in = layout.inputOf(i);
    frame.set(i, f.args[i], in >= 0 ? batch[static_cast<size_t>(in)].data : state[i].data);
  }
  int64_t rng[3] = {static_cast<int64_t>(seed), static_cast<int64_t>(stepCount), firstRow};
  frame.call(f, n, rng, version);
}

Status CompiledModel::step(const std::vector<HostTensor> &batch, double &loss) {
  int64_t n = batchSize(batch);
  const FunctionDesc &f = m.trainStep;
  Frame &frame = *trainFrame;
  ++stepCount;
  ++version; // the step updates the weights
  if (layout.stepArg != SIZE_MAX)
    state[layout.stepArg].data.assign(1, static_cast<float>(stepCount));
  if (layout.lrArg != SIZE_MAX)
    state[layout.lrArg].data.assign(1, static_cast<float>(lr));
  run(f, frame, batch, n);
  loss = frame.result(f, 0, n).data[0];
  for (auto [r, a] : layout.updates) {
    if (f.overwrites(r) >= 0)
      continue; // an update in place is in the state already
    if (f.results[r].integer)
      state[a].data = frame.result(f, r, n).data;
    else
      frame.resultInto(f, r, state[a].data);
  }
  return Status::ok();
}

Status CompiledModel::evaluate(const std::vector<HostTensor> &batch, std::vector<HostTensor> &outputs,
                               double &loss) {
  int64_t n = batchSize(batch);
  const FunctionDesc &f = m.model;
  Frame &frame = *evalFrame;
  run(f, frame, batch, n);
  outputs.clear();
  for (size_t r = 0; r < f.results.size(); ++r)
    if (r != m.lossResult)
      outputs.push_back(frame.result(f, r, n));
  loss = frame.result(f, m.lossResult, n).data[0];
  return Status::ok();
}

Status CompiledModel::getState(const std::string &name, HostTensor &out) const {
  for (const HostTensor &t : state)
    if (t.name == name) {
      out = t;
      return Status::ok();
    }
  return Status::error("no state tensor '" + name + "'");
}

Status CompiledModel::setState(const std::string &name, const HostTensor &value) {
  for (HostTensor &t : state)
    if (t.name == name) {
      if (t.shape != value.shape)
        return Status::error("state tensor '" + name + "' does not fit");
      t.data = value.data;
      ++version;
      return Status::ok();
    }
  return Status::error("no state tensor '" + name + "'");
}
