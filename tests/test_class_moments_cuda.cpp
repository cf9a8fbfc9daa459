// class_moments on the GPU against the CPU reference in double (docs/DESIGN.md §1, §2): degenerate
// slots (0, 1, 2 samples), left-out samples, pooled and per_group slots, k ∈ {8, 64, 256},
// slots split across chunks, dead units, a large common offset, and 10^6 samples. Skipped
// without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::gpu_error;
using testing::kGpuTolerance;
using testing::nan_buffer;
using testing::on_device;
using testing::random_vector;
using testing::widen;

// ‖a − b‖/‖b‖ of two double vectors, +inf on a non-finite entry.
double increment_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-300);
}

struct GpuMoments {
  std::vector<float> mean, cov;
  std::vector<int32_t> count;
};

GpuMoments gpu_forward(Backend<float>& be, const std::vector<float>& z,
                       const std::vector<int32_t>& slot, int k, int slots, float eps) {
  const int n = int(slot.size());
  auto dz = on_device(be, z);
  auto ds = on_device(be, slot);
  auto mean = nan_buffer(be, int64_t(slots) * k);
  auto cov = nan_buffer(be, int64_t(slots) * k * k);
  auto count = on_device(be, std::vector<int32_t>(slots, -7));
  be.class_moments_forward(mean.data(), cov.data(), count.data(), dz.data(), ds.data(), n, k, slots,
                           eps);
  return {mean.download(), cov.download(), count.download()};
}

// Forward and backward against cpu::class_moments_*<double> on the same (float) inputs.
void check(const std::vector<float>& z, const std::vector<int32_t>& slot, int k, int slots,
           uint32_t seed) {
  HETDRO_CUDA_OR_SKIP(be);
  const int n = int(slot.size());
  const float eps = 1e-5f;
  const auto g = gpu_forward(be, z, slot, k, slots, eps);

  const auto zd = widen(z);
  std::vector<double> mean(size_t(slots) * k), cov(size_t(slots) * k * k);
  std::vector<int32_t> count(slots);
  cpu::class_moments_forward(mean.data(), cov.data(), count.data(), zd.data(), slot.data(), n, k,
                             slots, double(eps));
  ASSERT_EQ(g.count, count);
  EXPECT_LT(gpu_error(g.mean, mean), kGpuTolerance);
  EXPECT_LT(gpu_error(g.cov, cov), kGpuTolerance);
  for (int s = 0; s < slots; ++s) {
    const float* S = g.cov.data() + size_t(s) * k * k;
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < i; ++j) ASSERT_EQ(S[i * k + j], S[j * k + i]) << "slot " << s;
    if (count[s] < 2) {  // masked: exactly 0, as the reference writes
      for (int e = 0; e < k; ++e) ASSERT_EQ(g.mean[size_t(s) * k + e], 0.0f);
      for (int e = 0; e < k * k; ++e) ASSERT_EQ(S[e], 0.0f);
    }
  }
  // Deterministic: a second run gives the same bits.
  const auto again = gpu_forward(be, z, slot, k, slots, eps);
  EXPECT_EQ(again.mean, g.mean);
  EXPECT_EQ(again.cov, g.cov);

  // Backward: both sides start from the same nonzero dz and see the GPU's mean, so the += and
  // the centring are what is compared. dcov is not symmetric (the op symmetrises it).
  const auto dmean = random_vector<float>(size_t(slots) * k, seed + 1);
  const auto dcov = random_vector<float>(size_t(slots) * k * k, seed + 2);
  const auto dz0 = random_vector<float>(z.size(), seed + 3);
  for (bool with_cov : {true, false}) {
    auto gdz = on_device(be, dz0);
    auto gz = on_device(be, z);
    auto gm = on_device(be, g.mean);
    auto gc = on_device(be, g.count);
    auto gs = on_device(be, slot);
    auto gdm = on_device(be, dmean);
    auto gdc = on_device(be, dcov);
    be.class_moments_backward(gdz.data(), gdm.data(), with_cov ? gdc.data() : nullptr, gz.data(),
                              gm.data(), gc.data(), gs.data(), n, k, slots);
    const auto out = gdz.download();
    std::vector<double> ref = widen(dz0);
    const auto dmd = widen(dmean), dcd = widen(dcov), md = widen(g.mean);
    cpu::class_moments_backward(ref.data(), dmd.data(), with_cov ? dcd.data() : nullptr, zd.data(),
                                md.data(), count.data(), slot.data(), n, k, slots);
    EXPECT_LT(gpu_error(out, ref), kGpuTolerance) << "with dcov: " << with_cov;
    std::vector<double> inc(out.size()), ref_inc(out.size());
    for (size_t e = 0; e < out.size(); ++e) {
      inc[e] = double(out[e]) - double(dz0[e]);
      ref_inc[e] = ref[e] - double(dz0[e]);
    }
    EXPECT_LT(increment_error(inc, ref_inc), 1e-4) << "with dcov: " << with_cov;
    for (size_t i = 0; i < slot.size(); ++i) {  // left-out and masked samples: untouched
      if (slot[i] >= 0 && count[slot[i]] >= 2) continue;
      for (int d = 0; d < k; ++d) ASSERT_EQ(out[i * k + d], dz0[i * k + d]);
    }
  }
}

std::vector<int32_t> cyclic_slots(int n, int slots, int step) {
  std::vector<int32_t> slot(n);
  for (int i = 0; i < n; ++i) slot[i] = int32_t((int64_t(i) * step) % slots);
  return slot;
}

TEST(ClassMomentsCuda, DegenerateSlotsAndLeftOutSamples) {
  // Slot counts: 0 → 0, 1 → 1, 2 → 2, 3 → 8, 4 → 0, 5 → 22; 8 samples left out (slot −1).
  std::vector<int32_t> slot = {1, 2, 2};
  for (int i = 0; i < 7; ++i) slot.push_back(3);
  for (int i = 0; i < 30; ++i) slot.push_back(i % 4 == 0 ? -1 : 5);
  slot.push_back(3);
  for (int k : {8, 64}) check(random_vector<float>(slot.size() * k, 1), slot, k, 6, 10);
}

TEST(ClassMomentsCuda, PooledAndPerGroupSlotsAtTheDefaultSize) {
  // The default step: B = 100, k = 64, C = 10 classes, G = 3 groups.
  const int n = 100, k = 64, C = 10, G = 3;
  const auto z = random_vector<float>(size_t(n) * k, 2);
  std::vector<int32_t> labels(n), group(n), slot(n);
  for (int i = 0; i < n; ++i) labels[i] = (i * 7) % C, group[i] = i % G;
  cpu::fit_slots<double>(slot.data(), labels.data(), nullptr, n, C);
  check(z, slot, k, C, 20);
  cpu::fit_slots<double>(slot.data(), labels.data(), group.data(), n, C);
  check(z, slot, k, G * C, 30);
}

TEST(ClassMomentsCuda, LatentSizesAndSlotsSplitAcrossChunks) {
  // k = 8 (32-wide tiles), 64 (one tile), 256 (ten tiles of the triangle); slots of 100 to
  // 10000 samples, so some slots span several chunks and go through the partial sums.
  check(random_vector<float>(size_t(100000) * 8, 3), cyclic_slots(100000, 1000, 7), 8, 1000, 40);
  check(random_vector<float>(size_t(100000) * 64, 4), cyclic_slots(100000, 10, 3), 64, 10, 50);
  check(random_vector<float>(size_t(20000) * 256, 5), cyclic_slots(20000, 30, 11), 256, 30, 60);
  // One slot holding every sample.
  check(random_vector<float>(size_t(5000) * 64, 6), std::vector<int32_t>(5000, 0), 64, 1, 70);
}

TEST(ClassMomentsCuda, DeadUnitsGiveExactlyEps) {
  const int n = 300, k = 64, slots = 3;
  auto z = random_vector<float>(size_t(n) * k, 7);
  for (int i = 0; i < n; ++i) z[size_t(i) * k + 5] = 0.0f;  // unit 5 dead, as a ReLU leaves it
  const auto slot = cyclic_slots(n, slots, 1);
  check(z, slot, k, slots, 80);
  HETDRO_CUDA_OR_SKIP(be);
  const auto g = gpu_forward(be, z, slot, k, slots, 1e-5f);
  for (int s = 0; s < slots; ++s)
    for (int j = 0; j < k; ++j)
      EXPECT_EQ(g.cov[(size_t(s) * k + 5) * k + j], j == 5 ? 1e-5f : 0.0f);
}

TEST(ClassMomentsCuda, LargeCommonOffsetStaysAccurate) {
  // z = 1000 + noise of scale 0.01: E[zzᵀ] − mmᵀ would lose every digit in fp32.
  const int n = 5000, k = 16, slots = 5;
  auto z = random_vector<float>(size_t(n) * k, 8, -0.01f, 0.01f);
  for (float& v : z) v += 1000.0f;
  check(z, cyclic_slots(n, slots, 1), k, slots, 90);
}

TEST(ClassMomentsCuda, AMillionSamples) {
  const int n = 1000000, k = 32, slots = 1000;
  check(random_vector<float>(size_t(n) * k, 9), cyclic_slots(n, slots, 7), k, slots, 100);
}

// Data parallelism (docs/DESIGN.md §7): the backward on one rank's shard of a batch, with the
// whole batch's counts and means, including slots of which the shard holds one row or none.
TEST(ClassMomentsCuda, BackwardOnAShardTakesTheWholeBatchsCountAndMean) {
  HETDRO_CUDA_OR_SKIP(be);
  const int k = 64, slots = 12, n = 300, shard = 37;
  const auto z = random_vector<float>(size_t(n) * k, 91);
  std::vector<int32_t> slot = cyclic_slots(n, slots, 5);
  slot[0] = 11;  // slot 11: one row in the shard (its others come later)
  for (int i = 1; i < shard; ++i)
    if (slot[i] == 11) slot[i] = 3;
  for (int i = 0; i < shard; ++i)
    if (slot[i] == 7) slot[i] = 2;  // slot 7: no row in the shard
  const auto zd = widen(z);
  std::vector<double> mean(size_t(slots) * k), cov(size_t(slots) * k * k);
  std::vector<int32_t> count(slots);
  cpu::class_moments_forward(mean.data(), cov.data(), count.data(), zd.data(), slot.data(), n, k,
                             slots, 1e-5);
  const std::vector<float> z_shard(z.begin(), z.begin() + size_t(shard) * k);
  const std::vector<int32_t> slot_shard(slot.begin(), slot.begin() + shard);
  const auto dmean = random_vector<float>(size_t(slots) * k, 92);
  const auto dcov = random_vector<float>(size_t(slots) * k * k, 93);
  const auto dz0 = random_vector<float>(z_shard.size(), 94);
  std::vector<float> meanf(mean.begin(), mean.end());
  auto gdz = on_device(be, dz0);
  auto gz = on_device(be, z_shard);
  auto gm = on_device(be, meanf);
  auto gc = on_device(be, count);
  auto gs = on_device(be, slot_shard);
  auto gdm = on_device(be, dmean);
  auto gdc = on_device(be, dcov);
  be.class_moments_backward(gdz.data(), gdm.data(), gdc.data(), gz.data(), gm.data(), gc.data(),
                            gs.data(), shard, k, slots);
  std::vector<double> ref = widen(dz0);
  const auto dmd = widen(dmean), dcd = widen(dcov), md = widen(meanf), zs = widen(z_shard);
  cpu::class_moments_backward(ref.data(), dmd.data(), dcd.data(), zs.data(), md.data(),
                              count.data(), slot_shard.data(), shard, k, slots);
  EXPECT_LT(gpu_error(gdz.download(), ref), kGpuTolerance);
}

TEST(ClassMomentsCuda, NullGradientAndEmptyBatch) {
  HETDRO_CUDA_OR_SKIP(be);
  // dz = nullptr does nothing; n = 0 gives count 0, mean 0, cov 0.
  be.class_moments_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 10, 4,
                            2);
  const auto g = gpu_forward(be, {}, {}, 4, 2, 1e-5f);
  EXPECT_EQ(g.count, (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(g.mean, std::vector<float>(8, 0.0f));
  EXPECT_EQ(g.cov, std::vector<float>(32, 0.0f));
}

}  // namespace
}  // namespace hetdro
