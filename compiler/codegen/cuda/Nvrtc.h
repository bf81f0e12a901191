//===- Nvrtc.h - CUDA C++ to PTX through NVRTC, loaded at run time -*- C++ -*-===//
//
// libnvrtc is opened with dlopen and used through a table of its C entry
// points, so nnc links no CUDA library and runs where none is installed
// (compiling CUDA then fails with a message saying so).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_CUDA_NVRTC_H
#define NNC_COMPILER_CODEGEN_CUDA_NVRTC_H

#include <string>
#include <vector>

namespace nnc::cuda {

struct NvrtcResult {
  bool ok = false;
  std::string ptx;   // on success
  std::string log;   // the compiler's log (errors and warnings)
  std::string error; // why it failed, in one line
};

/// The NVRTC version as "major.minor", or "" when libnvrtc cannot be
/// loaded (`why` says why).
std::string nvrtcVersion(std::string *why = nullptr);

/// Compiles `source` for `arch` ("sm_90") to PTX. A failure's `error`
/// names the generated kernel (and its DSL location) at the first line the
/// log complains about, when the source marks kernels with `// NAME: ...`.
NvrtcResult compileToPtx(const std::string &source, const std::string &name,
                         const std::string &arch, const std::vector<std::string> &extraOptions = {});

/// The kernel cache's key: a SHA-256 (hex) of everything the PTX depends
/// on: the source, the architecture, the options and the NVRTC version.
std::string cacheKey(const std::string &source, const std::string &arch,
                     const std::vector<std::string> &options, const std::string &nvrtcVersion);

/// The on-disk kernel cache: rt::cacheDirectory() ($NNC_CACHE_DIR, else
/// $XDG_CACHE_HOME/nnc, else ~/.cache/nnc; "" when none can be named).
std::string defaultCacheDir();

/// compileToPtx through the cache in `dir` ("" for none): a hit reads the
/// PTX stored under the key; a miss compiles and stores it (written to a
/// temporary file and renamed, so a reader never sees half of one).
/// `hit` tells which happened.
NvrtcResult compileCached(const std::string &source, const std::string &name,
                          const std::string &arch, const std::vector<std::string> &options,
                          const std::string &dir, bool *hit = nullptr);

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_NVRTC_H
