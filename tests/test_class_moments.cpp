// class_moments: hand-worked values, slot handling, and the backward against central
// differences (docs/DESIGN.md §1, §2).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "class_moments.h"  // the kernels' moment arithmetic (kernels/)
#include "hetdro/comm.h"    // pack_moments, combine_moments, finish_moments
#include "hetdro/ops.h"
#include "testing.h"  // random_vector, rel_error, numeric_gradient

namespace {

using hetdro::testing::conditioning;
using hetdro::testing::gamma;
using hetdro::testing::numeric_gradient;
using hetdro::testing::random_vector;
using hetdro::testing::rel_error;
namespace cpu = hetdro::cpu;

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

struct Moments {
  std::vector<double> mean, cov;
  std::vector<int32_t> count;
  int skipped = 0;
};

Moments moments(const std::vector<double>& z, const std::vector<int32_t>& slot, int k, int slots,
                double eps) {
  Moments out;
  out.mean.assign(size_t(slots) * k, -7.0);  // garbage: the forward must overwrite
  out.cov.assign(size_t(slots) * k * k, -7.0);
  out.count.assign(slots, -7);
  cpu::class_moments_forward(out.mean.data(), out.cov.data(), out.count.data(), z.data(),
                             slot.data(), int(slot.size()), k, slots, eps);
  // The fit counts the skipped slots from these counts (fit_reduce; docs/DESIGN.md §6).
  std::vector<double> w2(slots, 1.0), dw2(slots), fit(3);
  cpu::fit_reduce(fit.data(), dw2.data(), w2.data(), out.count.data(), slots, 1.0);
  out.skipped = int(fit[2]);
  return out;
}

TEST(ClassMoments, HandWorkedExample) {
  // Three samples of one class. Formula (7) divides by n−1 and gives [[0.04,0.01],[0.01,0.01]];
  // the paper's example prints [[0.0267,0.0133],[0.0133,0.0100]], which is neither the /n
  // ([[0.0267,0.0067],[0.0067,0.0067]]) nor the /(n−1) estimate: a misprint. We follow (7).
  const double eps = 1e-5;
  const std::vector<double> z = {1.0, 0.8, 1.2, 1.0, 0.8, 0.9};
  const auto m = moments(z, {0, 0, 0}, 2, 1, eps);
  EXPECT_EQ(m.skipped, 0);
  EXPECT_EQ(m.count[0], 3);
  // Error model: the decimal inputs (|z| ≤ 1.2) round by u|z|, the mean of 3 by γ_3·1.2 more; a
  // centred value (|c| ≤ 0.2) then errs by δ ≤ γ_6·1.2, and Ŝ = Σ c cᵀ/2 + eps by 3·2·0.2·δ/2
  // plus γ_6 on its 3 products of 0.04 at most; the hand values round too: 7e-16 each.
  const double u = hetdro::testing::unit_roundoff<double>(), delta = gamma(6, u) * 1.2;
  const double mean_bar = gamma(5, u) * 1.2, cov_bar = 3 * 0.2 * delta + gamma(9, u) * 3 * 0.04 / 2;
  EXPECT_NEAR(m.mean[0], 1.0, mean_bar);
  EXPECT_NEAR(m.mean[1], 0.9, mean_bar);
  EXPECT_NEAR(m.cov[0], 0.04 + eps, cov_bar);
  EXPECT_NEAR(m.cov[1], 0.01, cov_bar);
  EXPECT_NEAR(m.cov[2], 0.01, cov_bar);
  EXPECT_NEAR(m.cov[3], 0.01 + eps, cov_bar);
}

TEST(ClassMoments, SkipsSlotsWithFewerThanTwoSamples) {
  // Slot 0: 3 samples, slot 1: 1 (skipped, counted), slot 2: none (not counted), slot 3: 2.
  const int k = 3, slots = 4;
  const std::vector<int32_t> slot = {0, 3, 1, 0, 3, 0};
  const auto z = random_vector<double>(slot.size() * k, 1);
  const auto m = moments(z, slot, k, slots, 1e-5);
  EXPECT_EQ(m.skipped, 1);
  EXPECT_EQ(m.count, (std::vector<int32_t>{3, 1, 0, 2}));
  for (int s : {1, 2}) {
    for (int j = 0; j < k; ++j) EXPECT_EQ(m.mean[s * k + j], 0.0);
    for (int j = 0; j < k * k; ++j) EXPECT_EQ(m.cov[s * k * k + j], 0.0);
  }
  // Two samples: cov = (z0 − z1)(z0 − z1)ᵀ/2 + eps·I. Error model (|z| ≤ 1): the mean rounds by
  // u, a centred value by u + u|c| ≤ 2u, so c_i c_j by 2u(|c_i| + |c_j|) ≤ 4u per sample, and the
  // sum, scaling and eps add by γ_4·|cov|; the hand value rounds 4 times: < 3e-15.
  const double u = hetdro::testing::unit_roundoff<double>();
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) {
      const double di = z[1 * k + i] - z[4 * k + i], dj = z[1 * k + j] - z[4 * k + j];
      const double want = di * dj / 2 + (i == j ? 1e-5 : 0.0);
      EXPECT_NEAR(m.cov[3 * k * k + i * k + j], want, 2 * 4 * u + gamma(8, u) * std::abs(want));
    }
}

TEST(ClassMoments, SlotMinusOneLeavesSampleOut) {
  const int k = 4;
  auto z = random_vector<double>(5 * k, 2);
  const std::vector<int32_t> slot = {0, -1, 0, 0, -1};
  const auto with = moments(z, slot, k, 1, 1e-5);
  // Moving the left-out samples anywhere changes nothing.
  for (int j = 0; j < k; ++j) z[1 * k + j] += 100, z[4 * k + j] -= 50;
  const auto moved = moments(z, slot, k, 1, 1e-5);
  EXPECT_EQ(with.count[0], 3);
  EXPECT_EQ(with.mean, moved.mean);
  EXPECT_EQ(with.cov, moved.cov);

  // Their gradient is untouched; the others' accumulates.
  const auto gm = random_vector<double>(k, 3), gc = random_vector<double>(k * k, 4);
  std::vector<double> dz(z.size(), 0.5);
  cpu::class_moments_backward(dz.data(), gm.data(), gc.data(), z.data(), moved.mean.data(),
                              moved.count.data(), slot.data(), 5, k, 1);
  for (int j = 0; j < k; ++j) {
    EXPECT_EQ(dz[1 * k + j], 0.5);
    EXPECT_EQ(dz[4 * k + j], 0.5);
  }
}

TEST(ClassMoments, PerGroupSlotsMatchSeparateMoments) {
  // per_group fit: slot = g·C + c. Each slot must equal the moments of its samples alone.
  const int k = 3, C = 3, G = 2, n = 40;
  const auto z = random_vector<double>(size_t(n) * k, 5);
  std::vector<int32_t> slot(n);
  for (int i = 0; i < n; ++i) slot[i] = (i % G) * C + (i * 7 / 3) % C;
  const auto all = moments(z, slot, k, G * C, 1e-5);
  for (int s = 0; s < G * C; ++s) {
    std::vector<double> zs;
    for (int i = 0; i < n; ++i)
      if (slot[i] == s) zs.insert(zs.end(), z.begin() + i * k, z.begin() + (i + 1) * k);
    const auto one = moments(zs, std::vector<int32_t>(zs.size() / k, 0), k, 1, 1e-5);
    // The same rows, gathered in the same order, through the same code: bit for bit.
    EXPECT_EQ(all.count[s], one.count[0]);
    for (int j = 0; j < k; ++j) EXPECT_EQ(all.mean[s * k + j], one.mean[j]);
    for (int j = 0; j < k * k; ++j) EXPECT_EQ(all.cov[s * k * k + j], one.cov[j]);
  }
}

TEST(ClassMoments, BackwardMatchesCentralDifferences) {
  const int k = 5, slots = 4;
  const std::vector<int32_t> slot = {0, 1, 0, 2, -1, 1, 0, 3, 1, 0, 2, 2, -1, 1};
  const int n = int(slot.size());
  const auto z = random_vector<double>(size_t(n) * k, 6);
  // Upstream gradients; dcov is deliberately not symmetric (the backward symmetrises it).
  const auto gm = random_vector<double>(size_t(slots) * k, 7);
  const auto gc = random_vector<double>(size_t(slots) * k * k, 8);
  auto loss = [&](const std::vector<double>& x) {
    const auto m = moments(x, slot, k, slots, 1e-5);
    double l = 0;
    for (size_t i = 0; i < gm.size(); ++i) l += gm[i] * m.mean[i];
    for (size_t i = 0; i < gc.size(); ++i) l += gc[i] * m.cov[i];
    return l;
  };
  const auto m = moments(z, slot, k, slots, 1e-5);
  EXPECT_EQ(m.skipped, 1);  // slot 3
  std::vector<double> dz(z.size(), 0.0);
  cpu::class_moments_backward(dz.data(), gm.data(), gc.data(), z.data(), m.mean.data(),
                              m.count.data(), slot.data(), n, k, slots);
  const auto expected = numeric_gradient(loss, z);
  EXPECT_LE(rel_error(dz, expected), 1e-6);

  // Backward accumulates.
  std::vector<double> twice = dz;
  cpu::class_moments_backward(twice.data(), gm.data(), gc.data(), z.data(), m.mean.data(),
                              m.count.data(), slot.data(), n, k, slots);
  for (size_t i = 0; i < dz.size(); ++i) EXPECT_NEAR(twice[i], 2 * dz[i], 1e-14);
}

// --- error models of the moment arithmetic (STYLE.md, "Tolerances") --------------------------

// One slot's moments from the double data, taken as exact, with bounds on |computed − exact| of
// its mean and M2 = Σ (z − m)(z − m)ᵀ in arithmetic of unit roundoff u. Centring with a mean
// that is off by e changes M2 only by n·e·eᵀ, since Σ (z − m) = 0: to first order M2 errs by the
// rounding of each centred value and of the sums of products, not by the mean's error.
struct MomentBound {
  int64_t n = 0;
  std::vector<double> mean, m2, mean_err, m2_err;
};

MomentBound exact_moments(const std::vector<double>& z, const std::vector<int32_t>& rows, int k) {
  MomentBound b;
  b.n = int64_t(rows.size());
  b.mean.assign(k, 0.0), b.mean_err.assign(k, 0.0);
  b.m2.assign(size_t(k) * k, 0.0), b.m2_err.assign(size_t(k) * k, 0.0);
  if (rows.empty()) return b;
  for (int32_t r : rows)
    for (int i = 0; i < k; ++i) b.mean[i] += z[size_t(r) * k + i] / double(b.n);
  for (int32_t r : rows)
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j)
        b.m2[size_t(i) * k + j] +=
            (z[size_t(r) * k + i] - b.mean[i]) * (z[size_t(r) * k + j] - b.mean[j]);
  return b;
}

// Σ_r |(z_ri − m_i)(z_rj − m_j)|: the magnitude of M2's sums.
double product_magnitude(const std::vector<double>& z, const std::vector<int32_t>& rows, int k,
                         const MomentBound& b, int i, int j) {
  double sum = 0;
  for (int32_t r : rows)
    sum += std::abs((z[size_t(r) * k + i] - b.mean[i]) * (z[size_t(r) * k + j] - b.mean[j]));
  return sum;
}

// class_moments_forward's two passes: the mean sums n terms and divides (γ_n·Σ|z|/n); each
// centred value rounds once and M2 sums n products (γ_{n+2}·Σ|c_i c_j|). The covariance then
// scales M2 by α = 1/(n − 1), rounded, which callers add.
MomentBound two_pass_bound(const std::vector<double>& z, const std::vector<int32_t>& rows, int k,
                           double u) {
  MomentBound b = exact_moments(z, rows, k);
  const double n = double(b.n);
  if (b.n == 0) return b;
  for (int i = 0; i < k; ++i) {
    double magnitude = 0;
    for (int32_t r : rows) magnitude += std::abs(z[size_t(r) * k + i]);
    b.mean_err[i] = gamma(n, u) * magnitude / n;
  }
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j)
      b.m2_err[size_t(i) * k + j] = gamma(n + 2, u) * product_magnitude(z, rows, k, b, i, j) +
                                    n * b.mean_err[i] * b.mean_err[j];
  return b;
}

// kernels/class_moments.h: shifted_moments of each shard, folded in order with chan_combine.
// A shard's mean sums its n shifted values z − first (each rounded) and divides, γ_{n+1}·Σ|z −
// first|/n, then adds the shift back (u|m|); a centred value (z − first) − m_shifted rounds the
// shift u|z − first| and the subtraction, and M2 sums n products: γ_{n+2}·Σ|c_i c_j| plus the
// shift's rounding times |c|. Folding shard b into a: δ = m_b − m_a errs by the two means'
// errors and its own rounding (Δδ); M2 gains (|δ_i|Δδ_j + |δ_j|Δδ_i + Δδ_iΔδ_j)·n_a·n_b/n, 4
// roundings of δ_iδ_j·n_a·n_b/n and 2 adds; the mean m_a + δ·n_b/n errs by Δm_a + Δδ·n_b/n
// and 3 roundings.
MomentBound chan_bound(const std::vector<double>& z,
                       const std::vector<std::vector<int32_t>>& shards, int k, double u) {
  MomentBound acc;
  for (const auto& rows : shards) {
    if (rows.empty()) continue;
    MomentBound b = exact_moments(z, rows, k);
    const double n = double(b.n);
    const double* first = z.data() + size_t(rows[0]) * k;
    std::vector<double> shifted_err(k);
    for (int i = 0; i < k; ++i) {
      double magnitude = 0;
      for (int32_t r : rows) magnitude += std::abs(z[size_t(r) * k + i] - first[i]);
      shifted_err[i] = gamma(n + 1, u) * magnitude / n;
      b.mean_err[i] = shifted_err[i] + gamma(1, u) * std::abs(b.mean[i]);
    }
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) {
        double shift = 0;
        for (int32_t r : rows) {
          const double ci = z[size_t(r) * k + i] - b.mean[i], cj = z[size_t(r) * k + j] - b.mean[j];
          shift += std::abs(ci) * std::abs(z[size_t(r) * k + j] - first[j]) +
                   std::abs(cj) * std::abs(z[size_t(r) * k + i] - first[i]);
        }
        b.m2_err[size_t(i) * k + j] = u * shift +
                                      gamma(n + 2, u) * product_magnitude(z, rows, k, b, i, j) +
                                      n * shifted_err[i] * shifted_err[j];
      }
    if (acc.n == 0) {
      acc = b;
      continue;
    }
    const double total = double(acc.n + b.n), fb = n / total, cross = double(acc.n) * n / total;
    std::vector<double> d(k), dd(k);
    for (int i = 0; i < k; ++i) {
      d[i] = b.mean[i] - acc.mean[i];
      dd[i] = acc.mean_err[i] + b.mean_err[i] + u * std::abs(d[i]);
    }
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) {
        const size_t e = size_t(i) * k + j;
        const double term = std::abs(d[i] * d[j]) * cross;
        acc.m2_err[e] += b.m2_err[e] +
                         (std::abs(d[i]) * dd[j] + std::abs(d[j]) * dd[i] + dd[i] * dd[j]) * cross +
                         gamma(4, u) * term +
                         gamma(2, u) * (std::abs(acc.m2[e]) + std::abs(b.m2[e]) + term);
        acc.m2[e] += b.m2[e] + d[i] * d[j] * cross;
      }
    for (int i = 0; i < k; ++i) {
      acc.mean[i] += d[i] * fb;
      acc.mean_err[i] += dd[i] * fb + gamma(3, u) * (std::abs(d[i]) * fb + std::abs(acc.mean[i]));
    }
    acc.n += b.n;
  }
  return acc;
}

std::vector<double> plus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> sum(a.size());
  for (size_t i = 0; i < a.size(); ++i) sum[i] = a[i] + b[i];
  return sum;
}

TEST(ClassMoments, FloatMatchesDouble) {
  const int k = 64, slots = 10, n = 100;
  const auto z0 = random_vector<double>(size_t(n) * k, 9);
  std::vector<int32_t> slot(n);
  for (int i = 0; i < n; ++i) slot[i] = (i * 13) % slots;
  // Both see the same inputs (the float ones), so only the arithmetic differs.
  const std::vector<float> zf(z0.begin(), z0.end());
  const std::vector<double> zd = as_double(zf);
  std::vector<float> mf(slots * k), cf(size_t(slots) * k * k);
  std::vector<int32_t> count(slots);
  cpu::class_moments_forward(mf.data(), cf.data(), count.data(), zf.data(), slot.data(), n, k,
                             slots, 1e-5f);
  const auto md = moments(zd, slot, k, slots, 1e-5);

  const auto gmf = random_vector<float>(size_t(slots) * k, 10);
  const auto gcf = random_vector<float>(size_t(slots) * k * k, 11);
  const std::vector<double> gmd = as_double(gmf), gcd = as_double(gcf);
  std::vector<double> dzd(zd.size(), 0.0);
  std::vector<float> dzf(zd.size(), 0.0f);
  cpu::class_moments_backward(dzd.data(), gmd.data(), gcd.data(), zd.data(), md.mean.data(),
                              md.count.data(), slot.data(), n, k, slots);
  cpu::class_moments_backward(dzf.data(), gmf.data(), gcf.data(), zf.data(), mf.data(),
                              count.data(), slot.data(), n, k, slots);

  // Error model, per slot of n_s samples (two_pass_bound, in float and, for the reference, in
  // double): Ŝ = α·M2 + eps·I adds α's rounding, the scaling and the eps add to M2's error. The
  // backward dz_a = Σ_b c_b·sym_ba + gm_a/n_s, sym = α(G + Gᵀ) rounded 3 times, takes the
  // centred values' errors (the mean's, to first order here, and one rounding) through |sym|:
  // Σ_b |Δc_b||sym_ba| + γ_{k+4}·Σ_b |c_b||sym_ba| + γ_3·|gm_a|/n_s.
  const double u = hetdro::testing::unit_roundoff<float>();
  const double ud = hetdro::testing::unit_roundoff<double>();
  auto both = [&](double terms) { return gamma(terms, u) + gamma(terms, ud); };
  std::vector<double> mean_bound, cov_bound, dz_bound(dzf.size());
  for (int s = 0; s < slots; ++s) {
    std::vector<int32_t> rows;
    for (int r = 0; r < n; ++r)
      if (slot[r] == s) rows.push_back(r);
    const auto bf = two_pass_bound(zd, rows, k, u), bd = two_pass_bound(zd, rows, k, ud);
    const double ns = double(rows.size()), alpha = 1 / (ns - 1);
    const auto mean_err = plus(bf.mean_err, bd.mean_err);
    mean_bound.insert(mean_bound.end(), mean_err.begin(), mean_err.end());
    for (int e = 0; e < k * k; ++e)
      cov_bound.push_back(alpha * (bf.m2_err[e] + bd.m2_err[e]) +
                          both(3) * (alpha * std::abs(bf.m2[e]) + (e / k == e % k ? 1e-5 : 0.0)));
    for (size_t r = 0; r < rows.size(); ++r)
      for (int a = 0; a < k; ++a) {
        double spread = 0, magnitude = 0;
        for (int b = 0; b < k; ++b) {
          const double c = zd[size_t(rows[r]) * k + b] - bf.mean[b];
          const double sym = alpha * (std::abs(gcd[(size_t(s) * k + a) * k + b]) +
                                      std::abs(gcd[(size_t(s) * k + b) * k + a]));
          spread += (mean_err[b] + both(1) * std::abs(c)) * sym;
          magnitude += std::abs(c) * sym;
        }
        dz_bound[size_t(rows[r]) * k + a] =
            spread + both(k + 4) * magnitude + both(3) * std::abs(gmd[s * k + a]) / ns;
      }
  }
  EXPECT_LE(rel_error(as_double(mf), md.mean), conditioning(mean_bound, md.mean));
  EXPECT_LE(rel_error(as_double(cf), md.cov), conditioning(cov_bound, md.cov));
  EXPECT_LE(rel_error(as_double(dzf), dzd), conditioning(dz_bound, dzd));
}

// --- the kernels' moment arithmetic (kernels/class_moments.h) --------------------------------

namespace arith = hetdro::moments;

// Σ (z − m)(z − m)ᵀ of one slot from the reference's covariance: (Ŝ − eps·I)·(n − 1).
std::vector<double> centred_sum(const Moments& m, int s, int k, double eps) {
  std::vector<double> m2(size_t(k) * k);
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j)
      m2[size_t(i) * k + j] =
          (m.cov[(size_t(s) * k + i) * k + j] - (i == j ? eps : 0.0)) * (m.count[s] - 1);
  return m2;
}

TEST(ClassMomentsArithmetic, ChanCombinesShardsIntoTheOnePassMoments) {
  // Shards of 1, 0, 5 and 94 samples; slot 1 is absent from shards 0 and 2 (and shard 1 is empty).
  const int k = 4, slots = 2, eps_free = 0;
  const std::vector<int> sizes = {1, 0, 5, 94};
  const int n = 100;
  const auto z = random_vector<double>(size_t(n) * k, 21, -3.0, 5.0);
  std::vector<int32_t> slot(n);
  for (int i = 0; i < n; ++i) slot[i] = (i < 6 || i % 3 != 0) ? 0 : 1;
  const auto whole = moments(z, slot, k, slots, eps_free);
  const double u = hetdro::testing::unit_roundoff<double>();
  for (int s = 0; s < slots; ++s) {
    int64_t count = 0;
    std::vector<double> mean(k, 0.0), m2(size_t(k) * k, 0.0);
    std::vector<std::vector<int32_t>> shards;
    std::vector<int32_t> all_rows;
    int first = 0;
    for (int size : sizes) {
      std::vector<int32_t> rows;
      for (int i = first; i < first + size; ++i)
        if (slot[i] == s) rows.push_back(i);
      first += size;
      std::vector<double> sm(k), sm2(size_t(k) * k);
      arith::shifted_moments(sm.data(), sm2.data(), z.data(), rows.data(), int64_t(rows.size()), k);
      arith::chan_combine(&count, mean.data(), m2.data(), int64_t(rows.size()), sm.data(),
                          sm2.data(), k);
      shards.push_back(rows);
      all_rows.insert(all_rows.end(), rows.begin(), rows.end());
    }
    ASSERT_EQ(count, whole.count[s]);
    // Both in double; the reference's M2 comes back from Ŝ through α and ×(n − 1), 3 roundings.
    const auto chan = chan_bound(z, shards, k, u), two = two_pass_bound(z, all_rows, k, u);
    std::vector<double> m2_err(m2.size());
    for (size_t e = 0; e < m2.size(); ++e)
      m2_err[e] = chan.m2_err[e] + two.m2_err[e] + gamma(3, u) * std::abs(two.m2[e]);
    const std::vector<double> ref_mean(whole.mean.begin() + s * k,
                                       whole.mean.begin() + (s + 1) * k);
    EXPECT_LE(rel_error(mean, ref_mean), conditioning(plus(chan.mean_err, two.mean_err), ref_mean))
        << "slot " << s;
    const auto ref_m2 = centred_sum(whole, s, k, eps_free);
    EXPECT_LE(rel_error(m2, ref_m2), conditioning(m2_err, ref_m2)) << "slot " << s;
    for (int i = 0; i < k; ++i)  // and the finished covariance, entry by entry
      for (int j = 0; j < k; ++j) {
        const size_t e = size_t(i) * k + j;
        const double cov = two.m2[e] / double(count - 1) + (i == j ? 1e-5 : 0.0);
        EXPECT_NEAR(
            arith::cov_entry(m2[e], count, i == j, 1e-5),
            whole.cov[(size_t(s) * k + i) * k + j] + (i == j ? 1e-5 : 0.0),
            (chan.m2_err[e] + two.m2_err[e]) / double(count - 1) + gamma(5, u) * std::abs(cov));
      }
  }
  // An absent slot stays absent: nothing folds into nothing.
  int64_t none = 0;
  std::vector<double> mean(k, 0.0), m2(size_t(k) * k, 0.0);
  arith::chan_combine(&none, mean.data(), m2.data(), 0, mean.data(), m2.data(), k);
  EXPECT_EQ(none, 0);
  EXPECT_EQ(arith::cov_entry(3.0, 1, true, 1e-5), 0.0);  // a masked slot's entries are 0
  EXPECT_EQ(arith::cov_entry(3.0, 0, false, 1e-5), 0.0);
}

// What the ranks of a data-parallel run do (docs/DESIGN.md §7), in one process: shards of 1, 0, 5
// and 94 samples packed, combined in order and finished give class_moments_forward's outputs
// over all 100; slot 1 is absent from shards 0 to 2, slot 2 from all of them.
TEST(ClassMomentsArithmetic, PackedShardsCombineIntoTheOnePassOutputs) {
  const int k = 4, slots = 3, n = 100;
  const std::vector<int> sizes = {1, 0, 5, 94};
  const auto z = random_vector<double>(size_t(n) * k, 22, -3.0, 5.0);
  std::vector<int32_t> slot(n);
  for (int i = 0; i < n; ++i) slot[i] = (i < 6 || i % 3 != 0) ? 0 : 1;
  const int64_t width = hetdro::moments_width(k);
  std::vector<double> all(size_t(slots * width), 0.0), shard(all.size());
  for (int s = 0, first = 0; s < int(sizes.size()); first += sizes[s++]) {
    hetdro::pack_moments(shard.data(), z.data() + int64_t(first) * k, slot.data() + first, sizes[s],
                         k, slots);
    hetdro::combine_moments(all.data(), shard.data(), slots, k);
  }
  std::vector<double> mean(slots * k), cov(slots * k * k), ref_mean(mean), ref_cov(cov);
  std::vector<int32_t> count(slots), ref_count(slots);
  hetdro::finish_moments(mean.data(), cov.data(), count.data(), all.data(), slots, k, 1e-5);
  cpu::class_moments_forward(ref_mean.data(), ref_cov.data(), ref_count.data(), z.data(),
                             slot.data(), n, k, slots, 1e-5);
  EXPECT_EQ(count, ref_count);
  EXPECT_EQ(count[2], 0);
  // Both in double (chan_bound, two_pass_bound); Ŝ = M2/(n − 1) + eps rounds twice on one side,
  // three times on the other.
  const double u = hetdro::testing::unit_roundoff<double>();
  std::vector<double> mean_err, cov_err;
  for (int s = 0; s < slots; ++s) {
    std::vector<std::vector<int32_t>> shards;
    std::vector<int32_t> all_rows;
    for (int i = 0, b = 0, end = sizes[0]; i < n; ++i) {
      while (i == end) end += sizes[++b];
      if (shards.size() <= size_t(b)) shards.resize(b + 1);
      if (slot[i] == s) shards[b].push_back(i), all_rows.push_back(i);
    }
    const auto chan = chan_bound(z, shards, k, u), two = two_pass_bound(z, all_rows, k, u);
    const auto err = plus(chan.mean_err, two.mean_err);
    mean_err.insert(mean_err.end(), err.begin(), err.end());
    for (int e = 0; e < k * k; ++e) {
      if (two.n < 2) {
        cov_err.push_back(0.0);
        continue;
      }
      const double scale = 1.0 / double(two.n - 1), diag = e / k == e % k ? 1e-5 : 0.0;
      cov_err.push_back((chan.m2_err[e] + two.m2_err[e]) * scale +
                        gamma(5, u) * (std::abs(two.m2[e]) * scale + diag));
    }
  }
  EXPECT_LE(rel_error(mean, ref_mean), conditioning(mean_err, ref_mean));
  EXPECT_LE(rel_error(cov, ref_cov), conditioning(cov_err, ref_cov));
  for (int i = 0; i < k; ++i)  // exactly symmetric, as the W2 eigensolver assumes
    for (int j = 0; j < k; ++j) EXPECT_EQ(cov[i * k + j], cov[j * k + i]);
}

TEST(ClassMomentsArithmetic, ShiftedMomentsStayAccurateInFloatUnderALargeOffset) {
  // z = 1000 + noise of scale 0.01: E[zzᵀ] − mmᵀ in float subtracts two numbers near 1e6 whose
  // difference is ~1e-4, below their rounding (ulp 0.06); the shifted two-pass sums do not.
  const int k = 8, n = 2000;
  auto noise = random_vector<double>(size_t(n) * k, 22, -0.01, 0.01);
  std::vector<float> zf(noise.size());
  for (size_t e = 0; e < zf.size(); ++e) zf[e] = float(1000.0 + noise[e]);
  const std::vector<double> zd(zf.begin(), zf.end());  // the reference sees the same inputs
  std::vector<int32_t> rows(n);
  for (int i = 0; i < n; ++i) rows[i] = i;
  const auto ref = moments(zd, std::vector<int32_t>(n, 0), k, 1, 0.0);
  const auto ref_m2 = centred_sum(ref, 0, k, 0.0);
  // The reference's error (two passes in double, M2 back from Ŝ: 3 roundings) beside float's.
  const double u = hetdro::testing::unit_roundoff<float>();
  const double ud = hetdro::testing::unit_roundoff<double>();
  const auto two = two_pass_bound(zd, rows, k, ud);
  auto m2_bar = [&](const MomentBound& b) {
    std::vector<double> err(b.m2_err.size());
    for (size_t e = 0; e < err.size(); ++e)
      err[e] = b.m2_err[e] + two.m2_err[e] + gamma(3, ud) * std::abs(two.m2[e]);
    return conditioning(err, ref_m2);
  };

  std::vector<float> mean(k), m2(size_t(k) * k);
  arith::shifted_moments(mean.data(), m2.data(), zf.data(), rows.data(), n, k);
  const auto one = chan_bound(zd, {rows}, k, u);
  EXPECT_LE(rel_error(as_double(m2), ref_m2), m2_bar(one));
  EXPECT_LE(rel_error(as_double(mean), ref.mean),
            conditioning(plus(one.mean_err, two.mean_err), ref.mean));

  // The naive E[zzᵀ] − mmᵀ: each of its sums near 1e6 rounds by up to ulp/2 = 0.03 per add, while
  // the entries it should leave are Σ(z − m)(z − m)ᵀ/n ≈ 3e-5: off by orders of magnitude.
  std::vector<float> naive_mean(k, 0.0f), naive_m2(size_t(k) * k, 0.0f);
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < k; ++i) {
      naive_mean[i] += zf[size_t(r) * k + i] / float(n);
      for (int j = 0; j < k; ++j)
        naive_m2[size_t(i) * k + j] += zf[size_t(r) * k + i] * zf[size_t(r) * k + j] / float(n);
    }
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j)
      naive_m2[size_t(i) * k + j] =
          (naive_m2[size_t(i) * k + j] - naive_mean[i] * naive_mean[j]) * float(n);
  EXPECT_GT(rel_error(as_double(naive_m2), ref_m2), 0.5);

  // Chan's combination of float shards stays far from the naive failure, but not as close as one
  // pass: each shard's mean, rounded to float near 1000 (ulp 6e-5), feeds δ = mean_b − mean_a,
  // which is only ~3e-4 here, and M2 takes δ's error to first order (chan_bound). Shards that must
  // combine at full accuracy (issue 11) should carry their means relative to a common shift, as
  // the kernels do within a slot.
  int64_t count = 0;
  std::vector<float> cm(k, 0.0f), cm2(size_t(k) * k, 0.0f);
  std::vector<std::vector<int32_t>> shards;
  for (int first = 0; first < n; first += 500) {
    std::vector<float> sm(k), sm2(size_t(k) * k);
    arith::shifted_moments(sm.data(), sm2.data(), zf.data(), rows.data() + first, 500, k);
    arith::chan_combine(&count, cm.data(), cm2.data(), 500, sm.data(), sm2.data(), k);
    shards.emplace_back(rows.begin() + first, rows.begin() + first + 500);
  }
  EXPECT_EQ(count, n);
  EXPECT_LE(rel_error(as_double(cm2), ref_m2), m2_bar(chan_bound(zd, shards, k, u)));
}

}  // namespace
