//===- KernelSpec.cpp - named kernel shapes as model sources --------------===//

#include "compiler/frontend/KernelSpec.h"

#include <cstdint>
#include <cstdlib>
#include <regex>
#include <vector>

using namespace nnc;

namespace {

/// Integers separated by `sep`, `min`..`max` of them, each positive but
/// those from position `zeroFrom` on, which may be 0.
bool sizes(const std::string &text, char sep, size_t min, size_t max, std::vector<long long> &out,
           size_t zeroFrom = SIZE_MAX) {
  out.clear();
  size_t at = 0;
  while (at <= text.size()) {
    size_t end = text.find(sep, at);
    std::string part = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos)
      return false;
    long long v = std::atoll(part.c_str());
    if (v < (out.size() >= zeroFrom ? 0 : 1) || part.size() > 9)
      return false;
    out.push_back(v);
    if (end == std::string::npos)
      break;
    at = end + 1;
  }
  return out.size() >= min && out.size() <= max;
}

std::string dims(const std::vector<long long> &d) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i)
    s += (i ? ", " : "") + std::to_string(d[i]);
  return s;
}

} // namespace

const char *nnc::kernelSpecHelp() {
  return "gemm:MxNxK | conv2d:N,C,H,W,O,K[,S[,P]] | elementwise:N:EXPR (x, y, z) | "
         "reduction:RxC[:AXIS] | softmax_ce:NxC";
}

std::string nnc::kernelSource(const std::string &spec, bool backward, std::string &error) {
  size_t colon = spec.find(':');
  std::string op = spec.substr(0, colon), rest = colon == std::string::npos ? "" : spec.substr(colon + 1);
  // Operands: (name, type, is f32).
  struct Operand {
    std::string name, type;
    bool f32 = true;
  };
  std::vector<Operand> operands;
  std::string value, name = op;
  bool isLoss = false;
  std::vector<long long> d;
  if (op == "gemm") {
    if (!sizes(rest, 'x', 3, 3, d)) {
      error = "gemm needs MxNxK (positive sizes), got '" + rest + "'";
      return "";
    }
    operands = {{"a", "f32[" + dims({d[0], d[2]}) + "]"}, {"b", "f32[" + dims({d[2], d[1]}) + "]"}};
    value = "a @ b";
  } else if (op == "conv2d") {
    if (!sizes(rest, ',', 6, 8, d, 7)) {
      error = "conv2d needs N,C,H,W,O,K[,stride[,padding]] (positive sizes), got '" + rest + "'";
      return "";
    }
    long long stride = d.size() > 6 ? d[6] : 1, padding = d.size() > 7 ? d[7] : 0;
    operands = {{"x", "f32[" + dims({d[0], d[1], d[2], d[3]}) + "]"},
                {"w", "f32[" + dims({d[4], d[1], d[5], d[5]}) + "]"}};
    value = "conv2d(x, w, stride=" + std::to_string(stride) + ", padding=" + std::to_string(padding) + ")";
  } else if (op == "elementwise") {
    size_t c2 = rest.find(':');
    if (c2 == std::string::npos || !sizes(rest.substr(0, c2), 'x', 1, 1, d) || c2 + 1 >= rest.size()) {
      error = "elementwise needs N:EXPR, got '" + rest + "'";
      return "";
    }
    value = rest.substr(c2 + 1);
    for (const char *v : {"x", "y", "z"})
      if (std::regex_search(value, std::regex(std::string("(^|[^A-Za-z0-9_.])") + v + "($|[^A-Za-z0-9_(])")))
        operands.push_back({v, "f32[" + std::to_string(d[0]) + "]"});
    if (operands.empty()) {
      error = "the elementwise expression '" + value + "' reads none of x, y, z";
      return "";
    }
  } else if (op == "reduction") {
    size_t c2 = rest.find(':');
    std::string axis = c2 == std::string::npos ? "1" : rest.substr(c2 + 1);
    if (!sizes(rest.substr(0, c2), 'x', 2, 2, d) || (axis != "0" && axis != "1")) {
      error = "reduction needs RxC[:AXIS] with AXIS 0 or 1, got '" + rest + "'";
      return "";
    }
    operands = {{"x", "f32[" + dims(d) + "]"}};
    value = "sum(x, axis=" + axis + ")";
  } else if (op == "softmax_ce") {
    if (!sizes(rest, 'x', 2, 2, d)) {
      error = "softmax_ce needs NxC, got '" + rest + "'";
      return "";
    }
    operands = {{"x", "f32[" + dims(d) + "]"}, {"y", "i32[" + std::to_string(d[0]) + "]", false}};
    value = "softmax_cross_entropy(x, y)";
    isLoss = true;
  } else {
    error = "unknown kernel '" + op + "' (expected " + kernelSpecHelp() + ")";
    return "";
  }
  std::string src = "# nnc bench --kernel " + spec + (backward ? " --backward" : "") + "\nmodel " + name + " {\n";
  for (const Operand &o : operands)
    src += !backward ? "  input " + o.name + ": " + o.type + "\n"
           : o.f32   ? "  param " + o.name + ": " + o.type + " = uniform(low=-1, high=1)\n"
                     : "  frozen " + o.name + ": " + o.type + " = zeros\n";
  src += "  r = " + value + "\n";
  if (!backward) {
    src += "  output r\n}\n";
    return src;
  }
  src += isLoss ? "  minimize r\n}\n" : "  loss = sum(r)\n  minimize loss\n}\n";
  src += "train {\n  optimizer = sgd(lr=0.0)\n}\n";
  return src;
}
