//===- Deploy.h - inference libraries made by `nnc build --lib` -*- C++ -*-===//
//
// What the C API of a built library (`model_create`, `model_predict`, ...)
// runs: the model's evaluation function over weights embedded in the
// library or read from a safetensors file. A context owns its buffers, so
// contexts are independent and each may run on a thread of its own.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_DEPLOY_H
#define NNC_RUNTIME_DEPLOY_H

#include "runtime/CompiledModel.h"

#include <memory>
#include <string>

namespace nnc::rt::deploy {

struct Context {
  std::unique_ptr<CompiledModel> model;
  int input = -1; // the input model_predict fills
  std::string error;
};

/// A context over `m` (whose trainStep is its evaluation function) with the
/// weights of the safetensors image `bytes` (`where` names it in errors).
std::unique_ptr<Context> create(const ModelDesc &m, const std::string &bytes, const std::string &where,
                                std::string &error);

/// The first output for `batch` samples of the first f32 input at `x`, into
/// `out` (batch * outputSize floats). Other inputs (labels) are zeros.
Status predict(Context &c, const float *x, int64_t batch, float *out);

/// Values per sample of the input predict reads and of the output it
/// writes.
int64_t inputSize(const ModelDesc &m);
int64_t outputSize(const ModelDesc &m);

} // namespace nnc::rt::deploy

#endif // NNC_RUNTIME_DEPLOY_H
