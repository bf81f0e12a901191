//===- Status.h - errors returned by the runtime ----------------*- C++ -*-===//
//
// Runtime calls return a Status: success, or a message with the context of
// the failure (the call, the file and position, the offending values). The
// runtime never aborts on bad input and never depends on MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_STATUS_H
#define NNC_RUNTIME_STATUS_H

#include <string>
#include <utility>

namespace nnc::rt {

class [[nodiscard]] Status {
public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(std::string message) { return Status(std::move(message)); }

  bool isOk() const { return !failed; }
  explicit operator bool() const { return !failed; }
  const std::string &message() const { return msg; }

private:
  explicit Status(std::string message) : failed(true), msg(std::move(message)) {}
  bool failed = false;
  std::string msg;
};

} // namespace nnc::rt

#endif // NNC_RUNTIME_STATUS_H
