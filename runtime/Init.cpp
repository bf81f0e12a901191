//===- Init.cpp - parameter initializers ----------------------------------===//
//
// Formulas match torch.nn.init with mode="fan_in" for He, and the default
// initialization of nn.Linear / nn.Conv2d for torch_default.
//
//===----------------------------------------------------------------------===//

#include "runtime/Init.h"
#include "runtime/Random.h"

#include <cmath>

namespace nnc::rt {

static double arg(const InitSpec &spec, const char *name, double dflt) {
  auto it = spec.args.find(name);
  return it == spec.args.end() ? dflt : it->second;
}

Status initialize(const InitSpec &spec, uint64_t seed, uint64_t stream,
                  Floats &out, size_t count) {
  out.assign(count, 0.0f);
  const std::string &k = spec.kind;
  auto needFans = [&]() -> Status {
    if (spec.fanIn <= 0 || (k.rfind("xavier", 0) == 0 && spec.fanOut <= 0))
      return Status::error("initializer '" + k + "' needs fan-in and fan-out");
    return Status::ok();
  };
  // uniform(-bound, bound) or normal(0, std) by kind family.
  double lo = 0, hi = 0, mean = 0, std = 0;
  bool normal = false;
  if (k == "zeros" || k == "ones" || k == "constant") {
    float v = k == "zeros" ? 0.0f : k == "ones" ? 1.0f : static_cast<float>(arg(spec, "value", 0));
    out.assign(count, v);
    return Status::ok();
  } else if (k == "literal") {
    if (spec.literal.size() != count)
      return Status::error("literal initializer has " + std::to_string(spec.literal.size()) +
                           " values for " + std::to_string(count) + " elements");
    for (size_t i = 0; i < count; ++i)
      out[i] = static_cast<float>(spec.literal[i]);
    return Status::ok();
  } else if (k == "normal") {
    normal = true;
    mean = arg(spec, "mean", 0);
    std = arg(spec, "std", 1);
  } else if (k == "uniform") {
    lo = arg(spec, "low", 0);
    hi = arg(spec, "high", 1);
  } else if (k == "xavier_normal" || k == "xavier_uniform") {
    if (Status s = needFans(); !s)
      return s;
    double g = arg(spec, "gain", 1);
    double base = g * std::sqrt(2.0 / static_cast<double>(spec.fanIn + spec.fanOut));
    normal = k == "xavier_normal";
    std = base;
    hi = base * std::sqrt(3.0);
    lo = -hi;
  } else if (k == "he_normal" || k == "he_uniform") {
    if (Status s = needFans(); !s)
      return s;
    double a = arg(spec, "a", 0);
    double base = std::sqrt(2.0 / ((1 + a * a) * static_cast<double>(spec.fanIn)));
    normal = k == "he_normal";
    std = base;
    hi = base * std::sqrt(3.0);
    lo = -hi;
  } else if (k == "torch_default") {
    if (spec.fanIn <= 0)
      return Status::error("torch_default needs a fan-in");
    hi = 1.0 / std::sqrt(static_cast<double>(spec.fanIn));
    lo = -hi;
  } else {
    return Status::error("unknown initializer '" + k + "'");
  }
  for (size_t i = 0; i < count; ++i) {
    double v = normal ? mean + std * standardNormal(seed, stream, i)
                      : lo + (hi - lo) * uniform01(seed, stream, i);
    out[i] = static_cast<float>(v);
  }
  return Status::ok();
}

} // namespace nnc::rt
