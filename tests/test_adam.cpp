// adam: a hand-worked first step, AdamW's decay, and several steps against a scalar
// reimplementation of PyTorch's update in double.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "hetdro/ops.h"
#include "testing.h"  // random_vector, rel_error

namespace hetdro {
namespace {

using testing::random_vector;
using testing::rel_error;

// The textbook form (PyTorch's docs): m̂ = m/(1−β1^t), v̂ = v/(1−β2^t), p −= lr m̂/(√v̂ + ε),
// after p −= lr·wd·p when decoupled decay is on.
struct ScalarAdam {
  double lr, b1, b2, eps, wd;
  void step(double& p, double& m, double& v, double g, int t) const {
    p -= lr * wd * p;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double mhat = m / (1 - std::pow(b1, t)), vhat = v / (1 - std::pow(b2, t));
    p -= lr * mhat / (std::sqrt(vhat) + eps);
  }
};

template <typename T>
class AdamTyped : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AdamTyped, Types);

TYPED_TEST(AdamTyped, FirstStepIsLrTimesGOverAbsGPlusEps) {
  // At step 1 the bias corrections undo the (1−β) factors exactly: m̂ = g, v̂ = g².
  using T = TypeParam;
  const std::vector<T> p0 = {1, -2, 0.5, 3}, g = {0.1, -4, 1e-3, 0};
  std::vector<T> p = p0, m(4, T(0)), v(4, T(0));
  const T lr = T(0.01), eps = T(1e-8);
  const int64_t first = 0;  // no step taken before: Adam's t = 1
  cpu::adam_update(p.data(), m.data(), v.data(), g.data(), 4, lr, T(0.9), T(0.999), eps, T(0),
                   &first, nullptr);
  // Error model: m = (1 − β1)·g rounds once ((1 − β1) is exact, Sterbenz), against the same
  // product in double; the update δ = (lr/bc1)·m/(√v·(1/√bc2) + ε) carries 9 roundings (its two
  // folded scalars, m, v's two, the product, the root, the scaling, the ε add and the divide, v's
  // halved by the root: at most 10) and p − δ one more.
  const double u = testing::unit_roundoff<T>();
  for (int i = 0; i < 4; ++i) {
    const double step = double(lr) * g[i] / (std::abs(double(g[i])) + double(eps));
    const double want = double(p0[i]) - step;
    // The hand value rounds twice more in double (the quotient's three, the difference).
    EXPECT_NEAR(p[i], want,
                testing::gamma(2, u) * std::abs(want) + testing::gamma(13, u) * std::abs(step))
        << i;
    const double want_m = (1 - double(T(0.9))) * g[i];
    EXPECT_NEAR(m[i], want_m, u * std::abs(want_m)) << i;
  }
}

TEST(Adam, DecoupledWeightDecayShrinksTheParameterFirst) {
  double p = 2, m = 0, v = 0;
  const double g = -0.5, lr = 0.1, wd = 0.3;
  const int64_t first = 0;
  cpu::adam_update(&p, &m, &v, &g, 1, lr, 0.9, 0.999, 1e-8, wd, &first, nullptr);
  // 2·(1 − 0.1·0.3) − 0.1·(−0.5)/(0.5 + 1e-8) = 1.94 + 0.1 (to 1e-8 relative). Rounding: the
  // decay factor (2), p·decay and p − δ on |p| ≤ 2, 10 on the update δ (see FirstStep…), and the
  // hand value's own two on its sum: 1.5e-15.
  const double u = testing::unit_roundoff<double>(), delta = 0.1 * 0.5 / (0.5 + 1e-8);
  const double want = 1.94 + delta;
  EXPECT_NEAR(
      p, want,
      testing::gamma(4, u) * 2 + testing::gamma(10, u) * delta + testing::gamma(2, u) * want);
}

TYPED_TEST(AdamTyped, SeveralStepsMatchScalarReference) {
  using T = TypeParam;
  // Large enough (> 2^16) for the OpenMP path; with and without decay.
  const int64_t count = 70001;
  for (double wd : {0.0, 0.01}) {
    // The hyperparameters as T holds them: 1 − 0.999f is 1.3e-5 away from 1e-3, which the
    // reference must share to compare at float precision.
    auto held = [](double x) { return double(T(x)); };
    const ScalarAdam ref{held(1e-3), held(0.9), held(0.999), held(1e-8), held(wd)};
    auto p = random_vector<T>(count, 1);
    std::vector<T> m(count, T(0)), v(count, T(0));
    std::vector<double> rp(p.begin(), p.end()), rm(count, 0.0), rv(count, 0.0);
    // Error model, per element and step t (FMA contraction only removes roundings): m_t sums the
    // t terms (1 − β1)β1^(t−s)·g_s, each rounded at most 2t times, so |Δm| ≤ γ_2t·a_t with
    // a_t = Σ|terms|; v_t likewise with g_s², 2t + 1 roundings, all terms positive. The update
    // δ_t = (lr/bc1)·m/(√v·(1/√bc2) + ε) takes m's error, half of v's, and 7 roundings of its own
    // (two folded scalars, a product, the root, the scaling, the ε add, the divide); p·decay − δ
    // rounds once, twice with decay, whose factor 1 − lr·wd rounds once more. The double
    // reference carries the same with u_64; errors add across steps (decay ≤ 1).
    const double u = testing::unit_roundoff<T>(), ud = testing::unit_roundoff<double>();
    auto both = [&](double n) { return testing::gamma(n, u) + testing::gamma(n, ud); };
    std::vector<double> am(count, 0.0), moved_bound(count, 0.0);
    for (int t = 1; t <= 5; ++t) {
      const auto g = random_vector<T>(count, 10 + t);
      const int64_t before = t - 1;  // the steps taken before step t
      cpu::adam_update(p.data(), m.data(), v.data(), g.data(), count, T(ref.lr), T(ref.b1),
                       T(ref.b2), T(ref.eps), T(wd), &before, nullptr);
      const double step_size = ref.lr / (1 - std::pow(ref.b1, t)), bc2 = 1 - std::pow(ref.b2, t);
      for (int64_t i = 0; i < count; ++i) {
        const double p_before = std::abs(rp[i]);
        ref.step(rp[i], rm[i], rv[i], g[i], t);
        am[i] = ref.b1 * am[i] + (1 - ref.b1) * std::abs(double(g[i]));
        const double den = std::sqrt(rv[i] / bc2) + ref.eps;
        const double delta = step_size * std::abs(rm[i]) / den;
        moved_bound[i] += both(1) * std::abs(rp[i]) + (wd > 0 ? both(2) * p_before : 0.0) +
                          delta * (both(7) + both(2 * t + 1) / 2) +
                          step_size * both(2 * t) * am[i] / den;
      }
    }
    // The parameters barely move (lr = 1e-3), so compare the displacement, not p itself.
    const auto p0 = random_vector<T>(count, 1);
    std::vector<double> moved(count), ref_moved(count);
    for (int64_t i = 0; i < count; ++i) moved[i] = double(p[i]) - p0[i];
    for (int64_t i = 0; i < count; ++i) ref_moved[i] = rp[i] - p0[i];
    using testing::conditioning;
    using testing::sum_tolerance;
    EXPECT_LT(rel_error(moved, ref_moved), conditioning(moved_bound, ref_moved) + ud) << wd;
    EXPECT_LT(rel_error(m, std::vector<T>(rm.begin(), rm.end())),
              sum_tolerance<T>(2 * 5, conditioning(am, rm)))
        << wd;
    EXPECT_LT(rel_error(v, std::vector<T>(rv.begin(), rv.end())), sum_tolerance<T>(2 * 5 + 1, 1.0))
        << wd;
  }
}

TEST(Adam, ASetStatusLeavesEverythingAsItWas) {
  // check_finite's status {step, where}: −1 means no non-finite value was seen.
  double p = 2, m = 0.25, v = 0.5;
  const double g = std::nan("");
  const int64_t flagged[2] = {7, 3};
  const int64_t six = 6, none = 0;
  cpu::adam_update(&p, &m, &v, &g, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, &six, flagged);
  EXPECT_EQ(p, 2.0);
  EXPECT_EQ(m, 0.25);
  EXPECT_EQ(v, 0.5);
  const double g2 = 1.0;
  const int64_t clear[2] = {-1, -1};
  cpu::adam_update(&p, &m, &v, &g2, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, &none, clear);
  EXPECT_NE(p, 2.0);
}

}  // namespace
}  // namespace hetdro
