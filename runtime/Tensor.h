//===- Tensor.h - host tensors of the runtime -------------------*- C++ -*-===//
//
// A named, dense, row-major f32 tensor in host memory: what checkpoints hold
// and what the training loop passes around. Integer data (labels) travels in
// Batch as int32.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_TENSOR_H
#define NNC_RUNTIME_TENSOR_H

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/Memory.h"

namespace nnc::rt {

struct HostTensor {
  std::string name;
  std::vector<int64_t> shape;
  Floats data; // starts on a cache line: kernels read parameters in place
  bool integer = false; // i32 values (held exactly as floats); checkpoints store them as I32

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
};

/// The number of samples in a batch: the first input's leading size (1 for
/// a model without batched inputs).
inline int64_t batchSize(const std::vector<HostTensor> &batch) {
  return batch.empty() || batch[0].shape.empty() ? 1 : batch[0].shape[0];
}

} // namespace nnc::rt

#endif // NNC_RUNTIME_TENSOR_H
