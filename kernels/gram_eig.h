// The arithmetic of the low-rank Gram route to Ŝ's eigendecomposition (kernels/gram_eig.cu,
// docs/DESIGN.md §3), host-and-device, and the whole route for one slot written sequentially
// (gram_eigh_slot), which the CPU tests (tests/test_gram_eig.cpp) check against Eigen.
//
// The math. A slot's n samples z (n×k) centred are Z̃; Ŝ = Z̃ᵀZ̃/(n−1) + εI. The n×n Gram
// G = Z̃Z̃ᵀ/(n−1) = W Λ Wᵀ has the same nonzero eigenvalues as Z̃ᵀZ̃/(n−1), and for λ_i > 0
// u_i = Z̃ᵀ w_i / √((n−1)λ_i) is a unit eigenvector of Ŝ with eigenvalue λ_i + ε; every other
// eigenvalue of Ŝ is exactly ε. Rank r ≤ min(n−1, k) (centring removes one dimension), so for
// n ≪ k the only iterative solve is a Jacobi on n×n instead of k×k.
//
// The output is what cuda::eigh returns for Ŝ: eigenvalues ascending, a full orthonormal k×k
// basis U (row-major, eigenvector i in column i). The r live vectors are orthonormalised by a
// Householder QR, whose Q also completes them to a basis of R^k deterministically (the columns
// r..k−1 of Q span the ε-eigenspace). The W2 backward needs only U_r and the projector
// I − U_r U_rᵀ (docs/DESIGN.md §3), so a route wired into w2_gaussian could skip the completion,
// the k×k part of the work.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "class_moments.h"  // moments::centred
#include "hetdro/hd.h"
#include "jacobi.h"

namespace hetdro::gram {

// The most samples a slot may have on this route: the centred samples (n×(k+1)), the n×n Jacobi
// (two (n+1)-strided matrices) and the live vectors (r×k) fit one block's shared memory at
// k = kMaxK (about 147 KiB at n = 64, k = 256: under sm_80's 163 KiB opt-in). Above it the
// Gram solve stops being small, and the direct k×k solve is the route (docs/DESIGN.md §3).
constexpr int kMaxN = 64;
constexpr int kMaxK = 256;

// Column d of the slot's n samples (row stride ldz), centred in place as class_moments does:
// shift by the first sample, subtract the mean of the shifted values (moments::centred).
template <typename T>
HETDRO_HD inline void centre_column(T* z, int ldz, int n, int d) {
  const T shift = z[d];
  T sum = T(0);
  for (int s = 0; s < n; ++s) sum += z[int64_t(s) * ldz + d] - shift;
  const T mean = sum / T(n);
  for (int s = 0; s < n; ++s)
    z[int64_t(s) * ldz + d] = moments::centred(z[int64_t(s) * ldz + d], shift, mean);
}

// G_ij = ⟨z̃_i, z̃_j⟩ / (n−1). The same products in the same order for (i, j) and (j, i), so G is
// exactly symmetric.
template <typename T>
HETDRO_HD inline T gram_entry(const T* zc, int ldz, int n, int k, int i, int j) {
  const T* a = zc + int64_t(i) * ldz;
  const T* b = zc + int64_t(j) * ldz;
  T sum = T(0);
  for (int d = 0; d < k; ++d) sum += a[d] * b[d];
  return sum / T(n - 1);
}

// Eigenvalues of G at or below this are rounding, not rank: an exactly null direction of Z̃ᵀ
// (centring, duplicate samples) comes out of the fp Gram and the Jacobi as ±(a few ε_T)·λ_max
// per term summed, so the bar scales with the n-term Jacobi sums and the k-term Gram dot
// products. Ŝ's eigenvalue there is then ε exactly, an error at rounding level of ‖Ŝ‖, as a
// direct solve of Ŝ also makes.
template <typename T>
HETDRO_HD inline T rank_threshold(T lambda_max, int n, int k) {
  const T top = lambda_max > T(0) ? lambda_max : T(0);
  return T(4) * (T(n) + std::sqrt(T(k))) * std::numeric_limits<T>::epsilon() * top;
}

// The live rank: eigenvalues above the threshold, at most min(n − 1, k) (centred samples have
// rank ≤ n − 1, and Ŝ is k×k). `desc` holds G's eigenvalues in descending order.
template <typename T>
HETDRO_HD inline int live_rank(const T* desc, int n, int k) {
  const T bar = rank_threshold(desc[0], n, k);
  const int most = n - 1 < k ? n - 1 : k;
  int r = 0;
  while (r < most && desc[r] > bar) ++r;
  return r;
}

// Entry d of the live vector u = Z̃ᵀ w / √((n−1)λ), w = column i of V (row stride ldv).
template <typename T>
HETDRO_HD inline T lift_entry(const T* zc, int ldz, const T* v, int ldv, int n, int i, int d,
                              T lambda) {
  T sum = T(0);
  for (int s = 0; s < n; ++s) sum += zc[int64_t(s) * ldz + d] * v[s * ldv + i];
  return sum / std::sqrt(T(n - 1) * lambda);
}

// The Householder reflector H = I − β vvᵀ with H x = α e_0, from x_0 and ‖x‖²: α = −sign(x_0)‖x‖
// (no cancellation in v_0 = x_0 − α), v = x except v_0, β = 2/‖v‖² (0, H = I, when x = 0).
template <typename T>
struct Reflector {
  T alpha, beta, v0;
};

template <typename T>
HETDRO_HD inline Reflector<T> reflector(T x0, T norm2) {
  const T norm = std::sqrt(norm2);
  const T alpha = x0 >= T(0) ? -norm : norm;
  const T v0 = x0 - alpha;
  const T vv = norm2 - x0 * x0 + v0 * v0;
  return {alpha, vv > T(0) ? T(2) / vv : T(0), v0};
}

// Where Q's column c goes in U: the r live columns (c = 0 the largest λ) fill the last r
// columns in ascending order of eigenvalue, the completion (eigenvalue ε) the first k − r.
HETDRO_HD inline int output_column(int c, int r, int k) { return c < r ? k - 1 - c : c - r; }

// Doubles of workspace gram_eigh_slot needs for up to n samples of dimension k.
inline int64_t slot_workspace(int n, int k) {
  const int np = jacobi::padded(n), ld = np + 1;
  return int64_t(n) * (k + 1) + 2 * int64_t(np) * ld + 4 * int64_t(np) + 3 * int64_t(np) +
         int64_t(k) * (n < k ? n : k) + int64_t(k);
}

// The whole route for one slot, sequentially: what each kernel block computes. z: n samples,
// row-major n×k. Outputs w [k] ascending and U [k×k] row-major, eigenvector i in column i.
// n < 2 is a masked slot, whose Ŝ class_moments writes as 0: eigenvalues 0, U = I (what a
// direct solve of 0 returns). 2 ≤ n ≤ kMaxN otherwise. `work`: slot_workspace(n, k) elements.
// Returns the live rank r.
template <typename T>
int gram_eigh_slot(T* w, T* U, const T* z, int n, int k, T eps, T* work) {
  if (n < 2) {
    for (int i = 0; i < k; ++i) w[i] = T(0);
    for (int64_t e = 0; e < int64_t(k) * k; ++e) U[e] = e % (k + 1) == 0 ? T(1) : T(0);
    return 0;
  }
  const int np = jacobi::padded(n), ld = np + 1, ldz = k + 1;
  T* zc = work;
  T* a = zc + int64_t(n) * ldz;
  T* v = a + int64_t(np) * ld;
  T* desc = v + int64_t(np) * ld;                                 // np eigenvalues, descending
  auto* rot = reinterpret_cast<jacobi::Rotation<T>*>(desc + np);  // np/2 · 3 T ≤ 2np
  int pp[kMaxN], qq[kMaxN], order[kMaxN];
  T* X = desc + 4 * np + 3 * np;  // r live vectors, X[c·k + d]
  T* y = X + int64_t(k) * (n < k ? n : k);

  for (int s = 0; s < n; ++s)
    for (int d = 0; d < k; ++d) zc[int64_t(s) * ldz + d] = z[int64_t(s) * k + d];
  for (int d = 0; d < k; ++d) centre_column(zc, ldz, n, d);

  T sum = T(0);
  for (int i = 0; i < np; ++i)
    for (int j = 0; j < np; ++j) {
      const T g = i < n && j < n ? gram_entry(zc, ldz, n, k, i, j) : T(0);
      a[i * ld + j] = g;
      v[i * ld + j] = i == j ? T(1) : T(0);
      sum += g * g;
    }
  const T floor = jacobi::rotation_floor(std::sqrt(sum), np);
  for (int sweep = 0; sweep < jacobi::kMaxSweeps; ++sweep) {
    bool rotated = false;
    for (int round = 0; round < np - 1; ++round) {
      rotated |= jacobi::round_rotations(a, ld, np, round, floor, rot, pp, qq, 0, 1);
      jacobi::round_apply(a, v, ld, np, rot, pp, qq, nullptr, 0, 1);
    }
    if (!rotated) break;
  }

  // Descending order of G's n eigenvalues (the padding's decoupled 0 is left out).
  for (int i = 0; i < n; ++i) {
    int rank = 0;
    for (int j = 0; j < n; ++j) rank += jacobi::ranked_before(a[j * ld + j], j, a[i * ld + i], i);
    order[n - 1 - rank] = i;
  }
  for (int c = 0; c < n; ++c) desc[c] = a[order[c] * ld + order[c]];
  const int r = live_rank(desc, n, k);

  for (int c = 0; c < r; ++c)
    for (int d = 0; d < k; ++d)
      X[int64_t(c) * k + d] = lift_entry(zc, ldz, v, ld, n, order[c], d, desc[c]);

  // Householder QR of X (k×r, column c at X + c·k): reflector j lives in X[j][j..k) with v_0 at
  // X[j][j], its α (R's diagonal) and β in alpha/beta.
  T* alpha = a;  // a is free now
  T* beta = a + r;
  for (int j = 0; j < r; ++j) {
    T* x = X + int64_t(j) * k;
    T norm2 = T(0);
    for (int d = j; d < k; ++d) norm2 += x[d] * x[d];
    const Reflector<T> h = reflector(x[j], norm2);
    x[j] = h.v0;
    alpha[j] = h.alpha;
    beta[j] = h.beta;
    for (int c = j + 1; c < r; ++c) {
      T* xc = X + int64_t(c) * k;
      T dot = T(0);
      for (int d = j; d < k; ++d) dot += x[d] * xc[d];
      for (int d = j; d < k; ++d) xc[d] -= h.beta * dot * x[d];
    }
  }
  // Row ρ of Q = H_0 ⋯ H_{r−1} is (H_{r−1} ⋯ H_0 e_ρ)ᵀ. X = QR with |R_cc| ≈ 1, so Q's column
  // c < r is the live vector u_c times the sign of R_cc = α_c, which is undone.
  for (int row = 0; row < k; ++row) {
    for (int d = 0; d < k; ++d) y[d] = d == row ? T(1) : T(0);
    for (int j = 0; j < r; ++j) {
      const T* x = X + int64_t(j) * k;
      T dot = T(0);
      for (int d = j; d < k; ++d) dot += x[d] * y[d];
      for (int d = j; d < k; ++d) y[d] -= beta[j] * dot * x[d];
    }
    for (int c = 0; c < k; ++c) {
      const T sign = c < r && alpha[c] < T(0) ? T(-1) : T(1);
      U[int64_t(row) * k + output_column(c, r, k)] = sign * y[c];
    }
  }
  for (int c = 0; c < k; ++c) w[output_column(c, r, k)] = c < r ? desc[c] + eps : eps;
  return r;
}

}  // namespace hetdro::gram
