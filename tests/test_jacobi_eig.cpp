// The batched Jacobi eigensolver's arithmetic (kernels/jacobi.h), on the CPU: the round-robin
// ordering covers every pivot pair once per sweep, the rotation zeroes its pivot, and a host
// emulation of the kernel's whole parallel algorithm, built from the same functions, matches
// Eigen's SelfAdjointEigenSolver on random, repeated and clustered spectra (docs/DESIGN.md §3).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <set>
#include <utility>
#include <vector>

#include "eigen_dense.h"  // the reference eigensolver
#include "jacobi.h"
#include "testing.h"  // random_vector

namespace {

namespace jac = hetdro::jacobi;
using hetdro::testing::random_vector;
using MatD = Eigen::MatrixXd;
using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// What the kernel computes for one matrix, step for step: each round first computes all n/2
// rotations from the matrix as it stands, then applies every 2x2 block (P ≤ Q) and every row of
// V; blocks are disjoint, so applying them one after another equals the kernel's parallel pass.
template <typename T>
struct Emulated {
  std::vector<T> w, V;  // eigenvalues ascending; V row-major, eigenvectors in columns
  int sweeps = 0;
};

template <typename T>
Emulated<T> emulate(const std::vector<T>& A, int k) {
  const int n = jac::padded(k), m = n / 2;
  std::vector<T> a(size_t(n) * n, T(0)), v(size_t(n) * n, T(0));
  T sum = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const T x = i < k && j < k ? T(0.5) * (A[size_t(i) * k + j] + A[size_t(j) * k + i]) : T(0);
      a[size_t(i) * n + j] = x;
      v[size_t(i) * n + j] = i == j ? T(1) : T(0);
      sum += x * x;
    }
  const T floor = jac::rotation_floor(std::sqrt(sum), n);
  std::vector<jac::Rotation<T>> rot(m);
  std::vector<int> pp(m), qq(m);
  Emulated<T> out;
  for (int sweep = 0; sweep < jac::kMaxSweeps; ++sweep) {
    bool rotated = false;
    for (int round = 0; round < n - 1; ++round) {
      // The kernel's own two phases, one work item after another.
      rotated |= jac::round_rotations(a.data(), n, n, round, floor, rot.data(), pp.data(),
                                      qq.data(), 0, 1);
      jac::round_apply(a.data(), v.data(), n, n, rot.data(), pp.data(), qq.data(), nullptr, 0, 1);
    }
    out.sweeps = sweep + 1;
    if (!rotated) break;
  }
  out.w.assign(k, T(0));
  out.V.assign(size_t(k) * k, T(0));
  for (int i = 0; i < k; ++i) {
    int rank = 0;
    for (int j = 0; j < k; ++j)
      rank += jac::ranked_before(a[size_t(j) * n + j], j, a[size_t(i) * n + i], i);
    out.w[rank] = a[size_t(i) * n + i];
    for (int row = 0; row < k; ++row) out.V[size_t(row) * k + rank] = v[size_t(row) * n + i];
  }
  return out;
}

// Eigenvalue error relative to ‖A‖₂, reconstruction ‖V diag(w) Vᵀ − A‖/‖A‖ and ‖VᵀV − I‖ (all
// in double), for an emulated solve in T of a matrix given in double (rounded to T first).
struct Errors {
  double eig, recon, orth;
  int sweeps;
  double spread;  // ‖A‖₂/‖A‖_F, which turns an entrywise error of ‖A‖₂ into a relative one
};

template <typename T>
Errors check(const MatD& A) {
  const int k = int(A.rows());
  std::vector<T> in(size_t(k) * k);
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) in[size_t(i) * k + j] = T(A(i, j));
  MatD Ar(k, k);  // what the solver saw
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) Ar(i, j) = double(in[size_t(i) * k + j]);
  const auto e = emulate(in, k);
  Eigen::SelfAdjointEigenSolver<MatD> ref(Ar);
  MatD V(k, k);
  Eigen::VectorXd w(k);
  for (int i = 0; i < k; ++i) {
    w[i] = double(e.w[i]);
    for (int j = 0; j < k; ++j) V(i, j) = double(e.V[size_t(i) * k + j]);
  }
  const double norm = std::max(ref.eigenvalues().cwiseAbs().maxCoeff(), 1e-300);
  for (int i = 1; i < k; ++i) EXPECT_LE(w[i - 1], w[i]) << "not ascending at " << i;
  return {(w - ref.eigenvalues()).cwiseAbs().maxCoeff() / norm,
          (V * w.asDiagonal() * V.transpose() - Ar).norm() / std::max(Ar.norm(), 1e-300),
          (V.transpose() * V - MatD::Identity(k, k)).norm(), e.sweeps,
          norm / std::max(Ar.norm(), 1e-300)};
}

MatD random_orthogonal(int k, uint32_t seed) {
  const auto v = random_vector<double>(size_t(k) * k, seed);
  return Eigen::HouseholderQR<MatD>(Eigen::Map<const MatD>(v.data(), k, k)).householderQ();
}

MatD with_spectrum(const Eigen::VectorXd& d, uint32_t seed) {
  const MatD Q = random_orthogonal(int(d.size()), seed);
  MatD A = Q * d.asDiagonal() * Q.transpose();
  return 0.5 * (A + A.transpose());
}

MatD random_symmetric(int k, uint32_t seed) {
  const auto v = random_vector<double>(size_t(k) * k, seed);
  const MatD X = Eigen::Map<const MatD>(v.data(), k, k);
  return 0.5 * (X + X.transpose());
}

// Bars, for T's ε, from a random-walk model of the rounding: each entry of V and of the rotated
// A is touched by k − 1 rotations per sweep, each rounding it a few times, and independent
// roundings add in quadrature, so after s sweeps an entry carries δ = ε·√(s·k) of its scale:
//   an eigenvalue, a diagonal entry at the end, is off by δ·‖A‖₂, and the largest of k such
//   independent errors by δ·√(2 ln 2k)·‖A‖₂;
//   VᵀV − I has k² entries of about δ each: ‖VᵀV − I‖_F ≈ δ·k = ε·√s·k^1.5;
//   V diag(w) Vᵀ − A has k² entries of about δ·‖A‖₂: relative to ‖A‖_F, δ·k·‖A‖₂/‖A‖_F.
// Each bar is twice its estimate plus 8ε for the last roundings, with the solve's own s. A wrong
// rotation or ordering misses them by orders of magnitude.
struct Bars {
  double eig, recon, orth;
};
template <typename T>
Bars bars(int k, const Errors& e) {
  const double eps = std::numeric_limits<T>::epsilon(), delta = eps * std::sqrt(e.sweeps * k);
  return {2 * delta * std::sqrt(2 * std::log(2.0 * k)) + 8 * eps,
          2 * delta * k * e.spread + 8 * eps, 2 * delta * k + 8 * eps};
}

TEST(JacobiEig, RoundRobinPairsEveryIndexPairOncePerSweep) {
  for (int n = 2; n <= jac::kMaxK + 2; n += 2) {
    std::set<std::pair<int, int>> seen;
    for (int r = 0; r < n - 1; ++r) {
      std::vector<int> used(n, 0);
      for (int j = 0; j < n / 2; ++j) {
        int p, q;
        jac::round_robin_pair(n, r, j, &p, &q);
        ASSERT_TRUE(0 <= p && p < q && q < n) << "n " << n << " round " << r << " pivot " << j;
        ++used[p];
        ++used[q];
        EXPECT_TRUE(seen.insert({p, q}).second)
            << "pair repeats: n " << n << " (" << p << "," << q << ")";
      }
      for (int i = 0; i < n; ++i) ASSERT_EQ(used[i], 1) << "round not disjoint: n " << n;
    }
    EXPECT_EQ(seen.size(), size_t(n) * (n - 1) / 2) << "n " << n;
  }
}

TEST(JacobiEig, UpperTriangleIndexEnumeratesEachBlockOnce) {
  for (int m = 1; m <= jac::kMaxK / 2; ++m) {
    std::set<std::pair<int, int>> seen;
    for (int idx = 0; idx < m * (m + 1) / 2; ++idx) {
      int P, Q;
      jac::upper_triangle_index(m, idx, &P, &Q);
      ASSERT_TRUE(0 <= P && P <= Q && Q < m) << "m " << m << " idx " << idx;
      EXPECT_TRUE(seen.insert({P, Q}).second);
    }
    EXPECT_EQ(seen.size(), size_t(m) * (m + 1) / 2);
  }
}

TEST(JacobiEig, RotationZeroesThePivotAndKeepsTheDiagonalExact) {
  // Ordinary, equal diagonals (τ = 0), and a tiny pivot against a large gap (τ past 1/ε).
  const double cases[][3] = {
      {1.0, 2.0, 0.3}, {0.5, 0.5, -0.2}, {1e3, -1e3, 1e-9}, {-1.0, 3.0, 4.0}, {2.0, 1.0, 1e-30}};
  // Error model (double): t = sign/(|τ| + √(1 + τ²)) is within 5u, c = 1/√(1 + t²) within 3u and
  // s = t·c within 9u, so c² + s² is within 8u of 1, and the test's squares and sum add 3. JᵀAJ
  // takes J's rounding twice (18u) and two 2×2 products (γ_4) on |J|ᵀ|A||J| ≤ 2‖A‖_F; the hand
  // values c0 ∓ t·c2 add t's 5u and 2 roundings: γ_29·2‖A‖_F.
  const double u = hetdro::testing::unit_roundoff<double>();
  const double unit_bar = hetdro::testing::gamma(11, u);
  for (const auto& c : cases) {
    const auto r = jac::rotation(c[0], c[1], c[2]);
    EXPECT_NEAR(r.c * r.c + r.s * r.s, 1.0, unit_bar);
    EXPECT_LE(std::fabs(r.t), 1.0);
    Eigen::Matrix2d A, J;
    A << c[0], c[2], c[2], c[1];
    J << r.c, r.s, -r.s, r.c;
    const Eigen::Matrix2d B = J.transpose() * A * J;
    const double scale = A.norm(), bar = hetdro::testing::gamma(29, u) * 2 * scale;
    EXPECT_LE(std::fabs(B(0, 1)), bar) << c[0] << " " << c[1] << " " << c[2];
    EXPECT_NEAR(B(0, 0), c[0] - r.t * c[2], bar);
    EXPECT_NEAR(B(1, 1), c[1] + r.t * c[2], bar);
  }
  const auto id = jac::rotation(1.0, 2.0, 0.0);
  EXPECT_EQ(id.c, 1.0);
  EXPECT_EQ(id.s, 0.0);
}

TEST(JacobiEig, RankingIsAPermutationEvenWithTiesAndNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> d = {2.0f, nan, -1.0f, 2.0f, nan, 0.0f, -1.0f};
  const int k = int(d.size());
  std::vector<int> rank(k, 0);
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) rank[i] += jac::ranked_before(d[j], j, d[i], i);
  EXPECT_EQ(rank, (std::vector<int>{3, 5, 0, 4, 6, 2, 1}));
}

TEST(JacobiEig, EmulationMatchesEigenOnRandomSymmetricMatrices) {
  for (int k : {1, 2, 3, 7, 8, 17, 32, 63, 64, 128}) {
    const auto ef = check<float>(random_symmetric(k, 100 + k));
    const auto ed = check<double>(random_symmetric(k, 100 + k));
    std::printf(
        "random k %3d: fp32 eig %.2g recon %.2g orth %.2g sweeps %d | fp64 eig %.2g recon %.2g "
        "orth "
        "%.2g sweeps %d\n",
        k, ef.eig, ef.recon, ef.orth, ef.sweeps, ed.eig, ed.recon, ed.orth, ed.sweeps);
    const Bars bf = bars<float>(k, ef), bd = bars<double>(k, ed);
    EXPECT_LE(ef.eig, bf.eig) << "k " << k;
    EXPECT_LE(ef.recon, bf.recon) << "k " << k;
    EXPECT_LE(ef.orth, bf.orth) << "k " << k;
    EXPECT_LT(ef.sweeps, jac::kMaxSweeps) << "fp32 did not converge by the test, k " << k;
    EXPECT_LE(ed.eig, bd.eig) << "k " << k;
    EXPECT_LE(ed.recon, bd.recon) << "k " << k;
    EXPECT_LE(ed.orth, bd.orth) << "k " << k;
    EXPECT_LT(ed.sweeps, jac::kMaxSweeps) << "fp64 did not converge by the test, k " << k;
  }
}

TEST(JacobiEig, EmulationMatchesEigenOnRepeatedAndClusteredSpectra) {
  const double eps = 1e-5;
  for (int k : {8, 31, 64, 128}) {
    struct Case {
      const char* name;
      MatD A;
    };
    std::vector<Case> cases;
    // eps·I plus a rank-r part: k − r eigenvalues exactly eps, as Ŝ from r + 1 samples.
    for (int r : {1, 3, 9}) {
      const auto x = random_vector<double>(size_t(k) * r, 300 + r);
      const MatD X = Eigen::Map<const MatD>(x.data(), k, r);
      MatD A = X * X.transpose() / std::max(r, 1);
      A.diagonal().array() += eps;
      cases.push_back({"eps I + rank r", A});
    }
    cases.push_back({"identity", MatD::Identity(k, k)});
    cases.push_back({"eps identity", eps * MatD::Identity(k, k)});
    Eigen::VectorXd d(k);
    for (int i = 0; i < k; ++i) d[i] = 1.0 + 1e-6 * i;  // a cluster below fp32's resolution
    cases.push_back({"cluster", with_spectrum(d, 400 + k)});
    for (int i = 0; i < k; ++i) d[i] = i < k / 2 ? 1.0 : 2.0;  // two repeated eigenvalues
    cases.push_back({"two repeated", with_spectrum(d, 500 + k)});
    for (const auto& c : cases) {
      const auto e = check<float>(c.A);
      std::printf("%-14s k %3d: fp32 eig %.2g recon %.2g orth %.2g sweeps %d\n", c.name, k, e.eig,
                  e.recon, e.orth, e.sweeps);
      const Bars b = bars<float>(k, e);
      EXPECT_LE(e.eig, b.eig) << c.name << " k " << k;
      EXPECT_LE(e.recon, b.recon) << c.name << " k " << k;
      EXPECT_LE(e.orth, b.orth) << c.name << " k " << k;
      EXPECT_LT(e.sweeps, jac::kMaxSweeps) << c.name << " k " << k;
    }
  }
}

}  // namespace
