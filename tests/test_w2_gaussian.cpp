// w2_gaussian: closed forms, the analytic backward against central differences, and the
// degenerate covariances that break autograd through eigh (docs/DESIGN.md §1, §2).
//
// Gradient convention: dA and dB are gradients with respect to a symmetric matrix argument,
// i.e. dW = ⟨dA, δA⟩ for every symmetric δA. So perturbing A_ij and A_ji together changes W by
// (dA_ij + dA_ji)·h, and through A = X Xᵀ/c the gradient is dX = 2 dA X / c.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "eigen_dense.h"  // random orthogonal bases, products in the test's parameterisations
#include "hetdro/ops.h"
#include "testing.h"  // random_vector, rel_error, numeric_gradient

namespace {

using hetdro::testing::numeric_gradient;
using hetdro::testing::random_vector;
using hetdro::testing::rel_error;
namespace cpu = hetdro::cpu;
using MatD = Eigen::MatrixXd;
using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename T>
std::vector<T> w2_forward(const std::vector<T>& m1, const std::vector<T>& A,
                          const std::vector<T>& m2, const std::vector<T>& B, int pairs, int k,
                          T eps, std::vector<T>* saved = nullptr) {
  std::vector<T> w2(pairs), scratch;
  if (saved == nullptr) saved = &scratch;
  saved->assign(size_t(pairs) * hetdro::w2_gaussian_saved_size(k), T(0));
  cpu::w2_gaussian_forward(w2.data(), saved->data(), m1.data(), A.data(), m2.data(), B.data(),
                           pairs, k, eps);
  return w2;
}

template <typename T>
struct GradsT {
  std::vector<T> dm1, dA, dm2, dB;
};

template <typename T>
GradsT<T> w2_backward(const std::vector<T>& dw2, const std::vector<T>& m1, const std::vector<T>& A,
                      const std::vector<T>& m2, const std::vector<T>& B, int pairs, int k, T eps) {
  std::vector<T> saved;
  w2_forward(m1, A, m2, B, pairs, k, eps, &saved);
  GradsT<T> g{std::vector<T>(m1.size()), std::vector<T>(A.size()), std::vector<T>(m2.size()),
              std::vector<T>(B.size())};
  cpu::w2_gaussian_backward(g.dm1.data(), g.dA.data(), g.dm2.data(), g.dB.data(), dw2.data(),
                            saved.data(), m1.data(), A.data(), m2.data(), B.data(), pairs, k, eps);
  return g;
}

// pairs symmetric matrices X Xᵀ/k + shift·I from a [pairs,k,k] block X.
std::vector<double> gram(const std::vector<double>& X, int pairs, int k, double shift) {
  std::vector<double> out(X.size());
  for (int p = 0; p < pairs; ++p) {
    Eigen::Map<const RowMatD> x(X.data() + size_t(p) * k * k, k, k);
    Eigen::Map<RowMatD> o(out.data() + size_t(p) * k * k, k, k);
    o = x * x.transpose() / k;
    o.diagonal().array() += shift;
  }
  return out;
}

// dX = 2 dA X / k for A = X Xᵀ/k + shift·I and a symmetric dA.
std::vector<double> gram_backward(const std::vector<double>& dA, const std::vector<double>& X,
                                  int pairs, int k) {
  std::vector<double> out(X.size());
  for (int p = 0; p < pairs; ++p) {
    Eigen::Map<const RowMatD> x(X.data() + size_t(p) * k * k, k, k);
    Eigen::Map<const RowMatD> g(dA.data() + size_t(p) * k * k, k, k);
    Eigen::Map<RowMatD>(out.data() + size_t(p) * k * k, k, k) = 2.0 * g * x / k;
  }
  return out;
}

MatD random_orthogonal(int k, uint32_t seed) {
  const auto v = random_vector<double>(size_t(k) * k, seed);
  return Eigen::HouseholderQR<MatD>(Eigen::Map<const MatD>(v.data(), k, k)).householderQ();
}

std::vector<double> flatten(const MatD& m) {
  std::vector<double> out(m.size());
  Eigen::Map<RowMatD>(out.data(), m.rows(), m.cols()) = m;
  return out;
}

std::vector<double> concat(std::initializer_list<const std::vector<double>*> parts) {
  std::vector<double> out;
  for (auto* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

std::vector<double> slice(const std::vector<double>& v, size_t begin, size_t count) {
  return std::vector<double>(v.begin() + begin, v.begin() + begin + count);
}

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

constexpr double kEps = 1e-5;

// --- the error model of w2_gaussian (STYLE.md, "Tolerances") ----------------------------------
//
// One pair, from exact symmetric A, B ≥ λ_min·I, in arithmetic of unit roundoff u on inputs
// rounded by u_in (0 when both sides see the same numbers). Eigen's symmetric eigensolver is
// backward stable: it decomposes A + E with ‖E‖₂ ≤ k·u·‖A‖₂ (Golub & Van Loan §8.3 give
// ≈ u‖A‖₂; k covers its constants). The square root's Fréchet derivative has norm
// 1/(2√λ_min), so R = A^½ errs by ‖E‖/(2√λ_min) plus γ_3k‖R‖ for U f(a) Uᵀ; M = R B R by
// 2‖ΔR‖‖B‖‖R‖ + γ_2k‖R‖²‖B‖, and its own solve adds k·u‖M‖₂; tr √max(M, eps²) moves by
// |tr(½M^-½ ΔM)| ≤ ½‖M^-½‖_F·√k‖ΔM‖₂ plus γ_k of its sum, and W2² = ‖Δm‖² + tr A + tr B − 2 tr √M
// adds γ_{3k+2} of its terms. The gradients are smooth matrix functions of A, B and M whose
// relative sensitivity to a perturbation Δ is ‖Δ‖/(2λ_min) (f″/f′ = −1/(2λ) for f = √), so
// they err relatively by the three perturbations over twice their smallest eigenvalues, plus
// γ_6k for the products that form them.
struct W2Error {
  double w2;        // absolute, on W2²
  double gradient;  // relative, on dA and dB
};

W2Error w2_error(const double* A_, const double* B_, const double* m1, const double* m2, int k,
                 double eps, double u, double u_in = 0) {
  using hetdro::testing::gamma;
  const MatD A = Eigen::Map<const RowMatD>(A_, k, k), B = Eigen::Map<const RowMatD>(B_, k, k);
  Eigen::SelfAdjointEigenSolver<MatD> ea(A), eb(B);
  const Eigen::VectorXd a = ea.eigenvalues().cwiseMax(eps), b = eb.eigenvalues().cwiseMax(eps);
  const MatD R = ea.eigenvectors() * a.cwiseSqrt().asDiagonal() * ea.eigenvectors().transpose();
  const MatD M = R * B * R;
  const Eigen::VectorXd mu = Eigen::SelfAdjointEigenSolver<MatD>(M).eigenvalues();
  const double nA = a.maxCoeff(), nB = b.maxCoeff(), nR = std::sqrt(nA), nM = mu.maxCoeff();
  const double mu_min = std::max(mu.minCoeff(), eps * eps);
  const double eA = k * u * nA + u_in * A.norm(), eB = k * u * nB + u_in * B.norm();
  const double dR = eA / (2 * std::sqrt(a.minCoeff())) + gamma(3 * k, u) * nR;
  const double eM = 2 * dR * nB * nR + gamma(2 * k, u) * nR * nR * nB + nR * nR * eB + k * u * nM;
  double cross = 0, inverse = 0, dm2 = 0, dm_in = 0;
  for (int i = 0; i < k; ++i) {
    cross += std::sqrt(std::max(mu[i], eps * eps));
    inverse += 1 / std::max(mu[i], eps * eps);
    dm2 += (m1[i] - m2[i]) * (m1[i] - m2[i]);
    dm_in += 2 * std::abs(m1[i] - m2[i]) * u_in * (std::abs(m1[i]) + std::abs(m2[i]));
  }
  const double terms = dm2 + A.trace() + B.trace() + 2 * cross;
  const double w2 = 2 * (std::sqrt(inverse * k) * eM / 2 + gamma(k, u) * cross) +
                    gamma(3 * k + 2, u) * terms + dm_in + u_in * (A.trace() + B.trace());
  const double gradient =
      eA / (2 * a.minCoeff()) + eB / (2 * b.minCoeff()) + eM / (2 * mu_min) + gamma(6 * k, u);
  return {w2, gradient};
}

TEST(W2Gaussian, OneDimensionalClosedForm) {
  const std::vector<double> m1 = {0.3, -1.0, 2.0}, m2 = {1.1, 0.5, 2.0};
  const std::vector<double> s1 = {0.5, 2.0, 0.1}, s2 = {1.5, 0.3, 0.1};
  std::vector<double> A(3), B(3);
  for (int p = 0; p < 3; ++p) A[p] = s1[p] * s1[p], B[p] = s2[p] * s2[p];
  const auto w2 = w2_forward(m1, A, m2, B, 3, 1, kEps);
  const double u = hetdro::testing::unit_roundoff<double>();
  for (int p = 0; p < 3; ++p) {
    const double expected = std::pow(m1[p] - m2[p], 2) + std::pow(s1[p] - s2[p], 2);
    // w2_error, with A = s1² rounded once (u_in), and the closed form's own 4 roundings.
    const double bar = w2_error(&A[p], &B[p], &m1[p], &m2[p], 1, kEps, u, u).w2 +
                       hetdro::testing::gamma(4, u) * expected;
    EXPECT_NEAR(w2[p], expected, bar) << "pair " << p;
  }
}

TEST(W2Gaussian, CommutingCovariancesClosedForm) {
  // Pair 0 diagonal, pair 1 sharing a random eigenbasis: W2² = ‖Δm‖² + ‖√A − √B‖²_F.
  const int k = 6;
  const auto m1 = random_vector<double>(2 * k, 1), m2 = random_vector<double>(2 * k, 2);
  const auto a = random_vector<double>(2 * k, 3, 0.05, 2.0);
  const auto b = random_vector<double>(2 * k, 4, 0.05, 2.0);
  const MatD Q = random_orthogonal(k, 5);
  std::vector<double> A, B;
  for (int p = 0; p < 2; ++p) {
    const MatD basis = p == 0 ? MatD::Identity(k, k) : Q;
    const Eigen::Map<const Eigen::VectorXd> ap(a.data() + p * k, k), bp(b.data() + p * k, k);
    const auto Ap = flatten(basis * ap.asDiagonal() * basis.transpose());
    const auto Bp = flatten(basis * bp.asDiagonal() * basis.transpose());
    A.insert(A.end(), Ap.begin(), Ap.end());
    B.insert(B.end(), Bp.begin(), Bp.end());
  }
  const auto w2 = w2_forward(m1, A, m2, B, 2, k, kEps);
  const double u = hetdro::testing::unit_roundoff<double>();
  for (int p = 0; p < 2; ++p) {
    double expected = 0, magnitude = 0;
    for (int i = 0; i < k; ++i) {
      expected += std::pow(m1[p * k + i] - m2[p * k + i], 2);
      expected += std::pow(std::sqrt(a[p * k + i]) - std::sqrt(b[p * k + i]), 2);
      magnitude += std::pow(m1[p * k + i] - m2[p * k + i], 2) + a[p * k + i] + b[p * k + i];
    }
    // w2_error, with A = Q diag(a) Qᵀ formed in double (γ_k, and Q orthogonal to k·u: u_in),
    // and the closed form's 2k sums of roots, each within γ_4 of its terms.
    const size_t at = size_t(p) * k * k;
    const double u_in = hetdro::testing::gamma(2 * k, u);
    const double bar = w2_error(&A[at], &B[at], &m1[p * k], &m2[p * k], k, kEps, u, u_in).w2 +
                       hetdro::testing::gamma(2 * k + 4, u) * magnitude;
    EXPECT_NEAR(w2[p], expected, bar) << "pair " << p;
  }
}

TEST(W2Gaussian, TwoByTwoNonCommutingClosedForm) {
  // For 2×2 SPD M, tr √M = √(tr M + 2√det M); with M = A^½ B A^½: tr M = tr AB, det M = det A det
  // B.
  const int pairs = 4, k = 2;
  const auto X = random_vector<double>(pairs * 4, 6), Y = random_vector<double>(pairs * 4, 7);
  const auto A = gram(X, pairs, k, 0.1), B = gram(Y, pairs, k, 0.2);
  const auto m1 = random_vector<double>(pairs * k, 8), m2 = random_vector<double>(pairs * k, 9);
  const auto w2 = w2_forward(m1, A, m2, B, pairs, k, kEps);
  for (int p = 0; p < pairs; ++p) {
    const double* a = A.data() + p * 4;
    const double* b = B.data() + p * 4;
    const double trAB = a[0] * b[0] + a[1] * b[2] + a[2] * b[1] + a[3] * b[3];
    const double det = (a[0] * a[3] - a[1] * a[2]) * (b[0] * b[3] - b[1] * b[2]);
    const double dm =
        std::pow(m1[2 * p] - m2[2 * p], 2) + std::pow(m1[2 * p + 1] - m2[2 * p + 1], 2);
    const double cross = std::sqrt(trAB + 2 * std::sqrt(det));
    const double expected = dm + a[0] + a[3] + b[0] + b[3] - 2 * cross;
    // w2_error, and the closed form's own: at most 16 roundings of its terms (each root halves
    // the relative error under it).
    const double u = hetdro::testing::unit_roundoff<double>();
    const double bar = w2_error(a, b, &m1[2 * p], &m2[2 * p], 2, kEps, u).w2 +
                       hetdro::testing::gamma(16, u) * (dm + a[0] + a[3] + b[0] + b[3] + 2 * cross);
    EXPECT_NEAR(w2[p], expected, bar) << "pair " << p;
  }
}

TEST(W2Gaussian, SelfDistanceIsZeroAndDistanceIsSymmetric) {
  const int pairs = 5, k = 16;
  const auto X = random_vector<double>(size_t(pairs) * k * k, 10);
  const auto Y = random_vector<double>(size_t(pairs) * k * k, 11);
  const auto A = gram(X, pairs, k, 0.05), B = gram(Y, pairs, k, 0.05);
  const auto m1 = random_vector<double>(size_t(pairs) * k, 12);
  const auto m2 = random_vector<double>(size_t(pairs) * k, 13);
  // All eigenvalues are ≥ 0.05 ≫ eps, so the clamps never act and W2(a, a) is 0 exactly; the
  // computed values are within w2_error of it, and of each other.
  const double u = hetdro::testing::unit_roundoff<double>();
  const auto aa = w2_forward(m1, A, m1, A, pairs, k, kEps);
  const auto ab = w2_forward(m1, A, m2, B, pairs, k, kEps);
  const auto ba = w2_forward(m2, B, m1, A, pairs, k, kEps);
  for (int p = 0; p < pairs; ++p) {
    const size_t at = size_t(p) * k * k, m = size_t(p) * k;
    EXPECT_NEAR(aa[p], 0.0, w2_error(&A[at], &A[at], &m1[m], &m1[m], k, kEps, u).w2);
    EXPECT_GT(ab[p], 0.0);
    EXPECT_NEAR(ab[p], ba[p],
                w2_error(&A[at], &B[at], &m1[m], &m2[m], k, kEps, u).w2 +
                    w2_error(&B[at], &A[at], &m2[m], &m1[m], k, kEps, u).w2)
        << "pair " << p;
  }
}

TEST(W2Gaussian, BackwardMatchesCentralDifferencesThroughGram) {
  const int pairs = 3, k = 5;
  const auto m1 = random_vector<double>(size_t(pairs) * k, 20);
  const auto m2 = random_vector<double>(size_t(pairs) * k, 21);
  const auto X = random_vector<double>(size_t(pairs) * k * k, 22);
  const auto Y = random_vector<double>(size_t(pairs) * k * k, 23);
  const auto dw2 = random_vector<double>(pairs, 24, 0.5, 2.0);
  const size_t nm = m1.size(), nx = X.size();
  auto loss = [&](const std::vector<double>& v) {
    const auto w2 =
        w2_forward(slice(v, 0, nm), gram(slice(v, nm, nx), pairs, k, 0.1), slice(v, nm + nx, nm),
                   gram(slice(v, 2 * nm + nx, nx), pairs, k, 0.2), pairs, k, kEps);
    return std::inner_product(w2.begin(), w2.end(), dw2.begin(), 0.0);
  };
  const auto numeric = numeric_gradient(loss, concat({&m1, &X, &m2, &Y}));
  const auto g =
      w2_backward(dw2, m1, gram(X, pairs, k, 0.1), m2, gram(Y, pairs, k, 0.2), pairs, k, kEps);
  EXPECT_LE(rel_error(g.dm1, slice(numeric, 0, nm)), 1e-6);
  EXPECT_LE(rel_error(gram_backward(g.dA, X, pairs, k), slice(numeric, nm, nx)), 1e-6);
  EXPECT_LE(rel_error(g.dm2, slice(numeric, nm + nx, nm)), 1e-6);
  EXPECT_LE(rel_error(gram_backward(g.dB, Y, pairs, k), slice(numeric, 2 * nm + nx, nx)), 1e-6);
}

// A = X Xᵀ with X k×r, r < k and no eps shift: k − r eigenvalues are 0 (± rounding), below the
// clamp, and stay there under any perturbation of X, so the loss is smooth in X and the mixed
// block of K (one eigenvalue above eps, one below) is what carries the gradient. The anchor's
// scale puts M's eigenvalues along A's null space at ≈ eps·λ(B): above eps for scale 2 (h > 0),
// below it for scale 0.3 (h = 0, the clamp on M acts).
TEST(W2Gaussian, BackwardMatchesDifferencesWhenEigenvaluesSitBelowTheClamp) {
  const int pairs = 2, k = 6, r = 2;
  for (const double scale : {2.0, 0.3}) {
    const auto m1 = random_vector<double>(size_t(pairs) * k, 60);
    const auto m2 = random_vector<double>(size_t(pairs) * k, 61);
    const auto X = random_vector<double>(size_t(pairs) * k * r, 62);
    // B = scale·(Q diag(1 ± 0.1) Qᵀ): eigenvalues within 10% of scale.
    std::vector<double> B;
    for (int p = 0; p < pairs; ++p) {
      const MatD Q = random_orthogonal(k, 63 + p);
      const auto d = random_vector<double>(k, 70 + p, 0.9 * scale, 1.1 * scale);
      const auto Bp =
          flatten(Q * Eigen::Map<const Eigen::VectorXd>(d.data(), k).asDiagonal() * Q.transpose());
      B.insert(B.end(), Bp.begin(), Bp.end());
    }
    const std::vector<double> dw2 = {1.0, -0.6};
    auto low_rank = [&](const std::vector<double>& x) {
      std::vector<double> A(size_t(pairs) * k * k);
      for (int p = 0; p < pairs; ++p) {
        Eigen::Map<const RowMatD> xp(x.data() + size_t(p) * k * r, k, r);
        Eigen::Map<RowMatD>(A.data() + size_t(p) * k * k, k, k) = xp * xp.transpose();
      }
      return A;
    };
    auto loss = [&](const std::vector<double>& x) {
      const auto w2 = w2_forward(m1, low_rank(x), m2, B, pairs, k, kEps);
      return std::inner_product(w2.begin(), w2.end(), dw2.begin(), 0.0);
    };
    const auto g = w2_backward(dw2, m1, low_rank(X), m2, B, pairs, k, kEps);
    std::vector<double> dX(X.size());
    for (int p = 0; p < pairs; ++p) {
      Eigen::Map<const RowMatD> xp(X.data() + size_t(p) * k * r, k, r);
      Eigen::Map<const RowMatD> gp(g.dA.data() + size_t(p) * k * k, k, k);
      Eigen::Map<RowMatD>(dX.data() + size_t(p) * k * r, k, r) = 2.0 * gp * xp;
    }
    EXPECT_LE(rel_error(dX, numeric_gradient(loss, X)), 1e-6) << "anchor scale " << scale;
  }
}

TEST(W2Gaussian, BackwardMatchesSymmetricPerturbations) {
  // δA = h(e_i e_jᵀ + e_j e_iᵀ) for i ≠ j (h e_i e_iᵀ on the diagonal) keeps A symmetric; the
  // difference quotient is then dA_ij + dA_ji (dA_ii).
  const int pairs = 2, k = 6;
  const auto m1 = random_vector<double>(size_t(pairs) * k, 30);
  const auto m2 = random_vector<double>(size_t(pairs) * k, 31);
  const auto A = gram(random_vector<double>(size_t(pairs) * k * k, 32), pairs, k, 0.1);
  const auto B = gram(random_vector<double>(size_t(pairs) * k * k, 33), pairs, k, 0.1);
  const std::vector<double> dw2 = {0.7, -1.3};
  const auto g = w2_backward(dw2, m1, A, m2, B, pairs, k, kEps);
  for (const bool wrt_A : {true, false}) {
    const auto& base = wrt_A ? A : B;
    const auto& grad = wrt_A ? g.dA : g.dB;
    std::vector<double> numeric, analytic;
    for (int p = 0; p < pairs; ++p)
      for (int i = 0; i < k; ++i)
        for (int j = 0; j <= i; ++j) {
          const size_t ij = size_t(p) * k * k + i * k + j, ji = size_t(p) * k * k + j * k + i;
          EXPECT_EQ(grad[ij], grad[ji]);  // comes out symmetric
          auto loss = [&](const std::vector<double>& t) {
            auto M = base;
            M[ij] += t[0];
            if (i != j) M[ji] += t[0];
            const auto w2 = wrt_A ? w2_forward(m1, M, m2, B, pairs, k, kEps)
                                  : w2_forward(m1, A, m2, M, pairs, k, kEps);
            return std::inner_product(w2.begin(), w2.end(), dw2.begin(), 0.0);
          };
          numeric.push_back(numeric_gradient(loss, {0.0})[0]);
          analytic.push_back(i == j ? grad[ij] : grad[ij] + grad[ji]);
        }
    EXPECT_LE(rel_error(analytic, numeric), 1e-6) << (wrt_A ? "dA" : "dB");
  }
}

TEST(W2Gaussian, BackwardAccumulatesAndSkipsNullGradients) {
  const int pairs = 2, k = 4;
  const auto m1 = random_vector<double>(size_t(pairs) * k, 40);
  const auto m2 = random_vector<double>(size_t(pairs) * k, 41);
  const auto A = gram(random_vector<double>(size_t(pairs) * k * k, 42), pairs, k, 0.1);
  const auto B = gram(random_vector<double>(size_t(pairs) * k * k, 43), pairs, k, 0.1);
  const std::vector<double> dw2 = {1.0, 0.5};
  const auto g = w2_backward(dw2, m1, A, m2, B, pairs, k, kEps);
  std::vector<double> saved;
  w2_forward(m1, A, m2, B, pairs, k, kEps, &saved);
  std::vector<double> dA(A.size(), 1.0), dm2(m2.size(), -2.0);
  cpu::w2_gaussian_backward<double>(nullptr, dA.data(), dm2.data(), nullptr, dw2.data(),
                                    saved.data(), m1.data(), A.data(), m2.data(), B.data(), pairs,
                                    k, kEps);
  for (size_t i = 0; i < dA.size(); ++i) EXPECT_NEAR(dA[i], 1.0 + g.dA[i], 1e-14);
  for (size_t i = 0; i < dm2.size(); ++i) EXPECT_NEAR(dm2[i], -2.0 + g.dm2[i], 1e-14);
  for (size_t i = 0; i < dm2.size(); ++i) EXPECT_EQ(g.dm1[i], -g.dm2[i]);
}

TEST(W2Gaussian, FloatMatchesDouble) {
  const int pairs = 4, k = 32;
  const auto m1 = random_vector<double>(size_t(pairs) * k, 50);
  const auto m2 = random_vector<double>(size_t(pairs) * k, 51);
  const auto A = gram(random_vector<double>(size_t(pairs) * k * k, 52), pairs, k, 0.05);
  const auto B = gram(random_vector<double>(size_t(pairs) * k * k, 53), pairs, k, 0.05);
  const auto dw2 = random_vector<double>(pairs, 54, 0.5, 2.0);
  auto to_float = [](const std::vector<double>& v) {
    return std::vector<float>(v.begin(), v.end());
  };
  const auto wd = w2_forward(m1, A, m2, B, pairs, k, kEps);
  const auto wf = w2_forward(to_float(m1), to_float(A), to_float(m2), to_float(B), pairs, k, 1e-5f);
  const auto gd = w2_backward(dw2, m1, A, m2, B, pairs, k, kEps);
  const auto gf = w2_backward(to_float(dw2), to_float(m1), to_float(A), to_float(m2), to_float(B),
                              pairs, k, 1e-5f);
  // w2_error in float on inputs rounded to float, and in double; the mean gradients
  // 2·dw2·(m1 − m2) take the inputs' rounding and 3 roundings of their own.
  const double u = hetdro::testing::unit_roundoff<float>();
  const double ud = hetdro::testing::unit_roundoff<double>();
  std::vector<double> w2_err(pairs), dA_err(A.size()), dB_err(B.size()), dm_err(m1.size());
  for (int p = 0; p < pairs; ++p) {
    const size_t at = size_t(p) * k * k, m = size_t(p) * k;
    const W2Error f = w2_error(&A[at], &B[at], &m1[m], &m2[m], k, kEps, u, u);
    const W2Error d = w2_error(&A[at], &B[at], &m1[m], &m2[m], k, kEps, ud);
    w2_err[p] = f.w2 + d.w2;
    for (int e = 0; e < k * k; ++e) {
      dA_err[at + e] = (f.gradient + d.gradient) * std::abs(gd.dA[at + e]);
      dB_err[at + e] = (f.gradient + d.gradient) * std::abs(gd.dB[at + e]);
    }
    for (int i = 0; i < k; ++i)
      dm_err[m + i] = 2 * std::abs(dw2[p]) *
                      (u * (std::abs(m1[m + i]) + std::abs(m2[m + i])) +
                       (u + hetdro::testing::gamma(3, u) + hetdro::testing::gamma(3, ud)) *
                           std::abs(m1[m + i] - m2[m + i]));
  }
  using hetdro::testing::conditioning;
  EXPECT_LE(rel_error(as_double(wf), wd), conditioning(w2_err, wd));
  EXPECT_LE(rel_error(as_double(gf.dm1), gd.dm1), conditioning(dm_err, gd.dm1));
  EXPECT_LE(rel_error(as_double(gf.dA), gd.dA), conditioning(dA_err, gd.dA));
  EXPECT_LE(rel_error(as_double(gf.dm2), gd.dm2), conditioning(dm_err, gd.dm2));
  EXPECT_LE(rel_error(as_double(gf.dB), gd.dB), conditioning(dB_err, gd.dB));
}

// The case docs/DESIGN.md §2 is written for: a class whose ReLU latents have units that are 0 for
// all its samples, so Ŝ has exactly repeated eigenvalues eps (and n_c ≤ k makes it rank-deficient
// besides). Compose class_moments → w2_gaussian(Ŝ, B = L Lᵀ + eps·I) with L = I and compare
// the gradients w.r.t. z and L with float64 central differences.
struct DegenerateCase {
  int n_c, k = 64, dead = 20, left_out = 3;
  std::vector<double> z, L, anchor_mean;
  std::vector<int32_t> slot;

  explicit DegenerateCase(int n) : n_c(n) {
    const int n_all = n_c + left_out;
    z = random_vector<double>(size_t(n_all) * k, 100 + n_c);
    std::vector<int> units(k);
    std::iota(units.begin(), units.end(), 0);
    std::shuffle(units.begin(), units.end(), std::mt19937(7));
    for (int i = 0; i < n_c; ++i)
      for (int d = 0; d < dead; ++d) z[size_t(i) * k + units[d]] = 0.0;
    slot.assign(n_all, 0);
    for (int i = n_c; i < n_all; ++i) slot[i] = -1;  // left out: their gradient must stay 0
    L = flatten(MatD::Identity(k, k));
    anchor_mean = random_vector<double>(k, 200 + n_c, -0.1, 0.1);
  }

  template <typename T>
  std::vector<T> anchor_cov(const std::vector<T>& chol) const {
    using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    std::vector<T> S(chol.size());
    Eigen::Map<const RowMat> l(chol.data(), k, k);
    Eigen::Map<RowMat> s(S.data(), k, k);
    s = l.lazyProduct(l.transpose());  // a threaded GEMM per difference would dominate the test
    s.diagonal().array() += T(kEps);
    return S;
  }

  double loss(const std::vector<double>& zz, const std::vector<double>& S) const {
    std::vector<double> mean(k), cov(size_t(k) * k);
    int32_t count;
    cpu::class_moments_forward(mean.data(), cov.data(), &count, zz.data(), slot.data(),
                               int(slot.size()), k, 1, kEps);
    return w2_forward(mean, cov, anchor_mean, S, 1, k, kEps)[0];
  }

  // Analytic gradients (dz, dL) of W2²(class moments of z, N(anchor_mean, L Lᵀ + eps·I)).
  template <typename T>
  std::pair<std::vector<T>, std::vector<T>> gradients() const {
    using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const std::vector<T> zt(z.begin(), z.end()), Lt(L.begin(), L.end());
    const std::vector<T> m2(anchor_mean.begin(), anchor_mean.end());
    std::vector<T> mean(k), cov(size_t(k) * k), saved;
    int32_t count;
    cpu::class_moments_forward(mean.data(), cov.data(), &count, zt.data(), slot.data(),
                               int(slot.size()), k, 1, T(kEps));
    const auto S = anchor_cov(Lt);
    w2_forward(mean, cov, m2, S, 1, k, T(kEps), &saved);
    std::vector<T> dmean(k), dcov(cov.size()), dS(S.size()), dz(z.size()), dL(L.size());
    const T one = 1;
    cpu::w2_gaussian_backward<T>(dmean.data(), dcov.data(), nullptr, dS.data(), &one, saved.data(),
                                 mean.data(), cov.data(), m2.data(), S.data(), 1, k, T(kEps));
    cpu::class_moments_backward(dz.data(), dmean.data(), dcov.data(), zt.data(), mean.data(),
                                &count, slot.data(), int(slot.size()), k, 1);
    // S = L Lᵀ + eps·I: dL = 2 sym(dS) L (docs/DESIGN.md §2 step 5).
    Eigen::Map<const RowMat> ds(dS.data(), k, k), l(Lt.data(), k, k);
    Eigen::Map<RowMat>(dL.data(), k, k) = (ds + ds.transpose()) * l;
    return {dz, dL};
  }
};

// Which entries of L to difference: all of them for n_c = 2 (the most degenerate case, 63
// eigenvalues at eps), else the diagonal and 448 random off-diagonal entries, to keep the test
// under half a minute; the random ones hit dead–dead, dead–live and live–live blocks.
std::vector<int> chol_entries(int k, int n_c) {
  std::vector<int> all(k * k);
  std::iota(all.begin(), all.end(), 0);
  if (n_c == 2) return all;
  std::vector<int> off, out;
  for (int e : all) (e / k == e % k ? out : off).push_back(e);
  std::shuffle(off.begin(), off.end(), std::mt19937(n_c));
  out.insert(out.end(), off.begin(), off.begin() + 448);
  return out;
}

TEST(W2Gaussian, DegenerateCovariancesGiveFiniteGradientsThatMatchDifferences) {
  double worst_z = 0, worst_L = 0;
  for (int n_c = 2; n_c <= 20; ++n_c) {
    const DegenerateCase c(n_c);
    const auto [dz, dL] = c.gradients<double>();
    for (double v : dz) ASSERT_TRUE(std::isfinite(v)) << "n_c " << n_c;
    for (double v : dL) ASSERT_TRUE(std::isfinite(v)) << "n_c " << n_c;
    for (size_t i = size_t(n_c) * c.k; i < dz.size(); ++i) ASSERT_EQ(dz[i], 0.0);

    const auto S = c.anchor_cov(c.L);
    const auto nz =
        numeric_gradient([&](const std::vector<double>& x) { return c.loss(x, S); }, c.z, 1e-6);
    const auto entries = chol_entries(c.k, n_c);
    auto loss_of_entries = [&](const std::vector<double>& x) {
      auto l = c.L;
      for (size_t e = 0; e < entries.size(); ++e) l[entries[e]] = x[e];
      return c.loss(c.z, c.anchor_cov(l));
    };
    std::vector<double> at, picked;
    for (int e : entries) at.push_back(c.L[e]), picked.push_back(dL[e]);
    const auto nL = numeric_gradient(loss_of_entries, at, 1e-6);

    // Central differences (testing.h, numeric_gradient) through two k = 64 eigensolves: the
    // loss rounds by about k·(k·u·‖Ŝ‖)/(2√eps) (each eigenvalue's k·u‖Ŝ‖ through the cross
    // term's root, whose slope reaches 1/(2√eps) at the floor), 7e-11·‖Ŝ‖ with ‖Ŝ‖ ≲ 1 here, so
    // each quotient errs by up to 7e-5 against O(1) gradients: the bar is 1e-4.
    const double ez = rel_error(dz, nz), eL = rel_error(picked, nL);
    EXPECT_LE(ez, 1e-4) << "n_c " << n_c;
    EXPECT_LE(eL, 1e-4) << "n_c " << n_c;
    std::printf("degenerate n_c %2d: relative error dz %.3g, dL %.3g (%zu entries)\n", n_c, ez, eL,
                entries.size());
    worst_z = std::max(worst_z, ez);
    worst_L = std::max(worst_L, eL);
  }
  RecordProperty("max_rel_error_dz", std::to_string(worst_z));
  RecordProperty("max_rel_error_dL", std::to_string(worst_L));
  std::printf("degenerate: max relative error dz %.3g, dL %.3g\n", worst_z, worst_L);
}

// In fp32 the eigenvalues at eps carry rounding of ~1e-7·‖Ŝ‖ and fall on either side of the
// clamps, so fp32 cannot match differences there; it must stay finite and near fp64. No
// perturbation model bounds this tightly: which side of a clamp a repeated eigenvalue lands on is
// discrete, and w2_error's smooth bound, ‖E‖/(2 eps) ≈ 64·u_32·‖Ŝ‖/(2e-5) = 0.2, is vacuous
// here. So the bar, 1e-2, is a requirement rather than a derived bound: fp32 within a percent
// of fp64 at the clamps, where a wrong branch of K is off by O(1).
TEST(W2Gaussian, DegenerateCovariancesInFloatStayFiniteAndNearDouble) {
  for (int n_c : {2, 5, 10, 20}) {
    const DegenerateCase c(n_c);
    const auto [dzd, dLd] = c.gradients<double>();
    const auto [dzf, dLf] = c.gradients<float>();
    for (float v : dzf) ASSERT_TRUE(std::isfinite(v)) << "n_c " << n_c;
    for (float v : dLf) ASSERT_TRUE(std::isfinite(v)) << "n_c " << n_c;
    const double ez = rel_error(as_double(dzf), dzd), eL = rel_error(as_double(dLf), dLd);
    std::printf("degenerate fp32 vs fp64 n_c %2d: relative error dz %.3g, dL %.3g\n", n_c, ez, eL);
    EXPECT_LE(ez, 1e-2) << "n_c " << n_c;
    EXPECT_LE(eL, 1e-2) << "n_c " << n_c;
  }
}

}  // namespace
