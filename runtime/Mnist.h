//===- Mnist.h - the MNIST IDX loader ---------------------------*- C++ -*-===//
//
// Reads MNIST in its IDX format: an images file (magic 2051, count, rows,
// cols, then one byte a pixel) and a labels file (magic 2049, count, then one
// byte a label). Every header field, the file sizes and the label range are
// validated; errors name the file and what is wrong.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_MNIST_H
#define NNC_RUNTIME_MNIST_H

#include "runtime/Status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace nnc::rt {

/// A stored pixel as the models see it: scaled to [0, 1] (b / 255, as
/// torchvision's ToTensor).
inline float pixelValue(uint8_t b) { return static_cast<float>(b) / 255.0f; }

struct Dataset {
  int64_t count = 0;
  int64_t features = 0;       // pixels per image (784)
  std::vector<uint8_t> pixels; // count * features, as stored (0-255)
  std::vector<int32_t> labels; // count, in [0, 9]
  std::string imagesPath, labelsPath; // where they were read from

  /// Pixel `i` as the models see it (pixelValue).
  float image(size_t i) const { return pixelValue(pixels[i]); }
};

/// Loads one split: `split` is "train" or "t10k" inside directory `dir`.
Status loadMnist(const std::string &dir, const std::string &split, Dataset &out);

/// Loads an images file and a labels file given by path.
Status loadIdx(const std::string &imagesPath, const std::string &labelsPath,
               Dataset &out);

} // namespace nnc::rt

#endif // NNC_RUNTIME_MNIST_H
