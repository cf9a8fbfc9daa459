// CPU reference of w2_gaussian: squared 2-Wasserstein distance between Gaussian pairs
// (docs/DESIGN.md §1) and its analytic backward (docs/DESIGN.md §2).
//
// saved per pair: [U (k·k), a (k), V (k·k), mu (k)], row-major, eigenvectors in columns:
// A = U diag(a) Uᵀ and M = R B R = V diag(mu) Vᵀ with R = U diag(f(a)) Uᵀ, f(x) = √max(x, eps).
// The elementwise arithmetic (the floored roots, h, K) is the kernels' own (kernels/w2_gaussian.h).
// M's own root floors at eps², not eps: A, B ≥ eps·I give M ≥ eps² I (docs/DESIGN.md §2 step 2).
#include "kernels/w2_gaussian.h"  // w2::root, cross_root, cross_slope, divided_difference

#include <fmt/format.h>  // error message
#include <omp.h>         // omp_set_num_threads

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "eigen_maps.h"  // Eigen (Dense), RowMat; GCC 12 AVX-512 warning off
#include "hetdro/ops.h"

namespace hetdro::cpu {
namespace {

template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// Eigen splits any product of more than ~50k flops over a fresh thread team (Parallelizer.h)
// unless it already runs inside one; for 64×64 that costs more than the product, and on a
// loaded machine 10x more. This sets nthreads-var for the current pair's task only.
inline void one_thread_per_pair() { omp_set_num_threads(1); }

}  // namespace

template <typename T>
void w2_gaussian_forward(T* w2, T* saved, const T* m1, const T* A, const T* m2, const T* B,
                         int pairs, int k, T eps) {
  const int64_t kk = int64_t(k) * k;
  const int64_t stride = w2_gaussian_saved_size(k);
  std::atomic<int> failed{-1};

#pragma omp parallel for schedule(dynamic) if (pairs > 1)
  for (int p = 0; p < pairs; ++p) {
    one_thread_per_pair();
    const Mat<T> Ap = Eigen::Map<const RowMat<T>>(A + p * kk, k, k);
    const Mat<T> Bp = Eigen::Map<const RowMat<T>>(B + p * kk, k, k);
    const Eigen::Map<const Vec<T>> mean1(m1 + int64_t(p) * k, k), mean2(m2 + int64_t(p) * k, k);

    // Both solvers read the lower triangle only; A and B are symmetric by contract.
    Eigen::SelfAdjointEigenSolver<Mat<T>> eigA(Ap);
    if (eigA.info() != Eigen::Success) {
      failed = p;
      continue;
    }
    const Mat<T>& U = eigA.eigenvectors();
    const Vec<T>& a = eigA.eigenvalues();
    const Vec<T> fa = a.unaryExpr([eps](T x) { return hetdro::w2::root(x, eps); });
    const Mat<T> R = U * fa.asDiagonal() * U.transpose();
    const Mat<T> M = R * Bp * R;
    Eigen::SelfAdjointEigenSolver<Mat<T>> eigM(M);
    if (eigM.info() != Eigen::Success) {
      failed = p;
      continue;
    }
    const Vec<T>& mu = eigM.eigenvalues();

    T cross = 0;  // T = tr((R B R)^½) = Σ √max(mu, eps²)   (docs/DESIGN.md §2 step 1)
    for (int i = 0; i < k; ++i) cross += hetdro::w2::cross_root(mu[i], eps);
    w2[p] = (mean1 - mean2).squaredNorm() + Ap.trace() + Bp.trace() - T(2) * cross;

    if (saved != nullptr) {
      T* out = saved + p * stride;
      Eigen::Map<RowMat<T>>(out, k, k) = U;
      Eigen::Map<Vec<T>>(out + kk, k) = a;
      Eigen::Map<RowMat<T>>(out + kk + k, k, k) = eigM.eigenvectors();
      Eigen::Map<Vec<T>>(out + 2 * kk + k, k) = mu;
    }
  }
  if (failed >= 0)
    throw std::runtime_error(fmt::format(
        "w2_gaussian_forward: eigendecomposition of pair {} did not converge (non-finite "
        "covariance?)",
        int(failed)));
}

template <typename T>
void w2_gaussian_backward(T* dm1, T* dA, T* dm2, T* dB, const T* dw2, const T* saved, const T* m1,
                          const T* A, const T* m2, const T* B, int pairs, int k, T eps) {
  (void)A;  // A enters only through its saved eigendecomposition
  const int64_t kk = int64_t(k) * k;
  const int64_t stride = w2_gaussian_saved_size(k);

#pragma omp parallel for schedule(dynamic) if (pairs > 1)
  for (int p = 0; p < pairs; ++p) {
    one_thread_per_pair();
    const T g = dw2[p];
    if (g == T(0)) continue;

    if (dm1 != nullptr || dm2 != nullptr) {
      // ∂W2²/∂m1 = 2(m1 − m2) = −∂W2²/∂m2   (docs/DESIGN.md §2 step 5)
      const Eigen::Map<const Vec<T>> mean1(m1 + int64_t(p) * k, k), mean2(m2 + int64_t(p) * k, k);
      const Vec<T> dm = T(2) * g * (mean1 - mean2);
      if (dm1 != nullptr) Eigen::Map<Vec<T>>(dm1 + int64_t(p) * k, k) += dm;
      if (dm2 != nullptr) Eigen::Map<Vec<T>>(dm2 + int64_t(p) * k, k) -= dm;
    }
    if (dA == nullptr && dB == nullptr) continue;

    const T* in = saved + p * stride;
    const Mat<T> U = Eigen::Map<const RowMat<T>>(in, k, k);
    const Eigen::Map<const Vec<T>> a(in + kk, k);
    const Mat<T> V = Eigen::Map<const RowMat<T>>(in + kk + k, k, k);
    const Eigen::Map<const Vec<T>> mu(in + 2 * kk + k, k);

    const Vec<T> fa = a.unaryExpr([eps](T x) { return hetdro::w2::root(x, eps); });
    const Mat<T> R = U * fa.asDiagonal() * U.transpose();
    // G_M = ∂T/∂M = V diag(h) Vᵀ; the root is flat below eps², so h = 0 there
    // (docs/DESIGN.md §2 step 2)
    const Vec<T> h = mu.unaryExpr([eps](T x) { return hetdro::w2::cross_slope(x, eps); });
    const Mat<T> GM = V * h.asDiagonal() * V.transpose();

    if (dB != nullptr) {
      // ∂W2²/∂B = I − 2 R G_M R   (docs/DESIGN.md §2 steps 3, 5)
      Mat<T> dTdB = R * GM * R;
      dTdB = T(0.5) * (dTdB + dTdB.transpose()).eval();
      Eigen::Map<RowMat<T>> out(dB + p * kk, k, k);
      out.noalias() -= (T(2) * g) * dTdB;
      out.diagonal().array() += g;
    }
    if (dA != nullptr) {
      const Mat<T> Bp = Eigen::Map<const RowMat<T>>(B + p * kk, k, k);
      // ∂T/∂R = G_M R B + B R G_M; the second term is the first's transpose (docs/DESIGN.md §2 step
      // 3).
      const Mat<T> GRB = GM * R * Bp;
      const Mat<T> dTdR = GRB + GRB.transpose();
      // Daleckii–Krein: ∂T/∂A = U (K ∘ (Uᵀ ∂T/∂R U)) Uᵀ   (docs/DESIGN.md §2 step 4)
      Mat<T> C = U.transpose() * dTdR * U;
      for (int j = 0; j < k; ++j)
        for (int i = 0; i < k; ++i)
          C(i, j) *= hetdro::w2::divided_difference(a[i], a[j], fa[i], fa[j], eps);
      Mat<T> dTdA = U * C * U.transpose();
      dTdA = T(0.5) * (dTdA + dTdA.transpose()).eval();
      Eigen::Map<RowMat<T>> out(dA + p * kk, k, k);
      out.noalias() -= (T(2) * g) * dTdA;
      out.diagonal().array() += g;
    }
  }
}

template void w2_gaussian_forward<float>(float*, float*, const float*, const float*, const float*,
                                         const float*, int, int, float);
template void w2_gaussian_forward<double>(double*, double*, const double*, const double*,
                                          const double*, const double*, int, int, double);
template void w2_gaussian_backward<float>(float*, float*, float*, float*, const float*,
                                          const float*, const float*, const float*, const float*,
                                          const float*, int, int, float);
template void w2_gaussian_backward<double>(double*, double*, double*, double*, const double*,
                                           const double*, const double*, const double*,
                                           const double*, const double*, int, int, double);

}  // namespace hetdro::cpu
