//===- StateDict.h - PyTorch state_dict weights in and out ------*- C++ -*-===//
//
// A model's tensors under PyTorch's names and layouts (docs/language.md,
// "PyTorch names"): the last part of a name maps `w` and `gamma` to
// `weight`, `b` and `beta` to `bias`; a rank-2 `w` (dense, [in, out]) is
// transposed to nn.Linear's [out, in]. `initFrom` fills a model from a
// plain safetensors file of such tensors, reporting what it loaded as
// `load_state_dict(strict=False)` does; `exportStateDict` writes one.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_STATEDICT_H
#define NNC_RUNTIME_STATEDICT_H

#include "runtime/Status.h"
#include "runtime/Tensor.h"
#include "runtime/Training.h"

#include <string>
#include <vector>

namespace nnc::rt {

/// A model tensor's PyTorch state_dict key.
std::string torchKey(const std::string &name);
/// Whether the tensor is stored transposed in PyTorch (a dense weight).
bool torchTransposed(const std::string &name, const std::vector<int64_t> &shape);
/// `t` in PyTorch's layout (named by its key), or back (`toTorch` false,
/// `name` and `shape` the model's).
HostTensor toTorch(const HostTensor &t);
HostTensor fromTorch(const HostTensor &t, const std::string &name, const std::vector<int64_t> &shape);

/// What initFrom did, as load_state_dict(strict=False) reports it.
struct LoadReport {
  std::vector<std::string> loaded;     // model names
  std::vector<std::string> missing;    // model names, keys absent from the file
  std::vector<std::string> unexpected; // file keys no model tensor has
  std::vector<std::string> mismatched; // "KEY: file [..], model [..]"
  std::vector<std::string> skipped;    // file tensors of other dtypes, not read
  /// Several lines: counts, then each non-empty list.
  std::string describe(const std::string &path) const;
  bool clean() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
};

/// Sets the tensors `names` of `m` (its parameters, frozen tensors and
/// batch-norm statistics) from the safetensors file `path`. Tensors the file
/// lacks, or holds in another shape, keep the values the model's
/// initializers gave them. With `strict`, anything but a clean load is an
/// error and nothing is changed. A file key `num_batches_tracked` is
/// PyTorch's batch-norm counter, which nnc has no use for: skipped quietly.
Status initFrom(Trainable &m, const std::vector<std::string> &names, const std::string &path, bool strict,
                LoadReport &report);

/// Writes the tensors `names` of `m` under PyTorch's keys and layouts to a
/// safetensors file (atomically).
Status exportStateDict(const Trainable &m, const std::vector<std::string> &names, const std::string &path);

} // namespace nnc::rt

#endif // NNC_RUNTIME_STATEDICT_H
