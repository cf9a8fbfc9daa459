// anchor_sample on the GPU against the CPU reference in double (docs/DESIGN.md §1, §2): the same
// counter-based ξ, bit for bit, the samples, and the accumulating backward. Skipped without a
// GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::gpu_error;
using testing::kGpuTolerance;
using testing::nan_buffer;
using testing::narrow;
using testing::on_device;
using testing::random_vector;
using testing::widen;

void check(int classes, int J, int k, uint64_t seed, int64_t step) {
  HETDRO_CUDA_OR_SKIP(be);
  const auto mean = random_vector<float>(size_t(classes) * k, 1);
  const auto chol = random_vector<float>(size_t(classes) * k * k, 2);
  const int64_t draws = int64_t(classes) * J * k;
  auto gz = nan_buffer(be, draws), gxi = nan_buffer(be, draws);
  auto gm = on_device(be, mean), gl = on_device(be, chol);
  const auto clock = on_device(be, std::vector<int64_t>{step});
  be.anchor_sample_forward(gz.data(), gxi.data(), gm.data(), gl.data(), classes, J, k, seed,
                           clock.data());
  const auto z = gz.download(), xi = gxi.download();

  std::vector<double> rz(draws), rxi(draws);
  const auto md = widen(mean), ld = widen(chol);
  cpu::anchor_sample_forward(rz.data(), rxi.data(), md.data(), ld.data(), classes, J, k, seed,
                             &step);
  // ξ is the same draw on both backends: the double rounded to float once.
  EXPECT_EQ(xi, narrow(rxi));
  EXPECT_LT(gpu_error(z, rz), kGpuTolerance);

  // Backward: gradients start from the same nonzero values on both sides (+= is tested).
  const auto dz = random_vector<float>(size_t(draws), 3);
  const auto dm0 = random_vector<float>(mean.size(), 4), dl0 = random_vector<float>(chol.size(), 5);
  auto gdz = on_device(be, dz), gxi_in = on_device(be, narrow(rxi));
  auto gdm = on_device(be, dm0), gdl = on_device(be, dl0);
  be.anchor_sample_backward(gdm.data(), gdl.data(), gdz.data(), gxi_in.data(), classes, J, k);
  std::vector<double> rdm = widen(dm0), rdl = widen(dl0);
  const auto dzd = widen(dz), xid = widen(narrow(rxi));
  cpu::anchor_sample_backward(rdm.data(), rdl.data(), dzd.data(), xid.data(), classes, J, k);
  EXPECT_LT(gpu_error(gdm.download(), rdm), kGpuTolerance);
  EXPECT_LT(gpu_error(gdl.download(), rdl), kGpuTolerance);

  // Null gradients are skipped: dmean alone, then dchol alone.
  auto only_m = on_device(be, dm0);
  be.anchor_sample_backward(only_m.data(), nullptr, gdz.data(), gxi_in.data(), classes, J, k);
  EXPECT_LT(gpu_error(only_m.download(), rdm), kGpuTolerance);
  auto only_l = on_device(be, dl0);
  be.anchor_sample_backward(nullptr, only_l.data(), gdz.data(), gxi_in.data(), classes, J, k);
  EXPECT_LT(gpu_error(only_l.download(), rdl), kGpuTolerance);
}

TEST(AnchorSampleCuda, MatchesTheReferenceAtTheDefaultSize) { check(10, 16, 64, 42, 0); }

TEST(AnchorSampleCuda, MatchesTheReferenceAtOtherSizesAndCounters) {
  check(3, 5, 7, 7, 123456789);             // sizes that fill no tile
  check(30, 16, 256, 1, int64_t(1) << 30);  // a late step: a counter past 2^47
}

}  // namespace
}  // namespace hetdro
