//===- Random.h - counter-based random numbers ------------------*- C++ -*-===//
//
// Every random number nnc draws (initial weights, dropout masks, shuffling)
// is a pure function of (seed, stream, counter): a SplitMix64-style hash.
// Any backend, thread or kernel can compute element i of a stream on its own,
// and the same seed gives bitwise the same run.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_RANDOM_H
#define NNC_RUNTIME_RANDOM_H

#include <cmath>
#include <cstdint>

namespace nnc::rt {

inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// 64 random bits for element `counter` of `stream` under `seed`.
inline uint64_t randomBits(uint64_t seed, uint64_t stream, uint64_t counter) {
  return mix64(mix64(seed ^ mix64(stream)) + counter);
}

/// Uniform in [0, 1) with 53 random bits.
inline double uniform01(uint64_t seed, uint64_t stream, uint64_t counter) {
  return static_cast<double>(randomBits(seed, stream, counter) >> 11) * 0x1.0p-53;
}

/// Standard normal (Box-Muller over two draws of the stream).
inline double standardNormal(uint64_t seed, uint64_t stream, uint64_t counter) {
  double u1 = uniform01(seed, stream, 2 * counter);
  double u2 = uniform01(seed, stream, 2 * counter + 1);
  return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);
}

} // namespace nnc::rt

#endif // NNC_RUNTIME_RANDOM_H
