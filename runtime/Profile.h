//===- Profile.h - time spent per kernel of a compiled step -----*- C++ -*-===//
//
// Code compiled with profiling (nnc bench) calls nnc_profile_begin(id) and
// nnc_profile_end(id) around each kernel (one fused op's loop nests); the
// runtime adds up the wall time per id.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_PROFILE_H
#define NNC_RUNTIME_PROFILE_H

#include <cstdint>
#include <vector>

extern "C" {
void nnc_profile_begin(int64_t id);
void nnc_profile_end(int64_t id);
}

namespace nnc::rt {

struct KernelTime {
  double seconds = 0;
  int64_t calls = 0;
};

/// The times recorded so far, indexed by id.
const std::vector<KernelTime> &profile();
void resetProfile();

} // namespace nnc::rt

#endif // NNC_RUNTIME_PROFILE_H
