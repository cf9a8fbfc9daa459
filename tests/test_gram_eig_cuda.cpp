// cuda::gram_eigh, the low-rank Gram route (kernels/gram_eig.cu, docs/DESIGN.md §3), on the GPU
// against Eigen's eigendecomposition of Ŝ in double: eigenvalues, reconstruction U diag(w) Uᵀ,
// orthonormality, for k from 8 to 256 and slots of 0 to 64 samples (dead units, duplicates,
// more samples than dimensions), outputs NaN-filled beforehand, the same bits on a second run,
// and NaN for a slot over max_n. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_testing.h"
#include "eigen_dense.h"  // the reference eigensolver

#ifdef HETDRO_WITH_CUDA
#include "hetdro/cuda_ops.h"
#else
// Without CUDA every test below skips before it gets here; a stand-in so the file compiles.
namespace hetdro::cuda {
inline void gram_eigh(float*, float*, const float*, const int32_t*, const int32_t*, int, int, float,
                      int) {}
}  // namespace hetdro::cuda
#endif

namespace hetdro {
namespace {

using MatD = Eigen::MatrixXd;
using testing::gpu_error;
using testing::kGpuEigTolerance;
using testing::nan_buffer;
using testing::on_device;
using testing::random_vector;

constexpr float kEps = 1e-5f;

// Ŝ in double from one slot's float samples; 0 for a masked slot, as class_moments writes.
MatD covariance(const float* z, int n, int k) {
  if (n < 2) return MatD::Zero(k, k);
  MatD Z(n, k);
  for (int s = 0; s < n; ++s)
    for (int d = 0; d < k; ++d) Z(s, d) = double(z[size_t(s) * k + d]);
  const MatD Zc = Z.rowwise() - Z.colwise().mean();
  return Zc.transpose() * Zc / double(n - 1) + double(kEps) * MatD::Identity(k, k);
}

// Samples for slots of the given counts: slot s ≡ 0 (mod 3) random, ≡ 1 with dead units and a
// common offset, ≡ 2 with every sample after the first two a duplicate (rank ≤ 1).
std::vector<float> make_samples(const std::vector<int>& counts, int k, uint32_t seed) {
  int total = 0;
  for (int n : counts) total += n;
  auto z = random_vector<float>(size_t(total) * k, seed, 0.0f, 2.0f);
  int row = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    const int n = counts[s];
    for (int i = 0; i < n; ++i) {
      float* x = z.data() + size_t(row + i) * k;
      if (s % 3 == 1)  // dead units (ReLU zeros for the whole slot) and a common offset
        for (int d = 0; d < k; ++d) x[d] = d % 4 == 2 ? 0.0f : x[d] + 20.0f;
      if (s % 3 == 2 && i >= 2)  // duplicates: rank 1 at most
        for (int d = 0; d < k; ++d) x[d] = z[size_t(row + i % 2) * k + d];
    }
    row += n;
  }
  return z;
}

void check(int k, const std::vector<int>& counts, int max_n, uint32_t seed) {
  HETDRO_CUDA_OR_SKIP(be);
  const int slots = int(counts.size());
  std::vector<int32_t> start(slots), count(counts.begin(), counts.end());
  for (int s = 1; s < slots; ++s) start[s] = start[s - 1] + count[s - 1];
  const auto z = make_samples(counts, k, seed);
  auto dz = on_device(be, z);
  auto dstart = on_device(be, start);
  auto dcount = on_device(be, count);
  auto w = nan_buffer(be, int64_t(slots) * k);
  auto U = nan_buffer(be, int64_t(slots) * k * k);
  cuda::gram_eigh(w.data(), U.data(), dz.data(), dstart.data(), dcount.data(), slots, k, kEps,
                  max_n);
  const auto wh = w.download(), Uh = U.download();
  // Deterministic: fixed-order sums, no atomics.
  cuda::gram_eigh(w.data(), U.data(), dz.data(), dstart.data(), dcount.data(), slots, k, kEps,
                  max_n);
  EXPECT_EQ(w.download(), wh) << "k " << k;
  EXPECT_EQ(U.download(), Uh) << "k " << k;
  for (int s = 0; s < slots; ++s) {
    SCOPED_TRACE("slot " + std::to_string(s) + " of " + std::to_string(count[s]) + " samples, k " +
                 std::to_string(k));
    const float* ws = wh.data() + size_t(s) * k;
    const float* Us = Uh.data() + size_t(s) * k * k;
    if (count[s] > max_n) {  // not this route's: NaN, which no check lets pass
      for (int i = 0; i < k; ++i) EXPECT_TRUE(std::isnan(ws[i]));
      continue;
    }
    const MatD S = covariance(z.data() + size_t(start[s]) * k, count[s], k);
    Eigen::SelfAdjointEigenSolver<MatD> ref(S);
    MatD Ud(k, k);
    Eigen::VectorXd wd(k);
    std::vector<double> wref(k);
    for (int i = 0; i < k; ++i) {
      wd(i) = ws[i];
      wref[i] = ref.eigenvalues()(i);
      for (int j = 0; j < k; ++j) Ud(i, j) = Us[size_t(i) * k + j];
    }
    EXPECT_LE(gpu_error(std::vector<float>(ws, ws + k), wref), kGpuEigTolerance);
    for (int i = 1; i < k; ++i) EXPECT_LE(ws[i - 1], ws[i]) << "ascending at " << i;
    ASSERT_TRUE(Ud.allFinite());
    const MatD back = Ud * wd.asDiagonal() * Ud.transpose();
    EXPECT_LE((back - S).norm(), kGpuEigTolerance * std::max(S.norm(), 1e-30));
    EXPECT_LE((Ud.transpose() * Ud - MatD::Identity(k, k)).cwiseAbs().maxCoeff(), kGpuEigTolerance);
  }
}

// The sizes of the issue (k = 8 … 256) with slots of 0, 1, 2, 3, 10, k/2 and 64 samples (capped
// at 64), each of the three kinds.
TEST(GramEigCuda, MatchesEigenOnCovariance) {
  for (int k : {8, 16, 32, 64, 128, 256}) {
    std::vector<int> counts;
    for (int n : {0, 1, 2, 3, 10, std::min(k / 2, 64), 64, 20, 5}) counts.push_back(n);
    check(k, counts, 64, uint32_t(100 + k));
  }
}

// A smaller max_n sizes shared memory for it; a slot above it is answered with NaN.
TEST(GramEigCuda, SlotOverMaxNIsNaN) { check(64, {10, 11, 4, 2}, 10, 7); }

// The default config's batch: 30 slots of about 10 samples, k = 64; and 1000 slots.
TEST(GramEigCuda, Batches) {
  std::vector<int> counts(30);
  for (int s = 0; s < 30; ++s) counts[s] = 8 + s % 5;
  check(64, counts, 16, 11);
  std::vector<int> many(1000);
  for (int s = 0; s < 1000; ++s) many[s] = 2 + s % 15;
  check(32, many, 16, 12);
}

}  // namespace
}  // namespace hetdro
