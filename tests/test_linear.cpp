// linear against naive loops, and its backward against central differences; and the CUDA
// kernel's cuBLAS parameters (kernels/linear.h) through a column-major GEMM in plain loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "hetdro/ops.h"
#include "linear.h"   // the CUDA kernel's linear_out_gemm, linear_din_gemm, linear_dweight_gemm
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

    // The definition in double, with each entry's Σ|terms| for the error model.
    std::vector<double> ro(out.size()), ri(din.size()), rw(dwt.size()), rb(d.out);
    std::vector<double> ao(out.size()), ai(din.size()), aw(dwt.size()), ab(d.out);
    for (int i = 0; i < d.n; ++i)
      for (int o = 0; o < d.out; ++o) {
        const size_t io = size_t(i) * d.out + o;
        ro[io] = b[o], ao[io] = std::abs(double(b[o]));
        rb[o] += dout[io], ab[o] += std::abs(double(dout[io]));
        for (int k = 0; k < d.in; ++k) {
          const size_t ik = size_t(i) * d.in + k, ok = size_t(o) * d.in + k;
          ro[io] += double(x[ik]) * wt[ok], ao[io] += std::abs(double(x[ik]) * wt[ok]);
          ri[ik] += double(dout[io]) * wt[ok], ai[ik] += std::abs(double(dout[io]) * wt[ok]);
          rw[ok] += double(dout[io]) * x[ik], aw[ok] += std::abs(double(dout[io]) * x[ik]);
        }
      }
    // Eigen's GEMM sums in an order that depends on the build (testing.h, sum_tolerance): out
    // sums in + 1 terms, din out terms, dwt and db n terms.
    using testing::conditioning;
    using testing::sum_tolerance;
    auto as_t = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
    EXPECT_LT(rel_error(out, as_t(ro)), sum_tolerance<T>(d.in + 1, conditioning(ao, ro)));
    EXPECT_LT(rel_error(din, as_t(ri)), sum_tolerance<T>(d.out, conditioning(ai, ri)));
    EXPECT_LT(rel_error(dwt, as_t(rw)), sum_tolerance<T>(d.n, conditioning(aw, rw)));
    EXPECT_LT(rel_error(db, as_t(rb)), sum_tolerance<T>(d.n, conditioning(ab, rb)));
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

  // Twice accumulates to double; a null input gradient leaves the others as they were. Same code
  // on the same inputs: the one new rounding is the add into a nonzero gradient, u = 1.1e-16.
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

// --- the CUDA kernel's GEMM parameters (kernels/linear.h) -------------------------------------

// C = op(A) op(B) + beta C exactly as cublasSgemm reads its arguments: column-major, element
// (i, j) of a matrix with leading dimension ld at i + j·ld, op T swapping the indices. It also
// checks what cuBLAS would refuse: leading dimensions below the rows they must hold.
void colmajor_gemm(const cuda::LinearGemm& g, const double* a, const double* b, double beta,
                   double* c) {
  ASSERT_GE(g.lda, std::max(1, g.trans_a ? g.k : g.m));
  ASSERT_GE(g.ldb, std::max(1, g.trans_b ? g.n : g.k));
  ASSERT_GE(g.ldc, std::max(1, g.m));
  for (int j = 0; j < g.n; ++j)
    for (int i = 0; i < g.m; ++i) {
      double acc = 0;
      for (int p = 0; p < g.k; ++p) {
        const double av = g.trans_a ? a[p + int64_t(i) * g.lda] : a[i + int64_t(p) * g.lda];
        const double bv = g.trans_b ? b[j + int64_t(p) * g.ldb] : b[p + int64_t(j) * g.ldb];
        acc += av * bv;
      }
      c[i + int64_t(j) * g.ldc] = acc + beta * c[i + int64_t(j) * g.ldc];
    }
}

// The three GEMMs of the CUDA kernel, run on the host with beta as the kernel passes it (out
// starts as the broadcast bias, gradients start nonzero), equal the reference.
TEST(LinearKernel, GemmMappingMatchesTheReference) {
  // Non-square everywhere, so a swapped m/n/k or leading dimension shows; then the model's
  // layers: classifier 64 -> 10, proj64's MLP 64 -> 128 -> 64, the cnn heads, full28 64·12·12 =
  // 9216 -> 64 and low16 64·6·6 = 2304 -> 64.
  for (Dims d : {Dims{3, 5, 4}, Dims{1, 1, 1}, Dims{2, 7, 1}, Dims{100, 64, 10}, Dims{12, 64, 128},
                 Dims{12, 128, 64}, Dims{24, 2304, 64}, Dims{5, 9216, 64}}) {
    const auto in = random_vector<double>(size_t(d.n) * d.in, 1);
    const auto wt = random_vector<double>(size_t(d.out) * d.in, 2);
    const auto b = random_vector<double>(size_t(d.out), 3);
    const auto dout = random_vector<double>(size_t(d.n) * d.out, 4);
    const auto din0 = random_vector<double>(size_t(d.n) * d.in, 5);
    const auto dwt0 = random_vector<double>(size_t(d.out) * d.in, 6);
    auto operand = [&](cuda::LinearOperand o) {
      return o == cuda::LinearOperand::in       ? in.data()
             : o == cuda::LinearOperand::weight ? wt.data()
                                                : dout.data();
    };

    // Σ|terms| of each entry: the same products on |operands| (testing.h, sum_tolerance).
    auto abs = [](std::vector<double> v) {
      for (auto& x : v) x = std::abs(x);
      return v;
    };
    std::vector<double> mag_out(size_t(d.n) * d.out), mag_din = abs(din0), mag_dwt = abs(dwt0);
    cpu::linear_forward(mag_out.data(), abs(in).data(), abs(wt).data(), abs(b).data(), d.n, d.in,
                        d.out);
    cpu::linear_backward<double>(mag_din.data(), mag_dwt.data(), nullptr, abs(dout).data(),
                                 abs(in).data(), abs(wt).data(), d.n, d.in, d.out);

    std::vector<double> out(size_t(d.n) * d.out), ref_out(out.size());
    for (int i = 0; i < d.n; ++i)
      for (int o = 0; o < d.out; ++o) out[size_t(i) * d.out + o] = b[size_t(o)];
    const cuda::LinearGemm f = cuda::linear_out_gemm(d.n, d.in, d.out);
    colmajor_gemm(f, operand(f.a), operand(f.b), 1.0, out.data());
    cpu::linear_forward(ref_out.data(), in.data(), wt.data(), b.data(), d.n, d.in, d.out);
    // Both in double, in two summation orders: out sums in + 1 terms, din out + 1, dwt n + 1.
    using testing::conditioning;
    using testing::sum_tolerance;
    EXPECT_LT(rel_error(out, ref_out),
              sum_tolerance<double>(d.in + 1, conditioning(mag_out, ref_out)))
        << d.n << " " << d.in << " " << d.out;

    std::vector<double> din = din0, dwt = dwt0, ref_din = din0, ref_dwt = dwt0;
    const cuda::LinearGemm gi = cuda::linear_din_gemm(d.n, d.in, d.out);
    const cuda::LinearGemm gw = cuda::linear_dweight_gemm(d.n, d.in, d.out);
    colmajor_gemm(gi, operand(gi.a), operand(gi.b), 1.0, din.data());
    colmajor_gemm(gw, operand(gw.a), operand(gw.b), 1.0, dwt.data());
    cpu::linear_backward<double>(ref_din.data(), ref_dwt.data(), nullptr, dout.data(), in.data(),
                                 wt.data(), d.n, d.in, d.out);
    EXPECT_LT(rel_error(din, ref_din),
              sum_tolerance<double>(d.out + 1, conditioning(mag_din, ref_din)))
        << d.n << " " << d.in << " " << d.out;
    EXPECT_LT(rel_error(dwt, ref_dwt),
              sum_tolerance<double>(d.n + 1, conditioning(mag_dwt, ref_dwt)))
        << d.n << " " << d.in << " " << d.out;
  }
}

}  // namespace
}  // namespace hetdro
