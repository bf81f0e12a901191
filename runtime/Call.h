//===- Call.h - settings written as calls: `cosine(t_max=10)` ---*- C++ -*-===//
//
// Schedules, transforms and data sources are written in a model's train
// section (and on the command line) as calls with numbers, lists of numbers
// and strings. The frontend checks them with a location and passes them on
// as canonical text, which the runtime (and a program made by `nnc build`)
// reads back; so one table per kind says what each call takes, here.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CALL_H
#define NNC_RUNTIME_CALL_H

#include "runtime/Status.h"

#include <string>
#include <utility>
#include <vector>

namespace nnc::rt {

/// One argument: a number, a list of numbers, or a string.
struct CallArg {
  std::string name; // empty while positional
  std::vector<double> numbers;
  bool list = false;
  bool isString = false;
  std::string text;
};

struct Call {
  std::string name;
  std::vector<CallArg> args;

  /// The argument `key` (after resolve()), or null.
  const CallArg *find(const std::string &key) const;
  double number(const std::string &key, double dflt = 0) const;
  std::vector<double> numbers(const std::string &key) const;
  std::string string(const std::string &key) const;
  /// Canonical text: `name(key=1, key=[1, 2], key="s")`; numbers as
  /// shortest round-trip text.
  std::string text() const;
};

/// Parses one call (`hflip`, `hflip()`, `random_crop(32, padding=4)`).
Status parseCall(const std::string &text, Call &out);
/// Parses `[call, call]` (or one call, or nothing) into `out`.
Status parseCallList(const std::string &text, std::vector<Call> &out);
std::string callListText(const std::vector<Call> &calls);

/// What a call of one name takes: parameters in positional order.
struct ParamSpec {
  const char *name;
  enum Kind { Number, List, String } kind = Number;
  bool required = false;
  double dflt = 0;
};
struct CallSpec {
  const char *name;
  std::vector<ParamSpec> params;
  const char *help; // one line, for errors
};

/// Resolves `c` against `table` (`what`: "schedule", "transform"): names its
/// positional arguments, fills in defaults, and rejects unknown names,
/// missing arguments and arguments of the wrong kind.
Status resolveCall(const std::vector<CallSpec> &table, const char *what, Call &c);

} // namespace nnc::rt

#endif // NNC_RUNTIME_CALL_H
