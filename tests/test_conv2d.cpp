// conv2d: the im2col/GEMM implementation against naive loops, and its backward against
// central differences.
#include <gtest/gtest.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "hetdro/ops.h"
#include "testing.h"  // random_vector, rel_error, numeric_gradient

namespace hetdro {
namespace {

using testing::numeric_gradient;
using testing::random_vector;
using testing::rel_error;

// Odd, non-square shapes so that a swapped h/w or kh/kw shows up.
struct Shape {
  int n = 3, c_in = 2, h = 7, w = 6, c_out = 4, kh = 3, kw = 2;
  int oh() const { return h - kh + 1; }
  int ow() const { return w - kw + 1; }
  size_t in_size() const { return size_t(n) * c_in * h * w; }
  size_t w_size() const { return size_t(c_out) * c_in * kh * kw; }
  size_t out_size() const { return size_t(n) * c_out * oh() * ow(); }
};

// Reference: the definition, one output at a time, accumulated in double.
template <typename T>
std::vector<T> naive_forward(const Shape& s, const std::vector<T>& in, const std::vector<T>& wt,
                             const std::vector<T>& b) {
  std::vector<T> out(s.out_size());
  for (int i = 0; i < s.n; ++i)
    for (int o = 0; o < s.c_out; ++o)
      for (int y = 0; y < s.oh(); ++y)
        for (int x = 0; x < s.ow(); ++x) {
          double acc = b[o];
          for (int c = 0; c < s.c_in; ++c)
            for (int u = 0; u < s.kh; ++u)
              for (int v = 0; v < s.kw; ++v)
                acc += double(in[((size_t(i) * s.c_in + c) * s.h + y + u) * s.w + x + v]) *
                       wt[((size_t(o) * s.c_in + c) * s.kh + u) * s.kw + v];
          out[((size_t(i) * s.c_out + o) * s.oh() + y) * s.ow() + x] = T(acc);
        }
  return out;
}

template <typename T>
void naive_backward(const Shape& s, std::vector<T>& din, std::vector<T>& dwt, std::vector<T>& db,
                    const std::vector<T>& dout, const std::vector<T>& in,
                    const std::vector<T>& wt) {
  std::vector<double> gi(s.in_size()), gw(s.w_size()), gb(s.c_out);
  for (int i = 0; i < s.n; ++i)
    for (int o = 0; o < s.c_out; ++o)
      for (int y = 0; y < s.oh(); ++y)
        for (int x = 0; x < s.ow(); ++x) {
          const double g = dout[((size_t(i) * s.c_out + o) * s.oh() + y) * s.ow() + x];
          gb[o] += g;
          for (int c = 0; c < s.c_in; ++c)
            for (int u = 0; u < s.kh; ++u)
              for (int v = 0; v < s.kw; ++v) {
                const size_t ii = ((size_t(i) * s.c_in + c) * s.h + y + u) * s.w + x + v;
                const size_t wi = ((size_t(o) * s.c_in + c) * s.kh + u) * s.kw + v;
                gi[ii] += g * wt[wi];
                gw[wi] += g * in[ii];
              }
        }
  din.assign(gi.begin(), gi.end());
  dwt.assign(gw.begin(), gw.end());
  db.assign(gb.begin(), gb.end());
}

template <typename T>
class Conv2dTyped : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Conv2dTyped, Types);

TYPED_TEST(Conv2dTyped, ForwardAndBackwardMatchNaiveLoops) {
  using T = TypeParam;
  // The second is the encoder's first layer (c_in = 1, 3x3) at a small batch; the third is big
  // enough to take the OpenMP path, whose per-thread weight-gradient partials need checking.
  for (Shape s : {Shape{}, Shape{5, 1, 10, 10, 8, 3, 3}, Shape{8, 4, 14, 13, 16, 3, 3}}) {
    auto in = random_vector<T>(s.in_size(), 1);
    auto wt = random_vector<T>(s.w_size(), 2);
    auto b = random_vector<T>(s.c_out, 3);
    auto dout = random_vector<T>(s.out_size(), 4);

    std::vector<T> out(s.out_size());
    cpu::conv2d_forward(out.data(), in.data(), wt.data(), b.data(), s.n, s.c_in, s.h, s.w, s.c_out,
                        s.kh, s.kw);
    std::vector<T> din(s.in_size()), dwt(s.w_size()), db(s.c_out);
    cpu::conv2d_backward(din.data(), dwt.data(), db.data(), dout.data(), in.data(), wt.data(), s.n,
                         s.c_in, s.h, s.w, s.c_out, s.kh, s.kw);
    const auto ref = naive_forward(s, in, wt, b);
    std::vector<T> rin, rwt, rb;
    naive_backward(s, rin, rwt, rb, dout, in, wt);

    // The GEMMs (and the per-thread partials of dwt) sum in an order that depends on the build
    // (testing.h, sum_tolerance). Σ|terms| of each entry: the same loops on |operands|. An output
    // sums c_in·kh·kw + 1 terms, an input gradient at most c_out·kh·kw, dwt and db n·oh·ow.
    auto abs = [](std::vector<T> v) {
      for (auto& x : v) x = std::abs(x);
      return v;
    };
    auto wide = [](const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); };
    std::vector<T> ain, awt, ab;
    naive_backward(s, ain, awt, ab, abs(dout), abs(in), abs(wt));
    const double n_out = s.c_in * s.kh * s.kw + 1, n_in = s.c_out * s.kh * s.kw,
                 n_wt = double(s.n) * s.oh() * s.ow();
    auto bar = [&](double n, const std::vector<T>& magnitude, const std::vector<T>& value) {
      return testing::sum_tolerance<T>(n, testing::conditioning(wide(magnitude), wide(value)));
    };
    EXPECT_LT(rel_error(out, ref), bar(n_out, naive_forward(s, abs(in), abs(wt), abs(b)), ref));
    EXPECT_LT(rel_error(din, rin), bar(n_in, ain, rin));
    EXPECT_LT(rel_error(dwt, rwt), bar(n_wt, awt, rwt));
    EXPECT_LT(rel_error(db, rb), bar(n_wt, ab, rb));
  }
}

// L = Σ r ⊙ conv(in, W, b), so the upstream gradient is r.
TEST(Conv2d, BackwardMatchesCentralDifferences) {
  const Shape s;
  const auto in = random_vector<double>(s.in_size(), 11);
  const auto wt = random_vector<double>(s.w_size(), 12);
  const auto b = random_vector<double>(s.c_out, 13);
  const auto r = random_vector<double>(s.out_size(), 14);
  auto loss = [&](const std::vector<double>& x, const std::vector<double>& w,
                  const std::vector<double>& bb) {
    std::vector<double> out(s.out_size());
    cpu::conv2d_forward(out.data(), x.data(), w.data(), bb.data(), s.n, s.c_in, s.h, s.w, s.c_out,
                        s.kh, s.kw);
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += r[i] * out[i];
    return l;
  };
  std::vector<double> din(s.in_size()), dwt(s.w_size()), db(s.c_out);
  cpu::conv2d_backward(din.data(), dwt.data(), db.data(), r.data(), in.data(), wt.data(), s.n,
                       s.c_in, s.h, s.w, s.c_out, s.kh, s.kw);
  EXPECT_LT(rel_error(din, numeric_gradient([&](auto& x) { return loss(x, wt, b); }, in)), 1e-6);
  EXPECT_LT(rel_error(dwt, numeric_gradient([&](auto& w) { return loss(in, w, b); }, wt)), 1e-6);
  EXPECT_LT(rel_error(db, numeric_gradient([&](auto& bb) { return loss(in, wt, bb); }, b)), 1e-6);
}

TEST(Conv2d, BackwardAccumulatesAndSkipsNullGradients) {
  const Shape s;
  const auto in = random_vector<double>(s.in_size(), 21);
  const auto wt = random_vector<double>(s.w_size(), 22);
  const auto dout = random_vector<double>(s.out_size(), 23);
  std::vector<double> din1(s.in_size()), dwt1(s.w_size()), db1(s.c_out);
  cpu::conv2d_backward(din1.data(), dwt1.data(), db1.data(), dout.data(), in.data(), wt.data(), s.n,
                       s.c_in, s.h, s.w, s.c_out, s.kh, s.kw);

  std::vector<double> din2(s.in_size()), dwt2(s.w_size()), db2(s.c_out);
  for (int rep = 0; rep < 2; ++rep)
    cpu::conv2d_backward(din2.data(), dwt2.data(), db2.data(), dout.data(), in.data(), wt.data(),
                         s.n, s.c_in, s.h, s.w, s.c_out, s.kh, s.kw);
  auto twice = [](std::vector<double> v) {
    for (auto& x : v) x *= 2;
    return v;
  };
  EXPECT_LT(rel_error(din2, twice(din1)), 1e-14);
  EXPECT_LT(rel_error(dwt2, twice(dwt1)), 1e-14);
  EXPECT_LT(rel_error(db2, twice(db1)), 1e-14);

  // First layer: no input gradient wanted; the others must not change.
  std::vector<double> dwt3(s.w_size()), db3(s.c_out);
  cpu::conv2d_backward<double>(nullptr, dwt3.data(), db3.data(), dout.data(), in.data(), wt.data(),
                               s.n, s.c_in, s.h, s.w, s.c_out, s.kh, s.kw);
  EXPECT_LT(rel_error(dwt3, dwt1), 1e-14);
  EXPECT_LT(rel_error(db3, db1), 1e-14);
}

}  // namespace
}  // namespace hetdro
