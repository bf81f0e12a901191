//===- Sources.h - data sets in their own formats ---------------*- C++ -*-===//
//
// Readers of the formats users bring, each into a Table of named fields:
// CIFAR-10's binary release, NumPy's .npy and .npz (through libzip), folders
// of PNG and JPEG images (libpng, libjpeg) with one subfolder per class, and
// gzip-compressed files (zlib). Image formats give pixels scaled to [0, 1]
// (torchvision's ToTensor); array formats give numbers as written. Large
// image sets stream: CIFAR-10's files are memory-mapped, and an image
// folder's files are decoded batch by batch (their headers are checked when
// the set is loaded). Every error names the file and, where there is one,
// the record.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_SOURCES_H
#define NNC_RUNTIME_SOURCES_H

#include "runtime/Data.h"
#include "runtime/Tensor.h"

#include <cstdint>
#include <string>
#include <vector>

namespace nnc::rt {

/// Whether `path` names a directory; whether it names anything.
bool isDirectory(const std::string &path);
bool exists(const std::string &path);

/// Reads a whole file, inflated when it is gzip-compressed (its first bytes
/// say so, whatever its name).
Status readWholeFile(const std::string &path, std::vector<uint8_t> &bytes);

/// CIFAR-10's binary release in `dir` (or `dir`/cifar-10-batches-bin):
/// data_batch_1..5.bin, or test_batch.bin when `test`. Records of 3073
/// bytes: a label in [0, 9], then 1024 red, 1024 green and 1024 blue pixels
/// (an image of [3, 32, 32]). Fields "images" and "labels".
Status loadCifar10(const std::string &dir, bool test, Table &out);

/// The arrays of a .npz file (np.savez or np.savez_compressed), one field
/// per array named as the array; the first axis is the sample axis.
Status loadNpz(const std::string &path, Table &out);
/// The .npy files of a directory, one field per file named as the file.
Status loadNpyDir(const std::string &dir, Table &out);

/// Writes tensors as a .npz file (float32 arrays named as the tensors),
/// whole or not at all: to a temporary file renamed over `path`.
Status saveNpz(const std::string &path, const std::vector<HostTensor> &tensors);

/// An image folder: one subfolder per class (classes numbered in the sorted
/// order of their names, as torchvision's ImageFolder), each holding PNG or
/// JPEG files, decoded (when a batch needs them) to `channels` (1: grey, 3:
/// RGB) and resized (bilinear) to `height` x `width` when their size differs. Fields "images"
/// ([channels, height, width] each) and "labels"; `classes` gets the names.
Status loadImageFolder(const std::string &dir, int64_t channels, int64_t height, int64_t width, Table &out,
                       std::vector<std::string> *classes = nullptr);

} // namespace nnc::rt

#endif // NNC_RUNTIME_SOURCES_H
