//===- Machine.cpp - what the host CPU offers the kernels -----------------===//

#include "compiler/codegen/cpu/Machine.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/TargetParser/Host.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

using namespace nnc;

int64_t cpu::parseCacheSize(const std::string &text) {
  llvm::StringRef s = llvm::StringRef(text).trim();
  int64_t scale = 1;
  if (s.consume_back("K") || s.consume_back("k"))
    scale = 1 << 10;
  else if (s.consume_back("M") || s.consume_back("m"))
    scale = 1 << 20;
  int64_t n = 0;
  if (s.empty() || s.getAsInteger(10, n) || n <= 0 || n > (int64_t(1) << 40) / scale)
    return 0;
  return n * scale;
}

namespace {

std::string readLine(const std::string &path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

/// Cache sizes from sysfs for CPU 0: the data (or unified) cache of each
/// level. Levels it does not report keep the defaults.
void readCaches(cpu::Machine &m) {
  const std::string base = "/sys/devices/system/cpu/cpu0/cache/index";
  for (int i = 0; i < 8; ++i) {
    std::string dir = base + std::to_string(i) + "/";
    std::string level = readLine(dir + "level"), type = readLine(dir + "type");
    if (level.empty())
      break;
    if (type == "Instruction")
      continue;
    int64_t size = cpu::parseCacheSize(readLine(dir + "size"));
    if (size == 0)
      continue;
    if (level == "1")
      m.l1 = size;
    else if (level == "2")
      m.l2 = size;
    else if (level == "3")
      m.l3 = size;
  }
}

cpu::Machine detect() {
  cpu::Machine m;
  m.cpu = llvm::sys::getHostCPUName().str();
  llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
  bool avx512 = features.lookup("avx512f");
  // Vectors of 8 lanes without AVX-512 (LLVM splits wider ones, and its
  // split of 16-lane masked loads read the masked-off half past a buffer's
  // end).
  // NNC_CPU_VECTOR_BITS=256 keeps an AVX-512 host to AVX2's vectors and
  // registers (the code for either width is then testable on one machine).
  if (const char *env = std::getenv("NNC_CPU_VECTOR_BITS"); env && std::string(env) == "256")
    avx512 = false;
  m.lanes = avx512 ? 16 : 8;
  m.registers = avx512 ? 32 : 16;
  readCaches(m);
  if (const char *env = std::getenv("NNC_CPU_CACHES")) {
    std::stringstream in(env);
    std::string part;
    int64_t *sizes[] = {&m.l1, &m.l2, &m.l3};
    for (int64_t *size : sizes)
      if (std::getline(in, part, ','))
        if (int64_t v = cpu::parseCacheSize(part))
          *size = v;
  }
  return m;
}

} // namespace

const cpu::Machine &cpu::host() {
  static const Machine machine = detect();
  return machine;
}

std::string cpu::Machine::describe() const {
  auto kib = [](int64_t b) { return b >= (4 << 20) ? std::to_string(b >> 20) + " MiB" : std::to_string(b >> 10) + " KiB"; };
  return cpu + ", " + std::to_string(lanes * 32) + "-bit vectors x " + std::to_string(registers) + ", L1d " + kib(l1) +
         ", L2 " + kib(l2) + ", L3 " + kib(l3);
}
