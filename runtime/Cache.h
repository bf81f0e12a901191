//===- Cache.h - where compiled code is kept between runs -------*- C++ -*-===//

#ifndef NNC_RUNTIME_CACHE_H
#define NNC_RUNTIME_CACHE_H

#include <string>

namespace nnc::rt {

/// The on-disk cache of compiled code (CPU objects, CUDA PTX):
/// $NNC_CACHE_DIR, else $XDG_CACHE_HOME/nnc, else ~/.cache/nnc; "" when
/// none can be named. NNC_CACHE_DIR=off turns caching off.
std::string cacheDirectory();

} // namespace nnc::rt

#endif // NNC_RUNTIME_CACHE_H
