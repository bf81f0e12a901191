//===- Init.h - parameter initializers --------------------------*- C++ -*-===//
//
// The initializers of the .nn language (docs/language.md), as plain data the
// compiler fills in from a parameter's `nn.init` attribute. Values are drawn
// in f32 from the counter-based generator, so every backend (and the
// reference evaluator) starts from bitwise the same weights.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_INIT_H
#define NNC_RUNTIME_INIT_H

#include "runtime/Memory.h"
#include "runtime/Status.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace nnc::rt {

struct InitSpec {
  std::string kind;                  // zeros, normal, he_uniform, literal, ...
  std::map<std::string, double> args; // mean, std, low, high, gain, a, value
  int64_t fanIn = 0, fanOut = 0;
  std::vector<double> literal;       // kind == "literal"
  bool loaded = false;               // a held parameter: its values come from a file, never constants
};

/// Whether initializer `kind` writes its values out (zeros, ones, constant,
/// a literal) rather than drawing them: the compiler may fold a frozen
/// tensor so initialized into the code as a constant.
inline bool writtenOut(const std::string &kind) {
  return kind == "zeros" || kind == "ones" || kind == "constant" || kind == "literal";
}

/// Fills `out` with `count` initial values. `stream` distinguishes the
/// parameters of one model (their index), so each gets its own numbers.
Status initialize(const InitSpec &spec, uint64_t seed, uint64_t stream,
                  Floats &out, size_t count);

} // namespace nnc::rt

#endif // NNC_RUNTIME_INIT_H
