//===- CacheEntry.cpp - sealed files of the compiled-code cache -----------===//

#include "compiler/codegen/common/CacheEntry.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

#include <array>
#include <cstring>

using namespace nnc;

namespace {

/// Ends every entry after its 32-byte digest; names the format's version.
constexpr llvm::StringLiteral kTag = "nnc-sha256-v1\n";
constexpr size_t kDigest = 32;

std::array<uint8_t, kDigest> digestOf(llvm::StringRef payload) {
  llvm::SHA256 h;
  h.update(payload);
  return h.final();
}

} // namespace

std::optional<std::string> codegen::readCacheEntry(const std::string &path) {
  auto file = llvm::MemoryBuffer::getFile(path, /*IsText=*/false, /*RequiresNullTerminator=*/false);
  if (!file)
    return std::nullopt;
  llvm::StringRef bytes = (*file)->getBuffer();
  bool sealed = bytes.size() >= kDigest + kTag.size() && bytes.ends_with(kTag);
  if (sealed) {
    llvm::StringRef payload = bytes.drop_back(kDigest + kTag.size());
    std::array<uint8_t, kDigest> want = digestOf(payload);
    if (std::memcmp(want.data(), bytes.data() + payload.size(), kDigest) == 0)
      return payload.str();
  }
  llvm::sys::fs::remove(path);
  return std::nullopt;
}

bool codegen::writeCacheEntry(const std::string &path, llvm::StringRef payload) {
  if (llvm::sys::fs::create_directories(llvm::sys::path::parent_path(path)))
    return false;
  llvm::SmallString<128> tmp;
  int fd = -1;
  if (llvm::sys::fs::createUniqueFile(path + ".%%%%%%.tmp", fd, tmp))
    return false;
  bool ok;
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    std::array<uint8_t, kDigest> digest = digestOf(payload);
    os << payload;
    os.write(reinterpret_cast<const char *>(digest.data()), digest.size());
    os << kTag;
    os.close();
    ok = !os.has_error();
    os.clear_error();
  }
  if (!ok || llvm::sys::fs::rename(tmp, path)) {
    llvm::sys::fs::remove(tmp);
    return false;
  }
  return true;
}
