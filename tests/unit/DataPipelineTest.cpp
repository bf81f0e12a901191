//===- DataPipelineTest.cpp - calls, transforms and batches ----------------===//
//
// The canonical text of train-section calls reads back as itself; transforms
// of a sample depend on (seed, epoch, sample) alone, never on the batch or
// thread that makes it; deterministic transforms invert as they should; and
// the batch loader's scoring names tasks by their data.
//
//===----------------------------------------------------------------------===//

#include "runtime/Augment.h"
#include "runtime/Call.h"
#include "runtime/Distributed.h"
#include "runtime/Schedule.h"
#include "runtime/Training.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>

using namespace nnc::rt;

TEST(Calls, CanonicalTextReadsBack) {
  for (const char *text : {"hflip()", "random_crop(32, padding=4)", "normalize(mean=[0.5, 0.25], std=[0.1])",
                           "onecycle(max_lr=0.1, anneal_strategy=\"linear\", three_phase=true)"}) {
    Call c;
    ASSERT_TRUE(parseCall(text, c).isOk()) << text;
    Call again;
    ASSERT_TRUE(parseCall(c.text(), again).isOk()) << c.text();
    EXPECT_EQ(again.text(), c.text());
  }
  std::vector<Call> list;
  ASSERT_TRUE(parseCallList("[hflip, vflip(p=1)]", list).isOk());
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(callListText(list), "[hflip(), vflip(p=1)]");
  Call bad;
  EXPECT_EQ(parseCall("cosine(t_max=", bad).message(), "'cosine(t_max=': expected a number at column 14");
}

TEST(Calls, ResolveNamesArgumentsAndDefaults) {
  Call c;
  ASSERT_TRUE(parseCall("step(3)", c).isOk());
  ASSERT_TRUE(checkSchedule(c).isOk());
  EXPECT_EQ(c.text(), "step(step_size=3, gamma=0.1)");
  ASSERT_TRUE(parseCall("step(3, step_size=4)", c).isOk());
  EXPECT_EQ(checkSchedule(c).message(), "schedule step: argument 'step_size' is given twice");
  ASSERT_TRUE(parseCall("multistep(milestones=[5, 3])", c).isOk());
  EXPECT_EQ(checkSchedule(c).message(),
            "schedule multistep: milestones must be increasing positive whole numbers of epochs");
  ASSERT_TRUE(parseCall("cosine()", c).isOk());
  EXPECT_EQ(checkSchedule(c).message(), "schedule cosine needs argument 't_max': cosine(t_max, eta_min=0)");
}

TEST(Schedules, EpochSchedulesChangeBetweenEpochsOnly) {
  Call c;
  ASSERT_TRUE(parseCall("cosine(t_max=4)", c).isOk());
  ASSERT_TRUE(checkSchedule(c).isOk());
  EXPECT_FALSE(perStep(c));
  SchedulePoint a{2, 10, 8, 4}, b{2, 15, 8, 4};
  EXPECT_EQ(scheduledRate(c, 0.1, a), scheduledRate(c, 0.1, b));
  EXPECT_DOUBLE_EQ(scheduledRate(c, 0.1, SchedulePoint{1, 0, 8, 4}), 0.1);
  EXPECT_NEAR(scheduledRate(c, 0.1, SchedulePoint{5, 0, 8, 4}), 0.0, 1e-12);
}

namespace {

/// A [3, 8, 8] image whose values name their place.
std::vector<float> image() {
  std::vector<float> x(3 * 8 * 8);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(i % 61) / 61.0f;
  return x;
}

std::vector<Call> calls(const std::string &text, const std::vector<int64_t> &dims) {
  std::vector<Call> out;
  EXPECT_TRUE(parseCallList(text, out).isOk());
  for (Call &c : out)
    EXPECT_TRUE(checkTransform(c, dims).isOk()) << c.text();
  return out;
}

} // namespace

TEST(Transforms, DependOnSeedEpochAndSampleOnly) {
  std::vector<int64_t> dims{3, 8, 8};
  auto t = calls("[random_crop(8, padding=2), hflip(), rotate(20), color_jitter(brightness=0.3), noise(std=0.1)]", dims);
  std::vector<float> scratch;
  auto draw = [&](uint64_t seed, int64_t epoch, int64_t sample) {
    std::vector<float> x = image();
    applyTransforms(t, dims, x.data(), true, SampleKey{seed, epoch, sample}, scratch);
    return x;
  };
  std::vector<float> first = draw(1, 1, 7);
  // The same key on another thread gives the same sample.
  std::vector<float> other;
  std::thread([&] {
    std::vector<float> s;
    other = image();
    applyTransforms(t, dims, other.data(), true, SampleKey{1, 1, 7}, s);
  }).join();
  EXPECT_EQ(first, other);
  EXPECT_NE(first, draw(1, 2, 7));
  EXPECT_NE(first, draw(1, 1, 8));
  EXPECT_NE(first, draw(2, 1, 7));
  // Evaluation applies none of the random ones.
  std::vector<float> x = image();
  applyTransforms(t, dims, x.data(), false, SampleKey{1, 0, 7}, scratch);
  EXPECT_EQ(x, image());
}

TEST(Transforms, FlipsAndNormalizationInvert) {
  std::vector<int64_t> dims{3, 8, 8};
  std::vector<float> scratch, x = image();
  auto flip = calls("[hflip(p=1), vflip(p=1)]", dims);
  applyTransforms(flip, dims, x.data(), true, SampleKey{0, 1, 0}, scratch);
  EXPECT_NE(x, image());
  EXPECT_EQ(x[0], image()[63]); // the corner goes to the opposite corner
  applyTransforms(flip, dims, x.data(), true, SampleKey{0, 1, 0}, scratch);
  EXPECT_EQ(x, image());
  auto norm = calls("[normalize(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5]), scale(2)]", dims);
  applyTransforms(norm, dims, x.data(), false, SampleKey{}, scratch);
  std::vector<float> want = image();
  for (size_t i = 0; i < want.size(); ++i) {
    size_t c = i / 64;
    float m = c == 0 ? 0.5f : c == 1 ? 0.4f : 0.3f, s = c == 0 ? 0.2f : c == 1 ? 0.25f : 0.5f;
    EXPECT_FLOAT_EQ(x[i], 2 * ((want[i] - m) / s)) << i;
  }
}

TEST(Transforms, CropsOfTheInputSizeOnly) {
  std::vector<int64_t> dims{3, 8, 8};
  Call c;
  ASSERT_TRUE(parseCall("random_crop(6, padding=1)", c).isOk());
  EXPECT_EQ(checkTransform(c, dims).message(),
            "transform random_crop: the crop must give the model's input size 8x8, not 6");
  ASSERT_TRUE(parseCall("random_crop(11, padding=1)", c).isOk());
  EXPECT_EQ(checkTransform(c, dims).message(),
            "transform random_crop: a crop of 11 is larger than the padded image (10x10)");
  ASSERT_TRUE(parseCall("hflip()", c).isOk());
  EXPECT_EQ(checkTransform(c, {784}).message(),
            "transform hflip: needs an image input of sizes [C, H, W] after the batch axis");
}

// A data-parallel run cuts each global batch into contiguous near-equal
// parts that cover it once; shares add up to 1 and weigh each part by its
// rows, and a rank left without rows gets one at share 0.
TEST(DataParallel, ShardsCoverTheGlobalBatchOnce) {
  for (int ranks : {1, 2, 3, 4, 7}) {
    for (int64_t n : {1, 2, 5, 63, 64, 65, 1000}) {
      int64_t next = 0;
      double total = 0;
      for (int r = 0; r < ranks; ++r) {
        nnc::rt::Shard s = nnc::rt::shardOf(n, r, ranks);
        ASSERT_GE(s.from, 0);
        ASSERT_LT(s.from, n);
        ASSERT_LE(s.to, n);
        if (s.share > 0) {
          EXPECT_EQ(s.from, next) << "n " << n << " rank " << r << " of " << ranks;
          EXPECT_DOUBLE_EQ(s.share, static_cast<double>(s.to - s.from) / static_cast<double>(n));
          EXPECT_LE(s.to - s.from, (n + ranks - 1) / ranks);
          EXPECT_GE(s.to - s.from, n / ranks);
          next = s.to;
        } else {
          EXPECT_EQ(s.to - s.from, 1); // a stand-in row that counts for nothing
          EXPECT_LT(n, ranks);
        }
        total += s.share;
      }
      EXPECT_EQ(next, n);
      EXPECT_NEAR(total, 1.0, 1e-12);
    }
  }
}

// Outside a launched run nothing joins MPI: no group, every process leads,
// and the check that ranks agree has nothing to compare.
TEST(DataParallel, AloneWithoutALauncher) {
  if (nnc::rt::detectLaunch().size > 1)
    GTEST_SKIP() << "started by a launcher";
  ASSERT_TRUE(nnc::rt::Group::join(nnc::rt::DistributedMode::Auto).isOk());
  EXPECT_EQ(nnc::rt::Group::current(), nullptr);
  EXPECT_TRUE(nnc::rt::isLeader());
  EXPECT_TRUE(nnc::rt::checkSameRun({{"batch", "64"}}, "model").isOk());
  nnc::rt::DistributedMode mode;
  EXPECT_TRUE(nnc::rt::parseDistributedMode("mpi", mode));
  EXPECT_EQ(mode, nnc::rt::DistributedMode::Mpi);
  EXPECT_TRUE(nnc::rt::parseDistributedMode("nccl", mode));
  EXPECT_EQ(mode, nnc::rt::DistributedMode::Nccl);
  EXPECT_FALSE(nnc::rt::parseDistributedMode("gloo", mode));
  // nnc_all_reduce is the identity in one process.
  std::vector<float> in = {1.5f, -2.0f, 3.25f}, out(3, 0.0f);
  nnc_all_reduce(reinterpret_cast<int64_t>(in.data()), reinterpret_cast<int64_t>(out.data()), 3, 0);
  nnc_all_reduce_wait();
  EXPECT_EQ(out, in);
}
