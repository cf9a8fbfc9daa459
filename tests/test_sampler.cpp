// The stratified sampler (docs/DESIGN.md §1): exact group counts under every train.group_batch
// and batch_share, coverage of each pass over a group, determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "hetdro/check.h"
#include "hetdro/data.h"
#include "hetdro/rng.h"  // splitmix64

namespace hetdro {
namespace {

TEST(Sampler, CountsAreRoundedSharesSummingToTheBatch) {
  // 70/25/5 of 60000 at B = 100 → exactly 70, 25, 5.
  EXPECT_EQ(batch_counts({42000, 15000, 3000}, 100), (std::vector<int>{70, 25, 5}));
  // Largest remainder: 1/3 each of 100 → 34, 33, 33 (first largest remainder wins the extra).
  auto c = batch_counts({10, 10, 10}, 100);
  EXPECT_EQ(std::accumulate(c.begin(), c.end(), 0), 100);
  EXPECT_EQ(c, (std::vector<int>{34, 33, 33}));
  // A tiny group still gets one sample per batch.
  c = batch_counts({100000, 10}, 10);
  EXPECT_EQ(c, (std::vector<int>{9, 1}));
}

TEST(Sampler, BatchSmallerThanGroupsIsAnInputError) {
  EXPECT_THROW(batch_counts({10, 10, 10}, 2), InputError);
}

TEST(Sampler, EveryBatchHoldsExactCountsAndAnEpochNeverRepeats) {
  const std::vector<int64_t> sizes = {700, 250, 53};
  StratifiedSampler s(sizes, 20, 7);
  const auto& per = s.per_batch();
  EXPECT_EQ(std::accumulate(per.begin(), per.end(), 0), 20);
  EXPECT_EQ(s.steps_per_epoch(), std::min({700 / per[0], 250 / per[1], 53 / per[2]}));
  s.start_epoch(0);
  for (size_t g = 0; g < sizes.size(); ++g) {
    std::set<int64_t> seen;
    for (int64_t step = 0; step < s.steps_per_epoch(); ++step)
      for (int i = 0; i < per[g]; ++i) {
        int64_t idx = s.batch(int(g), step)[i];
        ASSERT_GE(idx, 0);
        ASSERT_LT(idx, sizes[g]);
        EXPECT_TRUE(seen.insert(idx).second) << "sample " << idx << " repeated in group " << g;
      }
    EXPECT_EQ(int64_t(seen.size()), s.steps_per_epoch() * per[g]);
  }
}

TEST(Sampler, SameSeedSameBatchesOtherSeedOrEpochOthers) {
  StratifiedSampler a({500, 300}, 16, 3), b({500, 300}, 16, 3), c({500, 300}, 16, 4);
  a.start_epoch(0);
  b.start_epoch(0);
  c.start_epoch(0);
  std::vector<int64_t> va, vb, vc;
  for (int64_t step = 0; step < a.steps_per_epoch(); ++step)
    for (int g = 0; g < 2; ++g)
      for (int i = 0; i < a.per_batch()[g]; ++i) {
        va.push_back(a.batch(g, step)[i]);
        vb.push_back(b.batch(g, step)[i]);
        vc.push_back(c.batch(g, step)[i]);
      }
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
  b.start_epoch(1);
  EXPECT_FALSE(std::equal(va.begin(), va.begin() + 10, b.batch(0, 0)));
}

TEST(Sampler, CountsFollowGroupBatchAndBatchShare) {
  const std::vector<int64_t> sizes = {42000, 15000, 3000};
  // sqrt: 100·√N_g/Σ√N = 53.62, 32.05, 14.33 → floors 53, 32, 14; the largest remainder takes 1.
  EXPECT_EQ(batch_counts(sizes, 100, GroupBatch::sqrt), (std::vector<int>{54, 32, 14}));
  // equal: 33.33 each → 34, 33, 33.
  EXPECT_EQ(batch_counts(sizes, 100, GroupBatch::equal), (std::vector<int>{34, 33, 33}));
  // proj64 fixed at 0.2: 20 of it; the others split 80 by size, 58.95 and 21.05 → 59, 21.
  EXPECT_EQ(batch_counts(sizes, 100, GroupBatch::proportional, {0, 0, 0.2}),
            (std::vector<int>{59, 21, 20}));
  // The same under equal: 40, 40 for the free groups.
  EXPECT_EQ(batch_counts(sizes, 100, GroupBatch::equal, {0, 0, 0.2}),
            (std::vector<int>{40, 40, 20}));
  EXPECT_EQ(batch_counts(sizes, 100, GroupBatch::sqrt, {0.5, 0.3, 0.2}),
            (std::vector<int>{50, 30, 20}));
  // No shares and all-zero shares are today's proportional counts.
  EXPECT_EQ(batch_counts(sizes, 100, GroupBatch::proportional, {0, 0, 0}),
            (std::vector<int>{70, 25, 5}));
  // A share below one sample still gives one, taken from the largest count.
  EXPECT_EQ(batch_counts({1000, 10}, 10, GroupBatch::proportional, {0, 0.01}),
            (std::vector<int>{9, 1}));
}

TEST(Sampler, ProportionalSharesNeverRepeatAndKeepTodaysEpoch) {
  const std::vector<int64_t> sizes = {700, 250, 53};
  StratifiedSampler a(sizes, 20, 7), b(sizes, 20, 7, GroupBatch::proportional, {0, 0, 0});
  EXPECT_FALSE(a.resamples());
  EXPECT_FALSE(b.resamples());
  EXPECT_EQ(a.describe(), "14, 5, 1 per batch");
  EXPECT_EQ(a.steps_per_epoch(), 50);  // min(700/14, 250/5, 53/1)
  a.start_epoch(3);
  b.start_epoch(3);
  for (int g = 0; g < 3; ++g) {
    EXPECT_EQ(a.order(g), b.order(g));
    EXPECT_EQ(a.order_size(g), sizes[g]);
    // The order before train.group_batch existed: one shuffle per (seed, epoch, group).
    EXPECT_EQ(a.order(g),
              seeded_permutation(sizes[g], splitmix64(7 ^ splitmix64(3 * 1000003 + uint64_t(g)))));
  }
}

// Under sqrt and equal shares and a batch_share, every batch holds the exact counts; an epoch is
// one pass over the largest group; each complete pass over a smaller group within the epoch holds
// every one of its samples once, and the passes differ.
class Resampling : public ::testing::TestWithParam<int> {};

TEST_P(Resampling, ExactCountsAndEachPassCoversItsGroupOnce) {
  const std::vector<int64_t> sizes = {700, 250, 53};
  const int mode = GetParam();
  StratifiedSampler s =
      mode == 0   ? StratifiedSampler(sizes, 20, 7, GroupBatch::sqrt)
      : mode == 1 ? StratifiedSampler(sizes, 20, 7, GroupBatch::equal)
                  : StratifiedSampler(sizes, 20, 7, GroupBatch::proportional, {0, 0, 0.3});
  const std::vector<int> expected[] = {{11, 6, 3}, {7, 7, 6}, {10, 4, 6}};
  ASSERT_EQ(s.per_batch(), expected[mode]);
  EXPECT_TRUE(s.resamples());
  EXPECT_EQ(s.steps_per_epoch(), 700 / s.per_batch()[0]);
  EXPECT_NE(s.describe().find(", drawn again"), std::string::npos);
  for (int epoch : {0, 1}) {
    s.start_epoch(epoch);
    for (int g = 0; g < 3; ++g) {
      const int64_t n = s.per_batch()[g], N = sizes[g];
      ASSERT_EQ(int64_t(s.order(g).size()), s.steps_per_epoch() * n);
      ASSERT_EQ(s.order_size(g), s.steps_per_epoch() * n);
      // The batches tile the order: step k takes n entries from k·n, each a sample of the group.
      for (int64_t step = 0; step < s.steps_per_epoch(); ++step)
        for (int64_t i = 0; i < n; ++i) {
          const int64_t idx = s.batch(g, step)[i];
          ASSERT_EQ(idx, s.order(g)[size_t(step * n + i)]);
          ASSERT_GE(idx, 0);
          ASSERT_LT(idx, N);
        }
      const int64_t passes = int64_t(s.order(g).size()) / N;
      if (g == 0) {  // the largest group: one pass at most
        EXPECT_LE(int64_t(s.order(g).size()), N);
      }
      std::vector<std::vector<int64_t>> seen;
      for (int64_t p = 0; p < passes; ++p) {
        std::vector<int64_t> pass(s.order(g).begin() + p * N, s.order(g).begin() + (p + 1) * N);
        std::vector<int64_t> sorted = pass;
        std::sort(sorted.begin(), sorted.end());
        for (int64_t i = 0; i < N; ++i) ASSERT_EQ(sorted[size_t(i)], i) << "group " << g;
        for (const auto& earlier : seen) EXPECT_NE(pass, earlier) << "group " << g;
        seen.push_back(pass);
      }
      // The part of a pass that the epoch's end cuts off repeats nothing either.
      std::set<int64_t> tail(s.order(g).begin() + passes * N, s.order(g).end());
      EXPECT_EQ(int64_t(tail.size()), int64_t(s.order(g).size()) - passes * N);
      if (g == 2) {
        EXPECT_GE(passes, 2);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, Resampling, ::testing::Values(0, 1, 2), [](const ::testing::TestParamInfo<int>& p) {
      return std::string(p.param == 0 ? "sqrt" : p.param == 1 ? "equal" : "batch_share");
    });

// Epoch e's batches depend on (sizes, counts, seed, e) alone: what ran before does not matter, so
// a resumed run starts epoch e where an unbroken one does.
TEST(Sampler, ResampledEpochsDependOnTheEpochAlone) {
  StratifiedSampler a({700, 250, 53}, 20, 7, GroupBatch::equal),
      b({700, 250, 53}, 20, 7, GroupBatch::equal);
  a.start_epoch(0);
  a.start_epoch(1);
  a.start_epoch(2);
  b.start_epoch(2);
  for (int g = 0; g < 3; ++g) EXPECT_EQ(a.order(g), b.order(g));
  b.start_epoch(1);
  EXPECT_NE(a.order(2), b.order(2));
}

}  // namespace
}  // namespace hetdro
