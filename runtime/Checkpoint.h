//===- Checkpoint.h - safetensors checkpoints -------------------*- C++ -*-===//
//
// Checkpoints are safetensors files: an 8-byte little-endian header size, a
// JSON header naming each tensor's dtype (F32), shape and byte range, and
// the raw data. nnc adds string metadata (model, step, epoch, seed) and a
// checksum of the header and the data, checked on load. Writes are atomic: the file
// is written beside the target, flushed, and renamed over it, so an
// interrupted save leaves the previous checkpoint intact.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CHECKPOINT_H
#define NNC_RUNTIME_CHECKPOINT_H

#include "runtime/Status.h"
#include "runtime/Tensor.h"

#include <map>
#include <string>
#include <vector>

namespace nnc::rt {

using Metadata = std::map<std::string, std::string>;

/// `s` as a JSON string literal (quotes, backslashes and control characters
/// escaped), as checkpoint headers and `nnc bench --format json` write it.
std::string jsonString(const std::string &s);

Status saveCheckpoint(const std::string &path, const std::vector<HostTensor> &tensors,
                      const Metadata &metadata);

/// Reads every tensor and the metadata; validates the header, sizes, byte
/// ranges and checksum, naming the file and what is wrong. With `others`,
/// tensors of dtypes nnc does not read (a PyTorch state_dict's I64
/// `num_batches_tracked`, F16 weights) are listed there as "NAME (DTYPE)"
/// instead of refusing the file.
Status loadCheckpoint(const std::string &path, std::vector<HostTensor> &tensors,
                      Metadata &metadata, std::vector<std::string> *others = nullptr);

/// loadCheckpoint on the file's bytes (`path` names it in errors): the
/// whole header is validated before any tensor is read. Byte ranges must
/// tile the data region exactly, as the safetensors format requires, and
/// the checksum (nnc.checksum: header and data) must match when present.
Status parseCheckpoint(const std::string &bytes, const std::string &path,
                       std::vector<HostTensor> &tensors, Metadata &metadata,
                       std::vector<std::string> *others = nullptr);

uint32_t crc32(const uint8_t *data, size_t size);

} // namespace nnc::rt

#endif // NNC_RUNTIME_CHECKPOINT_H
