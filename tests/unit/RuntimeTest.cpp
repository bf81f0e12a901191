//===- RuntimeTest.cpp - the MLIR-free runtime ----------------------------===//

#include "runtime/Checkpoint.h"
#include "runtime/System.h"
#include "runtime/Data.h"
#include "runtime/Init.h"
#include "runtime/Mnist.h"
#include "runtime/Random.h"
#include "runtime/Training.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

using namespace nnc::rt;

namespace {

std::string tempPath(const std::string &name) {
  return ::testing::TempDir() + "/nnc-runtime-" + name;
}

void writeBytes(const std::string &path, const std::vector<uint8_t> &bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char *>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> be32(uint32_t v) {
  return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
}

/// A tiny IDX pair: `count` images of 2x2 and their labels.
void writeIdx(const std::string &images, const std::string &labels, uint32_t count,
              uint32_t magic = 2051, size_t dropBytes = 0, uint8_t label = 3) {
  std::vector<uint8_t> img;
  for (uint32_t v : {magic, count, 2u, 2u})
    for (uint8_t b : be32(v))
      img.push_back(b);
  for (uint32_t i = 0; i < count * 4; ++i)
    img.push_back(static_cast<uint8_t>(i * 50));
  img.resize(img.size() - dropBytes);
  writeBytes(images, img);
  std::vector<uint8_t> lab;
  for (uint32_t v : {2049u, count})
    for (uint8_t b : be32(v))
      lab.push_back(b);
  for (uint32_t i = 0; i < count; ++i)
    lab.push_back(label);
  writeBytes(labels, lab);
}

TEST(Runtime, IdxLoaderReadsAndScales) {
  std::string img = tempPath("ok-img"), lab = tempPath("ok-lab");
  writeIdx(img, lab, 2);
  Dataset d;
  Status s = loadIdx(img, lab, d);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(d.count, 2);
  EXPECT_EQ(d.features, 4);
  EXPECT_FLOAT_EQ(d.image(1), 50.0f / 255.0f);
  EXPECT_EQ(d.labels[1], 3);
}

/// MNIST's pixels stay bytes through binding and splitting; a batch holds
/// them scaled to [0, 1], row by row in the order asked for.
TEST(Runtime, MnistBatchesScaleTheStoredBytes) {
  std::string img = tempPath("batch-img"), lab = tempPath("batch-lab");
  writeIdx(img, lab, 5);
  Dataset d;
  ASSERT_TRUE(loadIdx(img, lab, d).isOk());
  std::vector<ModelInput> inputs{{"x", {4}, 4, false}, {"y", {}, 1, true}};
  Table bound;
  Status s = bindInputs(fromMnist(std::move(d)), inputs, Binding::ByType, bound);
  ASSERT_TRUE(s.isOk()) << s.message();
  ASSERT_EQ(bound.fields.size(), 2u);
  EXPECT_EQ(bound.fields[0].pixels.size(), 20u); // still bytes
  std::vector<HostTensor> batch;
  ASSERT_TRUE(batchOf(bound, inputs, {3, 0, 4}, batch).isOk());
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].shape, (std::vector<int64_t>{3, 4}));
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t p = 0; p < 4; ++p) {
      int64_t row = std::vector<int64_t>{3, 0, 4}[r];
      EXPECT_EQ(batch[0].data[r * 4 + p], static_cast<float>(uint8_t((row * 4 + p) * 50)) / 255.0f);
    }
  EXPECT_EQ(batch[1].data, (Floats{3, 3, 3}));
  Table train, val;
  splitValidation(bound, 0.4, 1, train, val);
  ASSERT_EQ(val.count, 2);
  std::multiset<float> seen;
  for (const Table *t : {&train, &val}) {
    std::vector<int64_t> all(t->count);
    for (int64_t i = 0; i < t->count; ++i)
      all[i] = i;
    std::vector<HostTensor> b;
    ASSERT_TRUE(batchOf(*t, inputs, all, b).isOk());
    seen.insert(b[0].data.begin(), b[0].data.end());
  }
  std::multiset<float> want;
  for (int i = 0; i < 20; ++i)
    want.insert(static_cast<float>(uint8_t(i * 50)) / 255.0f);
  EXPECT_EQ(seen, want);
}

TEST(Runtime, IdxLoaderRejectsBadFiles) {
  std::string img = tempPath("bad-img"), lab = tempPath("bad-lab");
  Dataset d;
  writeIdx(img, lab, 2, 2049);
  EXPECT_EQ(loadIdx(img, lab, d).message(),
            img + ": bad magic number 2049 (an IDX images file starts with 2051)");
  writeIdx(img, lab, 2, 2051, 3);
  EXPECT_EQ(loadIdx(img, lab, d).message(),
            img + ": 21 bytes, but 2 images of 2x2 need 24 (truncated)");
  writeIdx(img, lab, 2, 2051, 0, 12);
  EXPECT_EQ(loadIdx(img, lab, d).message(), lab + ": label 12 at index 0 is not a digit 0-9");
  EXPECT_FALSE(loadIdx(img, tempPath("missing"), d).isOk());
  writeBytes(img, {0, 0});
  EXPECT_NE(loadIdx(img, lab, d).message().find("truncated header"), std::string::npos);
}

TEST(Runtime, CheckpointRoundTripAndValidation) {
  std::string path = tempPath("ckpt.safetensors");
  std::vector<HostTensor> in = {{"w", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"b", {3}, {-1, 0.5f, 7}},
                                {"labels", {4}, {3, -2, 0, 16777216}, /*integer=*/true}};
  ASSERT_TRUE(saveCheckpoint(path, in, {{"nnc.step", "12"}}).isOk());
  std::vector<HostTensor> out;
  Metadata meta;
  Status s = loadCheckpoint(path, out, meta);
  ASSERT_TRUE(s.isOk()) << s.message();
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].name, "w");
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(out[0].data, in[0].data);
  EXPECT_EQ(out[1].data, in[1].data);
  EXPECT_FALSE(out[1].integer);
  EXPECT_EQ(out[2].data, in[2].data);
  EXPECT_TRUE(out[2].integer);
  EXPECT_EQ(meta["nnc.step"], "12");
  // The header is 8-byte aligned JSON, as safetensors requires; i32
  // tensors are stored as I32 (two's complement), not as floats.
  std::ifstream f(path, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char *>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header(n, ' ');
  f.read(header.data(), static_cast<std::streamsize>(n));
  EXPECT_NE(header.find("\"labels\":{\"dtype\":\"I32\""), std::string::npos) << header;
  f.seekg(static_cast<std::streamoff>(8 + n + 9 * 4 + 4));
  int32_t minusTwo = 0;
  f.read(reinterpret_cast<char *>(&minusTwo), 4);
  EXPECT_EQ(minusTwo, -2);

  // Every truncation is an error, never a crash.
  std::ifstream whole(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(whole)), {});
  for (size_t cut = 0; cut < bytes.size(); cut += 7) {
    writeBytes(path + ".cut", std::vector<uint8_t>(bytes.begin(), bytes.begin() + cut));
    EXPECT_FALSE(loadCheckpoint(path + ".cut", out, meta).isOk()) << "cut at " << cut;
  }
  // A flipped data bit fails the checksum.
  bytes.back() ^= 1;
  writeBytes(path + ".flip", bytes);
  EXPECT_NE(loadCheckpoint(path + ".flip", out, meta).message().find("checksum"),
            std::string::npos);
}

/// Every single-bit change anywhere in a checkpoint is refused: the size
/// field, the header (dtypes, shapes, offsets, metadata) and the data.
TEST(Runtime, CheckpointRefusesEveryFlippedBit) {
  std::vector<HostTensor> in = {{"w", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"n", {2}, {1, 7}, /*integer=*/true}};
  std::string path = tempPath("flip.safetensors");
  ASSERT_TRUE(saveCheckpoint(path, in, {{"nnc.model", "m"}, {"nnc.epoch", "1"}}).isOk());
  std::ifstream whole(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(whole)), {});
  std::vector<HostTensor> out;
  Metadata meta;
  ASSERT_TRUE(parseCheckpoint(bytes, path, out, meta).isOk());
  for (size_t i = 0; i < bytes.size(); ++i)
    for (int bit : {0, 3, 6}) {
      std::string changed = bytes;
      changed[i] = static_cast<char>(changed[i] ^ (1 << bit));
      // (Padding spaces may turn into other blanks JSON skips; nothing else may pass.)
      bool blank = bytes[i] == ' ' && (changed[i] == '\t' || changed[i] == '\n' || changed[i] == '\r');
      if (!blank)
        EXPECT_FALSE(parseCheckpoint(changed, path, out, meta).isOk()) << "byte " << i << " bit " << bit;
    }
}

/// Byte ranges must tile the data region: overlaps and gaps are named.
TEST(Runtime, CheckpointRangesTileTheData) {
  auto file = [](const std::string &header, size_t dataBytes) {
    std::string h = header;
    while (h.size() % 8)
      h += ' ';
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i)
      bytes[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
    return bytes + h + std::string(dataBytes, '\0');
  };
  std::vector<HostTensor> out;
  Metadata meta;
  std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  EXPECT_TRUE(parseCheckpoint(file("{" + a + "}", 8), "f", out, meta).isOk());
  EXPECT_EQ(parseCheckpoint(file("{" + a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "f",
                            out, meta)
                .message(),
            "f: not a valid checkpoint: tensors 'a' and 'b' overlap (bytes [4, 8))");
  EXPECT_EQ(parseCheckpoint(file("{" + a + "}", 12), "f", out, meta).message(),
            "f: not a valid checkpoint: bytes [8, 12) of the data belong to no tensor");
  EXPECT_EQ(parseCheckpoint(file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
                            "f", out, meta)
                .message(),
            "f: not a valid checkpoint: tensor 'a' has byte range [0, 8) that does not fit its shape");
}

/// Labels are checked against the model's classes when data is bound, and
/// errors name the CSV line.
TEST(Runtime, BindingChecksLabels) {
  std::string path = tempPath("labels.csv");
  std::ofstream(path) << "x,y\n0.5,1\n\n0.25,2\n";
  Table raw, bound;
  ASSERT_TRUE(loadCsv(path, raw).isOk());
  std::vector<ModelInput> inputs{{"x", {}, 1, false}, {"y", {}, 1, true, 2}};
  EXPECT_EQ(bindInputs(std::move(raw), inputs, Binding::ByPosition, bound).message(),
            path + ":4: label 2 of input 'y' is outside the model's 2 classes [0, 2)");
  ASSERT_TRUE(loadCsv(path, raw).isOk());
  inputs[1].classes = 3;
  EXPECT_TRUE(bindInputs(std::move(raw), inputs, Binding::ByPosition, bound).isOk());
}

TEST(Runtime, MachineLimits) {
  EXPECT_GE(availableCpus(), 1);
  EXPECT_GT(availableMemory(), uint64_t(1) << 20);
  EXPECT_EQ(setThreads(1), "");
  EXPECT_NE(setThreads(availableCpus() + 1).find("using " + std::to_string(availableCpus())), std::string::npos);
  EXPECT_EQ(formatBytes(512), "512 bytes");
  EXPECT_EQ(formatBytes(1500000), "1.5 MB");
  EXPECT_EQ(formatBytes(32000000000ull), "32 GB");
  EXPECT_FALSE(checkOutputPath("/dev/null", "it").isOk());
  EXPECT_TRUE(checkOutputPath(tempPath("new-file"), "it").isOk());
}

TEST(Runtime, CsvLoader) {
  std::string path = tempPath("data.csv");
  std::ofstream(path) << "a,b\n1,2\n\n3.5, -4\n";
  Table t;
  Status s = loadCsv(path, t);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(t.count, 2);
  ASSERT_EQ(t.fields.size(), 2u);
  EXPECT_EQ(t.fields[0].name, "a");
  EXPECT_EQ(t.fields[1].values, (std::vector<float>{2, -4}));
  std::ofstream(path) << "1,2\n3,x\n";
  EXPECT_EQ(loadCsv(path, t).message(), path + ":2:2: 'x' is not a number");
  std::ofstream(path) << "a,b\n";
  EXPECT_EQ(loadCsv(path, t).message(), path + ": no data rows");
}

TEST(Runtime, EpochOrdersAreSeededPermutations) {
  auto a = epochOrder(100, 1, 1, true), b = epochOrder(100, 1, 1, true);
  auto c = epochOrder(100, 1, 2, true), d = epochOrder(100, 2, 1, true);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, d);
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 100u);
  EXPECT_EQ(epochOrder(3, 1, 1, false), (std::vector<int64_t>{0, 1, 2}));
  Table all{10, {{"x", 1, false, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}}};
  Table train, val;
  splitValidation(all, 0.3, 1, train, val);
  EXPECT_EQ(train.count, 7);
  EXPECT_EQ(val.count, 3);
  std::set<float> seen(train.fields[0].values.begin(), train.fields[0].values.end());
  seen.insert(val.fields[0].values.begin(), val.fields[0].values.end());
  EXPECT_EQ(seen.size(), 10u);
}

TEST(Runtime, InitializersMatchTheirDistributions) {
  Floats v;
  InitSpec he{"he_normal", {}, 400, 100, {}};
  ASSERT_TRUE(initialize(he, 1, 0, v, 40000).isOk());
  double mean = 0, sq = 0;
  for (float x : v) {
    mean += x;
    sq += x * x;
  }
  mean /= v.size();
  double sd = std::sqrt(sq / v.size() - mean * mean);
  EXPECT_NEAR(mean, 0, 0.003);
  EXPECT_NEAR(sd, std::sqrt(2.0 / 400), 0.002);
  InitSpec torch{"torch_default", {}, 25, 0, {}};
  ASSERT_TRUE(initialize(torch, 1, 0, v, 10000).isOk());
  float lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
  EXPECT_GE(lo, -0.2f);
  EXPECT_LE(hi, 0.2f);
  EXPECT_LT(lo, -0.19f);
  EXPECT_GT(hi, 0.19f);
  Floats again;
  ASSERT_TRUE(initialize(torch, 1, 0, again, 10000).isOk());
  EXPECT_EQ(v, again);
  ASSERT_TRUE(initialize(torch, 1, 1, again, 10000).isOk());
  EXPECT_NE(v, again); // another stream (parameter) draws other numbers
  EXPECT_FALSE(initialize({"xavier_uniform", {}, 0, 0, {}}, 1, 0, v, 4).isOk());
  EXPECT_FALSE(initialize({"literal", {}, 0, 0, {1, 2}}, 1, 0, v, 3).isOk());
}

TEST(Runtime, HostBuffersStartOnACacheLine) {
  // Small blocks come from malloc's bins, large ones from mmap 16 bytes past
  // a page; kernels' 512-bit loads need neither to straddle cache lines.
  for (size_t n : {1u, 3u, 17u, 1000u, 70000u, 3000000u}) {
    Floats v(n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % kBufferAlignment, 0u) << n;
    Floats grown;
    resizeLarge(grown, n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(grown.data()) % kBufferAlignment, 0u) << n;
    HostTensor t{"t", {static_cast<int64_t>(n)}, Floats(n, 1.0f)};
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data.data()) % kBufferAlignment, 0u) << n;
  }
}

} // namespace
