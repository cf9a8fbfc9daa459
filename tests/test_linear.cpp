// linear against naive loops, and its backward against central differences.
#include <gtest/gtest.h>

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

struct Dims {
  int n, in, out;
};

template <typename T>
class LinearTyped : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LinearTyped, Types);

TYPED_TEST(LinearTyped, ForwardAndBackwardMatchNaiveLoops) {
  using T = TypeParam;
  // Small odd sizes, then the classifier (64 -> 10 on 100 rows) and a slice of the encoder head.
  for (Dims d : {Dims{3, 5, 4}, Dims{100, 64, 10}, Dims{7, 576, 64}}) {
    const auto x = random_vector<T>(size_t(d.n) * d.in, 1);
    const auto wt = random_vector<T>(size_t(d.out) * d.in, 2);
    const auto b = random_vector<T>(d.out, 3);
    const auto dout = random_vector<T>(size_t(d.n) * d.out, 4);
    std::vector<T> out(dout.size()), din(x.size(), T(0)), dwt(wt.size(), T(0)), db(d.out, T(0));
    cpu::linear_forward(out.data(), x.data(), wt.data(), b.data(), d.n, d.in, d.out);
    cpu::linear_backward(din.data(), dwt.data(), db.data(), dout.data(), x.data(), wt.data(), d.n,
                         d.in, d.out);

    std::vector<double> ro(out.size()), ri(din.size()), rw(dwt.size()), rb(d.out);
    for (int i = 0; i < d.n; ++i)
      for (int o = 0; o < d.out; ++o) {
        const size_t io = size_t(i) * d.out + o;
        ro[io] = b[o];
        rb[o] += dout[io];
        for (int k = 0; k < d.in; ++k) {
          const size_t ik = size_t(i) * d.in + k, ok = size_t(o) * d.in + k;
          ro[io] += double(x[ik]) * wt[ok];
          ri[ik] += double(dout[io]) * wt[ok];
          rw[ok] += double(dout[io]) * x[ik];
        }
      }
    auto as_t = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
    EXPECT_LT(rel_error(out, as_t(ro)), testing::reference_tolerance<T>());
    EXPECT_LT(rel_error(din, as_t(ri)), testing::reference_tolerance<T>());
    EXPECT_LT(rel_error(dwt, as_t(rw)), testing::reference_tolerance<T>());
    EXPECT_LT(rel_error(db, as_t(rb)), testing::reference_tolerance<T>());
  }
}

// L = Σ r ⊙ linear(x, W, b): upstream gradient r.
TEST(Linear, BackwardMatchesCentralDifferencesAndAccumulates) {
  const Dims d{4, 6, 3};
  const auto x = random_vector<double>(size_t(d.n) * d.in, 11);
  const auto wt = random_vector<double>(size_t(d.out) * d.in, 12);
  const auto b = random_vector<double>(d.out, 13);
  const auto r = random_vector<double>(size_t(d.n) * d.out, 14);
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ww,
                  const std::vector<double>& bb) {
    std::vector<double> out(r.size());
    cpu::linear_forward(out.data(), xx.data(), ww.data(), bb.data(), d.n, d.in, d.out);
    return std::inner_product(out.begin(), out.end(), r.begin(), 0.0);
  };
  std::vector<double> din(x.size()), dwt(wt.size()), db(d.out);
  cpu::linear_backward(din.data(), dwt.data(), db.data(), r.data(), x.data(), wt.data(), d.n, d.in,
                       d.out);
  EXPECT_LT(rel_error(din, numeric_gradient([&](auto& v) { return loss(v, wt, b); }, x)), 1e-6);
  EXPECT_LT(rel_error(dwt, numeric_gradient([&](auto& v) { return loss(x, v, b); }, wt)), 1e-6);
  EXPECT_LT(rel_error(db, numeric_gradient([&](auto& v) { return loss(x, wt, v); }, b)), 1e-6);

  // Twice accumulates to double; a null input gradient leaves the others as they were.
  auto twice = [](std::vector<double> v) {
    for (auto& g : v) g *= 2;
    return v;
  };
  const auto din2 = twice(din), dwt2 = twice(dwt), db2 = twice(db);
  cpu::linear_backward(din.data(), dwt.data(), db.data(), r.data(), x.data(), wt.data(), d.n, d.in,
                       d.out);
  EXPECT_LT(rel_error(din, din2), 1e-15);
  EXPECT_LT(rel_error(dwt, dwt2), 1e-15);
  EXPECT_LT(rel_error(db, db2), 1e-15);
  std::vector<double> dwt_only(wt.size());
  cpu::linear_backward<double>(nullptr, dwt_only.data(), nullptr, r.data(), x.data(), wt.data(),
                               d.n, d.in, d.out);
  EXPECT_LT(rel_error(twice(dwt_only), dwt2), 1e-15);
}

}  // namespace
}  // namespace hetdro
