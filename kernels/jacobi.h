// The arithmetic of the batched parallel Jacobi eigensolver (kernels/jacobi_eig.cu,
// docs/DESIGN.md §3): the round-robin ordering of the pivot pairs, the rotation that zeroes one
// pivot, its application to a 2x2 block, and the convergence test. Host-and-device, so the CPU
// tests (tests/test_jacobi_eig.cpp) check the same functions the kernel runs.
//
// The algorithm. A symmetric k×k matrix is padded to even n = k + (k odd) with a zero row and
// column (a decoupled eigenvalue 0 that no rotation ever touches, since its off-diagonal entries
// stay exactly 0). A sweep is n−1 rounds; round r pairs the n indices into n/2 disjoint pivots
// (p, q) (the circle method of round-robin tournaments), so all n/2 rotations of a round commute
// and run at once: A ← Jᵀ A J, V ← V J, J the product of the round's plane rotations. Over a
// sweep every pair (p, q), p < q, is a pivot exactly once. Sweeps repeat until a whole sweep
// rotates nothing (should_rotate is false for every pivot) or kMaxSweeps is reached.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>

#include "hetdro/hd.h"

namespace hetdro::jacobi {

// The largest k the one-block-per-matrix kernel takes: the padded matrix and its eigenvectors,
// (n+1)-strided, are 2·128·129·4 B = 129 KiB of shared memory, under sm_80's 163 KiB opt-in but
// over sm_86/sm_89's 99 KiB: a device may allow less (shared_bytes below, kernels/eig.cu).
constexpr int kMaxK = 128;
// Cyclic Jacobi converges quadratically; fp32 matrices up to 128 need about 6-10 sweeps. The
// cap only bounds a matrix whose rounding noise keeps re-triggering the test (a NaN never does).
constexpr int kMaxSweeps = 20;

HETDRO_HD inline int padded(int k) { return k + (k & 1); }

// Pivot j ∈ [0, n/2) of round r ∈ [0, n−1), n even: index n−1 meets r, and the other indices
// pair up symmetrically around r modulo n−1. Every unordered pair {x, y} occurs in exactly one
// round (x + y ≡ 2r mod n−1 has one solution r, since n−1 is odd). Returned with p < q.
HETDRO_HD inline void round_robin_pair(int n, int round, int j, int* p, int* q) {
  int x, y;
  if (j == 0) {
    x = round;
    y = n - 1;
  } else {
    const int m = n - 1;
    x = (round + j) % m;
    y = (round - j + m) % m;
  }
  *p = x < y ? x : y;
  *q = x < y ? y : x;
}

// Pivot blocks (P, Q) with P ≤ Q, enumerated row by row of the upper triangle of an m×m grid:
// idx ∈ [0, m(m+1)/2) ↦ (P, Q). One thread per block keeps A exactly symmetric (the thread
// writes the block and its transpose) and does half the work of visiting every block.
HETDRO_HD inline void upper_triangle_index(int m, int idx, int* P, int* Q) {
  // Row P starts at P·m − P(P−1)/2. Invert with the quadratic formula, then fix the rounding.
  const double b = 2.0 * m + 1.0;
  int row = int((b - std::sqrt(b * b - 8.0 * idx)) / 2.0);
  if (row < 0) row = 0;
  if (row > m - 1) row = m - 1;
  while (row > 0 && row * m - row * (row - 1) / 2 > idx) --row;
  while (row < m - 1 && (row + 1) * m - (row + 1) * row / 2 <= idx) ++row;
  *P = row;
  *Q = row + (idx - (row * m - row * (row - 1) / 2));
}

// The plane rotation J = [[c, s], [−s, c]] (rows and columns p, q) with (Jᵀ A J)_pq = 0
// (Golub & Van Loan, Matrix Computations, Alg. 8.4.1): t = tan θ is the smaller root of
// t² + 2τt − 1 = 0, τ = (a_qq − a_pp)/(2 a_pq), written without cancellation; |t| ≤ 1, so the
// rotation angle is at most π/4 (what makes cyclic Jacobi converge). The new diagonal is
// a_pp − t·a_pq and a_qq + t·a_pq. Identity (c = 1, s = t = 0) when a_pq = 0.
template <typename T>
struct Rotation {
  T c, s, t;
};

template <typename T>
HETDRO_HD inline Rotation<T> rotation(T app, T aqq, T apq) {
  if (apq == T(0)) return {T(1), T(0), T(0)};
  const T tau = (aqq - app) / (T(2) * apq);
  const T atau = std::fabs(tau);
  // Past 1/ε, √(1+τ²) = |τ| in T and τ² could overflow: t = 1/(2τ) is then exact to rounding.
  T t;
  if (atau > T(1) / std::numeric_limits<T>::epsilon())
    t = T(0.5) / tau;
  else
    t = (tau >= T(0) ? T(1) : T(-1)) / (atau + std::sqrt(T(1) + tau * tau));
  const T c = T(1) / std::sqrt(T(1) + t * t);
  return {c, t * c, t};
}

// Rotate pivot (p, q) this round? Not when a_pq is below rounding relative to its diagonal
// (the rotation would change nothing representable; the test that gives small eigenvalues
// their relative accuracy, Demmel & Veselić 1992), nor when it is below `floor`, rounding
// relative to the whole matrix (eps·‖A‖_F / n; without it, the noise that rotations of large
// entries leave on tiny ones would keep a converged matrix sweeping to kMaxSweeps).
template <typename T>
HETDRO_HD inline bool should_rotate(T app, T aqq, T apq, T floor) {
  const T a = std::fabs(apq);
  return a > floor && a > std::numeric_limits<T>::epsilon() * std::sqrt(std::fabs(app * aqq));
}

template <typename T>
HETDRO_HD inline T rotation_floor(T frobenius, int n) {
  return std::numeric_limits<T>::epsilon() * frobenius / T(n);
}

// The off-diagonal block of pivots P = (p, q) and Q = (r, u), P ≠ Q:
// [x00 x01; x10 x11] = [a_pr a_pu; a_qr a_qu] ← J1ᵀ [·] J2. Rows rotate first, then columns;
// the transposed block (Q, P) is written as the transpose of the result.
template <typename T>
HETDRO_HD inline void rotate_block(T* x00, T* x01, T* x10, T* x11, Rotation<T> r1, Rotation<T> r2) {
  const T u00 = r1.c * *x00 - r1.s * *x10, u01 = r1.c * *x01 - r1.s * *x11;
  const T u10 = r1.s * *x00 + r1.c * *x10, u11 = r1.s * *x01 + r1.c * *x11;
  *x00 = u00 * r2.c - u01 * r2.s;
  *x01 = u00 * r2.s + u01 * r2.c;
  *x10 = u10 * r2.c - u11 * r2.s;
  *x11 = u10 * r2.s + u11 * r2.c;
}

// Columns p and q of V (one row's two entries) ← [v_p v_q] J.
template <typename T>
HETDRO_HD inline void rotate_pair(T* vp, T* vq, Rotation<T> r) {
  const T a = *vp, b = *vq;
  *vp = r.c * a - r.s * b;
  *vq = r.s * a + r.c * b;
}

// One round of the parallel cyclic Jacobi on the padded n×n matrix a (row stride ld, n even)
// with eigenvectors v, in the two phases a kernel separates by a barrier. A thread takes the
// work items first, first + stride, ... (the host passes 0, 1), so the kernels and the CPU
// tests run the same code. Phase 1: the round's n/2 rotations, from a as the previous round
// left it; returns whether this thread's pivots rotated.
template <typename T>
HETDRO_HD inline bool round_rotations(const T* a, int ld, int n, int round, T floor,
                                      Rotation<T>* rot, int* pp, int* qq, int first, int stride) {
  bool rotated = false;
  for (int j = first; j < n / 2; j += stride) {
    int p, q;
    round_robin_pair(n, round, j, &p, &q);
    const T app = a[p * ld + p], aqq = a[q * ld + q], apq = a[p * ld + q];
    Rotation<T> r{T(1), T(0), T(0)};
    if (should_rotate(app, aqq, apq, floor)) {
      r = rotation(app, aqq, apq);
      rotated = true;
    }
    rot[j] = r;
    pp[j] = p;
    qq[j] = q;
  }
  return rotated;
}

// Phase 2: A ← Jᵀ A J by the disjoint 2x2 blocks (P, Q), P ≤ Q, of the m×m grid of pivots
// (m = n/2; the thread writes the block and its transpose, so A stays exactly symmetric), and
// V ← V J by rows. Items [0, m(m+1)/2) are the blocks, numbered as upper_triangle_index does
// (`tri`, when given, holds them precomputed as P << 8 | Q); items [m(m+1)/2, … + n·m) are the
// (row, pivot) pairs of V. No element is touched by two items.
template <typename T>
HETDRO_HD inline void round_apply(T* a, T* v, int ld, int n, const Rotation<T>* rot, const int* pp,
                                  const int* qq, const unsigned short* tri, int first, int stride) {
  const int m = n / 2, blocks = m * (m + 1) / 2;
  for (int idx = first; idx < blocks + n * m; idx += stride) {
    if (idx >= blocks) {
      const int i = (idx - blocks) / m, j = (idx - blocks) % m;
      if (rot[j].s != T(0)) rotate_pair(&v[i * ld + pp[j]], &v[i * ld + qq[j]], rot[j]);
      continue;
    }
    int P, Q;
    if (tri) {
      P = tri[idx] >> 8;
      Q = tri[idx] & 0xff;
    } else {
      upper_triangle_index(m, idx, &P, &Q);
    }
    const Rotation<T> r1 = rot[P];
    const int p = pp[P], q = qq[P];
    if (P == Q) {
      if (r1.s != T(0)) {
        const T apq = a[p * ld + q];
        a[p * ld + p] -= r1.t * apq;
        a[q * ld + q] += r1.t * apq;
        a[p * ld + q] = T(0);
        a[q * ld + p] = T(0);
      }
      continue;
    }
    const Rotation<T> r2 = rot[Q];
    if (r1.s == T(0) && r2.s == T(0)) continue;
    const int r = pp[Q], u = qq[Q];
    T x00 = a[p * ld + r], x01 = a[p * ld + u], x10 = a[q * ld + r], x11 = a[q * ld + u];
    rotate_block(&x00, &x01, &x10, &x11, r1, r2);
    a[p * ld + r] = a[r * ld + p] = x00;
    a[p * ld + u] = a[u * ld + p] = x01;
    a[q * ld + r] = a[r * ld + q] = x10;
    a[q * ld + u] = a[u * ld + q] = x11;
  }
}

// The ascending order of the eigenvalues, a strict total order on (value, index): a NaN sorts
// after every number, and equal values keep their index order, so the ranks
// #{j : ranked_before(d_j, j, d_i, i)} are a permutation of 0..k−1 whatever the values.
template <typename T>
HETDRO_HD inline bool ranked_before(T dj, int j, T di, int i) {
  const bool nj = dj != dj, ni = di != di;  // NaN
  if (nj != ni) return ni;                  // a number before a NaN
  if (!nj && dj != di) return dj < di;
  return j < i;
}

// The kernel's shared memory for one matrix (kernels/jacobi_eig.cu), here so that the solver
// choice and the CPU tests read the same count: A and V with row stride n + 1 (a column walk
// does not hit one bank), the round's rotations and pivots, the reduction buffer, the
// eigenvalue ranks and the block-pair table (P, Q packed in 16 bits; m ≤ 64).
struct Layout {
  int n, m, ld, pairs_upper;
  size_t a, v, rot, piv_p, piv_q, red, rank, tri, bytes;
};

// Enough threads for the widest phase (n·m rows of V or m(m+1)/2 blocks), a multiple of 32,
// at most 256: the rounds are barrier-bound, and more blocks per SM hide the barriers better.
inline int threads_for(int k) {
  const int n = padded(k);
  const int work = n * (n / 2);
  const int t = (work + 31) / 32 * 32;
  return t < 32 ? 32 : (t > 256 ? 256 : t);
}

inline Layout layout(int k, int threads) {
  Layout l{};
  l.n = padded(k);
  l.m = l.n / 2;
  l.ld = l.n + 1;
  l.pairs_upper = l.m * (l.m + 1) / 2;
  size_t off = 0;
  auto take = [&off](size_t bytes) {
    const size_t at = off;
    off += (bytes + 15) / 16 * 16;
    return at;
  };
  l.a = take(sizeof(float) * l.n * l.ld);
  l.v = take(sizeof(float) * l.n * l.ld);
  l.rot = take(sizeof(Rotation<float>) * l.m);
  l.piv_p = take(sizeof(int) * l.m);
  l.piv_q = take(sizeof(int) * l.m);
  l.red = take(sizeof(float) * threads);
  l.rank = take(sizeof(int) * l.n);
  l.tri = take(sizeof(unsigned short) * l.pairs_upper);
  l.bytes = off;
  return l;
}

// Dynamic shared memory one block of the kernel needs at k.
inline size_t shared_bytes(int k) { return layout(k, threads_for(k)).bytes; }

}  // namespace hetdro::jacobi
