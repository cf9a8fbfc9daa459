// softmax_xent: hand-worked values, a naive reference, group sums, and the backward against
// central differences of the weighted loss.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "hetdro/check.h"  // InputError
#include "hetdro/ops.h"
#include "softmax_xent_model.h"  // softmax_xent_model
#include "testing.h"             // random_vector, rel_error, numeric_gradient

namespace hetdro {
namespace {

using testing::numeric_gradient;
using testing::random_vector;
using testing::rel_error;

TEST(SoftmaxXent, HandWorkedValues) {
  // Row 0: logits [0, ln 3] → p = [1/4, 3/4]; label 1 → loss ln(4/3).
  // Row 1: the same logits shifted by 1000 (stability) with label 0 → loss ln 4.
  const std::vector<double> logits = {0, std::log(3.0), 1000, 1000 + std::log(3.0)};
  const std::vector<int32_t> labels = {1, 0}, group = {1, 1};
  std::vector<double> probs(4), loss(2), gsum = {-7, -7, -7};
  cpu::softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(), labels.data(),
                            group.data(), 2, 2, 3);
  EXPECT_NEAR(probs[0], 0.25, 1e-15);
  EXPECT_NEAR(probs[1], 0.75, 1e-15);
  EXPECT_NEAR(probs[2], 0.25, 1e-13);  // 1000 + ln 3 is stored to ~1e-13
  EXPECT_NEAR(loss[0], std::log(4.0 / 3.0), 1e-15);
  EXPECT_NEAR(loss[1], std::log(4.0), 1e-13);
  EXPECT_EQ(gsum[0], 0.0);  // overwritten, not accumulated
  EXPECT_NEAR(gsum[1], std::log(4.0 / 3.0) + std::log(4.0), 1e-13);
  EXPECT_EQ(gsum[2], 0.0);

  // dlogits += w (p − onehot): row 0 with w = 2 → [0.5, −0.5]; row 1 with w = 0.5 → [−0.375,
  // 0.375]; onto a nonzero start, since the backward accumulates.
  const std::vector<double> weight = {2, 0.5};
  std::vector<double> dlogits = {1, 1, 1, 1};
  cpu::softmax_xent_backward(dlogits.data(), probs.data(), labels.data(), weight.data(), 2, 2);
  EXPECT_NEAR(dlogits[0], 1.5, 1e-15);
  EXPECT_NEAR(dlogits[1], 0.5, 1e-15);
  EXPECT_NEAR(dlogits[2], 0.625, 1e-13);
  EXPECT_NEAR(dlogits[3], 1.375, 1e-13);
}

TEST(SoftmaxXent, ExtremeLogitsStayFinite) {
  // The label's probability underflows to 0; the loss must still be its exact value, 2000.
  const std::vector<double> logits = {1000, -1000};
  const int32_t label = 1;
  std::vector<double> probs(2), loss(1);
  cpu::softmax_xent_forward<double>(probs.data(), loss.data(), nullptr, logits.data(), &label,
                                    nullptr, 1, 2, 0);
  EXPECT_EQ(probs[1], 0.0);
  EXPECT_NEAR(loss[0], 2000.0, 1e-12);
}

TEST(SoftmaxXent, RejectsLabelsOutOfRange) {
  const std::vector<double> logits = {0, 0};
  const int32_t label = 2;
  std::vector<double> probs(2), loss(1);
  EXPECT_THROW(cpu::softmax_xent_forward<double>(probs.data(), loss.data(), nullptr, logits.data(),
                                                 &label, nullptr, 1, 2, 0),
               InputError);
}

template <typename T>
class SoftmaxXentTyped : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(SoftmaxXentTyped, Types);

TYPED_TEST(SoftmaxXentTyped, MatchesNaiveReference) {
  using T = TypeParam;
  const int n = 100, classes = 10, groups = 4;
  const auto logits = random_vector<T>(size_t(n) * classes, 1, T(-5), T(5));
  const auto weight = random_vector<T>(n, 2, T(0), T(1));
  std::vector<int32_t> labels(n), group(n);
  for (int i = 0; i < n; ++i) labels[i] = (7 * i + 3) % classes, group[i] = (i * i) % groups;

  std::vector<T> probs(logits.size()), loss(n), gsum(groups), dlogits(logits.size(), T(0));
  cpu::softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(), labels.data(),
                            group.data(), n, classes, groups);
  cpu::softmax_xent_backward(dlogits.data(), probs.data(), labels.data(), weight.data(), n,
                             classes);

  std::vector<T> rp(probs.size()), rl(n), rg(groups, T(0)), rd(probs.size());
  for (int i = 0; i < n; ++i) {
    double z = 0;
    for (int c = 0; c < classes; ++c) z += std::exp(double(logits[i * classes + c]));
    for (int c = 0; c < classes; ++c) {
      const double p = std::exp(double(logits[i * classes + c])) / z;
      rp[i * classes + c] = T(p);
      rd[i * classes + c] = T(weight[i] * (p - (c == labels[i])));
    }
    rl[i] = T(std::log(z) - logits[i * classes + labels[i]]);
    rg[group[i]] += rl[i];
  }
  // softmax_xent_model for each element; the group sums add their losses' errors and γ_{n_g} on
  // each side (both sum in T, in the same order).
  const auto model = testing::softmax_xent_model<T>(logits, labels, weight, {}, classes);
  std::vector<double> wide_g(groups, 0.0), bound_g(groups, 0.0), group_abs(groups, 0.0);
  std::vector<int> group_size(groups, 0);
  for (int i = 0; i < n; ++i) {
    wide_g[group[i]] += model.loss[i], bound_g[group[i]] += model.loss_err[i];
    group_abs[group[i]] += std::abs(model.loss[i]), ++group_size[group[i]];
  }
  for (int g = 0; g < groups; ++g)
    bound_g[g] += 2 * testing::gamma(group_size[g], testing::unit_roundoff<T>()) * group_abs[g];
  using testing::conditioning;
  EXPECT_LT(rel_error(probs, rp), conditioning(model.probs_err, model.probs));
  EXPECT_LT(rel_error(loss, rl), conditioning(model.loss_err, model.loss));
  EXPECT_LT(rel_error(gsum, rg), conditioning(bound_g, wide_g));
  EXPECT_LT(rel_error(dlogits, rd), conditioning(model.dlogits_err, model.dlogits));
}

// L = Σ_i w_i loss_i: the backward with weights w is its exact gradient.
TEST(SoftmaxXent, BackwardMatchesCentralDifferencesAndAccumulates) {
  const int n = 6, classes = 5;
  const auto logits = random_vector<double>(size_t(n) * classes, 11, -3.0, 3.0);
  const auto weight = random_vector<double>(n, 12, 0.1, 1.0);
  const std::vector<int32_t> labels = {0, 4, 2, 2, 1, 3};
  auto loss = [&](const std::vector<double>& x) {
    std::vector<double> probs(x.size()), l(n);
    cpu::softmax_xent_forward<double>(probs.data(), l.data(), nullptr, x.data(), labels.data(),
                                      nullptr, n, classes, 0);
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += weight[i] * l[i];
    return sum;
  };
  std::vector<double> probs(logits.size()), l(n), dlogits(logits.size(), 0.0);
  cpu::softmax_xent_forward<double>(probs.data(), l.data(), nullptr, logits.data(), labels.data(),
                                    nullptr, n, classes, 0);
  cpu::softmax_xent_backward(dlogits.data(), probs.data(), labels.data(), weight.data(), n,
                             classes);
  EXPECT_LT(rel_error(dlogits, numeric_gradient(loss, logits)), 1e-6);

  auto twice = dlogits;
  for (auto& g : twice) g *= 2;
  cpu::softmax_xent_backward(dlogits.data(), probs.data(), labels.data(), weight.data(), n,
                             classes);
  EXPECT_LT(rel_error(dlogits, twice), 1e-15);
}

TEST(SoftmaxForward, IsTheLossesSoftmaxAndSumsToOne) {
  // Large logits: the max shift keeps exp finite.
  const int n = 4, C = 3;
  const std::vector<double> logits = {1, 2, 3, 1000, 999, 998, -5, -5, -5, 0, 40, -40};
  const std::vector<int32_t> labels(n, 0);
  std::vector<double> probs(n * C, -7), ref(n * C), loss(n);
  cpu::softmax_forward(probs.data(), logits.data(), n, C);
  cpu::softmax_xent_forward<double>(ref.data(), loss.data(), nullptr, logits.data(), labels.data(),
                                    nullptr, n, C, 0);
  EXPECT_LE(testing::rel_error(probs, ref), 1e-15);
  const double e = std::exp(1.0);
  EXPECT_NEAR(probs[0], 1 / (1 + e + e * e), 1e-15);
  EXPECT_NEAR(probs[6], 1.0 / 3, 1e-15);
}

}  // namespace
}  // namespace hetdro
