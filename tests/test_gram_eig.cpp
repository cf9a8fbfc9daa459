// The low-rank Gram route to Ŝ's eigendecomposition (kernels/gram_eig.h, docs/DESIGN.md §3) on
// the CPU, in double and in float, against Eigen's SelfAdjointEigenSolver of Ŝ computed in
// double: eigenvalues, the reconstruction U diag(w) Uᵀ, orthonormality, the live subspace, for
// n = 2..20 and n = k samples in k ∈ {8, 16, 64}, with dead units, duplicate samples, n > k, and
// the masked slot (n < 2).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "eigen_dense.h"  // the reference eigensolver
#include "gram_eig.h"
#include "testing.h"  // random_vector

namespace {

using hetdro::testing::random_vector;
using MatD = Eigen::MatrixXd;

// Ŝ = Z̃ᵀZ̃/(n−1) + εI in double, from the samples as given.
template <typename T>
MatD covariance(const std::vector<T>& z, int n, int k, double eps) {
  MatD Z(n, k);
  for (int s = 0; s < n; ++s)
    for (int d = 0; d < k; ++d) Z(s, d) = double(z[size_t(s) * k + d]);
  const Eigen::RowVectorXd mean = Z.colwise().mean();
  const MatD Zc = Z.rowwise() - mean;
  return Zc.transpose() * Zc / double(n - 1) + eps * MatD::Identity(k, k);
}

struct Errors {
  double values, reconstruction, orthonormality;
  double projector;  // ‖U_r U_rᵀ − V_r V_rᵀ‖_F times gap/‖Ŝ‖ (a subspace is as sharp as its gap)
  int rank;
};

// Runs the route in T and measures it against Eigen on Ŝ, whose top `rank` eigenvectors span
// the live subspace (the rank the samples have by construction).
template <typename T>
Errors run(const std::vector<T>& z, int n, int k, double eps, int rank) {
  std::vector<T> w(k), U(size_t(k) * k), work(size_t(hetdro::gram::slot_workspace(n, k)));
  const int r =
      hetdro::gram::gram_eigh_slot(w.data(), U.data(), z.data(), n, k, T(eps), work.data());
  for (int i = 1; i < k; ++i) EXPECT_LE(w[i - 1], w[i]) << "eigenvalues not ascending at " << i;

  const MatD S = covariance(z, n, k, eps);
  Eigen::SelfAdjointEigenSolver<MatD> ref(S);
  MatD Ud(k, k);
  Eigen::VectorXd wd(k);
  for (int i = 0; i < k; ++i) {
    wd(i) = double(w[i]);
    for (int j = 0; j < k; ++j) Ud(i, j) = double(U[size_t(i) * k + j]);
  }
  const double norm = S.norm();
  Errors e{};
  e.rank = r;
  e.values = (wd - ref.eigenvalues()).norm() / ref.eigenvalues().norm();
  e.reconstruction = (Ud * wd.asDiagonal() * Ud.transpose() - S).norm() / norm;
  e.orthonormality = (Ud.transpose() * Ud - MatD::Identity(k, k)).cwiseAbs().maxCoeff();
  EXPECT_EQ(r, rank) << "live rank, n = " << n << ", k = " << k;
  // The live subspace: U's last r columns against Eigen's top `rank` eigenvectors.
  const MatD Pr = Ud.rightCols(r) * Ud.rightCols(r).transpose();
  const MatD Vr = ref.eigenvectors().rightCols(rank);
  const double gap =
      rank > 0 && rank < k ? ref.eigenvalues()(k - rank) - ref.eigenvalues()(k - rank - 1) : norm;
  e.projector = (Pr - Vr * Vr.transpose()).norm() * gap / norm;
  return e;
}

void expect_close(const Errors& e, double tol, const char* what, int n, int k) {
  EXPECT_LT(e.values, tol) << what << " eigenvalues, n = " << n << ", k = " << k;
  EXPECT_LT(e.reconstruction, tol) << what << " U diag(w) Uᵀ vs Ŝ, n = " << n << ", k = " << k;
  EXPECT_LT(e.orthonormality, tol) << what << " UᵀU − I, n = " << n << ", k = " << k;
  EXPECT_LT(e.projector, tol) << what << " live projector, n = " << n << ", k = " << k;
}

// The bars: float is what the kernel runs, double checks the algebra. Error model: centring
// shifts by the first sample (exact within a factor 2, Sterbenz) and subtracts a small mean, u;
// each Gram entry sums k products (γ_k); the n×n Jacobi leaves each entry with ε·√(S·n) after S
// ≤ kMaxSweeps sweeps (the random walk of tests/test_jacobi_eig.cpp). Each measure here (the
// eigenvalues relative to ‖w‖, the reconstruction relative to ‖Ŝ‖, UᵀU − I entry by entry, the
// live projector scaled by its gap) is perturbed by those; the bar is twice their sum plus 8ε,
// and a wrong basis misses it by orders of magnitude (errors of order 1).
template <typename T>
double bar(int n, int k) {
  const double eps = std::numeric_limits<T>::epsilon(), u = hetdro::testing::unit_roundoff<T>();
  return 2 * (eps * std::sqrt(double(hetdro::jacobi::kMaxSweeps) * n) +
              hetdro::testing::gamma(k, u) + u) +
         8 * eps;
}

std::vector<int> sample_counts(int k) {
  std::vector<int> ns;
  for (int n = 2; n <= 20; ++n) ns.push_back(n);
  if (k > 20) ns.push_back(k);
  return ns;
}

TEST(GramEig, RandomSamplesMatchEigen) {
  for (int k : {8, 16, 64})
    for (int n : sample_counts(k)) {
      const auto zd = random_vector<double>(size_t(n) * k, uint32_t(1000 * k + n));
      const int rank = std::min(n - 1, k);
      expect_close(run(zd, n, k, 1e-5, rank), bar<double>(n, k), "double", n, k);
      const std::vector<float> zf(zd.begin(), zd.end());
      expect_close(run(zf, n, k, 1e-5, rank), bar<float>(n, k), "float", n, k);
    }
}

// ReLU latents: units that are 0 for every sample of a slot (docs/DESIGN.md §2) and a large
// common offset on the others, which the centring must not turn into cancellation.
TEST(GramEig, DeadUnitsAndOffset) {
  for (int k : {8, 16, 64})
    for (int n : sample_counts(k)) {
      auto z = random_vector<double>(size_t(n) * k, uint32_t(7 * k + n), 0.0, 2.0);
      for (int s = 0; s < n; ++s)
        for (int d = 0; d < k; ++d) {
          double& x = z[size_t(s) * k + d];
          x = d % 3 == 1 ? 0.0 : x + 30.0;
        }
      const int alive = k - (k + 1) / 3;
      const int rank = std::min(n - 1, alive);
      expect_close(run(z, n, k, 1e-5, rank), bar<double>(n, k), "double", n, k);
      const std::vector<float> zf(z.begin(), z.end());
      // The float inputs at offset 30 carry rounding 30·2^-24 ≈ 2e-6 relative to a spread of 2,
      // which the reference sees too (it reads the same floats); the shift by the first sample
      // removes the offset exactly.
      expect_close(run(zf, n, k, 1e-5, rank), bar<float>(n, k), "float", n, k);
    }
}

// Duplicate samples: rank = distinct samples − 1, the rest exactly ε.
TEST(GramEig, DuplicateSamplesLowerTheRank) {
  for (int k : {8, 16, 64})
    for (int n : {3, 6, 12, 20}) {
      const int distinct = std::max(1, n / 3);
      const auto base = random_vector<double>(size_t(distinct) * k, uint32_t(31 * k + n));
      std::vector<double> z(size_t(n) * k);
      for (int s = 0; s < n; ++s)
        std::copy_n(base.begin() + size_t(s % distinct) * k, k, z.begin() + size_t(s) * k);
      const int expected = std::min(distinct - 1, k);
      expect_close(run(z, n, k, 1e-5, expected), bar<double>(n, k), "double", n, k);
      const std::vector<float> zf(z.begin(), z.end());
      expect_close(run(zf, n, k, 1e-5, expected), bar<float>(n, k), "float", n, k);
    }
}

// All samples equal: Ŝ = εI, rank 0, U = I from the (empty) Householder product.
TEST(GramEig, IdenticalSamplesGiveEpsIdentity) {
  const int n = 5, k = 16;
  const auto row = random_vector<float>(k, 3);
  std::vector<float> z(size_t(n) * k);
  for (int s = 0; s < n; ++s) std::copy(row.begin(), row.end(), z.begin() + size_t(s) * k);
  std::vector<float> w(k), U(size_t(k) * k), work(size_t(hetdro::gram::slot_workspace(n, k)));
  EXPECT_EQ(hetdro::gram::gram_eigh_slot(w.data(), U.data(), z.data(), n, k, 1e-5f, work.data()),
            0);
  for (int i = 0; i < k; ++i) EXPECT_EQ(w[i], 1e-5f);
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) EXPECT_EQ(U[size_t(i) * k + j], i == j ? 1.0f : 0.0f);
}

// More samples than dimensions: full rank, no ε eigenvalue; the route still holds.
TEST(GramEig, MoreSamplesThanDimensions) {
  const int k = 8;
  for (int n : {9, 12, 20, 64}) {
    const auto z = random_vector<double>(size_t(n) * k, uint32_t(n));
    expect_close(run(z, n, k, 1e-5, k), bar<double>(n, k), "double", n, k);
  }
}

// A masked slot (fewer than 2 samples): class_moments writes Ŝ = 0, whose decomposition is
// eigenvalues 0 and U = I.
TEST(GramEig, MaskedSlotIsZeroAndIdentity) {
  const int k = 8;
  for (int n : {0, 1}) {
    const auto z = random_vector<float>(size_t(k), 9);
    std::vector<float> w(k, NAN), U(size_t(k) * k, NAN), work(1);
    EXPECT_EQ(hetdro::gram::gram_eigh_slot(w.data(), U.data(), z.data(), n, k, 1e-5f, work.data()),
              0);
    for (int i = 0; i < k; ++i) EXPECT_EQ(w[i], 0.0f);
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) EXPECT_EQ(U[size_t(i) * k + j], i == j ? 1.0f : 0.0f);
  }
}

// The pieces the kernel runs in parallel: a reflector maps x to α e_0, and G is exactly
// symmetric.
TEST(GramEig, ReflectorAndGramSymmetry) {
  const auto x = random_vector<double>(7, 5);
  double n2 = 0;
  for (double v : x) n2 += v * v;
  const auto h = hetdro::gram::reflector(x[0], n2);
  std::vector<double> v(x);
  v[0] = h.v0;
  double dot = 0;
  for (size_t i = 0; i < x.size(); ++i) dot += v[i] * x[i];
  // Error model (double): ‖x‖² and the dot product sum 7 terms each (γ_7), the reflector's
  // scalars round a few times more and Hx = x − β(vᵀx)v 3 times: within γ_{2·7+6}·‖x‖.
  const double bar =
      hetdro::testing::gamma(2 * 7 + 6, hetdro::testing::unit_roundoff<double>()) * std::sqrt(n2);
  for (size_t i = 0; i < x.size(); ++i) {
    const double hx = x[i] - h.beta * dot * v[i];
    EXPECT_NEAR(hx, i == 0 ? h.alpha : 0.0, bar);
  }
  EXPECT_NEAR(std::fabs(h.alpha), std::sqrt(n2), bar);
  const auto zero = hetdro::gram::reflector(0.0, 0.0);
  EXPECT_EQ(zero.beta, 0.0);

  const int n = 6, k = 11;
  auto z = random_vector<float>(size_t(n) * (k + 1), 8);
  for (int d = 0; d < k; ++d) hetdro::gram::centre_column(z.data(), k + 1, n, d);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      EXPECT_EQ(hetdro::gram::gram_entry(z.data(), k + 1, n, k, i, j),
                hetdro::gram::gram_entry(z.data(), k + 1, n, k, j, i));
}

}  // namespace
