//===- CacheEntry.h - sealed files of the compiled-code cache ---*- C++ -*-===//
//
// Both backends keep compiled code on disk (CPU object files, CUDA PTX)
// under rt::cacheDirectory(). A cache entry is the payload followed by its
// SHA-256 and a tag, so that an entry changed on disk (a flipped bit, a
// truncated write, another program's file) is never run: it is removed and
// compiled again. Writes go to a unique file beside the entry and are
// renamed over it, so concurrent compiles never see half an entry.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_COMMON_CACHEENTRY_H
#define NNC_COMPILER_CODEGEN_COMMON_CACHEENTRY_H

#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace nnc::codegen {

/// The payload of cache entry `path` when it is present and its seal holds;
/// an entry whose seal fails is removed (the caller compiles it again).
std::optional<std::string> readCacheEntry(const std::string &path);

/// Writes `payload` sealed to `path` (creating its directory). A cache that
/// cannot be written only costs the next run a compile: returns false
/// without a message.
bool writeCacheEntry(const std::string &path, llvm::StringRef payload);

} // namespace nnc::codegen

#endif // NNC_COMPILER_CODEGEN_COMMON_CACHEENTRY_H
