//===- System.cpp - what the machine allows: cores, memory, signals -------===//

#include "runtime/System.h"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

namespace nnc::rt {

int64_t availableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? n : 1;
}

std::string setThreads(int64_t requested) {
  int64_t cpus = availableCpus(), n = requested < 1 ? 1 : requested;
  std::string note;
  if (n > cpus) {
    note = "--threads " + std::to_string(requested) + " is more than the " + std::to_string(cpus) +
           " CPU" + (cpus == 1 ? "" : "s") + " this process may use; using " + std::to_string(cpus);
    n = cpus;
  }
  setenv("OMP_NUM_THREADS", std::to_string(n).c_str(), 1);
  return note;
}

/// The first number of a one-line file ("max" and absent files read as 0).
static uint64_t readNumber(const char *path) {
  std::ifstream in(path);
  std::string word;
  if (!(in >> word) || word == "max")
    return 0;
  return std::strtoull(word.c_str(), nullptr, 10);
}

uint64_t availableMemory() {
  uint64_t avail = 0;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (meminfo >> key >> kb) {
    std::getline(meminfo, unit);
    if (key == "MemAvailable:") {
      avail = kb * 1024;
      break;
    }
  }
  // cgroup v2, then v1: the limit less what the group already uses.
  uint64_t limit = readNumber("/sys/fs/cgroup/memory.max"), used = readNumber("/sys/fs/cgroup/memory.current");
  if (limit == 0) {
    limit = readNumber("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = readNumber("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  }
  if (limit > 0 && limit < (uint64_t(1) << 60)) {
    uint64_t room = limit > used ? limit - used : 0;
    if (avail == 0 || room < avail)
      avail = room;
  }
  return avail;
}

std::string formatBytes(uint64_t bytes) {
  const char *units[] = {"bytes", "KB", "MB", "GB", "TB", "PB", "EB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000 && u < 6) {
    v /= 1000;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

Status checkOutputPath(const std::string &path, const std::string &what) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      return Status::error(path + ": cannot write " + what + " there: it exists and is not a regular file");
    if (::access(path.c_str(), W_OK) != 0)
      return Status::error(path + ": cannot write " + what + " (" + std::strerror(errno) + ")");
  }
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::error(path + ": cannot write " + what + ": the directory " + dir + " does not exist");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return Status::error(path + ": cannot write " + what + " (the directory " + dir + ": " +
                         std::strerror(errno) + ")");
  return Status::ok();
}

namespace {

std::atomic<int> stopSignal{0};
struct sigaction previousInt, previousTerm;

void onSignal(int sig) {
  if (sig == SIGINT && stopSignal.load() == SIGINT) {
    static const char msg[] = "\ninterrupted again: stopping now, nothing saved\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(130);
  }
  stopSignal.store(sig);
}

} // namespace

StopOnSignal::StopOnSignal() {
  stopSignal.store(0);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &previousInt);
  sigaction(SIGTERM, &sa, &previousTerm);
}

StopOnSignal::~StopOnSignal() {
  sigaction(SIGINT, &previousInt, nullptr);
  sigaction(SIGTERM, &previousTerm, nullptr);
}

int stopRequested() { return stopSignal.load(); }

} // namespace nnc::rt
