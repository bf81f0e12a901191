//===- Mnist.cpp - the MNIST IDX loader -----------------------------------===//

#include "runtime/Mnist.h"
#include "runtime/Memory.h"
#include "runtime/Sources.h"

#include <fstream>
#include <iterator>

namespace nnc::rt {

static Status readFile(const std::string &path, std::vector<uint8_t> &bytes) {
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0)
    return readWholeFile(path, bytes);
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::error(path + ": cannot open the file");
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  resizeLarge(bytes, size > 0 ? static_cast<size_t>(size) : 0);
  in.read(reinterpret_cast<char *>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (in.bad() || in.gcount() != static_cast<std::streamsize>(bytes.size()))
    return Status::error(path + ": read error");
  return Status::ok();
}

static uint32_t bigEndian32(const uint8_t *p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

Status loadIdx(const std::string &imagesPath, const std::string &labelsPath,
               Dataset &out) {
  std::vector<uint8_t> img, lab;
  if (Status s = readFile(imagesPath, img); !s)
    return s;
  if (Status s = readFile(labelsPath, lab); !s)
    return s;
  if (img.size() < 16)
    return Status::error(imagesPath + ": truncated header (" + std::to_string(img.size()) +
                         " bytes, an IDX images header has 16)");
  if (bigEndian32(img.data()) != 2051)
    return Status::error(imagesPath + ": bad magic number " +
                         std::to_string(bigEndian32(img.data())) +
                         " (an IDX images file starts with 2051)");
  uint64_t count = bigEndian32(img.data() + 4), rows = bigEndian32(img.data() + 8),
           cols = bigEndian32(img.data() + 12);
  if (rows == 0 || cols == 0 || rows > 4096 || cols > 4096)
    return Status::error(imagesPath + ": implausible image size " + std::to_string(rows) +
                         "x" + std::to_string(cols));
  uint64_t want = 16 + count * rows * cols;
  if (img.size() != want)
    return Status::error(imagesPath + ": " + std::to_string(img.size()) + " bytes, but " +
                         std::to_string(count) + " images of " + std::to_string(rows) + "x" +
                         std::to_string(cols) + " need " + std::to_string(want) +
                         (img.size() < want ? " (truncated)" : " (trailing data)"));
  if (lab.size() < 8)
    return Status::error(labelsPath + ": truncated header (" + std::to_string(lab.size()) +
                         " bytes, an IDX labels header has 8)");
  if (bigEndian32(lab.data()) != 2049)
    return Status::error(labelsPath + ": bad magic number " +
                         std::to_string(bigEndian32(lab.data())) +
                         " (an IDX labels file starts with 2049)");
  uint64_t labelCount = bigEndian32(lab.data() + 4);
  if (labelCount != count)
    return Status::error(labelsPath + ": " + std::to_string(labelCount) + " labels for " +
                         std::to_string(count) + " images in " + imagesPath);
  if (lab.size() != 8 + count)
    return Status::error(labelsPath + ": " + std::to_string(lab.size()) + " bytes, but " +
                         std::to_string(count) + " labels need " + std::to_string(8 + count) +
                         (lab.size() < 8 + count ? " (truncated)" : " (trailing data)"));
  out.count = static_cast<int64_t>(count);
  out.imagesPath = imagesPath;
  out.labelsPath = labelsPath;
  out.features = static_cast<int64_t>(rows * cols);
  out.labels.resize(count);
  for (size_t i = 0; i < count; ++i) {
    if (lab[8 + i] > 9)
      return Status::error(labelsPath + ": label " + std::to_string(lab[8 + i]) +
                           " at index " + std::to_string(i) + " is not a digit 0-9");
    out.labels[i] = lab[8 + i];
  }
  img.erase(img.begin(), img.begin() + 16); // the pixels, in the file's buffer
  out.pixels = std::move(img);
  return Status::ok();
}

Status loadMnist(const std::string &dir, const std::string &split, Dataset &out) {
  // The files as distributed (gzipped) or unpacked, whichever is there.
  auto pick = [&](const std::string &name) {
    std::string path = dir + "/" + name;
    return !std::ifstream(path).good() && std::ifstream(path + ".gz").good() ? path + ".gz" : path;
  };
  return loadIdx(pick(split + "-images-idx3-ubyte"), pick(split + "-labels-idx1-ubyte"), out);
}

} // namespace nnc::rt
