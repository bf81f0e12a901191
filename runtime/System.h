//===- System.h - what the machine allows: cores, memory, signals -*- C++ -*-===//
//
// The limits a run must respect, read from the machine (the CPU affinity
// mask, /proc/meminfo and the cgroup's memory limit) rather than assumed,
// and the stop request that SIGINT and SIGTERM turn into: the training loop
// finishes its step, saves and exits; a second SIGINT exits at once.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_SYSTEM_H
#define NNC_RUNTIME_SYSTEM_H

#include "runtime/Status.h"

#include <cstdint>
#include <string>

namespace nnc::rt {

/// The CPUs this process may run on (its affinity mask; at least 1).
int64_t availableCpus();

/// Sets the thread count of compiled code (the OpenMP runtime reads it when
/// the first parallel loop runs), capped at availableCpus(): more threads
/// than CPUs only time-slice, and a huge count exhausts the OpenMP runtime.
/// Returns a note for the user when the request was capped, else "".
std::string setThreads(int64_t requested);

/// Bytes this process can still allocate without swapping: MemAvailable,
/// lowered by a cgroup memory limit when there is one; 0 when unknown.
uint64_t availableMemory();

/// "1.5 GB", "320 MB", "12 KB": a byte count for people.
std::string formatBytes(uint64_t bytes);

/// Checks that `path` can be written as an output that replaces what is
/// there: it is a regular file or absent, and its directory is writable.
/// `what` names the output in the message ("the checkpoint").
Status checkOutputPath(const std::string &path, const std::string &what);

/// Routes SIGINT and SIGTERM to stopRequested() until the guard ends; a
/// second SIGINT ends the process at once (exit code 130).
class StopOnSignal {
public:
  StopOnSignal();
  ~StopOnSignal();
  StopOnSignal(const StopOnSignal &) = delete;
  StopOnSignal &operator=(const StopOnSignal &) = delete;
};

/// The signal that asked the run to stop (SIGINT, SIGTERM), or 0.
int stopRequested();

} // namespace nnc::rt

#endif // NNC_RUNTIME_SYSTEM_H
