// The stratified sampler (docs/DESIGN.md §1): exact group counts, coverage, determinism.
#include <gtest/gtest.h>

#include <numeric>
#include <set>

#include "hetdro/check.h"
#include "hetdro/data.h"

namespace hetdro {
namespace {

TEST(Sampler, CountsAreRoundedSharesSummingToTheBatch) {
  // 70/25/5 of 60000 at B = 100 → exactly 70, 25, 5.
  EXPECT_EQ(stratified_counts({42000, 15000, 3000}, 100), (std::vector<int>{70, 25, 5}));
  // Largest remainder: 1/3 each of 100 → 34, 33, 33 (first largest remainder wins the extra).
  auto c = stratified_counts({10, 10, 10}, 100);
  EXPECT_EQ(std::accumulate(c.begin(), c.end(), 0), 100);
  EXPECT_EQ(c, (std::vector<int>{34, 33, 33}));
  // A tiny group still gets one sample per batch.
  c = stratified_counts({100000, 10}, 10);
  EXPECT_EQ(c, (std::vector<int>{9, 1}));
}

TEST(Sampler, BatchSmallerThanGroupsIsAnInputError) {
  EXPECT_THROW(stratified_counts({10, 10, 10}, 2), InputError);
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

}  // namespace
}  // namespace hetdro
