// sigmoid and relu against scalar formulas, and their backwards against central differences; and
// the CUDA kernels' formulas (kernels/activations.h) against the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <type_traits>
#include <vector>

#include "activations.h"  // the CUDA kernels' sigmoid, sigmoid_grad, relu, relu_grad
#include "hetdro/ops.h"
#include "testing.h"  // random_vector, rel_error, numeric_gradient

namespace hetdro {
namespace {

using testing::gamma;
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
  // Error model: libm's exp is within 1 ulp (2u; glibc's vector variants, 4 ulp, need
  // -ffast-math, which no build uses), then an add and a divide, and the sigmoid's relative
  // condition number in exp(−x), e/(1 + e), is below 1: s is within 4u relative, in T and in the
  // double reference, which is then rounded to T (u). The backward s(1 − s) takes s's error times
  // |1 − 2s| plus three roundings of its own; computed per element below.
  const double u = testing::unit_roundoff<T>(), ud = testing::unit_roundoff<double>();
  std::vector<double> wide_din(kCount), din_bound(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    const double s = 1 / (1 + std::exp(-double(in[i])));
    ref[i] = T(s);
    ref_din[i] = T(dout[i] * s * (1 - s));
    wide_din[i] = dout[i] * s * (1 - s);
    din_bound[i] = std::abs(dout[i]) * s *
                   (std::abs(1 - 2 * s) * (gamma(4, u) + gamma(4, ud)) +
                    (gamma(3, u) + gamma(3, ud)) * (1 - s));
  }
  EXPECT_LT(rel_error(out, ref), gamma(5, u) + gamma(4, ud));
  EXPECT_LT(rel_error(din, ref_din), testing::conditioning(din_bound, wide_din) + u);
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

// --- the CUDA kernels' formulas (kernels/activations.h) ---------------------------------------

// The kernels apply these per element: forward overwrites, backward adds (start from nonzero
// gradients). Float against the double reference, with saturation, zeros and a NaN input.
TEST(ActivationsKernel, FormulasMatchTheReference) {
  auto in = random_vector<double>(1000, 11, -20.0, 20.0);
  const double nan = std::nan("");
  in.insert(in.end(), {-1000.0, -88.0, -40.0, 0.0, -0.0, 40.0, 88.0, 1000.0, nan});
  const auto dout = random_vector<double>(in.size(), 12);
  const auto din0 = random_vector<double>(in.size(), 13);
  const size_t count = in.size();

  for (bool sigmoid : {true, false}) {
    std::vector<double> ref(count), ref_din = din0;
    std::vector<float> out(count), din(din0.begin(), din0.end());
    if (sigmoid) {
      cpu::sigmoid_forward(ref.data(), in.data(), int64_t(count));
      cpu::sigmoid_backward(ref_din.data(), dout.data(), ref.data(), int64_t(count));
    } else {
      cpu::relu_forward(ref.data(), in.data(), int64_t(count));
      cpu::relu_backward(ref_din.data(), dout.data(), ref.data(), int64_t(count));
    }
    for (size_t i = 0; i < count; ++i) {
      const float x = float(in[i]);
      out[i] = sigmoid ? cuda::sigmoid(x) : cuda::relu(x);
      din[i] += sigmoid ? cuda::sigmoid_grad(float(dout[i]), out[i])
                        : cuda::relu_grad(float(dout[i]), out[i]);
    }
    // The NaN input is last: sigmoid passes it on (in both), relu maps it to 0.
    EXPECT_EQ(std::isnan(out.back()), std::isnan(ref.back())) << sigmoid;
    EXPECT_EQ(std::isnan(din.back()), std::isnan(ref_din.back())) << sigmoid;
    out.pop_back(), ref.pop_back(), din.pop_back(), ref_din.pop_back();
    for (size_t i = 0; i < out.size(); ++i) ASSERT_TRUE(std::isfinite(out[i])) << i;
    // Error model, per element: x rounds to float (u|x|), which moves the sigmoid by
    // s(1 − s)·u|x|; the float formulas are within 4u (s, see SigmoidMatchesScalarFormula) and
    // the double reference within 4u_64. The gradient adds dout's and din0's rounding to float,
    // s's error times |1 − 2s|, and three roundings of its own. ReLU only rounds x, dout and din0.
    const double u = testing::unit_roundoff<float>(), ud = testing::unit_roundoff<double>();
    std::vector<double> out_bound(out.size()), din_bound(din.size());
    for (size_t i = 0; i < out.size(); ++i) {
      const double x = in[i], s = ref[i], g = dout[i], t = ref_din[i] - din0[i];
      if (sigmoid) {
        const double ds = s * (gamma(4, u) + gamma(4, ud)) + s * (1 - s) * u * std::abs(x);
        out_bound[i] = ds;
        din_bound[i] = u * std::abs(din0[i]) + std::abs(g) * std::abs(1 - 2 * s) * ds +
                       (gamma(4, u) + gamma(3, ud)) * std::abs(t) +
                       gamma(1, u) * std::abs(ref_din[i]);
      } else {
        out_bound[i] = u * std::abs(s);
        din_bound[i] = u * std::abs(din0[i]) + u * std::abs(t) + u * std::abs(ref_din[i]);
      }
    }
    EXPECT_LT(rel_error(std::vector<double>(out.begin(), out.end()), ref),
              testing::conditioning(out_bound, ref))
        << sigmoid;
    EXPECT_LT(rel_error(std::vector<double>(din.begin(), din.end()), ref_din),
              testing::conditioning(din_bound, ref_din))
        << sigmoid;
  }
}

}  // namespace
}  // namespace hetdro

namespace hetdro {
namespace {

// ops.def: a gradient pointer may be nullptr when that gradient is not needed.
TEST(Activations, BackwardWithoutDinDoesNothing) {
  const std::vector<float> x = {0.5f, -1.0f, 2.0f, 0.25f};
  cpu::sigmoid_backward<float>(nullptr, x.data(), x.data(), 4);
  cpu::relu_backward<float>(nullptr, x.data(), x.data(), 4);
  cpu::maxpool2x2_backward<float>(nullptr, x.data(), x.data(), 1, 1, 2, 2);  // one window
  SUCCEED();  // reaching here is the test: a dereference of nullptr would crash
}

}  // namespace
}  // namespace hetdro
