// The w2_gaussian kernels' elementwise arithmetic (kernels/w2_gaussian.h) on the CPU: the floored
// roots, the cross term's slope with its eps² floor, and the Daleckii–Krein divided differences
// in each of their branches, against the formulas of docs/DESIGN.md §2 and the CPU reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "hetdro/ops.h"
#include "testing.h"  // gamma, unit_roundoff
#include "w2_gaussian.h"

namespace {

namespace w2 = hetdro::w2;

constexpr double kEps = 1e-5;

TEST(W2GaussianArith, RootsFloorAtEpsAndCrossTermAtEpsSquared) {
  EXPECT_DOUBLE_EQ(w2::root(4.0, kEps), 2.0);
  EXPECT_DOUBLE_EQ(w2::root(1e-7, kEps), std::sqrt(kEps));
  EXPECT_DOUBLE_EQ(w2::root(-3.0, kEps), std::sqrt(kEps));
  // M's floor is eps² (§2 step 2): eigenvalues between eps² and eps keep their own root.
  EXPECT_DOUBLE_EQ(w2::cross_root(4e-10, kEps), 2e-5);
  EXPECT_DOUBLE_EQ(w2::cross_root(1e-12, kEps), kEps);
  EXPECT_DOUBLE_EQ(w2::cross_slope(4e-10, kEps), 0.5 / 2e-5);
  EXPECT_EQ(w2::cross_slope(1e-12, kEps), 0.0);
  EXPECT_EQ(w2::cross_slope(kEps * kEps, kEps), 0.0);     // the floor itself is flat
  EXPECT_FLOAT_EQ(w2::cross_root(4e-10f, 1e-5f), 2e-5f);  // eps² is a normal float
}

TEST(W2GaussianArith, DividedDifferenceInEveryBranch) {
  auto K = [](double ai, double aj) {
    return w2::divided_difference(ai, aj, w2::root(ai, kEps), w2::root(aj, kEps), kEps);
  };
  // Both live: (√ai − √aj)/(ai − aj) with the gap cancelled, exact for equal values.
  EXPECT_NEAR(K(0.5, 2.0), (std::sqrt(0.5) - std::sqrt(2.0)) / (0.5 - 2.0), 1e-15);
  EXPECT_DOUBLE_EQ(K(0.5, 0.5), 0.5 / std::sqrt(0.5));
  EXPECT_NEAR(K(1.0, 1.0 + 1e-14), 0.5, 1e-14);  // near-equal: no gap division
  // Both clamped: f is constant there.
  EXPECT_EQ(K(kEps, 1e-7), 0.0);
  EXPECT_EQ(K(-1e-9, 1e-9), 0.0);
  // One on each side, a real gap: the plain quotient.
  EXPECT_DOUBLE_EQ(K(1.0, 1e-7), (1.0 - std::sqrt(kEps)) / (1.0 - 1e-7));
  EXPECT_DOUBLE_EQ(K(1e-7, 1.0), (std::sqrt(kEps) - 1.0) / (1e-7 - 1.0));
  // One on each side within 16 ε of each other: f′ at the midpoint, 1/(2√mid) if mid > eps.
  const double e = std::numeric_limits<double>::epsilon();
  const double above = kEps * (1 + 4 * e), below = kEps * (1 - 2 * e);
  const double mid = 0.5 * (above + below);
  ASSERT_GT(mid, kEps);
  EXPECT_DOUBLE_EQ(K(above, below), 0.5 / std::sqrt(mid));
  const double just = kEps * (1 + 2 * e), lower = kEps * (1 - 4 * e);
  ASSERT_LE(0.5 * (just + lower), kEps);
  EXPECT_EQ(K(just, lower), 0.0);
  // Symmetric in its arguments in every branch.
  for (double ai : {2.0, 1e-7, kEps, above, below})
    for (double aj : {0.3, 1e-9, kEps, above, below}) EXPECT_DOUBLE_EQ(K(ai, aj), K(aj, ai));
}

TEST(W2GaussianArith, DividedDifferenceInFloatStaysFiniteAtTheClamp) {
  // fp32 eigenvalues at eps carry rounding and land on either side of it; K must stay finite and
  // near f′(eps) = 1/(2√eps), never divide by a rounding gap. Error model, one side live: the
  // exact quotient (f(a_i) − f(a_j))/(a_i − a_j) is at most f′(eps) (f is concave and flat below
  // eps); the gap is exact (Sterbenz) and past the guard at least 16ε·eps; the two roots each
  // round by at most u·√eps (u = ε/2), so their difference errs by ε√eps, which over the gap is
  // f′(eps)/8; the divide rounds once, and f′(eps) itself (computed here in float) twice. A
  // division by a rounding gap would be off by orders of magnitude.
  const float eps = 1e-5f;
  const float ulp = std::numeric_limits<float>::epsilon();
  const float fprime = 0.5f / std::sqrt(eps);
  const double u = hetdro::testing::unit_roundoff<float>();
  const double bar = (1.0 + 1.0 / 8) * (1 + hetdro::testing::gamma(3, u)) * fprime;
  float worst = 0;
  for (int i = -40; i <= 40; ++i)
    for (int j = -40; j <= 40; ++j) {
      const float ai = eps * (1 + i * ulp), aj = eps * (1 + j * ulp);
      const float k = w2::divided_difference(ai, aj, w2::root(ai, eps), w2::root(aj, eps), eps);
      ASSERT_TRUE(std::isfinite(k)) << i << " " << j;
      ASSERT_GE(k, 0.0f);
      ASSERT_LE(k, bar) << i << " " << j;
      worst = std::max(worst, k / fprime);
    }
  std::printf("divided difference at the clamp in fp32: at most %.5f f'(eps)\n", worst);
}

// The eps² floor (issue 8, §2 step 2): two Gaussians with covariance eps·I are the same, so W2²
// is 0; a floor of eps on M would give 2k·eps − 2k·√eps ≈ −0.4 at k = 64.
TEST(W2GaussianArith, EqualEpsCovariancesGiveZeroWithTheEpsSquaredFloor) {
  const int k = 64;
  std::vector<double> A(size_t(k) * k, 0.0), m(k, 0.25), saved(hetdro::w2_gaussian_saved_size(k));
  for (int i = 0; i < k; ++i) A[size_t(i) * k + i] = kEps;
  double w = -1;
  hetdro::cpu::w2_gaussian_forward<double>(&w, saved.data(), m.data(), A.data(), m.data(), A.data(),
                                           1, k, kEps);
  EXPECT_NEAR(w, 0.0, 1e-15);
}

}  // namespace
