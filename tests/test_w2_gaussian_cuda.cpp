// w2_gaussian on the GPU against the CPU reference in double (docs/DESIGN.md §2, §3): forward
// W2² and the backward's dm1/dA/dm2/dB for every eigensolver back end, k from 8 to 256, 1 to 100
// pairs, on well-conditioned and degenerate covariances; and the eigensolvers alone against
// Eigen. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_testing.h"
#include "eigen_dense.h"  // the reference eigensolver
#include "hetdro/ops.h"
#include "w2_cases.h"

#ifdef HETDRO_WITH_CUDA
#include "hetdro/cuda_ops.h"
#else
// Without CUDA every test below skips before it gets here; stand-ins so the file compiles.
namespace hetdro::cuda {
enum class Eigensolver { automatic, jacobi, syevj, syev };
inline void set_eigensolver(Eigensolver) {}
inline const char* name(Eigensolver) { return ""; }
inline void eigh(float*, float*, const float*, int, int) {}
}  // namespace hetdro::cuda
#endif

namespace hetdro {
namespace {

using cuda::Eigensolver;
using testing::gpu_error;
using testing::kGpuEigTolerance;
using testing::nan_buffer;
using testing::on_device;
using testing::random_vector;
using testing::W2Case;

constexpr float kEps = 1e-5f;

// This thread's eigensolver for the scope of a test, back to automatic after it.
struct SolverScope {
  explicit SolverScope(Eigensolver s) { cuda::set_eigensolver(s); }
  ~SolverScope() { cuda::set_eigensolver(Eigensolver::automatic); }
  SolverScope(const SolverScope&) = delete;
  SolverScope& operator=(const SolverScope&) = delete;
};

const Eigensolver kSolvers[] = {Eigensolver::jacobi, Eigensolver::syevj, Eigensolver::syev,
                                Eigensolver::automatic};

bool runs(Eigensolver s, int k) { return !(s == Eigensolver::jacobi && k > 128); }

std::vector<double> minus(const std::vector<float>& out, const std::vector<float>& init) {
  std::vector<double> d(out.size());
  for (size_t i = 0; i < out.size(); ++i) d[i] = double(out[i]) - double(init[i]);
  return d;
}
std::vector<double> minus(const std::vector<double>& ref, const std::vector<float>& init) {
  std::vector<double> d(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) d[i] = ref[i] - double(init[i]);
  return d;
}

// Runs forward and backward of case c on the GPU and compares with the double reference. The
// gradients start from the same random values on both sides and the comparison is of what was
// added, so an overwrite instead of += fails, and so does a pair with dw2 = 0 that adds anything.
// The bar is kGpuEigTolerance, or 2x what the CPU reference itself reaches in fp32 on the same
// inputs where that is worse (degenerate spectra: fp32 eigenvalues at eps fall on either side of
// the clamps, tests/test_w2_gaussian.cpp DegenerateCovariancesInFloat...).
void check_case(Backend<float>& be, const W2Case& c, Eigensolver solver) {
  SCOPED_TRACE(c.name + ", k " + std::to_string(c.k) + ", pairs " + std::to_string(c.pairs) + ", " +
               cuda::name(solver));
  const SolverScope scope(solver);
  const int64_t kk = int64_t(c.k) * c.k;
  auto dw2 = random_vector<float>(c.pairs, 7, 0.5f, 2.0f);
  if (c.pairs > 1) dw2[1] = 0.0f;  // a masked slot: adds nothing
  const auto init_m = random_vector<float>(size_t(c.pairs) * c.k, 8, -0.1f, 0.1f);
  const auto init_kk = random_vector<float>(size_t(c.pairs) * kk, 9, -0.1f, 0.1f);
  const auto ref = testing::w2_reference<double>(c, dw2, init_m, init_kk, double(kEps));
  const auto f32 = testing::w2_reference<float>(c, dw2, init_m, init_kk, kEps);

  auto m1 = on_device(be, c.m1), A = on_device(be, c.A), m2 = on_device(be, c.m2),
       B = on_device(be, c.B), g = on_device(be, dw2);
  auto w2 = nan_buffer(be, c.pairs);
  auto saved = nan_buffer(be, c.pairs * w2_gaussian_saved_size(c.k));
  be.w2_gaussian_forward(w2.data(), saved.data(), m1.data(), A.data(), m2.data(), B.data(), c.pairs,
                         c.k, kEps);
  auto dm1 = on_device(be, init_m), dm2 = on_device(be, init_m);
  auto dA = on_device(be, init_kk), dB = on_device(be, init_kk);
  be.w2_gaussian_backward(dm1.data(), dA.data(), dm2.data(), dB.data(), g.data(), saved.data(),
                          m1.data(), A.data(), m2.data(), B.data(), c.pairs, c.k, kEps);

  struct Out {
    const char* name;
    std::vector<double> gpu, ref, cpu32;
  };
  const Out outs[] = {
      {"w2", testing::widen(w2.download()), ref.w2, f32.w2},
      {"dm1", minus(dm1.download(), init_m), minus(ref.dm1, init_m), minus(f32.dm1, init_m)},
      {"dA", minus(dA.download(), init_kk), minus(ref.dA, init_kk), minus(f32.dA, init_kk)},
      {"dm2", minus(dm2.download(), init_m), minus(ref.dm2, init_m), minus(f32.dm2, init_m)},
      {"dB", minus(dB.download(), init_kk), minus(ref.dB, init_kk), minus(f32.dB, init_kk)},
  };
  for (const auto& o : outs) {
    std::vector<float> gpu(o.gpu.begin(), o.gpu.end()), cpu32(o.cpu32.begin(), o.cpu32.end());
    const double err = gpu_error(gpu, o.ref), base = gpu_error(cpu32, o.ref);
    const double bar = std::max(kGpuEigTolerance, 2 * base);
    EXPECT_LE(err, bar) << o.name << " (CPU fp32 on the same inputs: " << base << ")";
    if (err > 0.3 * bar)
      std::printf("%s k %d pairs %d %s %s: error %.3g (fp32 CPU %.3g)\n", c.name.c_str(), c.k,
                  c.pairs, cuda::name(solver), o.name, err, base);
  }
  // The masked pair: all four of its gradients are exactly the initial values.
  if (c.pairs > 1) {
    const auto gA = dA.download(), gB = dB.download();
    for (int64_t i = kk; i < 2 * kk; ++i) {
      ASSERT_EQ(gA[i], init_kk[i]) << "masked pair's dA";
      ASSERT_EQ(gB[i], init_kk[i]) << "masked pair's dB";
    }
    const auto g1 = dm1.download(), g2 = dm2.download();
    for (int64_t i = c.k; i < 2 * int64_t(c.k); ++i) {
      ASSERT_EQ(g1[i], init_m[i]) << "masked pair's dm1";
      ASSERT_EQ(g2[i], init_m[i]) << "masked pair's dm2";
    }
  }
}

TEST(W2GaussianCuda, WellConditionedMatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Eigensolver s : kSolvers)
    for (int k : {8, 32, 64, 128, 256})
      for (int pairs : {1, 10, 100}) {
        if (!runs(s, k)) continue;
        if (k == 256 && pairs == 100) pairs = 30;  // the double reference's time, not the GPU's
        check_case(be, testing::well_conditioned(pairs, k, 1000 + k + pairs), s);
      }
}

TEST(W2GaussianCuda, DegenerateCovariancesMatchTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Eigensolver s : kSolvers)
    for (int k : {8, 32, 64, 128}) {
      // Rank-deficient Ŝ from n_c = 2..20 samples, with and without dead units, L = I anchors.
      for (int n_c : {2, 3, 5, 10, 20})
        check_case(be, testing::sample_covariances(10, k, n_c, 0, kEps, 2000 + n_c), s);
      check_case(be, testing::sample_covariances(10, k, 10, k / 3, kEps, 3000), s);
      check_case(be, testing::sample_covariances(1, k, 2, k / 2, kEps, 3100), s);
    }
}

TEST(W2GaussianCuda, BackwardSkipsNullGradients) {
  HETDRO_CUDA_OR_SKIP(be);
  const auto c = testing::well_conditioned(3, 16, 77);
  const std::vector<float> dw2 = {1.0f, 0.5f, 2.0f};
  auto m1 = on_device(be, c.m1), A = on_device(be, c.A), m2 = on_device(be, c.m2),
       B = on_device(be, c.B), g = on_device(be, dw2);
  auto w2 = nan_buffer(be, c.pairs);
  auto saved = nan_buffer(be, c.pairs * w2_gaussian_saved_size(c.k));
  be.w2_gaussian_forward(w2.data(), saved.data(), m1.data(), A.data(), m2.data(), B.data(), c.pairs,
                         c.k, kEps);
  auto dA = on_device(be, std::vector<float>(c.A.size(), 0.0f));
  auto dm2 = on_device(be, std::vector<float>(c.m2.size(), 0.0f));
  be.w2_gaussian_backward(nullptr, dA.data(), dm2.data(), nullptr, g.data(), saved.data(),
                          m1.data(), A.data(), m2.data(), B.data(), c.pairs, c.k, kEps);
  const auto ref = testing::w2_reference<double>(c, dw2, std::vector<float>(c.m1.size(), 0.0f),
                                                 std::vector<float>(c.A.size(), 0.0f), 1e-5);
  EXPECT_LE(gpu_error(dA.download(), ref.dA), kGpuEigTolerance);
  EXPECT_LE(gpu_error(dm2.download(), ref.dm2), kGpuEigTolerance);
  be.w2_gaussian_backward(nullptr, nullptr, nullptr, nullptr, g.data(), saved.data(), m1.data(),
                          A.data(), m2.data(), B.data(), c.pairs, c.k, kEps);  // nothing to do
}

TEST(W2GaussianCuda, JacobiBeyondItsSizeThrowsAndAutomaticDoesNot) {
  HETDRO_CUDA_OR_SKIP(be);
  const auto c = testing::well_conditioned(1, 130, 5);
  auto m1 = on_device(be, c.m1), A = on_device(be, c.A), m2 = on_device(be, c.m2),
       B = on_device(be, c.B);
  auto w2 = nan_buffer(be, 1);
  auto saved = nan_buffer(be, w2_gaussian_saved_size(c.k));
  {
    const SolverScope scope(Eigensolver::jacobi);
    try {
      be.w2_gaussian_forward(w2.data(), saved.data(), m1.data(), A.data(), m2.data(), B.data(), 1,
                             c.k, kEps);
      FAIL() << "jacobi ran at k = 130";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("k ≤ 128"), std::string::npos) << e.what();
    }
  }
  be.w2_gaussian_forward(w2.data(), saved.data(), m1.data(), A.data(), m2.data(), B.data(), 1, c.k,
                         kEps);
  const auto ref = testing::w2_reference<double>(c, {1.0f}, std::vector<float>(c.k, 0.0f),
                                                 std::vector<float>(c.A.size(), 0.0f), 1e-5);
  EXPECT_LE(gpu_error(w2.download(), ref.w2), kGpuEigTolerance);
}

// The eigensolvers alone: eigenvalues ascending against Eigen in double on the same float
// matrices, reconstruction V diag(w) Vᵀ ≈ A and VᵀV ≈ I, on random, repeated (eps·I + rank r,
// exactly I) and clustered spectra.
TEST(W2GaussianCuda, EigensolversMatchEigen) {
  HETDRO_CUDA_OR_SKIP(be);
  using MatD = Eigen::MatrixXd;
  for (const Eigensolver s : kSolvers)
    for (int k : {1, 7, 8, 32, 63, 64, 128, 256}) {
      if (!runs(s, k)) continue;
      const SolverScope scope(s);
      const int batch = 6;
      std::vector<float> A(size_t(batch) * k * k, 0.0f);
      const auto spd = testing::random_spd(1, k, 0.0, 40 + k);
      const auto low = testing::sample_covariances(1, k, 4, 0, kEps, 50 + k).A;
      const auto sym = random_vector<float>(size_t(k) * k, 60 + k);
      for (int i = 0; i < k; ++i)
        for (int j = 0; j < k; ++j) {
          const size_t ij = size_t(i) * k + j, kk = size_t(k) * k;
          A[ij] = float(spd[ij]);                                        // random SPD
          A[kk + ij] = low[ij];                                          // eps·I + rank 3
          A[2 * kk + ij] = i == j ? 1.0f : 0.0f;                         // exactly I
          A[3 * kk + ij] = 0.5f * (sym[ij] + sym[size_t(j) * k + i]);    // indefinite
          A[4 * kk + ij] = i == j ? 1.0f + 1e-6f * float(i % 4) : 0.0f;  // a cluster...
          A[5 * kk + ij] = i == j ? (i < k / 2 ? 1.0f : 2.0f) : 0.0f;    // two repeated values
        }
      // ...rotated out of the diagonal by a fixed orthogonal Q, so the solver has work to do.
      const auto qv = random_vector<double>(size_t(k) * k, 70 + k);
      const MatD Q =
          Eigen::HouseholderQR<MatD>(Eigen::Map<const MatD>(qv.data(), k, k)).householderQ();
      for (int b : {4, 5}) {
        Eigen::Map<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>> m(A.data() + size_t(b) * k * k, k,
                                                                    k);
        const MatD r = Q * m.cast<double>() * Q.transpose();
        m = (0.5 * (r + r.transpose())).cast<float>();
      }
      auto dA = on_device(be, A);
      auto w = nan_buffer(be, int64_t(batch) * k);
      auto V = nan_buffer(be, int64_t(batch) * k * k);
      cuda::eigh(w.data(), V.data(), dA.data(), batch, k);
      const auto wh = w.download(), Vh = V.download();
      if (s == Eigensolver::jacobi) {  // deterministic: a second run gives the same bits
        cuda::eigh(w.data(), V.data(), dA.data(), batch, k);
        EXPECT_EQ(w.download(), wh) << "k " << k;
        EXPECT_EQ(V.download(), Vh) << "k " << k;
      }
      for (int b = 0; b < batch; ++b) {
        SCOPED_TRACE("matrix " + std::to_string(b) + ", k " + std::to_string(k) + ", " +
                     cuda::name(s));
        MatD Ab(k, k), Vb(k, k);
        Eigen::VectorXd wb(k);
        for (int i = 0; i < k; ++i) {
          wb[i] = wh[size_t(b) * k + i];
          for (int j = 0; j < k; ++j) {
            Ab(i, j) = A[size_t(b) * k * k + size_t(i) * k + j];
            Vb(i, j) = Vh[size_t(b) * k * k + size_t(i) * k + j];
          }
        }
        ASSERT_TRUE(wb.allFinite() && Vb.allFinite());
        const Eigen::SelfAdjointEigenSolver<MatD> ref(Ab);
        const double norm = std::max(ref.eigenvalues().cwiseAbs().maxCoeff(), 1e-30);
        for (int i = 1; i < k; ++i) EXPECT_LE(wb[i - 1], wb[i]);
        // The bars of tests/test_jacobi_eig.cpp, which the host emulation meets with ~1.5x.
        EXPECT_LE((wb - ref.eigenvalues()).cwiseAbs().maxCoeff() / norm, 1e-5);
        EXPECT_LE((Vb * wb.asDiagonal() * Vb.transpose() - Ab).norm() / Ab.norm(), 3e-7 * k + 1e-6);
        EXPECT_LE((Vb.transpose() * Vb - MatD::Identity(k, k)).norm(), 2.5e-8 * k * k + 1e-6);
      }
    }
}

}  // namespace
}  // namespace hetdro
