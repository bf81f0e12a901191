//===- Machine.h - what the host CPU offers the kernels -------*- C++ -*-===//
//
// The facts the CPU lowerings size their blocks by, read from the machine
// the compiler runs on (it compiles for that machine): the vector width and
// register count from LLVM's host feature detection, the cache sizes from
// sysfs (Linux's view of CPUID leaf 4 / 0x8000001D). Blocking derives from
// these rather than from constants tuned on one chip (Tiling.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CPU_MACHINE_H
#define NNC_COMPILER_CODEGEN_CPU_MACHINE_H

#include <cstdint>
#include <string>

namespace nnc::cpu {

struct Machine {
  std::string cpu;       // LLVM's name for the host CPU (e.g. znver3, sapphirerapids)
  int64_t lanes = 8;     // f32 lanes of the widest vector register
  int64_t registers = 16; // vector registers: 32 with AVX-512, 16 with AVX2
  int64_t l1 = 32 << 10; // data cache per core, bytes
  int64_t l2 = 512 << 10; // per core
  int64_t l3 = 8 << 20;  // shared, total

  /// One line for tables and `nnc bench`: the CPU, vectors and caches.
  std::string describe() const;
};

/// The host, detected once. NNC_CPU_CACHES=L1,L2,L3 (bytes, K or M
/// suffixes) overrides the cache sizes, for machines whose sysfs does not
/// report them and for experiments; NNC_CPU_VECTOR_BITS=256 makes an
/// AVX-512 host generate AVX2's 8-lane vectors and count 16 registers.
const Machine &host();

/// Parses a cache size as sysfs writes it ("32K", "1024K", "32M", "512");
/// 0 when it does not parse.
int64_t parseCacheSize(const std::string &text);

} // namespace nnc::cpu

#endif // NNC_COMPILER_CODEGEN_CPU_MACHINE_H
