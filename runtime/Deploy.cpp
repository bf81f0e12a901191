//===- Deploy.cpp - inference libraries made by `nnc build --lib` ---------===//

#include "runtime/Deploy.h"

#include "runtime/Checkpoint.h"
#include "runtime/StateDict.h"

#include <algorithm>
#include <cstring>

using namespace nnc;
using namespace nnc::rt;

namespace {

int firstInput(const ModelDesc &m) {
  for (size_t i = 0; i < m.model.args.size(); ++i)
    if (m.model.args[i].role == "input" && !m.model.args[i].integer)
      return static_cast<int>(i);
  return -1;
}

size_t firstOutput(const ModelDesc &m) {
  for (size_t r = 0; r < m.model.results.size(); ++r)
    if (r != m.lossResult)
      return r;
  return 0;
}

int64_t perSample(const TensorDesc &t) {
  int64_t n = 1;
  for (size_t d = 1; d < t.shape.size(); ++d)
    n *= t.shape[d] < 0 ? -t.shape[d] : t.shape[d];
  return n;
}

} // namespace

int64_t deploy::inputSize(const ModelDesc &m) {
  int i = firstInput(m);
  return i < 0 ? 0 : perSample(m.model.args[static_cast<size_t>(i)]);
}

int64_t deploy::outputSize(const ModelDesc &m) { return perSample(m.model.results[firstOutput(m)]); }

std::unique_ptr<deploy::Context> deploy::create(const ModelDesc &m, const std::string &bytes,
                                                const std::string &where, std::string &error) {
  auto c = std::make_unique<Context>();
  c->input = firstInput(m);
  if (c->input < 0) {
    error = "the model has no f32 input to predict from";
    return nullptr;
  }
  std::vector<HostTensor> tensors;
  Metadata meta;
  std::vector<std::string> others;
  if (Status s = parseCheckpoint(bytes, where, tensors, meta, &others); !s) {
    error = s.message();
    return nullptr;
  }
  c->model = std::make_unique<CompiledModel>(m, 0, "cpu, ahead of time");
  for (const TensorDesc &t : m.model.args) {
    if (t.role == "input")
      continue;
    // nnc's names (a checkpoint), or PyTorch's (a state_dict, as
    // --init-from reads it).
    auto it = std::find_if(tensors.begin(), tensors.end(), [&](const HostTensor &h) { return h.name == t.name; });
    HostTensor value;
    if (it != tensors.end()) {
      value = *it;
    } else {
      std::string key = torchKey(t.name);
      auto torch = std::find_if(tensors.begin(), tensors.end(), [&](const HostTensor &h) { return h.name == key; });
      if (torch == tensors.end()) {
        error = where + ": no tensor '" + t.name + "' or '" + key + "' (the weights do not fit this model)";
        return nullptr;
      }
      value = fromTorch(*torch, t.name, t.shapeAt(1));
    }
    value.name = t.name;
    if (Status s = c->model->setState(t.name, value); !s) {
      error = where + ": tensor '" + t.name + "' does not fit the model's shape";
      return nullptr;
    }
  }
  // One prediction on a zero sample: the kernels then do their weight-only
  // work (Winograd's weight transforms) here, once, and keep it, so that
  // every model_predict runs at the same speed.
  std::vector<float> zeros(static_cast<size_t>(inputSize(m)), 0.0f), out(static_cast<size_t>(outputSize(m)));
  if (Status s = predict(*c, zeros.data(), 1, out.data()); !s) {
    error = s.message();
    return nullptr;
  }
  return c;
}

Status deploy::predict(Context &c, const float *x, int64_t batch, float *out) {
  const ModelDesc &m = *c.model->desc();
  if (batch < 1)
    return Status::error("the batch must hold at least one sample");
  std::vector<HostTensor> inputs;
  for (size_t i = 0; i < m.model.args.size(); ++i) {
    const TensorDesc &t = m.model.args[i];
    if (t.role != "input")
      continue;
    HostTensor h{t.name, t.shapeAt(batch), {}};
    h.data.assign(static_cast<size_t>(t.numel(batch)), 0.0f);
    if (static_cast<int>(i) == c.input)
      std::memcpy(h.data.data(), x, h.data.size() * sizeof(float));
    inputs.push_back(std::move(h));
  }
  std::vector<HostTensor> outputs;
  double loss = 0;
  if (Status s = c.model->evaluate(inputs, outputs, loss); !s)
    return s;
  if (outputs.empty())
    return Status::error("the model has no output");
  std::memcpy(out, outputs[0].data.data(), outputs[0].data.size() * sizeof(float));
  return Status::ok();
}
