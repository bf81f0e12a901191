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
Status rt::metaInteger(const std::string &path, Metadata &meta, const char *key, int64_t max,
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
