//===- StateDict.cpp - PyTorch state_dict weights in and out --------------===//

#include "runtime/StateDict.h"

#include "runtime/Checkpoint.h"

#include <algorithm>
#include <map>

using namespace nnc;
using namespace nnc::rt;

namespace {

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string leafOf(const std::string &name) {
  size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

/// A rank-2 tensor with its axes swapped.
HostTensor transposed(const HostTensor &t) {
  HostTensor r;
  r.name = t.name;
  r.integer = t.integer;
  r.shape = {t.shape[1], t.shape[0]};
  r.data.resize(t.data.size());
  for (int64_t i = 0; i < t.shape[0]; ++i)
    for (int64_t j = 0; j < t.shape[1]; ++j)
      r.data[j * t.shape[0] + i] = t.data[i * t.shape[1] + j];
  return r;
}

} // namespace

std::string rt::torchKey(const std::string &name) {
  static const std::map<std::string, std::string> leaves = {
      {"w", "weight"}, {"b", "bias"}, {"gamma", "weight"}, {"beta", "bias"}};
  std::string leaf = leafOf(name);
  auto it = leaves.find(leaf);
  if (it == leaves.end())
    return name;
  return name.substr(0, name.size() - leaf.size()) + it->second;
}

bool rt::torchTransposed(const std::string &name, const std::vector<int64_t> &shape) {
  return shape.size() == 2 && leafOf(name) == "w";
}

HostTensor rt::toTorch(const HostTensor &t) {
  HostTensor r = torchTransposed(t.name, t.shape) ? transposed(t) : t;
  r.name = torchKey(t.name);
  return r;
}

HostTensor rt::fromTorch(const HostTensor &t, const std::string &name, const std::vector<int64_t> &shape) {
  HostTensor r = torchTransposed(name, shape) ? transposed(t) : t;
  r.name = name;
  return r;
}

std::string LoadReport::describe(const std::string &path) const {
  std::string s = path + ": " + std::to_string(loaded.size()) + " tensors loaded, " +
                  std::to_string(missing.size()) + " missing, " + std::to_string(unexpected.size()) +
                  " unexpected, " + std::to_string(mismatched.size()) + " with another shape\n";
  auto list = [&](const char *what, const std::vector<std::string> &names) {
    if (names.empty())
      return;
    s += std::string("  ") + what + ":\n";
    for (const std::string &n : names)
      s += "    " + n + "\n";
  };
  list("missing (initialized as the model says)", missing);
  list("unexpected (not in the model)", unexpected);
  list("another shape (skipped; initialized as the model says)", mismatched);
  list("not read (a dtype other than F32)", skipped);
  return s;
}

Status rt::initFrom(Trainable &m, const std::vector<std::string> &names, const std::string &path, bool strict,
                    LoadReport &report) {
  report = LoadReport();
  std::vector<HostTensor> file;
  Metadata meta;
  std::vector<std::string> others;
  if (Status s = loadCheckpoint(path, file, meta, &others); !s)
    return s;
  for (const std::string &o : others)
    if (leafOf(o.substr(0, o.find(' '))) != "num_batches_tracked")
      report.skipped.push_back(o);
  std::map<std::string, const HostTensor *> byKey;
  for (const HostTensor &t : file)
    byKey[t.name] = &t;
  std::map<std::string, std::string> keyOf; // file key -> model name
  std::vector<HostTensor> values;
  for (const std::string &name : names) {
    std::string key = torchKey(name);
    if (auto taken = keyOf.find(key); taken != keyOf.end())
      return Status::error(path + ": tensors '" + taken->second + "' and '" + name + "' both map to key '" +
                           key + "'");
    keyOf[key] = name;
    HostTensor current;
    if (Status s = m.getState(name, current); !s)
      return s;
    auto it = byKey.find(key);
    if (it == byKey.end()) {
      report.missing.push_back(key);
      continue;
    }
    const HostTensor &t = *it->second;
    std::vector<int64_t> want = current.shape;
    if (torchTransposed(name, want))
      std::swap(want[0], want[1]);
    if (t.shape != want || t.integer != m.isInteger(name)) {
      report.mismatched.push_back(key + ": file " + (t.integer ? "I32 " : "") + shapeString(t.shape) +
                                  ", model " + (m.isInteger(name) ? "I32 " : "") + shapeString(want));
      continue;
    }
    HostTensor value = fromTorch(t, name, current.shape);
    if (m.isConstant(name)) {
      if (value.data != current.data)
        report.mismatched.push_back(key + ": a frozen tensor the model writes out as constants; the file holds "
                                          "other values (kept the model's)");
      continue;
    }
    report.loaded.push_back(name);
    values.push_back(std::move(value));
  }
  for (const HostTensor &t : file)
    if (!keyOf.count(t.name))
      report.unexpected.push_back(t.name);
  if (strict && !report.clean())
    return Status::error(report.describe(path) + path + ": --strict: the file does not fit the model exactly");
  if (report.loaded.empty() && !names.empty())
    return Status::error(report.describe(path) + path +
                         ": no tensor of the model is in this file (are its names PyTorch's? see "
                         "docs/language.md, \"PyTorch names\")");
  for (const HostTensor &v : values)
    if (Status s = m.setState(v.name, v); !s)
      return s;
  return Status::ok();
}

Status rt::exportStateDict(const Trainable &m, const std::vector<std::string> &names, const std::string &path) {
  std::vector<HostTensor> out;
  for (const std::string &name : names) {
    HostTensor t;
    if (Status s = m.getState(name, t); !s)
      return s;
    t.name = name;
    out.push_back(toTorch(t));
  }
  return saveCheckpoint(path, out, {{"format", "pt"}});
}
