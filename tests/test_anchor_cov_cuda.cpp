// anchor_cov on the GPU against the CPU reference in double (docs/DESIGN.md §1, §2):
// S = L Lᵀ + eps·I, exactly symmetric, and the accumulating backward dL += (G + Gᵀ) L. Skipped
// without a GPU.
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
using testing::on_device;
using testing::random_vector;
using testing::widen;

void check(int classes, int k) {
  HETDRO_CUDA_OR_SKIP(be);
  const float eps = 1e-5f;
  const auto chol = random_vector<float>(size_t(classes) * k * k, 1);
  auto gl = on_device(be, chol);
  auto gs = nan_buffer(be, int64_t(classes) * k * k);
  be.anchor_cov_forward(gs.data(), gl.data(), classes, k, eps);
  const auto S = gs.download();
  const auto ld = widen(chol);
  std::vector<double> rs(chol.size());
  cpu::anchor_cov_forward(rs.data(), ld.data(), classes, k, double(eps));
  EXPECT_LT(gpu_error(S, rs), kGpuTolerance);
  for (int c = 0; c < classes; ++c)
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < i; ++j)
        ASSERT_EQ(S[(size_t(c) * k + i) * k + j], S[(size_t(c) * k + j) * k + i]);

  const auto dcov = random_vector<float>(chol.size(), 2);  // not symmetric
  const auto dl0 = random_vector<float>(chol.size(), 3);
  auto gdc = on_device(be, dcov), gdl = on_device(be, dl0);
  be.anchor_cov_backward(gdl.data(), gdc.data(), gl.data(), classes, k);
  std::vector<double> rdl = widen(dl0);
  const auto dcd = widen(dcov);
  cpu::anchor_cov_backward(rdl.data(), dcd.data(), ld.data(), classes, k);
  EXPECT_LT(gpu_error(gdl.download(), rdl), kGpuTolerance);
  be.anchor_cov_backward(nullptr, gdc.data(), gl.data(), classes, k);  // a null gradient: no-op
}

TEST(AnchorCovCuda, MatchesTheReference) {
  check(10, 64);   // the default
  check(3, 5);     // smaller than any tile
  check(30, 256);  // per_group's repeated anchors at a large k
}

}  // namespace
}  // namespace hetdro
