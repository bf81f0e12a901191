//===- Profile.cpp - time spent per kernel of a compiled step -------------===//

#include "runtime/Profile.h"

#include <chrono>

namespace {

std::vector<nnc::rt::KernelTime> times;
std::chrono::steady_clock::time_point started;

} // namespace

void nnc_profile_begin(int64_t) { started = std::chrono::steady_clock::now(); }

void nnc_profile_end(int64_t id) {
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (id < 0)
    return;
  if (static_cast<size_t>(id) >= times.size())
    times.resize(id + 1);
  times[id].seconds += s;
  ++times[id].calls;
}

const std::vector<nnc::rt::KernelTime> &nnc::rt::profile() { return times; }

void nnc::rt::resetProfile() { times.clear(); }
