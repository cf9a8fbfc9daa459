// anchor_cov and anchor_sample: naive references, the counter-based draws (determinism and
// statistics), and both backwards against central differences.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <type_traits>
#include <vector>

#include "hetdro/ops.h"
#include "hetdro/rng.h"  // normal01
#include "testing.h"     // random_vector, rel_error, numeric_gradient

namespace hetdro {
namespace {

using testing::numeric_gradient;
using testing::random_vector;
using testing::rel_error;

template <typename T>
class AnchorTyped : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AnchorTyped, Types);

TYPED_TEST(AnchorTyped, CovMatchesNaiveLoops) {
  using T = TypeParam;
  const int classes = 3, k = 5;
  const T eps = T(1e-3);
  const auto chol = random_vector<T>(size_t(classes) * k * k, 1);
  const auto dcov = random_vector<T>(chol.size(), 2);
  std::vector<T> cov(chol.size()), dchol(chol.size(), T(0));
  cpu::anchor_cov_forward(cov.data(), chol.data(), classes, k, eps);
  cpu::anchor_cov_backward(dchol.data(), dcov.data(), chol.data(), classes, k);
  // The definition in double, with each entry's Σ|terms| (testing.h, sum_tolerance): k + 1 terms
  // each, (G + Gᵀ) rounded once more before its product.
  std::vector<double> rc(chol.size()), rd(chol.size()), ac(chol.size()), ad(chol.size());
  for (int c = 0; c < classes; ++c)
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b) {
        const auto at = [&](const std::vector<T>& m, int i, int j) {
          return double(m[(size_t(c) * k + i) * k + j]);
        };
        const size_t ab = (size_t(c) * k + a) * k + b;
        rc[ab] = ac[ab] = a == b ? double(eps) : 0.0;
        for (int e = 0; e < k; ++e) {
          rc[ab] += at(chol, a, e) * at(chol, b, e);
          ac[ab] += std::abs(at(chol, a, e) * at(chol, b, e));
          rd[ab] += (at(dcov, a, e) + at(dcov, e, a)) * at(chol, e, b);  // (G + Gᵀ) L
          ad[ab] +=
              (std::abs(at(dcov, a, e)) + std::abs(at(dcov, e, a))) * std::abs(at(chol, e, b));
        }
      }
  using testing::conditioning;
  using testing::sum_tolerance;
  auto as_t = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  EXPECT_LT(rel_error(cov, as_t(rc)), sum_tolerance<T>(k + 1, conditioning(ac, rc)));
  EXPECT_LT(rel_error(dchol, as_t(rd)), sum_tolerance<T>(k + 1, conditioning(ad, rd)));
}

TYPED_TEST(AnchorTyped, SampleMatchesNaiveLoopsAndTheCounterLayout) {
  using T = TypeParam;
  const int classes = 3, J = 4, k = 5;
  const uint64_t seed = 42;
  const int64_t step = 17;
  const uint64_t counter = uint64_t(step) * classes * J * k;
  const auto mean = random_vector<T>(size_t(classes) * k, 1);
  const auto chol = random_vector<T>(size_t(classes) * k * k, 2);
  const auto dz = random_vector<T>(size_t(classes) * J * k, 3);
  std::vector<T> z(dz.size()), xi(dz.size()), dmean(mean.size(), T(0)), dchol(chol.size(), T(0));
  cpu::anchor_sample_forward(z.data(), xi.data(), mean.data(), chol.data(), classes, J, k, seed,
                             &step);
  cpu::anchor_sample_backward(dmean.data(), dchol.data(), dz.data(), xi.data(), classes, J, k);

  // The definition in double, with each entry's Σ|terms| (testing.h, sum_tolerance): z sums
  // k + 1 terms, dmean and dchol J.
  std::vector<double> rz(z.size()), az(z.size()), gm(mean.size()), am(mean.size()), gl(chol.size()),
      al(chol.size());
  for (int c = 0; c < classes; ++c)
    for (int j = 0; j < J; ++j)
      for (int d = 0; d < k; ++d) {
        const size_t i = (size_t(c) * J + j) * k + d;
        // The documented layout: ξ for (c, j, d) is normal01(seed, step·C·J·k + (c·J + j)·k + d).
        ASSERT_EQ(xi[i], T(normal01(seed, counter + i))) << i;
        rz[i] = mean[size_t(c) * k + d], az[i] = std::abs(rz[i]);
        for (int e = 0; e < k; ++e) {
          const double t =
              double(chol[(size_t(c) * k + d) * k + e]) * xi[(size_t(c) * J + j) * k + e];
          rz[i] += t, az[i] += std::abs(t);
        }
        gm[size_t(c) * k + d] += dz[i], am[size_t(c) * k + d] += std::abs(double(dz[i]));
        for (int e = 0; e < k; ++e) {
          const double t = double(dz[i]) * xi[(size_t(c) * J + j) * k + e];
          gl[(size_t(c) * k + d) * k + e] += t, al[(size_t(c) * k + d) * k + e] += std::abs(t);
        }
      }
  using testing::conditioning;
  using testing::sum_tolerance;
  auto as_t = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  EXPECT_LT(rel_error(z, as_t(rz)), sum_tolerance<T>(k + 1, conditioning(az, rz)));
  EXPECT_LT(rel_error(dmean, as_t(gm)), sum_tolerance<T>(J, conditioning(am, gm)));
  EXPECT_LT(rel_error(dchol, as_t(gl)), sum_tolerance<T>(J, conditioning(al, gl)));
}

std::vector<double> draw_xi(int classes, int J, int k, uint64_t seed, int64_t step) {
  const std::vector<double> mean(size_t(classes) * k, 0.0), chol(size_t(classes) * k * k, 0.0);
  std::vector<double> z(size_t(classes) * J * k), xi(z.size());
  cpu::anchor_sample_forward(z.data(), xi.data(), mean.data(), chol.data(), classes, J, k, seed,
                             &step);
  return xi;
}

TEST(AnchorSample, SameSeedAndStepDrawTheSameNumbersAndStepsTakeConsecutiveBlocks) {
  const auto a = draw_xi(2, 3, 4, 7, 4);
  EXPECT_EQ(a, draw_xi(2, 3, 4, 7, 4));
  const auto next = draw_xi(2, 3, 4, 7, 5);
  const auto other_seed = draw_xi(2, 3, 4, 8, 4);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NE(a[i], next[i]) << i;
    EXPECT_NE(a[i], other_seed[i]) << i;
  }
  // One stream per seed: step s takes its C·J·k = 24 draws right after step s − 1's.
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i], normal01(7, 4 * 24 + i)) << i;
    EXPECT_EQ(next[i], normal01(7, 5 * 24 + i)) << i;
  }
}

TEST(AnchorSample, DrawsAreStandardNormalAndZHasCovarianceLLt) {
  // 2 classes × 25000 draws × k = 2. Bounds are 5 standard errors: a correct sampler fails
  // about once in 10^6 seeds; a biased or mis-scaled one fails at once.
  const int classes = 2, J = 25000, k = 2;
  const std::vector<double> mean = {1, -2, 0.5, 3};
  const std::vector<double> chol = {1.5, 0, 0.5, 0.8, 0.3, 0, -0.7, 2.0};
  std::vector<double> z(size_t(classes) * J * k), xi(z.size()), cov(chol.size());
  const int64_t first = 0;
  cpu::anchor_sample_forward(z.data(), xi.data(), mean.data(), chol.data(), classes, J, k, 123,
                             &first);
  const double n = double(xi.size());
  const double m1 = std::accumulate(xi.begin(), xi.end(), 0.0) / n;
  const double m2 = std::inner_product(xi.begin(), xi.end(), xi.begin(), 0.0) / n;
  EXPECT_LT(std::abs(m1), 5 / std::sqrt(n));
  EXPECT_LT(std::abs(m2 - m1 * m1 - 1), 5 * std::sqrt(2 / n));

  cpu::anchor_cov_forward(cov.data(), chol.data(), classes, k, 0.0);
  for (int c = 0; c < classes; ++c) {
    double mu[2] = {0, 0}, s[2][2] = {{0, 0}, {0, 0}};
    for (int j = 0; j < J; ++j)
      for (int a = 0; a < k; ++a) mu[a] += z[(size_t(c) * J + j) * k + a] / J;
    for (int j = 0; j < J; ++j)
      for (int a = 0; a < k; ++a)
        for (int b = 0; b < k; ++b)
          s[a][b] += (z[(size_t(c) * J + j) * k + a] - mu[a]) *
                     (z[(size_t(c) * J + j) * k + b] - mu[b]) / (J - 1);
    for (int a = 0; a < k; ++a) {
      const double var = cov[(size_t(c) * k + a) * k + a];
      EXPECT_NEAR(mu[a], mean[c * k + a], 5 * std::sqrt(var / J)) << c << a;
      for (int b = 0; b < k; ++b) {
        const double sab = cov[(size_t(c) * k + a) * k + b];
        const double se = std::sqrt((var * cov[(size_t(c) * k + b) * k + b] + sab * sab) / J);
        EXPECT_NEAR(s[a][b], sab, 5 * se) << c << a << b;
      }
    }
  }
}

// L = Σ r ⊙ Z(m, L) with the draws held fixed (same seed and counter).
TEST(AnchorSample, BackwardMatchesCentralDifferencesAndAccumulates) {
  const int classes = 2, J = 3, k = 4;
  const auto mean = random_vector<double>(size_t(classes) * k, 1);
  const auto chol = random_vector<double>(size_t(classes) * k * k, 2);
  const auto r = random_vector<double>(size_t(classes) * J * k, 3);
  const int64_t step = 77;
  auto loss = [&](const std::vector<double>& m, const std::vector<double>& l) {
    std::vector<double> z(r.size()), xi(r.size());
    cpu::anchor_sample_forward(z.data(), xi.data(), m.data(), l.data(), classes, J, k, 5, &step);
    return std::inner_product(z.begin(), z.end(), r.begin(), 0.0);
  };
  std::vector<double> z(r.size()), xi(r.size()), dmean(mean.size()), dchol(chol.size());
  cpu::anchor_sample_forward(z.data(), xi.data(), mean.data(), chol.data(), classes, J, k, 5,
                             &step);
  cpu::anchor_sample_backward(dmean.data(), dchol.data(), r.data(), xi.data(), classes, J, k);
  EXPECT_LT(rel_error(dmean, numeric_gradient([&](auto& m) { return loss(m, chol); }, mean)), 1e-6);
  EXPECT_LT(rel_error(dchol, numeric_gradient([&](auto& l) { return loss(mean, l); }, chol)), 1e-6);

  auto dmean2 = dmean, dchol2 = dchol;
  for (auto& g : dmean2) g *= 2;
  for (auto& g : dchol2) g *= 2;
  cpu::anchor_sample_backward(dmean.data(), dchol.data(), r.data(), xi.data(), classes, J, k);
  EXPECT_LT(rel_error(dmean, dmean2), 1e-15);
  EXPECT_LT(rel_error(dchol, dchol2), 1e-15);
}

// L = Σ r ⊙ (L Lᵀ + εI); r is not symmetric, which the (G + Gᵀ) form must handle.
TEST(AnchorCov, BackwardMatchesCentralDifferencesAndAccumulates) {
  const int classes = 2, k = 4;
  const auto chol = random_vector<double>(size_t(classes) * k * k, 4);
  const auto r = random_vector<double>(chol.size(), 5);
  auto loss = [&](const std::vector<double>& l) {
    std::vector<double> cov(l.size());
    cpu::anchor_cov_forward(cov.data(), l.data(), classes, k, 1e-5);
    return std::inner_product(cov.begin(), cov.end(), r.begin(), 0.0);
  };
  std::vector<double> dchol(chol.size(), 0.0);
  cpu::anchor_cov_backward(dchol.data(), r.data(), chol.data(), classes, k);
  EXPECT_LT(rel_error(dchol, numeric_gradient(loss, chol)), 1e-6);

  auto twice = dchol;
  for (auto& g : twice) g *= 2;
  cpu::anchor_cov_backward(dchol.data(), r.data(), chol.data(), classes, k);
  EXPECT_LT(rel_error(dchol, twice), 1e-15);
}

}  // namespace
}  // namespace hetdro
