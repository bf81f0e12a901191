//===- Library.h - entry points of a library opened at run time -*- C++ -*-===//
//
// The GPU and communication libraries (the CUDA driver, NCCL) are opened
// with dlopen, never linked, so that nnc builds and starts without them;
// their entry points are looked up by name into typed function pointers.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_LIBRARY_H
#define NNC_RUNTIME_LIBRARY_H

#include <dlfcn.h>
#include <string>

namespace nnc::rt {

/// Looks up entry points of `lib` (a dlopen handle, or null: nothing is
/// found) and keeps the first name that is missing, for the error.
class Symbols {
public:
  explicit Symbols(void *lib) : lib_(lib) {}
  template <class Fn> void operator()(Fn &fn, const char *name) {
    fn = reinterpret_cast<Fn>(lib_ ? dlsym(lib_, name) : nullptr);
    if (!fn && missing_.empty())
      missing_ = name;
  }
  /// The first entry point not found, or "".
  const std::string &missing() const { return missing_; }

private:
  void *lib_;
  std::string missing_;
};

} // namespace nnc::rt

#endif // NNC_RUNTIME_LIBRARY_H
