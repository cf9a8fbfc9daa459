// maxpool2x2 against naive loops, its tie rule, odd sizes, and its backward against central
// differences; maxpool2x2_sigmoid against maxpool2x2 then sigmoid, bit for bit, and against central
// differences; and the CUDA kernels' index math and arithmetic (kernels/maxpool2x2.h,
// kernels/activations.h) against the reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "activations.h"  // the CUDA kernels' sigmoid, sigmoid_grad
#include "hetdro/ops.h"
#include "maxpool2x2.h"  // the CUDA kernels' window_corner, argmax2x2
#include "testing.h"     // random_vector, rel_error, numeric_gradient

namespace hetdro {
namespace {

using testing::numeric_gradient;
using testing::rel_error;

// Distinct values at least 1/count apart (a shuffled ramp), so no window has a near-tie and
// central differences with a small step never cross a kink.
template <typename T>
std::vector<T> distinct_values(size_t count, uint32_t seed) {
  std::vector<T> v(count);
  std::iota(v.begin(), v.end(), T(0));
  std::shuffle(v.begin(), v.end(), std::mt19937(seed));
  for (auto& x : v) x = x / T(count) - T(0.5);
  return v;
}

// Reference: scans the window in row-major order and keeps the first maximum.
template <typename T>
void naive_pool(std::vector<T>& out, std::vector<T>* din, const std::vector<T>& dout,
                const std::vector<T>& in, int n, int c, int h, int w) {
  const int oh = h / 2, ow = w / 2;
  out.assign(size_t(n) * c * oh * ow, T(0));
  for (int p = 0; p < n * c; ++p)
    for (int y = 0; y < oh; ++y)
      for (int x = 0; x < ow; ++x) {
        size_t best = size_t(p) * h * w + 2 * y * w + 2 * x;
        for (int u = 0; u < 2; ++u)
          for (int v = 0; v < 2; ++v) {
            const size_t i = size_t(p) * h * w + (2 * y + u) * w + 2 * x + v;
            if (in[i] > in[best]) best = i;
          }
        const size_t o = (size_t(p) * oh + y) * ow + x;
        out[o] = in[best];
        if (din) (*din)[best] += dout[o];
      }
}

template <typename T>
class Maxpool2x2Typed : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Maxpool2x2Typed, Types);

TYPED_TEST(Maxpool2x2Typed, MatchesNaiveLoopsOnOddAndEvenSizes) {
  using T = TypeParam;
  struct Size {
    int n, c, h, w;
  };
  // The last is the encoder's 24x24 -> 12x12 at a batch big enough to run in parallel.
  for (Size s : {Size{2, 3, 7, 9}, Size{3, 2, 6, 5}, Size{4, 16, 24, 24}}) {
    const size_t count = size_t(s.n) * s.c * s.h * s.w;
    const auto in = testing::random_vector<T>(count, 1);
    const auto dout = testing::random_vector<T>(size_t(s.n) * s.c * (s.h / 2) * (s.w / 2), 2);
    std::vector<T> out(dout.size()), ref, din(count, T(0)), ref_din(count, T(0));
    cpu::maxpool2x2_forward(out.data(), in.data(), s.n, s.c, s.h, s.w);
    cpu::maxpool2x2_backward(din.data(), dout.data(), in.data(), s.n, s.c, s.h, s.w);
    naive_pool(ref, &ref_din, dout, in, s.n, s.c, s.h, s.w);
    EXPECT_EQ(out, ref);  // a max selects, it does not round
    EXPECT_EQ(din, ref_din);
  }
}

// One 2x2 window per case, and where its first maximum lies in row-major order: all tied, three
// tied, two tied, all tied and negative.
const std::vector<std::vector<double>> kTieWindows = {
    {1, 1, 1, 1}, {0, 2, 2, 2}, {0, 0, 3, 3}, {-1, -1, -1, -1}};
const std::vector<int> kFirstMax = {0, 1, 2, 0};

TEST(Maxpool2x2, TiesGoToTheFirstElementInRowMajorOrder) {
  // One 2x2 window per case; the gradient must land on exactly one element.
  for (size_t t = 0; t < kTieWindows.size(); ++t) {
    double out = 0;
    std::vector<double> din(4, 0.0);
    const double dout = 5;
    cpu::maxpool2x2_forward(&out, kTieWindows[t].data(), 1, 1, 2, 2);
    cpu::maxpool2x2_backward(din.data(), &dout, kTieWindows[t].data(), 1, 1, 2, 2);
    std::vector<double> want(4, 0.0);
    want[kFirstMax[t]] = 5;
    EXPECT_EQ(out, kTieWindows[t][kFirstMax[t]]);
    EXPECT_EQ(din, want) << "window " << t;
  }
}

// L = Σ r ⊙ pool(in); the odd size leaves a row and a column that get no gradient.
TEST(Maxpool2x2, BackwardMatchesCentralDifferencesAndAccumulates) {
  const int n = 2, c = 3, h = 7, w = 6;
  const auto in = distinct_values<double>(size_t(n) * c * h * w, 3);
  const auto r = testing::random_vector<double>(size_t(n) * c * (h / 2) * (w / 2), 4);
  auto loss = [&](const std::vector<double>& x) {
    std::vector<double> out(r.size());
    cpu::maxpool2x2_forward(out.data(), x.data(), n, c, h, w);
    return std::inner_product(out.begin(), out.end(), r.begin(), 0.0);
  };
  std::vector<double> din(in.size(), 0.0);
  cpu::maxpool2x2_backward(din.data(), r.data(), in.data(), n, c, h, w);
  EXPECT_LT(rel_error(din, numeric_gradient(loss, in, 1e-6)), 1e-6);

  auto twice = din;
  for (auto& x : twice) x *= 2;
  cpu::maxpool2x2_backward(din.data(), r.data(), in.data(), n, c, h, w);
  EXPECT_EQ(din, twice);
}

// --- maxpool2x2_sigmoid: the pool with the encoder's sigmoid fused in ---------------------------

struct PoolSize {
  int n, c, h, w;
  size_t in_size() const { return size_t(n) * c * h * w; }
  size_t out_size() const { return size_t(n) * c * (h / 2) * (w / 2); }
};

// Odd sizes (floor), one window, no window at all, and the encoders' pools (docs/DESIGN.md §5:
// full28's 24x24 at a batch big enough to run in parallel, low16's 12x12).
const std::vector<PoolSize> kFusedSizes = {{2, 3, 7, 9}, {3, 2, 6, 5},    {1, 1, 2, 3},
                                           {2, 2, 1, 5}, {4, 64, 24, 24}, {25, 64, 12, 12}};

// Values from 3 levels, as the zero background of Fashion-MNIST gives after the convolutions:
// most windows hold ties.
template <typename T>
std::vector<T> tie_heavy(size_t count, uint32_t seed) {
  auto v = testing::random_vector<T>(count, seed, T(0), T(3));
  for (auto& x : v) x = std::floor(x);
  return v;
}

// The model used maxpool2x2 then sigmoid, and now the fused op: it must compute the same float
// operations, so the trainer's numbers (test_backend.cpp's SameNumbers) do not move. Bit for bit
// in both directions, in float and double, on tie-heavy and continuous data; the backward adds
// into nonzero gradients on both sides, as the unfused pair's second op did.
TYPED_TEST(Maxpool2x2Typed, FusedSigmoidEqualsPoolThenSigmoidBitForBit) {
  using T = TypeParam;
  for (const PoolSize& s : kFusedSizes)
    for (bool ties : {true, false}) {
      const auto in = ties ? tie_heavy<T>(s.in_size(), 11)
                           : testing::random_vector<T>(s.in_size(), 12, T(-6), T(6));
      const auto dout = testing::random_vector<T>(s.out_size(), 13);
      const auto din0 = testing::random_vector<T>(s.in_size(), 14);

      std::vector<T> pooled(s.out_size()), act(s.out_size()), d_pooled(s.out_size(), T(0));
      std::vector<T> din_pair = din0;
      cpu::maxpool2x2_forward(pooled.data(), in.data(), s.n, s.c, s.h, s.w);
      cpu::sigmoid_forward(act.data(), pooled.data(), int64_t(act.size()));
      cpu::sigmoid_backward(d_pooled.data(), dout.data(), act.data(), int64_t(act.size()));
      cpu::maxpool2x2_backward(din_pair.data(), d_pooled.data(), in.data(), s.n, s.c, s.h, s.w);

      std::vector<T> out(s.out_size(), T(-99)), din = din0;
      cpu::maxpool2x2_sigmoid_forward(out.data(), in.data(), s.n, s.c, s.h, s.w);
      cpu::maxpool2x2_sigmoid_backward(din.data(), dout.data(), out.data(), in.data(), s.n, s.c,
                                       s.h, s.w);
      const std::string what = std::to_string(s.n) + "x" + std::to_string(s.c) + "x" +
                               std::to_string(s.h) + "x" + std::to_string(s.w) +
                               (ties ? " ties" : " continuous");
      EXPECT_EQ(out, act) << what;
      EXPECT_EQ(din, din_pair) << what;
    }
}

// One window per case: the gradient dout·s·(1−s) lands on the first maximum only.
TEST(Maxpool2x2Sigmoid, TiesGoToTheFirstElementInRowMajorOrder) {
  for (size_t t = 0; t < kTieWindows.size(); ++t) {
    double out = 0;
    std::vector<double> din(4, 0.0);
    const double dout = 5;
    cpu::maxpool2x2_sigmoid_forward(&out, kTieWindows[t].data(), 1, 1, 2, 2);
    cpu::maxpool2x2_sigmoid_backward(din.data(), &dout, &out, kTieWindows[t].data(), 1, 1, 2, 2);
    const double s = 1 / (1 + std::exp(-kTieWindows[t][kFirstMax[t]]));
    std::vector<double> want(4, 0.0);
    want[kFirstMax[t]] = 5 * s * (1 - s);
    // Both sides: σ in 4 roundings (exp within 1 ulp), the gradient in 3 more.
    EXPECT_NEAR(out, s, testing::chain_tolerance(8, s)) << "window " << t;
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(din[i], want[i], testing::chain_tolerance(14, want[i]))
          << "window " << t << " " << i;
  }
}

// L = Σ r ⊙ sigmoid(pool(in)) in double; the odd size leaves a row and a column with no gradient.
// Then the += (a second call doubles the gradient), and a nullptr din, which changes nothing.
TEST(Maxpool2x2Sigmoid, BackwardMatchesCentralDifferencesAndAccumulates) {
  const int n = 2, c = 3, h = 7, w = 6;
  auto in = distinct_values<double>(size_t(n) * c * h * w, 5);
  for (auto& x : in) x *= 8;  // over [−4, 4], where the sigmoid bends
  const auto r = testing::random_vector<double>(size_t(n) * c * (h / 2) * (w / 2), 6);
  auto loss = [&](const std::vector<double>& x) {
    std::vector<double> out(r.size());
    cpu::maxpool2x2_sigmoid_forward(out.data(), x.data(), n, c, h, w);
    return std::inner_product(out.begin(), out.end(), r.begin(), 0.0);
  };
  std::vector<double> out(r.size()), din(in.size(), 0.0);
  cpu::maxpool2x2_sigmoid_forward(out.data(), in.data(), n, c, h, w);
  cpu::maxpool2x2_sigmoid_backward(din.data(), r.data(), out.data(), in.data(), n, c, h, w);
  // Central differences (testing.h, numeric_gradient), h = 1e-6: f moves only at the window
  // maxima, one term r·σ(max) each, and each quotient errs by the rounding of f's W-term sum
  // (and σ's 4u), γ_{W+4}·Σ|r·σ|/h, plus the truncation h²/6·|r|·max|σ'''| (σ''' ≤ 1/8).
  const double h_fd = 1e-6, u = testing::unit_roundoff<double>();
  double magnitude = 0, r_max = 0;
  for (size_t i = 0; i < r.size(); ++i)
    magnitude += std::abs(r[i] * out[i]), r_max = std::max(r_max, std::abs(r[i]));
  const double per_max =
      testing::gamma(double(r.size()) + 4, u) * magnitude / h_fd + h_fd * h_fd / 6 * r_max / 8;
  double norm = 0;
  for (double g : din) norm += g * g;
  EXPECT_LT(rel_error(din, numeric_gradient(loss, in, h_fd)),
            per_max * std::sqrt(double(r.size()) / norm));
  for (int x = 0; x < w; ++x) EXPECT_EQ(din[size_t(h - 1) * w + x], 0.0) << "odd row, x " << x;

  auto twice = din;
  for (auto& x : twice) x *= 2;
  cpu::maxpool2x2_sigmoid_backward(din.data(), r.data(), out.data(), in.data(), n, c, h, w);
  EXPECT_EQ(din, twice);
  cpu::maxpool2x2_sigmoid_backward<double>(nullptr, r.data(), out.data(), in.data(), n, c, h, w);
  EXPECT_EQ(din, twice);
}

// --- the CUDA kernels' arithmetic (kernels/maxpool2x2.h) --------------------------------------

// Every window over the values {0, 1, 2, 3}: 256 patterns, most of them with ties. argmax2x2 must
// pick the first maximum in row-major order, read through a row stride w > 2.
TEST(Maxpool2x2Kernel, ArgmaxPicksTheFirstMaximumOfEveryPattern) {
  const int w = 5;
  for (int code = 0; code < 256; ++code) {
    const int v[4] = {code & 3, (code >> 2) & 3, (code >> 4) & 3, (code >> 6) & 3};
    std::vector<float> plane(2 * w, -7.0f);
    plane[0] = float(v[0]), plane[1] = float(v[1]), plane[w] = float(v[2]),
    plane[w + 1] = float(v[3]);
    int first = 0;
    for (int i = 1; i < 4; ++i)
      if (v[i] > v[first]) first = i;
    const int64_t want = first < 2 ? first : w + first - 2;
    EXPECT_EQ(cuda::argmax2x2(plane.data(), int64_t(w)), want) << "pattern " << code;
  }
}

// The kernels' loop, run on the host: one iteration per output element through window_corner and
// argmax2x2, on tie-heavy data (values from 3 levels, as zero backgrounds give) and odd sizes.
// Forward and backward must equal the reference exactly: a max selects, and each input element
// receives at most one gradient term.
TEST(Maxpool2x2Kernel, KernelIndexMathMatchesTheReferenceWithTies) {
  struct Size {
    int n, c, h, w;
  };
  for (Size s : {Size{2, 3, 7, 9}, Size{3, 2, 6, 5}, Size{1, 1, 2, 2}, Size{4, 64, 24, 24},
                 Size{2, 64, 12, 12}, Size{1, 2, 3, 3}}) {
    const int64_t count = int64_t(s.n) * s.c * s.h * s.w;
    const int64_t outs = int64_t(s.n) * s.c * (s.h / 2) * (s.w / 2);
    auto in = testing::random_vector<float>(size_t(count), 7, 0.0f, 3.0f);
    for (auto& x : in) x = std::floor(x);
    const auto dout = testing::random_vector<float>(size_t(outs), 8);
    const auto din0 = testing::random_vector<float>(size_t(count), 9);

    std::vector<float> out(size_t(outs), -99.0f), din = din0;
    for (int64_t o = 0; o < outs; ++o) {
      const int64_t corner = cuda::window_corner(o, s.h, s.w);
      const int64_t arg = corner + cuda::argmax2x2(in.data() + corner, int64_t(s.w));
      out[size_t(o)] = in[size_t(arg)];
      din[size_t(arg)] += dout[size_t(o)];
    }
    std::vector<float> ref_out(static_cast<size_t>(outs)), ref_din = din0;
    cpu::maxpool2x2_forward(ref_out.data(), in.data(), s.n, s.c, s.h, s.w);
    cpu::maxpool2x2_backward(ref_din.data(), dout.data(), in.data(), s.n, s.c, s.h, s.w);
    EXPECT_EQ(out, ref_out) << s.n << "x" << s.c << "x" << s.h << "x" << s.w;
    EXPECT_EQ(din, ref_din) << s.n << "x" << s.c << "x" << s.h << "x" << s.w;
  }
}

// The fused kernels' loop, run on the host: window_corner and argmax2x2 as above, then sigmoid at
// the store and 0 + sigmoid_grad at the +=, as kernels/maxpool2x2.cu writes them. On tie-heavy
// data and odd sizes they must equal the float reference bit for bit (the device's expf may
// differ from the host's by an ulp; tests/test_maxpool2x2_cuda.cpp bounds that on a GPU).
TEST(Maxpool2x2Kernel, FusedSigmoidArithmeticMatchesTheReferenceWithTies) {
  for (const PoolSize& s : kFusedSizes) {
    const auto in = tie_heavy<float>(s.in_size(), 15);
    const auto dout = testing::random_vector<float>(s.out_size(), 16);
    const auto din0 = testing::random_vector<float>(s.in_size(), 17);
    const int64_t outs = int64_t(s.out_size());

    std::vector<float> out(s.out_size(), -99.0f), din = din0;
    for (int64_t o = 0; o < outs; ++o) {
      const float* p = in.data() + cuda::window_corner(o, s.h, s.w);
      out[size_t(o)] = cuda::sigmoid(p[cuda::argmax2x2(p, int64_t(s.w))]);
    }
    for (int64_t o = 0; o < outs; ++o) {
      const int64_t corner = cuda::window_corner(o, s.h, s.w);
      din[size_t(corner + cuda::argmax2x2(in.data() + corner, int64_t(s.w)))] +=
          0.0f + cuda::sigmoid_grad(dout[size_t(o)], out[size_t(o)]);
    }
    std::vector<float> ref_out(s.out_size()), ref_din = din0;
    cpu::maxpool2x2_sigmoid_forward(ref_out.data(), in.data(), s.n, s.c, s.h, s.w);
    cpu::maxpool2x2_sigmoid_backward(ref_din.data(), dout.data(), ref_out.data(), in.data(), s.n,
                                     s.c, s.h, s.w);
    EXPECT_EQ(out, ref_out) << s.n << "x" << s.c << "x" << s.h << "x" << s.w;
    EXPECT_EQ(din, ref_din) << s.n << "x" << s.c << "x" << s.h << "x" << s.w;
  }
}

}  // namespace
}  // namespace hetdro
