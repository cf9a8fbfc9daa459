// sigmoid and relu against scalar formulas, and their backwards against central differences.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <type_traits>
#include <vector>

#include "hetdro/ops.h"
#include "testing.h"  // random_vector, rel_error, numeric_gradient

namespace hetdro {
namespace {

using testing::numeric_gradient;
using testing::random_vector;
using testing::rel_error;

template <typename T>
class ActivationsTyped : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ActivationsTyped, Types);

// Large enough (> 2^16) to take the OpenMP path too.
constexpr size_t kCount = 100003;

TYPED_TEST(ActivationsTyped, SigmoidMatchesScalarFormula) {
  using T = TypeParam;
  const auto in = random_vector<T>(kCount, 1, T(-8), T(8));
  const auto dout = random_vector<T>(kCount, 2);
  std::vector<T> out(kCount), din(kCount, T(0)), ref(kCount), ref_din(kCount);
  cpu::sigmoid_forward(out.data(), in.data(), int64_t(kCount));
  cpu::sigmoid_backward(din.data(), dout.data(), out.data(), int64_t(kCount));
  for (size_t i = 0; i < kCount; ++i) {
    const double s = 1 / (1 + std::exp(-double(in[i])));
    ref[i] = T(s);
    ref_din[i] = T(dout[i] * s * (1 - s));
  }
  EXPECT_LT(rel_error(out, ref), testing::reference_tolerance<T>());
  EXPECT_LT(rel_error(din, ref_din), testing::reference_tolerance<T>());
}

TYPED_TEST(ActivationsTyped, ReluMatchesScalarFormula) {
  using T = TypeParam;
  const auto in = random_vector<T>(kCount, 3);
  const auto dout = random_vector<T>(kCount, 4);
  std::vector<T> out(kCount), din(kCount, T(0));
  cpu::relu_forward(out.data(), in.data(), int64_t(kCount));
  cpu::relu_backward(din.data(), dout.data(), out.data(), int64_t(kCount));
  for (size_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(out[i], in[i] > 0 ? in[i] : T(0)) << i;
    ASSERT_EQ(din[i], in[i] > 0 ? dout[i] : T(0)) << i;
  }
}

TEST(Activations, SigmoidSaturatesWithoutNaN) {
  const std::vector<double> in = {-1000, -40, 0, 40, 1000};
  std::vector<double> out(in.size());
  cpu::sigmoid_forward(out.data(), in.data(), int64_t(in.size()));
  EXPECT_EQ(out[0], 0.0);
  EXPECT_NEAR(out[1], 4.248354255291589e-18, 1e-30);
  EXPECT_EQ(out[2], 0.5);
  EXPECT_EQ(out[3], 1.0);
  EXPECT_EQ(out[4], 1.0);
}

// L = Σ r ⊙ act(x), upstream gradient r; backward called twice must give twice the gradient.
void check_backward(void (*forward)(double*, const double*, int64_t),
                    void (*backward)(double*, const double*, const double*, int64_t),
                    const std::vector<double>& x) {
  const auto r = random_vector<double>(x.size(), 5);
  auto loss = [&](const std::vector<double>& in) {
    std::vector<double> out(in.size());
    forward(out.data(), in.data(), int64_t(in.size()));
    return std::inner_product(out.begin(), out.end(), r.begin(), 0.0);
  };
  std::vector<double> out(x.size()), din(x.size(), 0.0);
  forward(out.data(), x.data(), int64_t(x.size()));
  backward(din.data(), r.data(), out.data(), int64_t(x.size()));
  EXPECT_LT(rel_error(din, numeric_gradient(loss, x)), 1e-6);
  auto twice = din;
  for (auto& g : twice) g *= 2;
  backward(din.data(), r.data(), out.data(), int64_t(x.size()));
  EXPECT_LT(rel_error(din, twice), 1e-15);
}

TEST(Activations, SigmoidBackwardMatchesCentralDifferences) {
  check_backward(cpu::sigmoid_forward<double>, cpu::sigmoid_backward<double>,
                 random_vector<double>(200, 6, -4.0, 4.0));
}

TEST(Activations, ReluBackwardMatchesCentralDifferences) {
  // Away from the kink at 0: |x| ≥ 0.05, far beyond the difference step.
  auto x = random_vector<double>(200, 7, 0.05, 1.0);
  for (size_t i = 0; i < x.size(); i += 2) x[i] = -x[i];
  check_backward(cpu::relu_forward<double>, cpu::relu_backward<double>, x);
}

}  // namespace
}  // namespace hetdro
