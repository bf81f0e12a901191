//===- Driver.h - shared pieces of the nnc command line ---------*- C++ -*-===//
//
// Options, parsed arguments, the compilation session and the helpers that
// nnc.cpp (check, compile, gradcheck) and Train.cpp (train, eval, predict)
// share.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_TOOLS_NNC_DRIVER_H
#define NNC_TOOLS_NNC_DRIVER_H

#include "dialects/nn/NNDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace nnc::driver {

enum ExitCode { kOk = 0, kUserError = 1, kUsageError = 2 };

struct OptionSpec {
  const char *name;  // without leading dashes; "o" is spelled -o
  const char *value; // placeholder for its value, or nullptr for a flag
  const char *help;
};

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;

  bool has(const std::string &name) const { return options.count(name) != 0; }
  std::string get(const std::string &name, const std::string &dflt = {}) const {
    auto it = options.find(name);
    return it == options.end() ? dflt : it->second;
  }
};

struct Command {
  const char *name;
  const char *usage;
  const char *summary;
  std::vector<OptionSpec> options;
  int (*run)(const Args &);
};

/// The command table entry named `name`.
const Command &command(llvm::StringRef name);
/// Prints "nnc: error: MSG" and a hint to --help; returns kUsageError.
int usageError(const std::string &msg, const Command *c = nullptr);
/// Prints "nnc: error: MSG" and returns kUserError (an error in the input).
int userError(const llvm::Twine &msg);
/// Writes `text` to `path` ("-": standard output) or reports why it could
/// not: a file is written aside and renamed into place, only over a regular
/// file, and every write is checked (a full disk is an error, not an empty
/// file). Returns an exit code.
int writeOutput(const std::string &path, llvm::StringRef text);
/// Checks that exactly one FILE was given.
std::optional<int> needFile(const Command &c, const Args &args);

/// Parses a non-negative numeric option into `out` when present; returns an
/// exit code for a bad value.
template <typename T>
std::optional<int> numberOption(const Args &args, const Command &c, const char *name, T &out,
                                double min = 0) {
  if (!args.has(name))
    return std::nullopt;
  std::string v = args.get(name);
  char *end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  // Finite, at least `min`, and for integers whole and exact in a double.
  bool ok = !v.empty() && *end == '\0' && std::isfinite(x) && x >= min &&
            (!std::is_integral_v<T> || (x <= 9007199254740992.0 && x == std::floor(x)));
  if (!ok) {
    std::string what = std::is_integral_v<T> ? "integer" : "number";
    return usageError("option '--" + std::string(name) + "' needs " +
                          (min == 0 ? "a non-negative " + what
                                    : "an " + what + " of at least " + std::to_string(static_cast<int64_t>(min))) +
                          ", got '" + v + "'",
                      &c);
  }
  out = static_cast<T>(x);
  return std::nullopt;
}

/// An MLIR context with nnc's dialects and the model's source buffer.
struct Session {
  mlir::MLIRContext ctx;
  llvm::SourceMgr sourceMgr;

  Session();
  /// Reads FILE (or - for standard input); reports a missing file.
  bool open(const std::string &path);
  /// Parses and lowers the opened file to the nn dialect, reporting errors.
  mlir::OwningOpRef<mlir::ModuleOp> load(const std::string &path);
};

int runTrain(const Args &args);
int runEval(const Args &args);
int runPredict(const Args &args);
int runExport(const Args &args);
int runBuild(const Args &args);
int runBench(const Args &args);
int runTune(const Args &args);
int runData(const Args &args);
int runSummary(const Args &args);
int runInspect(const Args &args);
int runPlot(const Args &args);
int runImport(const Args &args);

} // namespace nnc::driver

#endif // NNC_TOOLS_NNC_DRIVER_H
