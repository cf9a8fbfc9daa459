// adam: a hand-worked first step, AdamW's decay, and several steps against a scalar
// reimplementation of PyTorch's update in double.
#include <gtest/gtest.h>

#include <cmath>
#include <type_traits>
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
  const bool single = std::is_same_v<T, float>;
  const int64_t first = 0;  // no step taken before: Adam's t = 1
  cpu::adam_update(p.data(), m.data(), v.data(), g.data(), 4, lr, T(0.9), T(0.999), eps, T(0),
                   &first, nullptr);
  for (int i = 0; i < 4; ++i) {
    const double want = double(p0[i]) - double(lr) * g[i] / (std::abs(double(g[i])) + double(eps));
    EXPECT_NEAR(p[i], want, single ? 1e-6 : 1e-15) << i;
    EXPECT_NEAR(m[i], 0.1 * g[i], single ? 1e-7 : 1e-15) << i;
  }
}

TEST(Adam, DecoupledWeightDecayShrinksTheParameterFirst) {
  double p = 2, m = 0, v = 0;
  const double g = -0.5, lr = 0.1, wd = 0.3;
  const int64_t first = 0;
  cpu::adam_update(&p, &m, &v, &g, 1, lr, 0.9, 0.999, 1e-8, wd, &first, nullptr);
  // 2·(1 − 0.1·0.3) − 0.1·(−0.5)/(0.5 + 1e-8) = 1.94 + 0.1 (to 1e-8 relative).
  EXPECT_NEAR(p, 1.94 + 0.1 * 0.5 / (0.5 + 1e-8), 1e-15);
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
    for (int t = 1; t <= 5; ++t) {
      const auto g = random_vector<T>(count, 10 + t);
      const int64_t before = t - 1;  // the steps taken before step t
      cpu::adam_update(p.data(), m.data(), v.data(), g.data(), count, T(ref.lr), T(ref.b1),
                       T(ref.b2), T(ref.eps), T(wd), &before, nullptr);
      for (int64_t i = 0; i < count; ++i) ref.step(rp[i], rm[i], rv[i], g[i], t);
    }
    const bool single = std::is_same_v<T, float>;
    const double tol = single ? 1e-6 : 1e-14;
    // The parameters barely move (lr = 1e-3), so compare the displacement, not p itself.
    const auto p0 = random_vector<T>(count, 1);
    std::vector<double> moved(count), ref_moved(count);
    for (int64_t i = 0; i < count; ++i) moved[i] = double(p[i]) - p0[i];
    for (int64_t i = 0; i < count; ++i) ref_moved[i] = rp[i] - p0[i];
    EXPECT_LT(rel_error(moved, ref_moved), single ? 1e-4 : 1e-11) << wd;
    EXPECT_LT(rel_error(m, std::vector<T>(rm.begin(), rm.end())), tol) << wd;
    EXPECT_LT(rel_error(v, std::vector<T>(rv.begin(), rv.end())), tol) << wd;
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
