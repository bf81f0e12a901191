//===- Nvrtc.cpp - CUDA C++ to PTX through NVRTC, loaded at run time -----===//

#include "compiler/codegen/cuda/Nvrtc.h"

#include "compiler/codegen/common/CacheEntry.h"
#include "runtime/Cache.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

using namespace nnc::cuda;

namespace {

// The few NVRTC entry points nnc uses, with their C signatures (nvrtc.h).
using nvrtcProgram = void *;

/// Options every compile passes (after --gpu-architecture).
const std::vector<std::string> &baseOptions() {
  static const std::vector<std::string> o = {"--std=c++17", "-default-device"};
  return o;
}
struct Api {
  void *handle = nullptr;
  std::string error;
  int (*version)(int *, int *) = nullptr;
  int (*create)(nvrtcProgram *, const char *, const char *, int, const char *const *,
                const char *const *) = nullptr;
  int (*compile)(nvrtcProgram, int, const char *const *) = nullptr;
  int (*logSize)(nvrtcProgram, size_t *) = nullptr;
  int (*log)(nvrtcProgram, char *) = nullptr;
  int (*ptxSize)(nvrtcProgram, size_t *) = nullptr;
  int (*ptx)(nvrtcProgram, char *) = nullptr;
  int (*destroy)(nvrtcProgram *) = nullptr;
  const char *(*errorString)(int) = nullptr;
};

const Api &api() {
  static Api a;
  static std::once_flag once;
  std::call_once(once, [] {
    for (const char *name : {"libnvrtc.so.13", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13",
                             "/usr/local/cuda/lib64/libnvrtc.so"})
      if ((a.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL)))
        break;
    if (!a.handle) {
      a.error = "cannot load libnvrtc (install the CUDA Toolkit, or put it on LD_LIBRARY_PATH)";
      return;
    }
    auto sym = [&](auto &fn, const char *name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(a.handle, name));
      if (!fn && a.error.empty())
        a.error = std::string("libnvrtc has no '") + name + "'";
    };
    sym(a.version, "nvrtcVersion");
    sym(a.create, "nvrtcCreateProgram");
    sym(a.compile, "nvrtcCompileProgram");
    sym(a.logSize, "nvrtcGetProgramLogSize");
    sym(a.log, "nvrtcGetProgramLog");
    sym(a.ptxSize, "nvrtcGetPTXSize");
    sym(a.ptx, "nvrtcGetPTX");
    sym(a.destroy, "nvrtcDestroyProgram");
    sym(a.errorString, "nvrtcGetErrorString");
  });
  return a;
}

} // namespace

std::string nnc::cuda::nvrtcVersion(std::string *why) {
  const Api &a = api();
  if (!a.error.empty()) {
    if (why)
      *why = a.error;
    return "";
  }
  int major = 0, minor = 0;
  a.version(&major, &minor);
  return std::to_string(major) + "." + std::to_string(minor);
}

NvrtcResult nnc::cuda::compileToPtx(const std::string &source, const std::string &name,
                                    const std::string &arch, const std::vector<std::string> &extra) {
  NvrtcResult r;
  const Api &a = api();
  if (!a.error.empty()) {
    r.error = a.error;
    return r;
  }
  nvrtcProgram prog = nullptr;
  if (int rc = a.create(&prog, source.c_str(), name.c_str(), 0, nullptr, nullptr)) {
    r.error = std::string("nvrtcCreateProgram: ") + a.errorString(rc);
    return r;
  }
  std::vector<std::string> opts = {"--gpu-architecture=" + arch};
  opts.insert(opts.end(), baseOptions().begin(), baseOptions().end());
  opts.insert(opts.end(), extra.begin(), extra.end());
  std::vector<const char *> argv;
  for (const std::string &o : opts)
    argv.push_back(o.c_str());
  int rc = a.compile(prog, static_cast<int>(argv.size()), argv.data());
  size_t size = 0;
  a.logSize(prog, &size);
  r.log.resize(size);
  if (size)
    a.log(prog, r.log.data());
  while (!r.log.empty() && (r.log.back() == '\0' || r.log.back() == '\n'))
    r.log.pop_back();
  if (rc) {
    r.error = std::string("NVRTC could not compile ") + name + ": " + a.errorString(rc);
    // "name(LINE): error ...": the kernel whose comment precedes LINE.
    size_t at = r.log.find("): error");
    if (at != std::string::npos)
      at = r.log.rfind(name + "(", at);
    if (at != std::string::npos) {
      size_t line = std::strtoul(r.log.c_str() + at + name.size() + 1, nullptr, 10), n = 1;
      std::string kernel;
      for (size_t pos = 0; pos < source.size() && n <= line; ++n) {
        size_t end = source.find('\n', pos);
        std::string text = source.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
        if (text.rfind("// k", 0) == 0)
          kernel = text.substr(3);
        if (end == std::string::npos)
          break;
        pos = end + 1;
      }
      if (!kernel.empty())
        r.error += " (in kernel " + kernel + ")";
    }
  } else {
    a.ptxSize(prog, &size);
    r.ptx.resize(size);
    a.ptx(prog, r.ptx.data());
    while (!r.ptx.empty() && r.ptx.back() == '\0')
      r.ptx.pop_back();
    r.ok = true;
  }
  a.destroy(&prog);
  return r;
}

std::string nnc::cuda::cacheKey(const std::string &source, const std::string &arch,
                                const std::vector<std::string> &options, const std::string &version) {
  llvm::SHA256 h;
  for (const std::string *part : {&source, &arch, &version}) {
    h.update(*part);
    h.update(llvm::StringRef("\0", 1));
  }
  for (const std::string &o : options) {
    h.update(o);
    h.update(llvm::StringRef("\0", 1));
  }
  std::array<uint8_t, 32> digest = h.final();
  return llvm::toHex(digest, /*LowerCase=*/true);
}

std::string nnc::cuda::defaultCacheDir() { return rt::cacheDirectory(); }

NvrtcResult nnc::cuda::compileCached(const std::string &source, const std::string &name,
                                     const std::string &arch, const std::vector<std::string> &options,
                                     const std::string &dir, bool *hit) {
  if (hit)
    *hit = false;
  std::string version = nvrtcVersion();
  if (dir.empty() || version.empty())
    return compileToPtx(source, name, arch, options);
  std::vector<std::string> all = baseOptions();
  all.insert(all.end(), options.begin(), options.end());
  std::string path = dir + "/" + cacheKey(source, arch, all, version) + ".ptx";
  if (auto cached = codegen::readCacheEntry(path)) {
    NvrtcResult r;
    r.ok = true;
    r.ptx = std::move(*cached);
    if (hit)
      *hit = true;
    return r;
  }
  NvrtcResult r = compileToPtx(source, name, arch, options);
  if (r.ok)
    codegen::writeCacheEntry(path, r.ptx); // (an unwritable cache only costs the next compile)
  return r;
}
