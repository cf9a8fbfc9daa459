// The step's bookkeeping ops: gather_batch, fit_slots, fit_reduce, repeat, clf_objective (ERM and
// GroupDRO), sum_scaled, all_zero, check_finite, accumulate and argmax_rows, against values
// worked by hand, plus repeat's adjoint identity and clf_objective's gradient with respect to the
// per-group loss sums (which the backward relies on).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "hetdro/ops.h"
#include "testing.h"  // random_vector, numeric_gradient

namespace hetdro {
namespace {

// The rule the tests below were written for: ERM, or GroupDRO's weighted objective with the exp
// update, which moves q when eta > 0.
ClfRule rule(int groupdro, double eta) {
  ClfRule r;
  r.groupdro = groupdro != 0;
  r.eta = eta;
  r.update_q = eta > 0;
  return r;
}

using testing::numeric_gradient;
using testing::random_vector;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// --- gather_batch ------------------------------------------------------------------------------

TEST(StepOps, GatherBatchPicksTheClocksBatchOfTheOrder) {
  // src_x [5, 3] with row r = {10r, 10r+1, 10r+2}; src_y[r] = 7 + r.
  const int rows = 5;
  const int64_t width = 3;
  std::vector<double> src_x(rows * width);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < width; ++c) src_x[r * width + c] = 10 * r + c;
  const std::vector<int32_t> src_y = {7, 8, 9, 10, 11};
  // An order of three batches of 4; batch 1 takes the last row (4) twice, the first (0), and one
  // in the middle (2).
  const std::vector<int64_t> order = {1, 1, 1, 1, 4, 0, 4, 2, 3, 3, 3, 3};
  const int n = 4;
  const int64_t batch = 1;
  // One spare element/label past the end, which must stay untouched.
  std::vector<double> x(n * width + 1, -1.0);
  std::vector<int32_t> y(n + 1, -1);
  cpu::gather_batch(x.data(), y.data(), src_x.data(), src_y.data(), order.data(), &batch, n, width);
  const std::vector<double> want_x = {40, 41, 42, 0, 1, 2, 40, 41, 42, 20, 21, 22, -1};
  const std::vector<int32_t> want_y = {11, 7, 11, 9, -1};
  EXPECT_EQ(x, want_x);
  EXPECT_EQ(y, want_y);
}

TEST(StepOps, AdvanceClockCountsTheStepAndTheBatch) {
  std::vector<int64_t> clock = {41, 6};
  cpu::advance_clock<float>(clock.data());
  EXPECT_EQ(clock, (std::vector<int64_t>{42, 7}));
}

// --- fit_slots ---------------------------------------------------------------------------------

TEST(StepOps, FitSlotsPooledGivesLabelsPerGroupGivesGroupTimesClassesPlusLabel) {
  const std::vector<int32_t> labels = {0, 2, 1, 2}, group = {1, 0, 2, 1};
  std::vector<int32_t> slot(4, -9);
  cpu::fit_slots<float>(slot.data(), labels.data(), nullptr, 4, 3);
  EXPECT_EQ(slot, labels);
  // classes = 3: 1·3+0 = 3, 0·3+2 = 2, 2·3+1 = 7, 1·3+2 = 5.
  cpu::fit_slots<double>(slot.data(), labels.data(), group.data(), 4, 3);
  EXPECT_EQ(slot, (std::vector<int32_t>{3, 2, 7, 5}));
}

// --- fit_reduce --------------------------------------------------------------------------------

TEST(StepOps, FitReduceSumsLiveSlotsAndCountsSkipped) {
  // counts {3, 1, 0, 2}: slots 0 and 3 are live (count ≥ 2), slot 1 is present but skipped
  // (count 1), slot 2 is absent. fit = 1.5 + 2.25 = 3.75; live 2; skipped 1.
  const std::vector<int32_t> count = {3, 1, 0, 2};
  const std::vector<double> w2 = {1.5, 99, 99, 2.25};
  const double lambda = 0.3;
  std::vector<double> out(3, -1), dw2(4, -7);  // dw2 is overwritten
  cpu::fit_reduce(out.data(), dw2.data(), w2.data(), count.data(), 4, lambda);
  EXPECT_EQ(out[0], 3.75);  // exact in binary
  EXPECT_EQ(out[1], 2.0);
  EXPECT_EQ(out[2], 1.0);
  EXPECT_EQ(dw2, (std::vector<double>{lambda, 0, 0, lambda}));
}

TEST(StepOps, FitReduceIgnoresNonFiniteMaskedSlots) {
  // Masked slots are computed anyway (fixed shapes), from degenerate moments: their w2 may be
  // NaN or ±inf, and must not reach the sum (NaN·0 would still be NaN, so masking by multiply
  // would fail here).
  const std::vector<int32_t> count = {3, 1, 0, 2, 0};
  const std::vector<float> w2 = {1.5f, float(kNaN), float(kInf), 2.25f, -float(kInf)};
  std::vector<double> out(3, -1);
  std::vector<float> dw2(5, -7);
  cpu::fit_reduce(out.data(), dw2.data(), w2.data(), count.data(), 5, 0.5f);
  EXPECT_EQ(out[0], 3.75);
  EXPECT_EQ(out[1], 2.0);
  EXPECT_EQ(out[2], 1.0);
  EXPECT_EQ(dw2, (std::vector<float>{0.5f, 0, 0, 0.5f, 0}));
}

// --- repeat ------------------------------------------------------------------------------------

TEST(StepOps, RepeatForwardCopiesAndBackwardAccumulates) {
  const std::vector<double> in = {1, -2, 3};
  std::vector<double> out(6, -9);
  cpu::repeat_forward(out.data(), in.data(), 3, 2);
  EXPECT_EQ(out, (std::vector<double>{1, -2, 3, 1, -2, 3}));

  // din += dout[0:3] + dout[3:6]: {10 + 1 + 4, 20 + 2 + 5, 30 + 3 + 6} = {15, 27, 39}.
  const std::vector<double> dout = {1, 2, 3, 4, 5, 6};
  std::vector<double> din = {10, 20, 30};
  cpu::repeat_backward(din.data(), dout.data(), 3, 2);
  EXPECT_EQ(din, (std::vector<double>{15, 27, 39}));
}

TEST(StepOps, RepeatBackwardIsAdjointOfForward) {
  // <repeat_forward(x), y> = <x, repeat_backward(y)> (from a zero din).
  const int64_t size = 7;
  const int times = 4;
  const auto x = random_vector<double>(size, 1);
  const auto y = random_vector<double>(size * times, 2);
  std::vector<double> rx(size * times), ry(size, 0.0);
  cpu::repeat_forward(rx.data(), x.data(), size, times);
  cpu::repeat_backward(ry.data(), y.data(), size, times);
  // The same 28 products x_i·y_j summed two ways: lhs in one run of 28, rhs as 7 products of
  // 4-term sums, within γ_28 and γ_{4+7} of the exact sum.
  double lhs = 0, rhs = 0, magnitude = 0;
  for (int64_t i = 0; i < size * times; ++i)
    lhs += rx[i] * y[i], magnitude += std::abs(rx[i] * y[i]);
  for (int64_t i = 0; i < size; ++i) rhs += x[i] * ry[i];
  const double u = testing::unit_roundoff<double>();
  EXPECT_NEAR(lhs, rhs, (testing::gamma(28, u) + testing::gamma(11, u)) * magnitude);
}

// --- clf_objective -----------------------------------------------------------------------------

// Hand-worked clf_objective values in double: each a chain of at most 20 roundings (the two-step
// case carries step 1's q into step 2), testing.h's chain_tolerance.
double hand_bar(double want) { return testing::chain_tolerance(20, want); }

TEST(StepOps, ClfObjectiveErm) {
  // n = 4, groups {0, 0, 1, 0}: counts {3, 1}, sums {3, 1.2}.
  // clf = (3 + 1.2)/4 = 1.05; weight_i = 1/4; ℓ = {3/3, 1.2/1} = {1, 1.2}.
  const std::vector<double> sums = {3, 1.2};
  const std::vector<int32_t> count = {3, 1}, group = {0, 0, 1, 0};
  double clf = -1;
  std::vector<double> gl(2, -7), q = {0.3, 0.7}, weight(4, -7);
  cpu::clf_objective(&clf, gl.data(), q.data(), weight.data(), q.data(), sums.data(), count.data(),
                     group.data(), nullptr, 4, 2, rule(/*groupdro=*/0, /*eta=*/0.5));
  EXPECT_NEAR(clf, 1.05, hand_bar(1.05));
  EXPECT_EQ(weight, (std::vector<double>{0.25, 0.25, 0.25, 0.25}));
  EXPECT_NEAR(gl[0], 1.0, hand_bar(1.0));
  EXPECT_NEAR(gl[1], 1.2, hand_bar(1.2));
  // ERM leaves GroupDRO's weights alone.
  EXPECT_EQ(q, (std::vector<double>{0.3, 0.7}));
}

TEST(StepOps, ClfObjectiveGroupDroEtaZeroKeepsQ) {
  // groups {0, 1, 1, 0}: counts {2, 2}, sums {1, 3} → ℓ = {0.5, 1.5}. q = {0.2, 0.8}, unchanged.
  // clf = 0.2·0.5 + 0.8·1.5 = 0.1 + 1.2 = 1.3; weight_i = q_g/count_g = {0.1, 0.4, 0.4, 0.1}.
  const std::vector<double> sums = {1, 3};
  const std::vector<int32_t> count = {2, 2}, group = {0, 1, 1, 0};
  double clf = -1;
  std::vector<double> gl(2, -7), q = {0.2, 0.8}, weight(4, -7);
  cpu::clf_objective(&clf, gl.data(), q.data(), weight.data(), q.data(), sums.data(), count.data(),
                     group.data(), nullptr, 4, 2, rule(/*groupdro=*/1, /*eta=*/0.0));
  EXPECT_EQ(q, (std::vector<double>{0.2, 0.8}));
  EXPECT_NEAR(clf, 1.3, hand_bar(1.3));
  EXPECT_NEAR(gl[0], 0.5, hand_bar(0.5));
  EXPECT_NEAR(gl[1], 1.5, hand_bar(1.5));
  const std::vector<double> want = {0.1, 0.4, 0.4, 0.1};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(weight[i], want[i], 1e-16) << i;
}

TEST(StepOps, ClfObjectiveGroupDroMatchesHandWorkedUpdate) {
  // Three groups, eta = 1, q = {1/2, 1/4, 1/4}; samples in groups {0, 1, 0}: counts {2, 1, 0}.
  // sums {2 ln 2, ln 4, 5}: ℓ = {ln 2, ln 4, 0} (group 2 is absent, so its ℓ is 0 whatever its
  // sum says, and its weight is kept before normalising).
  // q·exp(ηℓ) = {1/2·2, 1/4·4, 1/4·1} = {1, 1, 1/4}; Σ = 9/4 → q = {4/9, 4/9, 1/9}.
  // clf = 4/9 ln 2 + 4/9 · 2 ln 2 = 12/9 ln 2 = 4/3 ln 2.
  // weight = {q0/2, q1/1, q0/2} = {2/9, 4/9, 2/9}.
  const double ln2 = std::log(2.0);
  const std::vector<double> sums = {2 * ln2, 2 * ln2, 5};
  const std::vector<int32_t> count = {2, 1, 0}, group = {0, 1, 0};
  double clf = -1;
  std::vector<double> gl(3, -7), q = {0.5, 0.25, 0.25}, weight(3, -7);
  cpu::clf_objective(&clf, gl.data(), q.data(), weight.data(), q.data(), sums.data(), count.data(),
                     group.data(), nullptr, 3, 3, rule(/*groupdro=*/1, /*eta=*/1.0));
  EXPECT_NEAR(q[0], 4.0 / 9, hand_bar(4.0 / 9));
  EXPECT_NEAR(q[1], 4.0 / 9, hand_bar(4.0 / 9));
  EXPECT_NEAR(q[2], 1.0 / 9, hand_bar(1.0 / 9));
  EXPECT_NEAR(gl[0], ln2, hand_bar(ln2));
  EXPECT_NEAR(gl[1], 2 * ln2, hand_bar(2 * ln2));
  EXPECT_EQ(gl[2], 0.0);
  EXPECT_NEAR(clf, 4.0 / 3 * ln2, hand_bar(4.0 / 3 * ln2));
  EXPECT_NEAR(weight[0], 2.0 / 9, hand_bar(2.0 / 9));
  EXPECT_NEAR(weight[1], 4.0 / 9, hand_bar(4.0 / 9));
  EXPECT_NEAR(weight[2], 2.0 / 9, hand_bar(2.0 / 9));
}

TEST(StepOps, ClfObjectiveGroupDroTwoGroupsTwoSteps) {
  // Two groups, eta = 2, q = {1/2, 1/2}; samples {1, 0, 1}: counts {1, 2}.
  // Step 1: sums {0, ln 3} → ℓ = {0, ln3/2}; q·exp(2ℓ) = {1/2, 3/2}; Σ 2 → q = {1/4, 3/4}.
  //   clf = 3/4 · ln3/2 = 3/8 ln 3; weight = {3/8, 1/4, 3/8}.
  // Step 2: sums {ln 3, 0} → ℓ = {ln 3, 0}; q·exp(2ℓ) = {1/4·9, 3/4} = {9/4, 3/4}; Σ 3 →
  //   q = {3/4, 1/4}; clf = 3/4 ln 3; weight = {1/8, 3/4, 1/8}.
  const double ln3 = std::log(3.0);
  const std::vector<int32_t> count = {1, 2}, group = {1, 0, 1};
  double clf = -1;
  std::vector<double> gl(2), q = {0.5, 0.5}, weight(3);
  std::vector<double> sums = {0, ln3};
  cpu::clf_objective(&clf, gl.data(), q.data(), weight.data(), q.data(), sums.data(), count.data(),
                     group.data(), nullptr, 3, 2, rule(1, 2.0));
  EXPECT_NEAR(q[0], 0.25, hand_bar(0.25));
  EXPECT_NEAR(q[1], 0.75, hand_bar(0.75));
  EXPECT_NEAR(clf, 3.0 / 8 * ln3, hand_bar(3.0 / 8 * ln3));
  EXPECT_NEAR(weight[0], 3.0 / 8, hand_bar(3.0 / 8));
  EXPECT_NEAR(weight[1], 0.25, hand_bar(0.25));
  EXPECT_NEAR(weight[2], 3.0 / 8, hand_bar(3.0 / 8));
  sums = {ln3, 0};
  cpu::clf_objective(&clf, gl.data(), q.data(), weight.data(), q.data(), sums.data(), count.data(),
                     group.data(), nullptr, 3, 2, rule(1, 2.0));
  EXPECT_NEAR(q[0], 0.75, hand_bar(0.75));
  EXPECT_NEAR(q[1], 0.25, hand_bar(0.25));
  EXPECT_NEAR(clf, 0.75 * ln3, hand_bar(0.75 * ln3));
  EXPECT_NEAR(weight[0], 0.125, hand_bar(0.125));
  EXPECT_NEAR(weight[1], 0.75, hand_bar(0.75));
  EXPECT_NEAR(weight[2], 0.125, hand_bar(0.125));
}

TEST(StepOps, ClfObjectiveGradientWrtGroupSumsIsTheSampleWeight) {
  // With q held fixed (eta = 0), d clf / d sum_g = q_g / count_g, the weight of every sample of
  // group g: the backward feeds these weights to softmax_xent_backward, which is only right if
  // they are the objective's derivative. ERM likewise: d clf / d sum_g = 1/n.
  const std::vector<int32_t> count = {2, 3, 1}, group = {1, 0, 1, 2, 0, 1};
  const int n = 6, groups = 3;
  const std::vector<double> q0 = {0.5, 0.3, 0.2};
  const std::vector<double> sums = {1.3, 0.4, 2.2};
  for (int groupdro : {0, 1}) {
    auto clf_of = [&](const std::vector<double>& s) {
      double clf;
      std::vector<double> gl(groups), q = q0, w(n);
      cpu::clf_objective(&clf, gl.data(), q.data(), w.data(), q.data(), s.data(), count.data(),
                         group.data(), nullptr, n, groups, rule(groupdro, 0.0));
      return clf;
    };
    // With η = 0, clf is linear in the sums: central differences have no truncation error, only
    // rounding, ≈ γ_6·|clf|/h = 1e-10 (testing.h, numeric_gradient).
    const auto grad = numeric_gradient(clf_of, sums);
    double clf;
    std::vector<double> gl(groups), q = q0, weight(n);
    cpu::clf_objective(&clf, gl.data(), q.data(), weight.data(), q.data(), sums.data(),
                       count.data(), group.data(), nullptr, n, groups, rule(groupdro, 0.0));
    for (int i = 0; i < n; ++i)
      EXPECT_NEAR(weight[i], grad[group[i]], 1e-9) << "groupdro " << groupdro << " sample " << i;
    if (groupdro)
      for (int g = 0; g < groups; ++g) EXPECT_NEAR(grad[g], q0[g] / count[g], 1e-9) << g;
    else
      for (int g = 0; g < groups; ++g) EXPECT_NEAR(grad[g], 1.0 / n, 1e-9) << g;
  }
}

template <typename T>
class StepOpsTyped : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(StepOpsTyped, Types);

TYPED_TEST(StepOpsTyped, ClfObjectiveGroupDroHandWorked) {
  // The three-group case of ClfObjectiveGroupDroMatchesHandWorkedUpdate, with T sums and
  // weights: q = {4/9, 4/9, 1/9}, clf = 4/3 ln 2, weight = {2/9, 4/9, 2/9}.
  using T = TypeParam;
  const double ln2 = std::log(2.0);
  // Error model: the sums round to T, so ℓ = sum/count errs by dl = (u_T + u_64)·2 ln 2; q ∝
  // q·exp(η ℓ − top) takes that through exp in its factor and through the normalising sum
  // (2η·dl relative) and, in double, each factor's product, shift (both on arguments ≤ 1.4),
  // exp (1 ulp) and scaling, twice through the sum, its 2 adds and the divide: 15u; clf = Σ q ℓ (Σ
  // q = 1) adds q's and ℓ's errors and 4 roundings; a weight q/count rounds to T once more. The
  // hand values round 3 times.
  const double u = testing::unit_roundoff<T>(), ud = testing::unit_roundoff<double>();
  const double dl = (u + ud) * 2 * ln2, q_rel = 2 * dl + testing::gamma(15, ud);
  auto expect_near = [&](double got, double want, double err) {
    EXPECT_NEAR(got, want, err + testing::gamma(3, ud) * std::abs(want));
  };
  const std::vector<T> sums = {T(2 * ln2), T(2 * ln2), T(0)};
  const std::vector<int32_t> count = {2, 1, 0}, group = {0, 1, 0};
  double clf = -1;
  std::vector<double> gl(3, -7), q = {0.5, 0.25, 0.25};
  std::vector<T> weight(3, T(-7));
  cpu::clf_objective(&clf, gl.data(), q.data(), weight.data(), q.data(), sums.data(), count.data(),
                     group.data(), nullptr, 3, 3, rule(1, 1.0));
  expect_near(q[0], 4.0 / 9, q_rel * 4.0 / 9);
  expect_near(q[1], 4.0 / 9, q_rel * 4.0 / 9);
  expect_near(q[2], 1.0 / 9, q_rel * 1.0 / 9);
  expect_near(gl[0], ln2, dl);
  expect_near(gl[1], 2 * ln2, dl);
  EXPECT_EQ(gl[2], 0.0);
  const double clf_want = 4.0 / 3 * ln2;
  expect_near(clf, clf_want, (q_rel + testing::gamma(4, ud)) * clf_want + dl);
  expect_near(weight[0], 2.0 / 9, (q_rel + u + ud) * 2.0 / 9);
  expect_near(weight[1], 4.0 / 9, (q_rel + u + ud) * 4.0 / 9);
  expect_near(weight[2], 2.0 / 9, (q_rel + u + ud) * 2.0 / 9);

  // And ERM on the same batch: clf = (2 ln 2 + 2 ln 2 + 0)/3, the sums' rounding and 3 more;
  // weight 1/3 each, rounded to T.
  cpu::clf_objective(&clf, gl.data(), q.data(), weight.data(), q.data(), sums.data(), count.data(),
                     group.data(), nullptr, 3, 3, rule(0, 1.0));
  expect_near(clf, 4 * ln2 / 3, 2 * dl / 3 + testing::gamma(3, ud) * 4 * ln2 / 3);
  for (int i = 0; i < 3; ++i) expect_near(weight[i], 1.0 / 3, (u + ud) / 3);
}

TYPED_TEST(StepOpsTyped, FitReduceMasksNonFinite) {
  using T = TypeParam;
  const std::vector<int32_t> count = {3, 1, 0, 2};
  const std::vector<T> w2 = {T(1.5), T(kNaN), T(kInf), T(2.25)};
  std::vector<double> out(3);
  std::vector<T> dw2(4, T(-7));
  cpu::fit_reduce(out.data(), dw2.data(), w2.data(), count.data(), 4, T(2));
  EXPECT_EQ(out, (std::vector<double>{3.75, 2, 1}));
  EXPECT_EQ(dw2, (std::vector<T>{2, 0, 0, 2}));
}

// --- sum_scaled --------------------------------------------------------------------------------

TEST(StepOps, SumScaledAccumulatesInDouble) {
  // float inputs {1e8, 1, 1, 1, 1, −1e8}: a float accumulator loses every 1 (float's spacing at
  // 1e8 is 8, so 1e8 + 1 rounds back to 1e8) and returns 0; in double the sum is exactly 4.
  // scale 0.5 → 2.
  const std::vector<float> x = {1e8f, 1, 1, 1, 1, -1e8f};
  double out = -1;
  cpu::sum_scaled(&out, x.data(), int64_t(x.size()), 0.5);
  EXPECT_EQ(out, 2.0);

  // Double inputs: 0.25·(1 + 2 + 3 − 0.5) = 1.375; count 0 → 0.
  const std::vector<double> y = {1, 2, 3, -0.5};
  cpu::sum_scaled(&out, y.data(), 4, 0.25);
  EXPECT_EQ(out, 1.375);
  cpu::sum_scaled(&out, y.data(), 0, 0.25);
  EXPECT_EQ(out, 0.0);
}

// --- all_zero ----------------------------------------------------------------------------------

TEST(StepOps, AllZero) {
  std::vector<float> x(5, 0.0f);
  double out = -1;
  cpu::all_zero(&out, x.data(), 5);
  EXPECT_EQ(out, 1.0);
  for (int at : {0, 2, 4}) {  // first, middle, last
    std::vector<float> y(5, 0.0f);
    y[at] = 1e-30f;
    out = -1;
    cpu::all_zero(&out, y.data(), 5);
    EXPECT_EQ(out, 0.0) << at;
  }
  // −0.0 is zero.
  const std::vector<double> neg = {0.0, -0.0, -0.0};
  out = -1;
  cpu::all_zero(&out, neg.data(), 3);
  EXPECT_EQ(out, 1.0);
  // NaN is not zero.
  const std::vector<double> nan = {0.0, kNaN};
  cpu::all_zero(&out, nan.data(), 2);
  EXPECT_EQ(out, 0.0);
  // Nothing to check: vacuously all zero.
  out = -1;
  cpu::all_zero<double>(&out, nullptr, 0);
  EXPECT_EQ(out, 1.0);
}

// --- check_finite ------------------------------------------------------------------------------

// The clock's step (the steps taken before this one): the status counts steps from 1, so
// kStep6 makes check_finite record step 7.
const int64_t kStep2 = 2, kStep3 = 3, kStep6 = 6, kStep8 = 8;

TEST(StepOps, CheckFiniteCleanInputsLeaveStatusUnset) {
  const std::vector<double> stats = {1.5, -2, 0};
  const std::vector<float> grad = {0, 1, -1e30f, 3};
  std::vector<int64_t> status = {-1, -1};
  cpu::check_finite(status.data(), stats.data(), 3, grad.data(), 4, &kStep6);
  EXPECT_EQ(status, (std::vector<int64_t>{-1, -1}));
}

TEST(StepOps, CheckFiniteRecordsFirstBadGradAndIsSticky) {
  const std::vector<double> stats = {1, 2};
  std::vector<double> grad(8, 0.5);
  grad[5] = kNaN;
  grad[6] = kInf;  // a later bad value: the first one wins
  std::vector<int64_t> status = {-1, -1};
  cpu::check_finite(status.data(), stats.data(), 2, grad.data(), 8, &kStep6);
  EXPECT_EQ(status, (std::vector<int64_t>{7, 5}));

  // Sticky: another bad value at step 9 (stats and an earlier grad) leaves the first record.
  const std::vector<double> bad_stats = {kNaN, 2};
  grad[1] = -kInf;
  cpu::check_finite(status.data(), bad_stats.data(), 2, grad.data(), 8, &kStep8);
  EXPECT_EQ(status, (std::vector<int64_t>{7, 5}));
}

TEST(StepOps, CheckFiniteChecksStatsFirst) {
  // stats[1] is inf and the grads hold a NaN too: stats win, where = −1 − 1 = −2.
  const std::vector<double> stats = {1, kInf, kNaN};
  const std::vector<float> grad = {float(kNaN), 0};
  std::vector<int64_t> status = {-1, -1};
  cpu::check_finite(status.data(), stats.data(), 3, grad.data(), 2, &kStep6);
  EXPECT_EQ(status, (std::vector<int64_t>{7, -2}));
}

TEST(StepOps, CheckFiniteInfCounts) {
  // +inf in grad[0] (float), then −inf in stats[0] of a fresh status → where −1.
  const std::vector<float> grad = {float(kInf), 0};
  std::vector<int64_t> status = {-1, -1};
  cpu::check_finite<float>(status.data(), nullptr, 0, grad.data(), 2, &kStep2);
  EXPECT_EQ(status, (std::vector<int64_t>{3, 0}));

  const double stats = -kInf;
  status = {-1, -1};
  cpu::check_finite<double>(status.data(), &stats, 1, nullptr, 0, &kStep3);
  EXPECT_EQ(status, (std::vector<int64_t>{4, -1}));
}

// --- accumulate --------------------------------------------------------------------------------

TEST(StepOps, AccumulateAddsTwice) {
  // {1, 2, 3} + 2·{0.5, −2, 10} = {2, −2, 23}.
  std::vector<double> sum = {1, 2, 3};
  const std::vector<double> x = {0.5, -2, 10};
  const int64_t clear[2] = {-1, -1}, bad[2] = {4, 0};
  cpu::accumulate<float>(sum.data(), x.data(), 3, nullptr);
  EXPECT_EQ(sum, (std::vector<double>{1.5, 0, 13}));
  cpu::accumulate<double>(sum.data(), x.data(), 3, clear);
  EXPECT_EQ(sum, (std::vector<double>{2, -2, 23}));
  // Once check_finite has flagged a step, nothing more enters the window.
  cpu::accumulate<double>(sum.data(), x.data(), 3, bad);
  EXPECT_EQ(sum, (std::vector<double>{2, -2, 23}));
}

TEST(StepOps, GroupDroCommitTakesTheNewWeightsUnlessTheStepWasBad) {
  std::vector<double> q = {0.5, 0.5};
  const std::vector<double> next = {0.25, 0.75}, spoiled = {NAN, NAN};
  const int64_t clear[2] = {-1, -1}, bad[2] = {9, -3};
  cpu::groupdro_commit<float>(q.data(), next.data(), 2, clear);
  EXPECT_EQ(q, next);
  cpu::groupdro_commit<float>(q.data(), spoiled.data(), 2, bad);
  EXPECT_EQ(q, next);
}

// --- argmax_rows -------------------------------------------------------------------------------

TEST(StepOps, ArgmaxRowsTiesNegativesOneColumn) {
  // Row 0: ties at columns 1 and 3 → 1. Row 1: all equal → 0. Row 2: negatives, max −1 at 2
  // (tied with col 3) → 2. Row 3: max at the last column → 3.
  const std::vector<float> x = {0,  5,  1,  5,   //
                                2,  2,  2,  2,   //
                                -3, -2, -1, -1,  //
                                -9, -8, -7, -6.5f};
  std::vector<int32_t> out(4, -1);
  cpu::argmax_rows(out.data(), x.data(), 4, 4);
  EXPECT_EQ(out, (std::vector<int32_t>{1, 0, 2, 3}));

  // One column: always 0.
  const std::vector<double> col = {-1, 3, 0};
  std::vector<int32_t> out1(3, -1);
  cpu::argmax_rows(out1.data(), col.data(), 3, 1);
  EXPECT_EQ(out1, (std::vector<int32_t>{0, 0, 0}));
}

// --- the GroupDRO family (docs/DESIGN.md §1) -----------------------------------------------------

// Two groups: sums {2, 6} over counts {2, 3}, so ℓ = {1, 2}; samples 0,1 in group 0, 2..4 in 1.
struct TwoGroups {
  std::vector<double> sums = {2, 6}, gl = std::vector<double>(2), weight = std::vector<double>(5);
  std::vector<int32_t> count = {2, 3}, group = {0, 0, 1, 1, 1};
  double clf = 0;
  void run(std::vector<double>& q, const ClfRule& r, const double* adjustment = nullptr) {
    cpu::clf_objective(&clf, gl.data(), q.data(), weight.data(), q.data(), sums.data(),
                       count.data(), group.data(), adjustment, 5, 2, r);
  }
};

ClfRule family(GroupDroUpdate update, GroupDroObjective objective, bool update_q) {
  ClfRule r;
  r.groupdro = true;
  r.update = update;
  r.objective = objective;
  r.eta = 1.0;
  r.tau = 0.5;
  r.gamma = 0.1;
  r.update_q = update_q;
  return r;
}

TEST(StepOps, ClfObjectiveSoftmaxUpdateIsAFreshSoftmaxOfTheLosses) {
  // q = softmax(ℓ/τ) = softmax({2, 4}) = {1, e²}/(1 + e²), whatever q was.
  TwoGroups b;
  std::vector<double> q = {0.9, 0.1};
  b.run(q, family(GroupDroUpdate::softmax, GroupDroObjective::weighted, true));
  const double e2 = std::exp(2.0);
  EXPECT_NEAR(q[0], 1 / (1 + e2), hand_bar(1 / (1 + e2)));
  EXPECT_NEAR(q[1], e2 / (1 + e2), hand_bar(e2 / (1 + e2)));
  EXPECT_NEAR(b.clf, q[0] * 1 + q[1] * 2, hand_bar(q[0] * 1 + q[1] * 2));
  EXPECT_NEAR(b.weight[0], q[0] / 2, hand_bar(q[0] / 2));
  EXPECT_NEAR(b.weight[4], q[1] / 3, hand_bar(q[1] / 3));
}

TEST(StepOps, ClfObjectiveSmoothUpdateMovesQAStepTowardTheSoftmax) {
  // p = softmax(η ℓ) = {1, e}/(1 + e); q ← 0.9 q + 0.1 p.
  TwoGroups b;
  std::vector<double> q = {0.5, 0.5};
  b.run(q, family(GroupDroUpdate::smooth, GroupDroObjective::weighted, true));
  const double e = std::exp(1.0);
  EXPECT_NEAR(q[0], 0.45 + 0.1 / (1 + e), hand_bar(0.45 + 0.1 / (1 + e)));
  EXPECT_NEAR(q[1], 0.45 + 0.1 * e / (1 + e), hand_bar(0.45 + 0.1 * e / (1 + e)));
}

TEST(StepOps, ClfObjectiveAdjustmentEntersOnlyTheUpdateOfQ) {
  // exp update with ℓ̃ = ℓ + {0, 0.5}: q ∝ {0.5·e^1, 0.5·e^2.5}; L_clf still uses ℓ itself.
  TwoGroups b;
  std::vector<double> q = {0.5, 0.5};
  const double adjustment[2] = {0.0, 0.5};
  b.run(q, family(GroupDroUpdate::exp, GroupDroObjective::weighted, true), adjustment);
  const double a = std::exp(1.0), c = std::exp(2.5);
  EXPECT_NEAR(q[0], a / (a + c), hand_bar(a / (a + c)));
  EXPECT_NEAR(b.clf, q[0] * 1 + q[1] * 2, hand_bar(q[0] * 1 + q[1] * 2));
  EXPECT_EQ(b.gl, (std::vector<double>{1, 2}));
}

TEST(StepOps, ClfObjectiveMaxTakesTheWorstGroupAndItsSubgradient) {
  TwoGroups b;
  std::vector<double> q = {0.5, 0.5};
  b.run(q, family(GroupDroUpdate::exp, GroupDroObjective::max, false));
  EXPECT_EQ(b.clf, 2.0);
  EXPECT_EQ(b.weight, (std::vector<double>{0, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3}));
  EXPECT_EQ(q, (std::vector<double>{0.5, 0.5}));  // update_q off: q untouched
}

TEST(StepOps, ClfObjectiveLogSumExpIsASmoothMax) {
  // τ log(e^{1/τ} + e^{2/τ}) with τ = 0.5: 0.5 log(e² + e⁴); weights softmax({2,4})_g / count_g.
  TwoGroups b;
  std::vector<double> q = {0.5, 0.5};
  b.run(q, family(GroupDroUpdate::exp, GroupDroObjective::logsumexp, false));
  const double e2 = std::exp(2.0), e4 = std::exp(4.0);
  EXPECT_NEAR(b.clf, 0.5 * std::log(e2 + e4), hand_bar(0.5 * std::log(e2 + e4)));
  EXPECT_NEAR(b.weight[0], e2 / (e2 + e4) / 2, hand_bar(e2 / (e2 + e4) / 2));
  EXPECT_NEAR(b.weight[2], e4 / (e2 + e4) / 3, hand_bar(e4 / (e2 + e4) / 3));
  // Its gradient with respect to the group sums is those weights (finite differences).
  auto clf_of = [&](const std::vector<double>& sums) {
    TwoGroups c;
    c.sums = sums;
    std::vector<double> qq = {0.5, 0.5};
    c.run(qq, family(GroupDroUpdate::exp, GroupDroObjective::logsumexp, false));
    return c.clf;
  };
  const auto grad = numeric_gradient(clf_of, b.sums);
  EXPECT_NEAR(grad[0], b.weight[0], 1e-9);
  EXPECT_NEAR(grad[1], b.weight[2], 1e-9);
}

TEST(StepOps, ClfObjectiveSoftmaxUpdateGivesAnAbsentGroupNoWeight) {
  TwoGroups b;
  b.count = {2, 0};
  b.group = {0, 0, 0, 0, 0};
  b.sums = {2, 0};
  std::vector<double> q = {0.5, 0.5};
  b.run(q, family(GroupDroUpdate::softmax, GroupDroObjective::weighted, true));
  EXPECT_EQ(q, (std::vector<double>{1.0, 0.0}));
  EXPECT_EQ(b.clf, 1.0);
}

TEST(StepOps, ClfObjectiveExpUpdateCannotOverflow) {
  // η ℓ = {450, 900}: exp(900) overflows a double; the shifted form gives
  // q = {e^-450, 1}/(1 + e^-450).
  TwoGroups b;
  std::vector<double> q = {0.5, 0.5};
  ClfRule r = family(GroupDroUpdate::exp, GroupDroObjective::weighted, true);
  r.eta = 450;
  b.run(q, r);
  EXPECT_EQ(q[1], 1.0);
  EXPECT_NEAR(q[0], std::exp(-450.0), 1e-205);
  EXPECT_TRUE(std::isfinite(b.clf));
}

}  // namespace
}  // namespace hetdro
