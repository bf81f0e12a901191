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

} // namespace nnc::cuda

#endif // NNC_COMPILER_CODEGEN_CUDA_NVRTC_H
